"""Learned position embeddings: one vector per position, offsets, length checks."""
import keras
import numpy as np
import pytest

from tfrec_onerec.layers.position_embedding import PositionEmbedding


def np_(x):
    return keras.ops.convert_to_numpy(x)


def test_position_embedding_adds_per_position_vectors():
    layer = PositionEmbedding(max_len=4)
    x = np.zeros((3, 3, 2), "float32")
    out = np_(layer(x))
    table = np_(layer.embeddings)
    np.testing.assert_allclose(out, np.broadcast_to(table[:3], (3, 3, 2)))
    np.testing.assert_allclose(np_(layer(x, start_index=1)), np.broadcast_to(table[1:4], (3, 3, 2)))
    with pytest.raises(ValueError, match="length 5 .* exceeds max_len=4"):
        layer(np.zeros((1, 5, 2), "float32"))

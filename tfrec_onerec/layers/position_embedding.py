"""Learned absolute position embeddings, added to the token embeddings of a transformer."""
from __future__ import annotations

import keras
from keras import ops

from tfrec_onerec.layers._validation import check_positive
from tfrec_onerec.serialization import register_serializable


@register_serializable
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute position embeddings: one trainable vector per position.

    ``P[start_index + t]`` for the positions ``t = 0..length-1`` of the input, broadcast over
    the batch; add it to the token embeddings. Position 0 is the first token of the
    (right-padded) sequence, i.e. the oldest kept item of a history.

    Args:
        max_len: the number of positions (longest sequence the layer accepts).
        initializer: initializer of the (max_len, dim) table (a Keras initializer or its
            name/config). Default ``None``: normal with stddev 0.02.

    Call:
        inputs: (batch, length, dim) float tensor (only its shape is used).
        start_index: int, the position of the first token. Default 0.
        Returns (batch, length, dim): the position embeddings.

    Example:
        >>> x = keras.ops.ones((2, 5, 8))
        >>> PositionEmbedding(max_len=50)(x).shape
        (2, 5, 8)
    """

    def __init__(self, max_len: int, initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.max_len = check_positive("PositionEmbedding", "max_len", max_len)
        self.initializer = (keras.initializers.RandomNormal(stddev=0.02) if initializer is None
                            else keras.initializers.get(initializer))

    def build(self, input_shape):
        self.embeddings = self.add_weight(name="embeddings", shape=(self.max_len, int(input_shape[-1])),
                                          initializer=self.initializer)

    def call(self, inputs, start_index=0):
        length = inputs.shape[1]
        if isinstance(length, int) and isinstance(start_index, int) and start_index + length > self.max_len:
            raise ValueError(f"PositionEmbedding: a sequence of length {length} starting at {start_index} exceeds "
                             f"max_len={self.max_len}.")
        positions = ops.slice(self.embeddings, (start_index, 0), (ops.shape(inputs)[1], self.embeddings.shape[1]))
        return ops.broadcast_to(ops.expand_dims(positions, 0), ops.shape(inputs))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "max_len": self.max_len,
                "initializer": keras.initializers.serialize(self.initializer)}

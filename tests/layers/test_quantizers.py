"""The residual vector quantizer: loss, codes, straight-through gradient, k-means init, dead codes."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from clustered_points import blobs

from tfrec_onerec.layers.quantizers import ResidualVectorQuantizer


# -- the residual vector quantizer -------------------------------------------------------------
def fixed_quantizer(codebooks, **kwargs):
    codebooks = np.asarray(codebooks, np.float32)
    layer = ResidualVectorQuantizer(codebooks.shape[0], codebooks.shape[1], kmeans_init=False, **kwargs)
    layer.build((None, codebooks.shape[2]))
    layer.codebooks.assign(codebooks)
    return layer


def test_quantizer_loss_codes_and_straight_through_gradient_by_hand():
    layer = fixed_quantizer([[[0.0, 0.0], [1.0, 1.0]], [[0.1, 0.0], [0.0, 0.5]]], beta=0.25)
    x = tf.constant([[0.2, 0.0], [0.9, 1.6]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x)
        total = tf.reduce_sum(out["quantized"] * tf.constant([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_array_equal(out["codes"], [[0, 0], [1, 1]])
    np.testing.assert_allclose(out["quantized"], [[0.1, 0.0], [1.0, 1.5]], atol=1e-6)
    np.testing.assert_allclose(out["partial"][:, 0], [[0.0, 0.0], [1.0, 1.0]])
    # Level residuals: row 1 (0.2, 0) then (0.2, 0) - (0.1, 0); row 2 (-0.1, 0.6) then (-0.1, 0.1).
    squared = np.array([0.04 / 2 + 0.01 / 2, (0.01 + 0.36) / 2 + (0.01 + 0.01) / 2])
    np.testing.assert_allclose(out["loss"], 1.25 * squared, rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(total, x), [[1.0, 2.0], [3.0, 4.0]])  # straight through


def test_kmeans_initialisation_on_the_first_training_batch():
    x, _ = blobs(20, np.eye(4) * 5.0, noise=0.1)
    layer = ResidualVectorQuantizer(2, 4, kmeans_init=True, dead_code_patience=0, seed=1)
    layer(x.astype(np.float32))  # inference: no initialisation
    assert float(layer.initialized.numpy()) == 0.0
    layer(x.astype(np.float32), training=True)
    assert float(layer.initialized.numpy()) == 1.0
    first = layer.codebooks.numpy()[0]
    # Level 1 found the four blobs: each centroid is near one blob centre.
    assert np.abs(np.sort(first, axis=0) - np.sort(np.eye(4) * 5.0, axis=0)).max() < 0.5
    layer(x.astype(np.float32) + 100.0, training=True)  # no second initialisation
    np.testing.assert_array_equal(layer.codebooks.numpy()[0], first)


def test_dead_codes_are_reset_to_encoder_outputs():
    x, _ = blobs(16, np.eye(4) * 3.0, noise=0.2, seed=4)
    x = x.astype(np.float32)
    start = np.full((1, 8, 4), 100.0, np.float32)
    start[0, 0] = x.mean(0)  # one live code, seven dead ones far away

    def codes_used(patience, steps=3):
        layer = fixed_quantizer(start, dead_code_patience=patience, seed=0)
        for _ in range(steps):
            layer(x, training=True)
        return layer, len(np.unique(keras.ops.convert_to_numpy(layer(x)["codes"])))

    frozen, used_without = codes_used(0)
    assert used_without == 1
    np.testing.assert_array_equal(frozen.codebooks.numpy(), start)
    reset, used_with = codes_used(2)
    assert used_with >= 3
    # The reset codes are rows of the batch (encoder outputs at level 1).
    moved = reset.codebooks.numpy()[0, 1:]
    assert all(np.isclose(row, x).all(axis=1).any() for row in moved)
    # Counting by hand: one batch without use.
    layer = fixed_quantizer(start, dead_code_patience=2)
    layer(x, training=True)
    np.testing.assert_array_equal(layer.unused_steps.numpy(), [[0] + [1] * 7])


def test_quantizer_config_round_trip_and_bad_arguments():
    layer = ResidualVectorQuantizer(2, 16, beta=0.5, kmeans_iters=3, dead_code_patience=7, seed=5)
    clone = ResidualVectorQuantizer.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="codebook_size"):
        ResidualVectorQuantizer(2, 0)
    with pytest.raises(ValueError, match="beta"):
        ResidualVectorQuantizer(2, 4, beta=-1.0)

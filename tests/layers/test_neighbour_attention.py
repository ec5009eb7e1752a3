"""NeighbourAttention: node-level and type-level attention by hand, masks, the mean-pooling switch."""
import keras
import numpy as np
import pytest

from tfrec_onerec.layers.neighbour_attention import NeighbourAttention, masked_softmax


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def inputs():
    """Two nodes, 2 types x 3 neighbours of width 2. Node 0: type 0 has neighbours 0 and 1,
    type 1 has neighbour 0; node 1 has no neighbour at all."""
    node = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    neighbours = np.arange(2 * 2 * 3 * 2, dtype=np.float32).reshape(2, 2, 3, 2) / 10.0
    mask = np.array([[[True, True, False], [True, False, False]], [[False] * 3, [False] * 3]])
    return node, neighbours, mask


def identity_layer(type_query=(1.0, 0.0)):
    """W_t = identity, a_self = (1, 0), a_neighbour = (0, 1), U = identity, b = 0, q = type_query."""
    layer = NeighbourAttention(2, type_units=2)
    layer.build((None, 2), (None, 2, 3, 2), (None, 2, 3))
    layer.set_weights([np.stack([np.eye(2)] * 2), np.array([[1.0, 0.0]] * 2), np.array([[0.0, 1.0]] * 2),
                       np.eye(2), np.zeros(2), np.array(type_query)])
    return layer


def test_masked_softmax_ignores_masked_entries_and_gives_zeros_without_any():
    weights = numpy(masked_softmax(np.array([[1.0, 2.0, 50.0], [1.0, 2.0, 3.0]]),
                                   np.array([[True, True, False], [False, False, False]])))
    np.testing.assert_allclose(weights[0], [np.exp(1) / (np.exp(1) + np.exp(2)), np.exp(2) / (np.exp(1) + np.exp(2)), 0],
                               rtol=1e-6)
    np.testing.assert_array_equal(weights[1], [0.0, 0.0, 0.0])


def test_node_and_type_level_attention_by_hand():
    node, neighbours, mask = inputs()
    layer = identity_layer()
    vectors = numpy(layer.type_vectors(node, neighbours, mask))
    # Node 0, type 0: scores LeakyReLU(h_0 + n_j,1) over neighbours (0.0, 0.1) and (0.2, 0.3).
    n = neighbours[0, 0]
    e = 1.0 + np.array([n[0, 1], n[1, 1]])
    alpha = np.exp(e) / np.exp(e).sum()
    np.testing.assert_allclose(vectors[0, 0], alpha[0] * n[0] + alpha[1] * n[1], rtol=1e-5)
    np.testing.assert_allclose(vectors[0, 1], neighbours[0, 1, 0], rtol=1e-5)  # one neighbour: weight 1
    np.testing.assert_array_equal(vectors[1], np.zeros((2, 2)))  # no neighbours
    # Type level: s_t = q . tanh(z_t) with q = (1, 0); softmax over the two types.
    s = np.tanh(vectors[0, :, 0])
    beta = np.exp(s) / np.exp(s).sum()
    out = numpy(layer(node, neighbours, mask))
    np.testing.assert_allclose(out[0], beta[0] * vectors[0, 0] + beta[1] * vectors[0, 1], rtol=1e-5)
    np.testing.assert_array_equal(out[1], [0.0, 0.0])


def test_a_type_without_neighbours_gets_no_weight():
    node, neighbours, mask = inputs()
    mask[0, 1] = False  # node 0 keeps type 0 only
    layer = identity_layer(type_query=(5.0, -3.0))
    vectors = numpy(layer.type_vectors(node, neighbours, mask))
    np.testing.assert_allclose(numpy(layer(node, neighbours, mask))[0], vectors[0, 0], rtol=1e-6)


def test_padded_neighbours_change_nothing():
    node, neighbours, mask = inputs()
    layer = identity_layer()
    changed = neighbours.copy()
    changed[~mask] = 99.0
    np.testing.assert_allclose(numpy(layer(node, changed, mask)), numpy(layer(node, neighbours, mask)), rtol=1e-6)


def test_without_attention_it_is_the_mean_of_the_type_means():
    node, neighbours, mask = inputs()
    layer = NeighbourAttention(2, attention=False)
    out = numpy(layer(node, neighbours, mask))
    type_0 = neighbours[0, 0, :2].mean(axis=0)
    type_1 = neighbours[0, 1, 0]
    np.testing.assert_allclose(out[0], (type_0 + type_1) / 2, rtol=1e-6)
    np.testing.assert_array_equal(out[1], [0.0, 0.0])
    assert layer.weights == []


def test_output_width_config_round_trip_and_errors():
    node, neighbours, mask = inputs()
    layer = NeighbourAttention(2, units=5)
    assert numpy(layer(node, neighbours, mask)).shape == (2, 5)
    clone = NeighbourAttention.from_config(layer.get_config())
    clone(node, neighbours, mask)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(numpy(clone(node, neighbours, mask)), numpy(layer(node, neighbours, mask)))
    with pytest.raises(ValueError, match="num_types must be a positive int"):
        NeighbourAttention(0)
    with pytest.raises(ValueError, match="node width 2 and neighbour width 3 differ"):
        NeighbourAttention(2)(node, np.zeros((2, 2, 3, 3), np.float32), mask)

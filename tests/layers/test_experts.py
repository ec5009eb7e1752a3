"""Experts, gates, extraction levels, task towers and flat features: hand-computed outputs."""
import keras
import numpy as np
import pytest

from tfrec_onerec.features import Feature, FeatureSpec
from tfrec_onerec.layers import ExpertGroup, ExtractionLayer, FlatFeatures, Gate, TaskTower


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_expert_group_is_one_relu_mlp_per_expert():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    group = ExpertGroup(2, units=(4, 2))
    out = numpy(group(x))
    assert out.shape == (5, 2, 2)
    kernels = [numpy(k) for k in group.kernels]
    biases = [numpy(b) for b in group.biases]
    for e in range(2):
        h = np.maximum(x @ kernels[0][e] + biases[0][e], 0)
        h = np.maximum(h @ kernels[1][e] + biases[1][e], 0)
        np.testing.assert_allclose(out[:, e], h, rtol=1e-5, atol=1e-6)


def test_gate_mixes_experts_with_softmax_weights():
    gate = Gate(3)
    gate.build((None, 2))
    gate.dense.set_weights([np.zeros((2, 3), np.float32), np.log(np.array([1.0, 2.0, 5.0], np.float32))])
    experts = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    mixture, weights = gate(np.ones((1, 2), np.float32), experts)
    np.testing.assert_allclose(numpy(weights), [[0.125, 0.25, 0.625]], rtol=1e-6)
    np.testing.assert_allclose(numpy(mixture), [0.125 * experts[0, 0] + 0.25 * experts[0, 1] + 0.625 * experts[0, 2]],
                               rtol=1e-5)


def test_extraction_layer_gates_sum_to_one_and_see_their_experts():
    x = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)
    layer = ExtractionLayer(num_gates=3, task_experts=2, shared_experts=3, expert_units=(4,), shared_gate=True)
    outputs, shared, weights = layer([x, x, x], x)
    assert len(outputs) == 3 and all(numpy(o).shape == (6, 4) for o in outputs)
    assert numpy(shared).shape == (6, 4)
    assert {name: numpy(w).shape for name, w in weights.items()} == {
        "task_0": (6, 5), "task_1": (6, 5), "task_2": (6, 5), "shared": (6, 3 * 2 + 3)}
    for w in weights.values():
        np.testing.assert_allclose(numpy(w).sum(axis=1), 1.0, rtol=1e-6)
    # Task 1's gate mixes its own two experts and the three shared ones, nothing else.
    own = numpy(layer.task_groups[1](x))
    common = numpy(layer.shared_group(x))
    expected = np.einsum("be,bed->bd", numpy(weights["task_1"]), np.concatenate([own, common], axis=1))
    np.testing.assert_allclose(numpy(outputs[1]), expected, rtol=1e-5, atol=1e-6)


def test_extraction_layer_refuses_no_experts_and_wrong_inputs():
    with pytest.raises(ValueError, match="at least one expert"):
        ExtractionLayer(2, 0, 0, (4,))
    layer = ExtractionLayer(2, 1, 1, (4,))
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="expected 2 task inputs, got 1"):
        layer([x], x)


def test_task_tower_logit_reads_its_mlp():
    tower = TaskTower((3,))
    x = np.ones((2, 4), np.float32)
    logit, hidden = tower(x)
    assert numpy(logit).shape == (2, 1) and numpy(hidden).shape == (2, 3)
    kernel, bias = tower.logit.get_weights()
    np.testing.assert_allclose(numpy(logit), numpy(hidden) @ kernel + bias, rtol=1e-5)
    bare = TaskTower(())
    logit, hidden = bare(x)
    np.testing.assert_array_equal(numpy(hidden), x)


def test_flat_features_concatenates_ids_pooled_sequences_and_numbers():
    spec = FeatureSpec([Feature("user", "categorical", vocab_size=3, embedding_dim=2),
                        Feature("hist", "sequence", vocab_size=4, embedding_dim=2, max_len=3, vocab="item"),
                        Feature("age", "numeric", dim=1)])
    layer = FlatFeatures(spec)
    inputs = {"user": np.array([1, 2]), "hist": np.array([[1, 2, 0], [0, 0, 0]]), "age": np.array([[0.5], [2.0]])}
    out = numpy(layer(inputs))
    assert out.shape == (2, 5) and layer.width == 5
    users, items = numpy(layer.embedding.table("user")), numpy(layer.embedding.table("item"))
    np.testing.assert_allclose(out[0], np.r_[users[1], (items[1] + items[2]) / 2, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out[1], np.r_[users[2], 0.0, 0.0, 2.0], rtol=1e-6)  # empty history pools to 0
    clone = FlatFeatures.from_config(layer.get_config())
    assert clone.width == 5 and clone.features == ["user", "hist", "age"]


def test_masked_dense_sees_its_kernel_through_the_chosen_mask():
    from tfrec_onerec.layers import MaskedDense

    layer = MaskedDense(2, num_masks=2)
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    layer.build(x.shape)
    kernel = np.arange(6, dtype=np.float32).reshape(3, 2)
    layer.kernel.assign(kernel)
    mask = np.array([[1, 0], [1, 1], [0, 1]], np.float32)
    layer.masks[1].assign(mask)
    np.testing.assert_allclose(numpy(layer(x, mask_index=0)), x @ kernel)
    np.testing.assert_allclose(numpy(layer(x, mask_index=1)), x @ (kernel * mask))
    import tensorflow as tf

    with tf.GradientTape() as tape:
        out = tf.reduce_sum(layer(x, mask_index=1))
    np.testing.assert_array_equal(numpy(tape.gradient(out, layer.kernel)) == 0, mask == 0)  # no gradient when masked


def test_dot_interaction_gives_each_pair_once():
    from tfrec_onerec.layers import DotInteraction

    fields = np.array([[[1.0, 0.0], [2.0, 1.0], [0.0, 3.0]]], np.float32)
    np.testing.assert_allclose(numpy(DotInteraction()(fields)), [[2.0, 0.0, 3.0]])  # (0,1), (0,2), (1,2)

"""Layers: hand-computed outputs, masks, OOV handling, config round trips."""
import keras
import numpy as np
import pytest

from tfrec_onerec.features import Feature, FeatureSpec
from tfrec_onerec.layers import MLP, Dice, FeatureEmbedding, SequencePooling, TargetAttention
from tfrec_onerec.layers.activations import PReLU


def linear_product_attention(softmax):
    """An activation unit whose score is exactly key * query (1-d embeddings)."""
    layer = TargetAttention(hidden_units=(1,), activation="linear", softmax=softmax)
    layer.build((None, 1), (None, 3, 1), (None, 3))
    layer.unit.dense_layers[0].set_weights([np.array([[0.], [0.], [0.], [1.]]), np.zeros(1)])
    layer.score.set_weights([np.ones((1, 1)), np.zeros(1)])
    return layer


def attention_inputs():
    query = np.array([[2.0], [2.0]], np.float32)
    keys = np.array([[[1.0], [3.0], [5.0]], [[1.0], [3.0], [5.0]]], np.float32)
    mask = np.array([[True, True, False], [False, False, False]])  # row 2: no history at all
    return query, keys, mask


def test_target_attention_unnormalised_weights_by_hand():
    layer = linear_product_attention(softmax=False)
    query, keys, mask = attention_inputs()
    weights = keras.ops.convert_to_numpy(layer.attention_weights(query, keys, mask))
    np.testing.assert_allclose(weights, [[2.0, 6.0, 0.0], [0.0, 0.0, 0.0]])
    pooled = keras.ops.convert_to_numpy(layer(query, keys, mask))
    np.testing.assert_allclose(pooled, [[2.0 * 1 + 6.0 * 3], [0.0]])  # 20, and zeros without history


def test_target_attention_softmax_weights_by_hand():
    layer = linear_product_attention(softmax=True)
    query, keys, mask = attention_inputs()
    pooled = keras.ops.convert_to_numpy(layer(query, keys, mask))
    expected = (np.exp(2) * 1 + np.exp(6) * 3) / (np.exp(2) + np.exp(6))
    np.testing.assert_allclose(pooled, [[expected], [0.0]], rtol=1e-5)


def test_target_attention_depends_on_candidate_and_ignores_padding_values():
    layer = TargetAttention((8, 4), activation="dice")
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(2, 5, 6)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0]] * 2, bool)
    q1, q2 = rng.normal(size=(2, 6)).astype(np.float32), rng.normal(size=(2, 6)).astype(np.float32)
    out1 = keras.ops.convert_to_numpy(layer(q1, keys, mask))
    assert not np.allclose(out1, keras.ops.convert_to_numpy(layer(q2, keys, mask)))
    keys_changed_padding = keys.copy()
    keys_changed_padding[:, 3:] = 100.0
    np.testing.assert_allclose(out1, keras.ops.convert_to_numpy(layer(q1, keys_changed_padding, mask)), rtol=1e-5)


def test_dice_by_hand_in_training_and_inference():
    dice = Dice()
    x = np.array([[-1.0, 2.0], [1.0, 4.0]], np.float32)
    dice.build(x.shape)
    dice.alpha.assign(np.array([0.5, 0.25], np.float32))
    # training: batch mean (0, 3), variance (1, 1)
    p = 1 / (1 + np.exp(-(x - [0.0, 3.0]) / np.sqrt(1.0 + 1e-8)))
    expected = p * x + (1 - p) * np.array([0.5, 0.25]) * x
    np.testing.assert_allclose(keras.ops.convert_to_numpy(dice(x, training=True)), expected, rtol=1e-5)
    # inference with the initial moving statistics (mean 0, variance 1) after no updates
    fresh = Dice()
    fresh.build(x.shape)
    p0 = 1 / (1 + np.exp(-x / np.sqrt(1.0 + 1e-8)))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fresh(x, training=False)), p0 * x, rtol=1e-5)


def test_prelu_has_one_slope_per_unit_on_sequences():
    prelu = PReLU()
    x = np.array([[[-2.0, 3.0], [4.0, -1.0]]], np.float32)  # (batch 1, length 2, units 2)
    prelu.build(x.shape)
    assert tuple(prelu.alpha.shape) == (2,)
    prelu.alpha.assign(np.array([0.5, 0.1], np.float32))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(prelu(x)), [[[-1.0, 3.0], [4.0, -0.1]]], rtol=1e-6)


def spec():
    return FeatureSpec([
        Feature("item_id", "categorical", vocab_size=5, embedding_dim=3, vocab="item"),
        Feature("hist_item_id", "sequence", vocab_size=5, embedding_dim=3, vocab="item", max_len=3,
                query="item_id"),
        Feature("user_id", "categorical", vocab_size=4, embedding_dim=2),
    ])


def test_embedding_shares_tables_pads_with_zeros_and_buckets_oov():
    layer = FeatureEmbedding(spec())
    out = layer({"item_id": np.array([1, -3, 999, 0]), "hist_item_id": np.array([[1, 5, 0]] * 4),
                 "user_id": np.array([1, 2, 3, 4])})
    assert len(layer.weights) == 2  # "item" shared by two features, "user_id"
    table = keras.ops.convert_to_numpy(layer.table("item"))
    assert table.shape == (7, 3)
    item = keras.ops.convert_to_numpy(out["item_id"])
    np.testing.assert_allclose(item[0], table[1])
    np.testing.assert_allclose(item[1], table[6])  # negative id -> OOV row
    np.testing.assert_allclose(item[2], table[6])  # too-large id -> OOV row
    np.testing.assert_allclose(item[3], 0.0)  # padding id -> zeros
    hist = keras.ops.convert_to_numpy(out["hist_item_id"])
    np.testing.assert_allclose(hist[0], [table[1], table[5], np.zeros(3)])


def test_sequence_pooling_sum_and_mean_with_empty_rows():
    values = np.array([[[1.0], [3.0], [9.0]], [[1.0], [1.0], [1.0]]], np.float32)
    mask = np.array([[True, True, False], [False, False, False]])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(SequencePooling("sum")(values, mask)), [[4.0], [0.0]])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(SequencePooling("mean")(values, mask)), [[2.0], [0.0]])
    with pytest.raises(ValueError, match="mode must be one of"):
        SequencePooling("max")


@pytest.mark.parametrize("layer", [
    MLP([4, 2], activation="dice", dropout=0.1), MLP([3], activation="prelu"),
    TargetAttention((4,), "prelu", softmax=True), FeatureEmbedding(spec()), Dice(), SequencePooling("mean"),
    PReLU(alpha_initializer=0.1),
])
def test_config_round_trip(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer)).get_config() \
        == layer.get_config()


def test_mlp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="units must be a non-empty list"):
        MLP([])
    with pytest.raises(ValueError, match="dropout must be in"):
        MLP([2], dropout=1.5)

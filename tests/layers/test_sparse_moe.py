"""Sparse MoE: top-k routing, renormalised gates, load statistics and balancing."""
import warnings

import keras
import numpy as np
import pytest

from tfrec_onerec.layers.sparse_moe import SparseMoE
from tfrec_onerec.layers.transformer import TransformerBlock


def np_(x):
    return keras.ops.convert_to_numpy(x)


def tokens(batch=2, length=6, dim=8, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, length, dim)).astype("float32")


def identity_moe(balance="none", **kwargs):
    """A 3-expert MoE on 2-d tokens whose router logits are the token itself plus a zero
    column, and whose expert e outputs the constant vector (e + 1) * [1, 1]."""
    moe = SparseMoE(num_experts=3, hidden_dim=2, top_k=2, balance=balance, activation="relu", **kwargs)
    moe.build((None, None, 2))
    moe.router_kernel.assign(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "float32"))
    moe.expert_kernel_1.assign(np.zeros((3, 2, 2), "float32"))
    moe.expert_kernel_2.assign(np.zeros((3, 2, 2), "float32"))
    moe.expert_bias_2.assign(np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], "float32"))
    return moe


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_moe_routes_to_the_top_k_with_renormalised_gates():
    moe = identity_moe()
    x = np.array([[[2.0, 1.0], [-1.0, -2.0], [0.5, 3.0]]], "float32")
    probs, chosen, gates = (np_(t) for t in moe.route(x))
    logits = np.concatenate([x, np.zeros((1, 3, 1))], -1)
    np.testing.assert_allclose(probs, softmax(logits), rtol=1e-5)
    np.testing.assert_array_equal(chosen, [[[1, 1, 0], [1, 0, 1], [1, 1, 0]]])  # the 2 largest scores
    np.testing.assert_allclose(gates.sum(-1), 1.0, rtol=1e-6)
    expected = probs * chosen / (probs * chosen).sum(-1, keepdims=True)
    np.testing.assert_allclose(gates, expected, rtol=1e-6)
    # output: gate-weighted constant expert outputs (e + 1)
    out = np_(moe(x))
    np.testing.assert_allclose(out, np.repeat((expected @ np.array([1.0, 2.0, 3.0]))[..., None], 2, -1), rtol=1e-5)


def test_moe_with_one_expert_is_that_expert_with_gate_one():
    moe = SparseMoE(num_experts=1, hidden_dim=3, top_k=1, activation="relu")
    x = np.random.default_rng(0).normal(size=(2, 4, 2)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "softmax over an axis of size 1" warning
        out = np_(moe(x))
    probs, chosen, gates = (np_(t) for t in moe.route(x))
    np.testing.assert_array_equal(probs, np.ones((2, 4, 1)))
    np.testing.assert_array_equal(gates, np.ones((2, 4, 1)))
    assert not moe.router_kernel.trainable  # no gradient reaches it
    w1, b1, w2, b2 = (np_(w)[0] for w in (moe.expert_kernel_1, moe.expert_bias_1, moe.expert_kernel_2,
                                          moe.expert_bias_2))
    np.testing.assert_allclose(out, np.maximum(x @ w1 + b1, 0) @ w2 + b2, rtol=1e-5, atol=1e-6)


def test_moe_aux_loss_equals_the_hand_computed_value():
    moe = identity_moe(balance="aux_loss", aux_loss_weight=0.5)
    x = np.array([[[2.0, 1.0], [-1.0, -2.0], [0.5, 3.0], [9.0, 9.0]]], "float32")
    padding = np.array([[True, True, True, False]])  # the last token must not count
    moe(x, padding_mask=padding, training=True)
    (loss,) = moe.losses
    probs = softmax(np.concatenate([x[0, :3], np.zeros((3, 1))], -1))
    chosen = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 0]])
    f = chosen.sum(0) / (3 * 2)  # [3, 2, 1] / 6
    p = probs.mean(0)
    np.testing.assert_allclose(float(np_(loss)), 0.5 * 3 * np.sum(f * p), rtol=1e-5)
    np.testing.assert_allclose(moe.expert_load(), [3 / 6, 2 / 6, 1 / 6])
    # no loss and no load accounting outside training
    moe.reset_expert_load()
    moe(x)
    assert not moe.losses
    np.testing.assert_allclose(moe.expert_load(), [1 / 3] * 3)


def test_moe_expert_load_sums_to_one_and_batch_load_is_stateless():
    moe = SparseMoE(num_experts=5, hidden_dim=8, top_k=2)
    x = tokens(4, 7, 6)
    padding = np.arange(7)[None, :] < np.array([[7], [3], [0], [5]])
    load = np_(moe.batch_load(x, padding))
    np.testing.assert_allclose(load.sum(), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np_(moe.load_counts), 0.0)
    moe(x, padding_mask=padding, training=True)
    np.testing.assert_allclose(moe.expert_load().sum(), 1.0)
    np.testing.assert_allclose(np_(moe.load_counts).sum(), 2 * padding.sum())  # k assignments per real token
    np.testing.assert_allclose(moe.expert_load(), load, rtol=1e-6)


def test_loss_free_bias_moves_the_load_toward_balance():
    moe = identity_moe(balance="loss_free", bias_update_rate=0.01)
    # Tokens strongly prefer experts 0 and 1; expert 2 (the zero logit column) starves.
    x = np.random.default_rng(0).normal([1.5, 1.0], 0.3, size=(1, 64, 2)).astype("float32")
    before = np_(moe.batch_load(x))
    assert before[2] < 0.05
    gates_before = np_(moe.route(x)[0])
    for _ in range(150):
        moe(x, training=True)
    after = np_(moe.batch_load(x))
    bias = np_(moe.routing_bias)
    assert bias[2] > 0 > bias[0]
    assert np.abs(after - 1 / 3).max() < np.abs(before - 1 / 3).max() / 2
    assert after[2] > 0.2
    # the bias changes the selection only: router probabilities are untouched
    np.testing.assert_allclose(np_(moe.route(x)[0]), gates_before)


def test_aux_loss_training_balances_a_collapsed_router():
    """The auxiliary loss's gradient alone spreads a router that sends every token to expert 0;
    at balance the loss equals its weight (E * sum_e (1/E)(1/E) = 1)."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    moe = SparseMoE(num_experts=4, hidden_dim=4, top_k=1, aux_loss_weight=1.0)
    x = tokens(8, 16, 4, seed=3)
    x[..., 0] = 1.0  # a constant feature: router weight on it acts as a per-expert bias
    moe.build(x.shape)
    kernel = np_(moe.router_kernel) * 0.3
    kernel[0, 0] = 3.0
    moe.router_kernel.assign(kernel)
    np.testing.assert_array_equal(np_(moe.batch_load(x)), [1.0, 0.0, 0.0, 0.0])
    optimizer = keras.optimizers.SGD(0.5)
    for _ in range(30):
        with tf.GradientTape() as tape:
            moe(x, training=True)
            loss = moe.losses[0]
        optimizer.apply_gradients([(tape.gradient(loss, moe.router_kernel), moe.router_kernel)])
    assert np_(moe.batch_load(x)).max() < 0.35
    assert abs(float(np_(loss)) - 1.0) < 0.05


@pytest.mark.parametrize("balance", ["aux_loss", "loss_free"])
def test_moe_balancing_works_inside_model_fit(balance):
    """Under `model.fit` (a tf.function), the aux loss enters the training loss and the
    loss-free bias and the load counter are updated by the compiled step."""
    keras.utils.set_random_seed(0)
    moe = SparseMoE(4, 8, top_k=2, balance=balance, aux_loss_weight=10.0, bias_update_rate=0.01)
    inputs = keras.Input((5, 8))
    model = keras.Model(inputs, keras.layers.Dense(1)(TransformerBlock(2, feed_forward=moe, causal=True)(inputs)))
    model.compile(optimizer="adam", loss="mse")
    x, y = tokens(32, 5, 8), np.zeros((32, 5, 1), "float32")
    plain = float(np_(model.compute_loss(x, y, model(x))))
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    np.testing.assert_allclose(np_(moe.load_counts).sum(), 4 * 8 * 5 * 2)  # 4 steps, 40 tokens, k = 2
    if balance == "aux_loss":
        assert history.history["loss"][0] > plain + 5.0  # weight 10 x (a value >= 1)
        np.testing.assert_array_equal(np_(moe.routing_bias), 0.0)
    else:
        assert np.abs(np_(moe.routing_bias)).sum() > 0


def test_moe_rejects_bad_arguments():
    with pytest.raises(ValueError, match="top_k must be <= num_experts=2, got 3"):
        SparseMoE(2, 8, top_k=3)
    with pytest.raises(ValueError, match="balance must be one of .*got 'switch'"):
        SparseMoE(2, 8, balance="switch")

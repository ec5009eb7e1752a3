"""Transformer blocks and sparse MoE: causality, masks, routing, balancing, round trips."""
import warnings

import keras
import numpy as np
import pytest

from tfrec_onerec.layers.transformer import (FeedForward, PositionEmbedding, SparseMoE, TransformerBlock,
                                             attention_mask)


def np_(x):
    return keras.ops.convert_to_numpy(x)


def tokens(batch=2, length=6, dim=8, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, length, dim)).astype("float32")


# -- masks and attention ------------------------------------------------------------------
def test_attention_mask_by_hand():
    padding = np.array([[True, True, False]])
    np.testing.assert_array_equal(np_(attention_mask(padding, causal=True)),
                                  [[[1, 0, 0], [1, 1, 0], [1, 1, 0]]])
    np.testing.assert_array_equal(np_(attention_mask(padding)), [[[1, 1, 0]] * 3])
    np.testing.assert_array_equal(np_(attention_mask(None, causal=True, length=2, batch_size=1)), [[[1, 0], [1, 1]]])
    assert attention_mask(None, causal=False) is None


@pytest.mark.parametrize("feed_forward", [None, "moe"])
def test_causal_block_never_looks_ahead(feed_forward):
    ffn = SparseMoE(4, 16, top_k=2) if feed_forward else None
    block = TransformerBlock(num_heads=2, feed_forward=ffn, causal=True)
    x = tokens()
    base = np_(block(x))
    for t in range(x.shape[1]):
        changed = x.copy()
        changed[:, t] = tokens(2, 1, 8, seed=t + 1)[:, 0] * 3.0  # (a constant shift would vanish in LayerNorm)
        out = np_(block(changed))
        np.testing.assert_allclose(out[:, :t], base[:, :t], atol=1e-5)  # earlier positions unchanged
        assert not np.allclose(out[:, t], base[:, t])
    # without the causal mask, a later token does change earlier outputs
    bidirectional = TransformerBlock(num_heads=2)
    changed = x.copy()
    changed[:, -1] = -x[:, -1]
    assert not np.allclose(np_(bidirectional(x))[:, 0], np_(bidirectional(changed))[:, 0])


def test_padded_keys_do_not_matter_and_padded_positions_output_zero():
    block = TransformerBlock(num_heads=2, ffn_dim=16)
    x = tokens()
    padding = np.array([[True] * 4 + [False] * 2, [True] * 6])
    base = np_(block(x, padding_mask=padding))
    noisy = x.copy()
    noisy[0, 4:] = tokens(1, 2, 8, seed=9) * 100.0  # garbage in the padded slots
    out = np_(block(noisy, padding_mask=padding))
    np.testing.assert_allclose(out, base, atol=1e-5)
    np.testing.assert_array_equal(out[0, 4:], 0.0)
    # the first row equals running the block on its 4 real tokens alone
    np.testing.assert_allclose(np_(block(x[:1, :4]))[0], base[0, :4], atol=1e-5)


def test_all_padding_rows_are_finite():
    block = TransformerBlock(num_heads=2, causal=True, cross_attention=True)
    x = tokens()
    out = np_(block(x, padding_mask=np.zeros((2, 6), bool), memory=tokens(2, 3, 4),
                    memory_mask=np.zeros((2, 3), bool)))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, 0.0)


def test_cross_attention_mask_hides_padded_memory():
    block = TransformerBlock(num_heads=2, causal=True, cross_attention=True)
    x, memory = tokens(), tokens(2, 5, 4, seed=1)
    memory_mask = np.array([[True, True, True, False, False], [True] * 5])
    base = np_(block(x, memory=memory, memory_mask=memory_mask))
    noisy = memory.copy()
    noisy[0, 3:] = tokens(1, 2, 4, seed=9) * 50.0
    np.testing.assert_allclose(np_(block(x, memory=noisy, memory_mask=memory_mask)), base, atol=1e-5)
    np.testing.assert_allclose(np_(block(x[:1], memory=memory[:1, :3]))[0], base[0], atol=1e-5)
    # unmasked memory does matter
    changed = memory.copy()
    changed[0, 0] = -memory[0, 0]
    assert not np.allclose(np_(block(x, memory=changed, memory_mask=memory_mask))[0], base[0])


def test_cross_attention_needs_memory_and_ffn_must_keep_width():
    with pytest.raises(ValueError, match="needs a `memory`"):
        TransformerBlock(num_heads=2, cross_attention=True)(tokens())
    with pytest.raises(ValueError, match="must keep the width 8, it outputs 5"):
        TransformerBlock(num_heads=2, feed_forward=FeedForward(16, output_dim=5))(tokens())
    with pytest.raises(ValueError, match="num_heads must be a positive int, got 0"):
        TransformerBlock(num_heads=0)
    with pytest.raises(ValueError, match="feed_forward must be a Keras layer"):
        TransformerBlock(num_heads=1, feed_forward="moe")


def test_position_embedding_adds_per_position_vectors():
    layer = PositionEmbedding(max_len=4)
    x = np.zeros((3, 3, 2), "float32")
    out = np_(layer(x))
    table = np_(layer.embeddings)
    np.testing.assert_allclose(out, np.broadcast_to(table[:3], (3, 3, 2)))
    np.testing.assert_allclose(np_(layer(x, start_index=1)), np.broadcast_to(table[1:4], (3, 3, 2)))
    with pytest.raises(ValueError, match="length 5 .* exceeds max_len=4"):
        layer(np.zeros((1, 5, 2), "float32"))


# -- sparse MoE ------------------------------------------------------------------------------
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


# -- serialization ---------------------------------------------------------------------------
def decoder_block():
    return TransformerBlock(num_heads=2, feed_forward=SparseMoE(4, 16, top_k=2, balance="loss_free"),
                            causal=True, cross_attention=True, dropout=0.1, name="decoder_block")


def test_config_round_trips_keep_outputs():
    x, memory = tokens(), tokens(2, 3, 4, seed=2)
    padding = np.array([[True] * 5 + [False], [True] * 6])
    for layer, args in [(decoder_block(), dict(padding_mask=padding, memory=memory)),
                        (TransformerBlock(2, ffn_dim=12, activation="relu"), dict(padding_mask=padding)),
                        (PositionEmbedding(8), {}), (FeedForward(12), {}), (SparseMoE(3, 8, top_k=1), {})]:
        out = np_(layer(x, **args))
        clone = type(layer).from_config(layer.get_config())
        clone(x, **args)
        clone.set_weights(layer.get_weights())
        np.testing.assert_allclose(np_(clone(x, **args)), out, rtol=1e-5, atol=1e-6)
    assert isinstance(TransformerBlock.from_config(decoder_block().get_config()).feed_forward, SparseMoE)


def test_keras_save_load_round_trip_of_a_decoder_stack(tmp_path):
    x_in = keras.Input((6, 8))
    memory_in = keras.Input((3, 4))
    h = x_in + PositionEmbedding(6)(x_in)
    h = decoder_block()(h, memory=memory_in)
    model = keras.Model([x_in, memory_in], h)
    x, memory = tokens(), tokens(2, 3, 4, seed=2)
    moe = model.get_layer("decoder_block").feed_forward
    moe.routing_bias.assign(np.array([0.1, -0.1, 0.0, 0.2], "float32"))
    path = tmp_path / "decoder.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(np_(loaded([x, memory])), np_(model([x, memory])), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np_(loaded.get_layer("decoder_block").feed_forward.routing_bias),
                               [0.1, -0.1, 0.0, 0.2])


# -- incremental (cached) decoding -------------------------------------------------------------
def decode_in_chunks(block, x, memory, memory_mask, chunks, groups=1):
    """Runs `block.call_cached` over `x` (rows, T, d) in chunks of the given sizes; memory per user."""
    cache = block.init_cache(x.shape[0], x.shape[1])
    memory_cache = block.memory_cache(memory) if block.cross_attention else None
    outs, start = [], 0
    for n in chunks:
        out, cache = block.call_cached(x[:, start:start + n], cache, start, memory_cache, memory_mask)
        outs.append(np_(out))
        start += n
    return np.concatenate(outs, axis=1), cache


@pytest.mark.parametrize("dropout", [0.0, 0.1], ids=["dot-product path", "softmax path"])
def test_cached_decoding_equals_the_full_block_at_every_position(dropout):
    # Keras' attention takes a fused path without dropout and an explicit masked softmax with
    # it (inactive at inference): the cache must match both. Chunks of 2 are the beam search's
    # item boundary (last code + BOS); a padded memory tail must stay invisible.
    block = TransformerBlock(num_heads=2, feed_forward=SparseMoE(4, 16, top_k=2), causal=True,
                             cross_attention=True, dropout=dropout)
    x, memory = tokens(3, 7, 8, seed=1), tokens(3, 5, 6, seed=2)
    memory_mask = np.array([[True] * 5, [True] * 2 + [False] * 3, [True] + [False] * 4])
    full = np_(block(x, memory=memory, memory_mask=memory_mask))
    n_weights = len(block.weights)
    cached, cache = decode_in_chunks(block, x, memory, memory_mask, chunks=[1, 2, 1, 3])
    np.testing.assert_allclose(cached, full, atol=1e-5)
    assert len(block.weights) == n_weights  # the same weights, no new ones
    # the cache holds exactly the self-attention keys/values the full layer computes
    h = block.self_attention_norm(x)
    np.testing.assert_allclose(np_(cache["key"]), np_(block.self_attention.key_dense(h)), atol=1e-6)
    # garbage in the padded memory slots changes nothing
    noisy = memory.copy()
    noisy[1, 2:] = 50.0
    np.testing.assert_allclose(decode_in_chunks(block, x, noisy, memory_mask, [3, 4])[0], full, atol=1e-5)


def test_cached_decoding_shares_one_memory_row_among_grouped_rows():
    # Beams of a user: rows 2u and 2u + 1 read memory row u (projected once, never repeated).
    block = TransformerBlock(num_heads=2, ffn_dim=16, causal=True, cross_attention=True)
    x, memory = tokens(2, 5, 8, seed=3), tokens(2, 4, 8, seed=4)
    memory_mask = np.array([[True] * 4, [True, True, False, False]])
    beams = np.stack([x, tokens(2, 5, 8, seed=5)], axis=1).reshape(4, 5, 8)
    expected = np_(block(beams, memory=np.repeat(memory, 2, 0), memory_mask=np.repeat(memory_mask, 2, 0)))
    np.testing.assert_allclose(decode_in_chunks(block, beams, memory, memory_mask, [2, 1, 2])[0], expected,
                               atol=1e-5)


def test_cached_decoding_of_a_self_attention_only_block_and_errors():
    block = TransformerBlock(num_heads=2, ffn_dim=16, causal=True)
    x = tokens(2, 4, 8, seed=6)
    full = np_(block(x))
    np.testing.assert_allclose(decode_in_chunks(block, x, None, None, [1, 1, 2])[0], full, atol=1e-5)
    with pytest.raises(ValueError, match="no cross-attention"):
        block.memory_cache(x)
    with pytest.raises(ValueError, match="needs causal self-attention"):
        TransformerBlock(num_heads=2).init_cache(2, 4)
    with pytest.raises(ValueError, match="build the block"):
        TransformerBlock(num_heads=2, causal=True).init_cache(2, 4)
    decoder = TransformerBlock(num_heads=2, causal=True, cross_attention=True)
    decoder(x, memory=x)
    with pytest.raises(ValueError, match="needs `memory_cache`"):
        decoder.call_cached(x[:, :1], decoder.init_cache(2, 4), 0)

"""Transformer blocks: causality, masks, cross-attention, round trips, cached decoding."""
import keras
import numpy as np
import pytest

from tfrec_onerec.layers.feed_forward import FeedForward
from tfrec_onerec.layers.position_embedding import PositionEmbedding
from tfrec_onerec.layers.sparse_moe import SparseMoE
from tfrec_onerec.layers.transformer import TransformerBlock, attention_mask


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

"""OneRec's encoder-decoder: tokens, loss targets, constrained recommendations, learning, round trips, export."""

import keras
import numpy as np
import pytest
from fresh_process import run_fresh

from tfrec_onerec import models
from tfrec_onerec.data.sessions import POSITIVE_FEATURE, SESSION_FEATURE, SHORT_FEATURE
from tfrec_onerec.export import export_saved_model
from tfrec_onerec.models.generative.onerec import BOS, OneRec, token_offsets

NUM_ITEMS, SESSION = 48, 2
# A hand-made 3-level semantic ID per item: (i // 12, (i // 3) % 4, i % 3) for item ids 1..48.
ITEM_IDS = np.arange(1, NUM_ITEMS + 1)
CODES = np.stack([(ITEM_IDS - 1) // 12, ((ITEM_IDS - 1) // 3) % 4, (ITEM_IDS - 1) % 3], axis=1)


def successor_data(n, seed):
    """Each user's short history is a run of consecutive items; the session is the next two."""
    rng = np.random.default_rng(seed)
    last = rng.integers(4, NUM_ITEMS + 1, n)
    short = np.stack([last - 3, last - 2, last - 1, last], axis=1)
    session = np.stack([(last % NUM_ITEMS) + 1, ((last + 1) % NUM_ITEMS) + 1], axis=1)
    return {"user_id": rng.integers(1, 1000, n), SHORT_FEATURE: short,
            POSITIVE_FEATURE: np.zeros((n, 3), np.int64), SESSION_FEATURE: session}


def small_model(**kwargs):
    config = dict(short_len=4, positive_len=3, session_len=SESSION, dim=32, num_heads=2, ffn_dim=64,
                  num_experts=4, top_k=2, dropout=0.0, beam_size=8, num_results=4, user_buckets=64)
    config.update(kwargs)
    return OneRec(CODES, ITEM_IDS, **config)


def test_tokens_and_next_token_targets_by_hand():
    model = small_model()
    offsets = token_offsets([4, 4, 3])
    assert offsets.tolist() == [2, 6, 10] and model.vocab_size == 13
    tokens = np.asarray(model.session_tokens(np.array([[14, 0]])))
    # item 14 -> codes (1, 0, 1) -> tokens (3, 6, 11); the padding item -> padding tokens
    assert tokens.tolist() == [[BOS, 3, 6, 11, 0, 0, 0, 0]]
    targets, weights = model.next_token_targets(np.array([[14, 1]]))
    # item 1 -> codes (0, 0, 0) -> tokens (2, 6, 10); the BOS after item 14 is not a target
    assert np.asarray(targets).tolist() == [[3, 6, 11, BOS, 2, 6, 10, 0]]
    assert np.asarray(weights).tolist() == [[1, 1, 1, 0, 1, 1, 1, 0]]
    assert models.get("onerec") is OneRec


def test_recommendations_are_valid_items_without_repeats():
    model = small_model()
    features = successor_data(16, seed=3)
    model(features)
    found = model.recommend(features)
    items, scores = np.asarray(found["item_ids"]), np.asarray(found["scores"])
    assert items.shape == (16, 4, SESSION) and scores.shape == (16, 4)
    assert set(items.ravel()) <= set(ITEM_IDS)
    assert all(len(set(session)) == SESSION for session in items.reshape(-1, SESSION))
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    model = small_model()
    train = successor_data(3000, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(train, train[SESSION_FEATURE], batch_size=64, epochs=6, verbose=0)
    return model, history


def test_learns_the_next_session_far_beyond_popularity(trained):
    model, history = trained
    assert history.history["loss"][-1] < 0.3 * history.history["loss"][0]
    test = successor_data(200, seed=1)
    best = np.asarray(model.recommend(test)["item_ids"])[:, 0, :]
    exact = np.mean(np.all(best == test[SESSION_FEATURE], axis=1))
    # Popularity (or any user-blind answer) gets about 1/48 of the first items right.
    assert exact > 0.8, exact
    for load in model.expert_load():
        assert load.shape == (4,) and np.isclose(load.sum(), 1.0)


def test_config_and_keras_round_trips_keep_recommendations(trained, tmp_path):
    model, _ = trained
    test = successor_data(8, seed=2)
    expected = np.asarray(model.recommend(test)["item_ids"])
    clone = OneRec.from_config(model.get_config())
    clone(test)
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(np.asarray(clone.recommend(test)["item_ids"]), expected)
    path = tmp_path / "onerec.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(np.asarray(loaded.recommend(test)["item_ids"]), expected)


def test_recommend_signature_serves_in_a_process_without_the_package(trained, tmp_path):
    model, _ = trained
    test = successor_data(5, seed=4)
    inputs = {k: v for k, v in test.items() if k != SESSION_FEATURE}
    path = export_saved_model(model, tmp_path / "onerec")
    assert path.name == "1" and (path / "assets.extra" / "tf_serving_warmup_requests").is_file()
    served = run_fresh("""
        import json, sys
        import numpy as np
        import tensorflow as tf
        payload = json.loads(sys.stdin.read())
        recommend = tf.saved_model.load(payload["path"]).signatures["recommend"]
        out = recommend(**{k: tf.constant(np.array(v, np.int64)) for k, v in payload["inputs"].items()})
        print(json.dumps({"items": out["item_ids"].numpy().tolist()}))
    """, {"path": str(path), "inputs": {k: v.tolist() for k, v in inputs.items()}})
    np.testing.assert_array_equal(served["items"], np.asarray(model.recommend(inputs)["item_ids"]))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="item ids must be >= 1"):
        OneRec(CODES, ITEM_IDS - 1)
    with pytest.raises(ValueError, match=r"num_results \(9\) must be <= beam_size \(8\)"):
        small_model(num_results=9)
    with pytest.raises(ValueError, match="aligned with item_ids"):
        OneRec(CODES, ITEM_IDS[:5])


def test_history_items_are_embedded_by_their_codes_plus_their_own_id():
    model = small_model()
    model(successor_data(2, seed=5))
    codes = np.asarray(model.token_embedding.embeddings)
    own = np.asarray(model.item_embedding.embeddings)
    # item 14 -> tokens (3, 6, 11); ids 0 (padding) and 99 (unknown) embed as zeros.
    embedded = np.asarray(model.embed_items(np.array([[14, 0, 99]])))
    np.testing.assert_allclose(embedded[0, 0], codes[3] + codes[6] + codes[11] + own[14], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(embedded[0, 1:], 0.0)
    assert model.get_config()["item_id_embedding"] is True

    codes_only = small_model(item_id_embedding=False)
    codes_only(successor_data(2, seed=5))
    assert codes_only.item_embedding is None
    assert OneRec.from_config(codes_only.get_config()).item_id_embedding is False
    table = np.asarray(codes_only.token_embedding.embeddings)
    np.testing.assert_allclose(np.asarray(codes_only.embed_items(np.array([[14]])))[0, 0],
                               table[3] + table[6] + table[11], rtol=1e-5, atol=1e-6)
    assert codes_only.count_params() == model.count_params() - own.size


# -- the decoder's key/value cache ---------------------------------------------------------------
def random_users(n, seed, short_len=4, positive_len=3):
    """Random histories with random amounts of padding (some users have none at all)."""
    rng = np.random.default_rng(seed)
    short = rng.integers(1, NUM_ITEMS + 1, (n, short_len)) * (rng.random((n, short_len)) < 0.7)
    positive = rng.integers(1, NUM_ITEMS + 1, (n, positive_len)) * (rng.random((n, positive_len)) < 0.5)
    return {"user_id": rng.integers(0, 1000, n), SHORT_FEATURE: short, POSITIVE_FEATURE: positive}


def test_decode_step_logits_equal_the_full_decode_at_every_position():
    keras.utils.set_random_seed(5)
    model = small_model(session_len=3, dropout=0.1)
    users = random_users(4, seed=6)
    users[POSITIVE_FEATURE][0] = 0  # a user whose whole positive pathway is padding
    model({**users, SESSION_FEATURE: np.ones((4, 3), np.int64)})
    memory, mask = model.encode(users)
    sessions = np.random.default_rng(7).permutation(NUM_ITEMS)[:12].reshape(4, 3) + 1
    tokens = np.asarray(model.session_tokens(sessions))  # [BOS, c, c, c] x 3
    full = np.asarray(model.decode(tokens, memory, mask))
    # Two beams per user share the user's memory cache; feed the tokens as the beam search
    # does: one per step, the last code and the next BOS together at an item boundary.
    beams = np.repeat(tokens, 2, axis=0)
    cache = model.init_cache(memory, mask)
    cache = {**cache, "length": np.repeat(cache["length"], 2, 0),
             "self": [{k: np.repeat(v, 2, 0) for k, v in layer.items()} for layer in cache["self"]]}
    chunks, start = [], 0
    for n in [1, 1, 1, 2, 1, 1, 2, 1, 1, 1]:
        logits, cache = model.decode_step(beams[:, start:start + n], cache)
        chunks.append(np.asarray(logits))
        start += n
    np.testing.assert_allclose(np.concatenate(chunks, axis=1), np.repeat(full, 2, axis=0), atol=1e-5)
    assert np.asarray(cache["length"]).tolist() == [12] * 8
    with pytest.raises(ValueError, match=r"max_length must be in \[1, 12\]"):
        model.init_cache(memory, mask, max_length=13)


@pytest.fixture(scope="module")
def untrained_sessions_of_three():
    keras.utils.set_random_seed(8)
    model = small_model(session_len=3)
    users = random_users(12, seed=9)
    model({**users, SESSION_FEATURE: np.ones((12, 3), np.int64)})
    return model, users


@pytest.mark.parametrize("session_len, beam_size", [
    (1, 4), (3, 12),
    pytest.param(1, 12, marks=pytest.mark.slow), pytest.param(3, 4, marks=pytest.mark.slow)])
def test_recommend_with_and_without_cache_agree(untrained_sessions_of_three, session_len, beam_size):
    model, users = untrained_sessions_of_three
    found = {use_cache: model.recommend(users, beam_size=beam_size, num_results=4, session_len=session_len,
                                        use_cache=use_cache) for use_cache in (True, False)}
    np.testing.assert_array_equal(np.asarray(found[True]["item_ids"]), np.asarray(found[False]["item_ids"]))
    np.testing.assert_allclose(np.asarray(found[True]["scores"]), np.asarray(found[False]["scores"]),
                               rtol=1e-5, atol=1e-5)
    assert np.asarray(found[True]["item_ids"]).shape == (12, 4, session_len)

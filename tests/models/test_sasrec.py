"""SASRec: causality, the loss by hand, learning a known answer, round trips, export (MovieLens-100K:
tests/test_readme_claims.py)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrec_onerec import export, models
from tfrec_onerec.data import sequences
from tfrec_onerec.models.sequence.next_item import evaluate_full_ranking
from tfrec_onerec.models.sequence.sasrec import SASRec

from fresh_process import run_fresh
from successor_world import MAX_LEN, NUM_ITEMS, successor_events


@pytest.fixture(scope="module")
def successor_data():
    return sequences.leave_one_out(successor_events(), NUM_ITEMS, max_len=MAX_LEN)


@pytest.fixture(scope="module")
def trained(successor_data):
    keras.utils.set_random_seed(0)
    model = models.get("sasrec")(successor_data.spec(embedding_dim=32), num_blocks=1, num_heads=2, dropout=0.1)
    model.compile(optimizer=keras.optimizers.Adam(5e-3))
    history = model.fit(successor_data.train_dataset(batch_size=64), epochs=8, verbose=0, shuffle=False)
    return model, history.history["loss"]


def np_(x):
    return keras.ops.convert_to_numpy(x)


def small_model(**kwargs):
    return SASRec(sequences.next_item_spec(NUM_ITEMS, MAX_LEN, embedding_dim=16), **kwargs)


def test_registered_as_sasrec():
    assert models.get("sasrec") is SASRec
    assert "sasrec" in models.list()


def test_learns_successors_and_beats_popularity(trained, successor_data):
    model, losses = trained
    assert losses[-1] < losses[0] / 3
    test = evaluate_full_ranking(model.score_items(successor_data.inputs("test")), successor_data)
    popularity = evaluate_full_ranking(successor_data.item_counts, successor_data)
    assert test["users"] == 500
    assert test["recall@10"] > 0.95 and test["ndcg@10"] > 0.9
    assert popularity["recall@10"] < 0.35  # about 10 / (NUM_ITEMS - history): no sequence signal


def test_hidden_states_are_causal_and_zero_on_padding():
    model = small_model(num_blocks=2, num_heads=2)
    ids = np.array([[3, 4, 5, 6, 0, 0, 0, 0, 0, 0, 0, 0]] * 2)
    ids[1, 3] = 40  # change the 4th item only
    hidden = np_(model({"item_seq": ids}))
    assert hidden.shape == (2, MAX_LEN, 16)
    np.testing.assert_allclose(hidden[0, :3], hidden[1, :3], atol=1e-5)  # earlier positions unchanged
    assert not np.allclose(hidden[0, 3], hidden[1, 3])
    np.testing.assert_array_equal(hidden[:, 4:], 0.0)
    # the user representation is the last real position; an empty history is finite
    rep = np_(model.user_representation({"item_seq": np.concatenate([ids, np.zeros((1, MAX_LEN), int)])}))
    np.testing.assert_allclose(rep[:2], hidden[:, 3], atol=1e-6)
    assert np.isfinite(rep).all()


def test_loss_is_full_softmax_cross_entropy_over_real_targets():
    model = small_model(num_blocks=1, dropout=0.0)
    ids = np.array([[3, 4, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0], [7, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    targets = np.array([[4, 5, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0], [8, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]])  # 99: OOV
    hidden = model({"item_seq": ids})
    loss = float(np_(model.compute_loss(y=targets, y_pred=hidden)))
    logits = np_(hidden) @ np_(model.item_embeddings()).T  # (2, L, NUM_ITEMS), column j = item j + 1
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    terms = [log_probs[0, 0, 3], log_probs[0, 1, 4], log_probs[0, 2, 5], log_probs[1, 0, 7]]
    np.testing.assert_allclose(loss, -np.mean(terms), rtol=1e-5)


def test_recommend_excludes_history_padding_and_oov(trained):
    model, _ = trained
    history = np.zeros((3, MAX_LEN), np.int64)
    history[0, :4] = [10, 11, 12, 13]
    history[1, :3] = [58, 59, -5]  # an OOV id in the history
    history[2, :2] = [5, 1000]
    item_ids, scores = (np_(t) for t in model.recommend({"item_seq": history}, top_n=NUM_ITEMS - 2))
    assert item_ids.shape == (3, NUM_ITEMS - 2) and item_ids.dtype == np.int64
    # row 0 has 4 known items in its history: only 56 items are left, the last 2 slots are empty
    np.testing.assert_array_equal(item_ids[0, -2:], 0)
    assert np.isneginf(scores[0, -2:]).all() and np.isfinite(scores[0, :-2]).all()
    assert ((item_ids[1:] >= 1) & (item_ids[1:] <= NUM_ITEMS)).all()  # rows 1, 2: 2 known items, 1 OOV
    for row, items in zip(history, item_ids):
        items = items[items > 0]
        assert ((items >= 1) & (items <= NUM_ITEMS)).all()
        assert not set(items.tolist()) & set(row.tolist())
        assert len(set(items.tolist())) == len(items)
    assert item_ids[0, 0] == 14  # the successor of the last item
    assert (scores[:, 1:] <= scores[:, :-1]).all()
    # same ranking as the scores with the history masked out
    full = np_(model.item_scores({"item_seq": history}))
    full[0, history[0, :4] - 1] = -np.inf
    np.testing.assert_array_equal(item_ids[0, :10], np.argsort(-full[0], kind="stable")[:10] + 1)


def test_config_and_keras_round_trips(trained, tmp_path):
    model, _ = trained
    batch = {"item_seq": np.array([[1, 2, 3] + [0] * (MAX_LEN - 3), [50] * MAX_LEN])}
    clone = SASRec.from_config(model.get_config())
    clone.build()
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(np_(clone(batch)), np_(model(batch)), rtol=1e-5, atol=1e-6)
    path = tmp_path / "sasrec.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is SASRec and loaded.num_blocks == 1
    assert SASRec.from_config(small_model(top_n=7).get_config()).top_n == 7
    np.testing.assert_allclose(np_(loaded.item_scores(batch)), np_(model.item_scores(batch)), rtol=1e-5,
                               atol=1e-5)


def test_bad_arguments_and_inputs_are_named():
    from tfrec_onerec.features import Feature, FeatureSpec

    two = FeatureSpec([Feature("a", "sequence", vocab_size=5, max_len=3), Feature("b", "sequence", vocab_size=5,
                                                                                  max_len=3)])
    with pytest.raises(ValueError, match="pass sequence_feature; the spec has sequence features \\['a', 'b'\\]"):
        SASRec(two)
    with pytest.raises(ValueError, match="sequence_feature 'c' is not a sequence feature"):
        SASRec(two, sequence_feature="c")
    with pytest.raises(ValueError, match="num_heads=3 must divide the embedding_dim 16"):
        small_model(num_heads=3)
    for bad in (0, 61, 2.5):
        with pytest.raises(ValueError, match=rf"top_n must be an integer in 1..60 \(the number of items\), got {bad}"):
            small_model(top_n=bad)
    model = small_model()
    with pytest.raises(ValueError, match="Missing feature 'item_seq'"):
        model({"items": np.ones((1, MAX_LEN), np.int64)})
    with pytest.raises(ValueError, match="'item_seq'.*max_len=12"):
        model({"item_seq": np.ones((1, 5), np.int64)})


def test_exported_recommend_runs_without_tfrec_onerec(trained, successor_data, tmp_path):
    model, _ = trained
    path = export.export_saved_model(model, tmp_path / "sasrec")
    assert path == tmp_path / "sasrec" / "1"
    histories = successor_data.inputs("test")[:4]
    expected_ids, expected_scores = (np_(t) for t in model.recommend({"item_seq": histories}))
    assert expected_ids.shape == (4, model.top_n) == (4, 10)
    lists = [[int(i) for i in row if i] for row in histories]
    out = run_fresh("""
        import json, sys
        import numpy as np
        import tensorflow as tf
        payload = json.loads(sys.stdin.read())
        loaded = tf.saved_model.load(payload["path"])
        raw = loaded.signatures["recommend"](item_seq=tf.constant(np.array(payload["histories"], np.int64)))
        examples = [tf.train.Example(features=tf.train.Features(feature={"item_seq": tf.train.Feature(
            int64_list=tf.train.Int64List(value=row))})).SerializeToString() for row in payload["lists"]]
        parsed = loaded.signatures["serving_default"](examples=tf.constant(examples))
        every = loaded.signatures["score_items"](item_seq=tf.constant(np.array(payload["histories"], np.int64)))
        print(json.dumps({"signatures": sorted(loaded.signatures), "ids": raw["item_ids"].numpy().tolist(),
                          "scores": raw["scores"].numpy().tolist(),
                          "example_ids": parsed["item_ids"].numpy().tolist(),
                          "every": every["scores"].numpy().tolist()}))
    """, {"path": str(path), "histories": histories.tolist(), "lists": lists})
    assert out["signatures"] == ["recommend", "retrieve", "score_items", "serving_default"]
    np.testing.assert_allclose(out["every"], np_(model.item_scores({"item_seq": histories})), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["ids"], expected_ids)
    np.testing.assert_array_equal(out["example_ids"], expected_ids)
    np.testing.assert_allclose(out["scores"], expected_scores, rtol=1e-5)
    assert [row[0] for row in out["ids"]] == successor_data.targets("test")[:4].tolist()
    with pytest.raises(FileExistsError):
        export.export_saved_model(model, tmp_path / "sasrec", version=1)


def test_export_has_a_warmup_request_per_signature_that_replays(trained, tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    model, _ = trained
    path = export.export_saved_model(model, tmp_path / "sasrec", model_name="sasrec")
    warmup = path / "assets.extra" / "tf_serving_warmup_requests"
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(warmup))]
    requests = {log.predict_log.request.model_spec.signature_name: log.predict_log.request for log in logs}
    assert sorted(requests) == ["recommend", "retrieve", "score_items", "serving_default"] and len(logs) == 4
    assert all(r.model_spec.name == "sasrec" for r in requests.values())
    history = tf.make_ndarray(requests["recommend"].inputs["item_seq"])
    assert history.shape == (1, MAX_LEN) and history.dtype == np.int64
    loaded = tf.saved_model.load(str(path))
    results = {name: loaded.signatures[name](**{k: tf.constant(tf.make_ndarray(v)) for k, v in r.inputs.items()})
               for name, r in requests.items()}
    # the requests hold the same one-item history; the successor of item 1 comes first
    assert int(np.argmax(results["score_items"]["scores"].numpy()[0])) + 1 == 2
    for name in ("recommend", "serving_default", "retrieve"):  # retrieve's warmup asks for top_n items
        ids = results[name]["item_ids"].numpy()
        assert ids.shape == (1, 10) and ids[0, 0] == 2 and 1 not in ids
    np.testing.assert_array_equal(results["recommend"]["item_ids"], results["serving_default"]["item_ids"])


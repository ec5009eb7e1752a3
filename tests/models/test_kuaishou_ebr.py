"""Kuaishou-EBR: clusters from training rows, prompted encoders, the in-cluster and intent losses by
hand, the D'Hondt quota merge, learning a known answer, and an export that retrieves any k
without the package."""
import keras
import numpy as np
import pytest

from tfrec_onerec import export, families, models
from tfrec_onerec.data import sequences
from tfrec_onerec.models.sequence.kuaishou_ebr import cluster_items

from fresh_process import run_fresh
from successor_world import MAX_LEN, NUM_ITEMS, successor_split, full_ranking_and_popularity


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def three_clusters():
    return np.arange(NUM_ITEMS) * 3 // NUM_ITEMS  # items 1..20 -> 0, 21..40 -> 1, 41..60 -> 2


@pytest.fixture(scope="module")
def successor_data():
    return successor_split(300)


@pytest.fixture(scope="module")
def trained(successor_data):
    keras.utils.set_random_seed(0)
    windows = np.concatenate([successor_data.train_inputs, successor_data.train_targets], axis=1)
    model = models.get("kuaishou_ebr")(successor_data.spec(embedding_dim=32),
                                       item_clusters=cluster_items(windows, NUM_ITEMS, 4))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(successor_data.train_dataset(batch_size=64), epochs=6, verbose=0)
    return model, history.history["loss"]


def small_model(**kwargs):
    keras.utils.set_random_seed(5)
    spec = sequences.next_item_spec(NUM_ITEMS, MAX_LEN, embedding_dim=8)
    model = models.get("kuaishou_ebr")(spec, item_clusters=three_clusters(), dropout=0.0, **kwargs)
    model({"item_seq": np.ones((1, MAX_LEN), np.int64)})
    return model


def test_items_that_share_users_share_a_cluster():
    # items 1-6 only ever appear together, and so do items 7-12
    rng = np.random.default_rng(0)
    windows = np.array([rng.permutation(np.arange(1, 7) + 6 * (row % 2))[:4] for row in range(40)])
    clusters = cluster_items(windows, 12, num_clusters=2)
    assert len(set(clusters[:6])) == 1 and len(set(clusters[6:])) == 1 and clusters[0] != clusters[6]


def test_each_cluster_prompts_every_token_of_one_shared_encoder():
    model = small_model()
    ids = np.zeros((2, MAX_LEN), np.int64)
    ids[0, :3], ids[1, :5] = [4, 30, 50], [1, 2, 3, 4, 5]
    model.prompts.assign(np.random.default_rng(1).normal(size=(3, 8)))
    hidden = numpy(model({"item_seq": ids}))
    assert hidden.shape == (2, MAX_LEN, 3, 8)
    mask = ids != 0
    for k in range(3):
        expected = model.encode(model.tokens(ids) * numpy(model.prompts)[k], mask)
        np.testing.assert_allclose(hidden[:, :, k], numpy(expected), rtol=1e-5, atol=1e-6)
    assert not np.allclose(hidden[:, :, 0], hidden[:, :, 1])


def test_loss_is_in_cluster_softmax_plus_weighted_intent_by_hand():
    model = small_model(intent_weight=0.5)
    ids = np.zeros((2, MAX_LEN), np.int64)
    ids[0, :3], ids[1, :2] = [4, 30, 50], [7, 8]
    targets = np.zeros_like(ids)
    targets[0, :3], targets[1, :2] = [30, 50, 2], [8, 45]
    hidden = numpy(model({"item_seq": ids}))
    table = numpy(model.item_embeddings())
    clusters = three_clusters()
    kernel, bias = (numpy(w) for w in model.intent.weights)
    losses = []
    for row, t in zip(*np.nonzero(targets)):
        item = targets[row, t] - 1
        k = clusters[item]
        members = np.flatnonzero(clusters == k)
        logits = hidden[row, t, k] @ table[members].T
        retrieval = np.log(np.exp(logits).sum()) - logits[list(members).index(item)]
        intent_logits = hidden[row, t].mean(axis=0) @ kernel + bias
        intent = np.log(np.exp(intent_logits).sum()) - intent_logits[k]
        losses.append(retrieval + 0.5 * intent)
    y_pred = model({"item_seq": ids})
    assert float(model.compute_loss({"item_seq": ids}, targets, y_pred)) == pytest.approx(np.mean(losses), rel=1e-5)


@pytest.mark.parametrize("alpha, shares, quotas", [
    (1.0, [0.5, 0.32, 0.18], [5, 3, 2]),  # D'Hondt: 0.5, .32, .25, .18, .167, .16, .125, .107, .1, .09
    (0.0, [0.5, 0.32, 0.18], [4, 3, 3]),  # alpha 0: equal shares (ties go to the lower cluster)
    (2.0, [0.5, 0.4, 0.1], [6, 4, 0]),    # shares .5^2 : .4^2 : .1^2 = .595 : .381 : .024
])
def test_merge_fills_cluster_quotas_by_dhondt_in_score_order(alpha, shares, quotas):
    model = small_model(alpha=alpha)
    model.intent.set_weights([np.zeros((8, 3), np.float32), np.log(np.array(shares, np.float32))])
    history = np.zeros((1, MAX_LEN), np.int64)
    history[0, :2] = [3, 44]
    ids, _ = (numpy(t) for t in model.recommend({"item_seq": history}, top_n=10))
    clusters = three_clusters()[ids[0] - 1]
    assert np.bincount(clusters, minlength=3).tolist() == quotas
    assert 3 not in ids and 44 not in ids  # the history takes no place of a quota
    # within a cluster, the order is the cluster's user embedding's scores
    user = numpy(model.user_representation({"item_seq": history}))[0]
    table = numpy(model.item_embeddings())
    for k in range(3):
        chosen = ids[0][clusters == k]
        scores = user[k] @ table[chosen - 1].T
        assert np.all(np.diff(scores) <= 1e-6)
        rest = np.setdiff1d(np.flatnonzero(three_clusters() == k) + 1, np.r_[chosen, 3, 44])
        if len(chosen):
            assert scores.min() >= (user[k] @ table[rest - 1].T).max() - 1e-6


def test_learns_successors_and_beats_popularity(trained, successor_data):
    model, losses = trained
    assert losses[-1] < losses[0] / 2
    test, popularity = full_ranking_and_popularity(model, successor_data)
    assert test["recall@10"] > 0.9 and popularity["recall@10"] < 0.35


def test_round_trips_and_retrieves_any_k_without_the_package(trained, successor_data, tmp_path):
    model, _ = trained
    histories = successor_data.inputs("test")[:4]
    model.save(tmp_path / "ebr.keras")
    loaded = keras.models.load_model(tmp_path / "ebr.keras")
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    np.testing.assert_allclose(numpy(loaded.item_scores({"item_seq": histories})),
                               numpy(model.item_scores({"item_seq": histories})), rtol=1e-5, atol=1e-6)
    expected = {k: numpy(model.recommend({"item_seq": histories}, top_n=k)[0]) for k in (3, 25)}

    path = export.export_saved_model(model, tmp_path / "ebr")
    out = run_fresh("""
        import json, sys
        import numpy as np
        import tensorflow as tf
        payload = json.loads(sys.stdin.read())
        retrieve = tf.saved_model.load(payload["path"]).signatures["retrieve"]
        history = tf.constant(np.array(payload["histories"], np.int64))
        found = {k: retrieve(item_seq=history, k=tf.constant(k))["item_ids"].numpy().tolist() for k in (3, 25)}
        try:
            retrieve(item_seq=history, k=tf.constant(61))
            error = ""
        except tf.errors.InvalidArgumentError as e:
            error = e.message
        print(json.dumps({"found": found, "error": error}))
    """, {"path": str(path), "histories": histories.tolist()})
    for k in (3, 25):
        np.testing.assert_array_equal(out["found"][str(k)], expected[k])
    assert "k must be at most 60, the number of items" in out["error"]


def test_family_clusters_the_training_rows():
    family = families.get("next_item")
    data = family.prepare("simulator", {"simulator_users": 300, "simulator_items": 60, "max_len": 10})
    read = []
    columns = data.columns
    data.columns = lambda split: read.append(split) or columns(split)
    given = family.model_hyperparameters(models.get("kuaishou_ebr"), data, {"num_clusters": 3, "dropout": 0.1})
    assert read == ["train"]  # the clusters never see validation or test rows
    train = columns("train")
    expected = cluster_items(np.concatenate([train["item_seq"], train["next_item_seq"]], axis=1), 60, 3)
    assert given == {"dropout": 0.1, "item_clusters": expected.tolist()}
    assert family.model_hyperparameters(models.get("sasrec"), data, {"dropout": 0.1}) == {"dropout": 0.1}


def test_refuses_bad_clusters():
    spec = sequences.next_item_spec(NUM_ITEMS, MAX_LEN, embedding_dim=8)
    with pytest.raises(ValueError, match="pass item_clusters"):
        models.get("kuaishou_ebr")(spec)
    with pytest.raises(ValueError, match="item_clusters has 3 entries; .* has 60 items"):
        models.get("kuaishou_ebr")(spec, item_clusters=[0, 1, 2])
    with pytest.raises(ValueError, match=r"0..K-1 with no gap; got the ids \[0, 2\]"):
        models.get("kuaishou_ebr")(spec, item_clusters=[0] * 30 + [2] * 30)

"""LSIR (a learned social graph for inactive users): its parts by hand, the data with a faulty
graph, learning, what the learned graph removes, round trips, and an export served without
the package."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrec_onerec import families
from tfrec_onerec.data.social_interactions import SocialDataConfig, edge_quality, social_interactions
from tfrec_onerec.families.social_graph import INACTIVE, SEEN, TARGETS, USER, multi_target_metrics
from tfrec_onerec.models.kuaishou.lsir import (LSIR, first_items, masked_softmax, neighbour_table,
                                               top_share_mask)
from tests.fresh_process import run_fresh

FAMILY = families.get("social_graph")
WORLD = {"simulator_users": 1500, "simulator_items": 300, "seed": 0}


# -- parts by hand ------------------------------------------------------------------------------
def test_tables_by_hand():
    np.testing.assert_array_equal(neighbour_table([1, 1, 2], [2, 3, 3], 4),
                                  [[0, 0], [2, 3], [1, 3], [1, 2], [0, 0]])
    np.testing.assert_array_equal(neighbour_table([1, 1, 2], [2, 3, 3], 3, width=1), [[0], [2], [1], [1]])
    np.testing.assert_array_equal(first_items([1, 1, 1, 2], [5, 6, 7, 8], 3, 2), [[0, 0], [5, 6], [8, 0], [0, 0]])


def test_masks_and_softmax_by_hand():
    scores = tf.constant([[0.1, 0.9, 0.5, 0.0], [0.3, 0.2, 0.1, 0.0]])
    mask = tf.constant([[True, True, True, False], [True, True, False, False]])
    kept = top_share_mask(scores, mask, tf.constant([2.0, 0.0])).numpy()
    np.testing.assert_array_equal(kept, [[False, True, True, False], [False, False, False, False]])
    weights = masked_softmax(tf.constant([[0.0, np.log(2.0), 5.0], [1.0, 2.0, 3.0]]),
                             tf.constant([[True, True, False], [False, False, False]])).numpy()
    np.testing.assert_allclose(weights, [[1 / 3, 2 / 3, 0.0], [0.0, 0.0, 0.0]], rtol=1e-6)


def test_multi_target_metrics_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])  # items 1..5
    # item 1 is seen: the ranking is 2, 3, 4, 5; targets 2 and 5; at 2: one hit of two
    found = multi_target_metrics(scores, np.array([[2, 5]]), np.array([[1]]), ks=(2, 4))
    assert found["recall@2"] == pytest.approx(0.5)
    assert found["ndcg@2"] == pytest.approx(1.0 / (1.0 + 1.0 / np.log2(3)))
    assert found["recall@4"] == pytest.approx(1.0)
    assert found["ndcg@4"] == pytest.approx((1.0 + 1.0 / np.log2(5)) / (1.0 + 1.0 / np.log2(3)))
    # one target, padded
    assert multi_target_metrics(scores, np.array([[3, 0]]), np.array([[0]]), ks=(2,))["recall@2"] == 0.0


def test_edge_quality_by_hand():
    found = edge_quality([1, 3, 2, 2], [2, 1, 3, 2], [1, 1, 4], [2, 3, 5], num_users=5)
    # links {1-2, 1-3, 2-3} (the self-link dropped): two true of three; two of the three true found
    assert found == {"edges": 3, "precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3)}


def tiny_model(**hyperparameters):
    """Users 1..5 (user 1 linked to 2, 3, 4), items 1..3, candidates 2..5, a similarity head
    that is the identity (so the similarity of two users is the cosine of their ``z``)."""
    graph = {"train_users": np.array([1, 1, 2, 3, 4, 5]), "train_items": np.array([1, 2, 1, 2, 3, 3]),
             "neighbours": neighbour_table([1, 1, 1], [2, 3, 4], 5), "candidates": np.array([2, 3, 4, 5])}
    model = LSIR(num_users=5, num_items=3, num_interactions=6, neighbour_width=3, num_candidates=4, graph=graph,
                 embedding_dim=2, inactive_items=1, **hyperparameters)
    model.build()
    model.similarity.set_weights([np.eye(2, dtype=np.float32), np.zeros(2, np.float32)])
    return model


Z = tf.constant([[0.0, 0.0], [1.0, 0.0], [1.0, 0.1], [0.9, 0.4], [0.0, 1.0], [1.0, 0.0]])  # users 0..5


def links_of_user_1(model, activity):
    return {k: v.numpy() for k, v in model.learned_links(
        Z[1:2], tf.constant([1], tf.int64), tf.gather(model.neighbours, [1]), tf.constant([activity]), Z).items()}


def test_an_active_user_drops_the_least_similar_link_and_gains_none():
    model = tiny_model(max_delete=0.34, delete_scale=1.0, addition_pool=10, max_add=0.2, add_scale=1.0)
    # activity 100: removal share min(0.34, tanh(100)) = 0.34: keeps floor(3 x 0.66) = 1, the most similar (user 2)
    links = links_of_user_1(model, 100.0)
    np.testing.assert_array_equal(links["kept"], [[True, False, False]])
    np.testing.assert_allclose(links["kept_weights"], [[1.0, 0.0, 0.0]])
    assert not links["added_mask"].any()  # sigmoid(-100) x 10 < 1 link


def test_an_inactive_user_keeps_its_links_and_gains_the_most_similar_users():
    model = tiny_model(max_delete=0.34, delete_scale=1.0, addition_pool=10, max_add=0.2, add_scale=1.0)
    links = links_of_user_1(model, 0.0)
    np.testing.assert_array_equal(links["kept"], [[True, True, True]])  # tanh(0) = 0: nothing removed
    cosine = [float(np.dot(Z[1], Z[v]) / np.linalg.norm(Z[v])) for v in (2, 3, 4)]
    np.testing.assert_allclose(links["kept_weights"][0], np.exp(cosine) / np.exp(cosine).sum(), rtol=1e-5)
    # budget floor(10 x min(0.2, sigmoid(0))) = 2: user 5 (identical) then user 2; never itself
    np.testing.assert_array_equal(links["added"], [[5, 2]])
    assert links["added_mask"].all()
    expected = np.exp([1.0, cosine[0]]) / np.exp([1.0, cosine[0]]).sum()
    np.testing.assert_allclose(links["added_weights"][0], expected, rtol=1e-5)


def test_a_pseudo_inactive_user_keeps_the_first_items_and_the_links():
    model = tiny_model()
    e_users, e_items = model.encode()
    rows = model.pseudo_inactive_rows(tf.constant([1, 2], tf.int64), e_items)
    np.testing.assert_allclose(rows["h"].numpy()[0], model.item_embedding.numpy()[1])  # its first item
    np.testing.assert_allclose(rows["e"].numpy()[0], e_items.numpy()[1], rtol=1e-6)
    np.testing.assert_array_equal(rows["neighbours"].numpy()[0], [2, 3, 4])
    np.testing.assert_array_equal(rows["activity"].numpy(), [1.0, 1.0])
    assert set(model({USER: tf.constant([1, 2], tf.int64)}, training=True)) == {"scores", "mimic_scores"}
    assert set(model({USER: tf.constant([1, 2], tf.int64)})) == {"scores"}


def test_the_encoder_is_light_gcn_by_hand():
    model = tiny_model(num_layers=1)
    e_users, e_items = (t.numpy() for t in model.encode())
    users, items = model.user_embedding.numpy(), model.item_embedding.numpy()
    # user 1 has items 1, 2; item 1 has users 1, 2 and item 2 users 1, 3: degrees 2, 3 / 2
    layer = items[1] / np.sqrt(2 * 2) + items[2] / np.sqrt(2 * 2)
    np.testing.assert_allclose(e_users[1], (users[1] + layer) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(e_users[0], users[0] / 2, rtol=1e-5, atol=1e-6)  # no edges: its layer is 0


def test_bad_input_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="graph sizes must be >= 1"):
        LSIR(num_users=0, num_items=3, num_interactions=1, neighbour_width=1, num_candidates=1)
    with pytest.raises(ValueError, match="edge_keep"):
        LSIR(num_users=2, num_items=3, num_interactions=1, neighbour_width=1, num_candidates=1, edge_keep=0.0)
    model = tiny_model()
    with pytest.raises(ValueError, match=r"neighbours has shape \(6, 2\)"):
        model.set_graph([1, 1, 2, 3, 4, 5], [1, 2, 1, 2, 3, 3], np.zeros((6, 2)), [2, 3, 4, 5])
    with pytest.raises(ValueError, match="need the positive item"):
        model.compute_loss({USER: tf.constant([1], tf.int64)}, None)


# -- the data --------------------------------------------------------------------------------------
def test_the_observed_graph_has_the_stated_faults_and_nothing_held_out_is_trained_on():
    config = SocialDataConfig(num_users=400, num_items=100, seed=3, missing_rate=0.25, noise_rate=0.5)
    data = social_interactions(config)
    truth = set(zip(data.true_src.tolist(), data.true_dst.tolist()))
    observed = list(zip(data.observed_src.tolist(), data.observed_dst.tolist()))
    noise = [link for link, bad in zip(observed, data.observed_noise) if bad]
    assert len(noise) == round(0.5 * len(truth)) and not set(noise) & truth
    kept_true = [link for link, bad in zip(observed, data.observed_noise) if not bad]
    assert set(kept_true) <= truth and len(set(observed)) == len(observed)
    assert abs(1 - len(kept_true) / len(truth) - 0.25) < 0.05
    assert all(a < b for a, b in observed)
    # held-out items are not training items of their user; inactive users keep 3 items at most
    trained = set(zip(data.train_users.tolist(), data.train_items.tolist()))
    for targets in (data.valid_targets, data.test_targets):
        assert not any((u, i) in trained for u, items in targets.items() for i in items)
    degree = data.training_degree()
    assert degree[data.inactive].max() <= config.inactive_items and degree[~data.inactive][1:].max() > 3
    assert abs(data.inactive.sum() / len(data.test_targets) - config.inactive_fraction) < 0.01
    again = social_interactions(config)
    np.testing.assert_array_equal(again.observed_src, data.observed_src)  # deterministic


# -- learning --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = FAMILY.prepare("simulator", WORLD, directory=tmp_path_factory.mktemp("social") / "data")
    config = FAMILY.train_config(FAMILY.model_class("lsir"), {"epochs": 8, "verbose": 0, "seed": 0})
    return data, FAMILY.fit("lsir", data, config).model


def test_the_rows_carry_the_split_as_described(trained):
    data, _ = trained
    test, valid = data.columns("test"), data.columns("valid")
    np.testing.assert_array_equal(test[USER], valid[USER])
    # a test row's seen items are the valid row's plus the validation target
    for row in range(20):
        seen = set(test[SEEN][row][test[SEEN][row] > 0]) - set(valid[SEEN][row][valid[SEEN][row] > 0])
        assert seen == set(valid[TARGETS][row][valid[TARGETS][row] > 0])
    assert 0.25 < test[INACTIVE].mean() < 0.35


def test_it_learns_beyond_popularity_and_the_learned_graph_drops_noise_first(trained):
    data, model = trained
    results = FAMILY.evaluate(model, data, "test")
    print("\n" + FAMILY.format_results(results))
    for group in ("all", "inactive"):
        rankers = results["groups"][group]
        assert rankers["model"]["ndcg@10"] > 1.1 * rankers["popularity"]["ndcg@10"]
    graph = results["graph"]
    # the noisy links, 3 in 10 of the observed ones, are removed far more often than true ones
    assert graph["noisy_removed"] > 1.5 * graph["true_removed"]
    assert graph["learned"]["recall"] > 0.6


# -- round trips and export ---------------------------------------------------------------------------
def test_round_trips_keep_the_config_the_graph_and_the_outputs(trained, tmp_path):
    data, model = trained
    users = {USER: tf.constant([1, 2, 3, 500], tf.int64)}
    expected = model(users)["scores"].numpy()
    clone = LSIR.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    clone.build()
    clone.set_weights(model.get_weights())  # the graph travels with the weights
    np.testing.assert_allclose(clone(users)["scores"].numpy(), expected, rtol=1e-5, atol=1e-5)
    model.save(tmp_path / "lsir.keras")
    loaded = keras.models.load_model(tmp_path / "lsir.keras")
    np.testing.assert_allclose(loaded(users)["scores"].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(loaded.neighbours.numpy(), model.neighbours.numpy())


def test_the_export_recommends_in_a_process_without_the_package(trained, tmp_path):
    data, model = trained
    path = FAMILY.export(model, tmp_path / "lsir", data)
    users = np.array([1, 7, 42], np.int64)
    expected_ids, _ = model.recommend(users)
    example = tf.train.Example(features=tf.train.Features(feature={
        USER: tf.train.Feature(int64_list=tf.train.Int64List(value=[7]))})).SerializeToString()
    code = """
        import base64, json, sys
        import numpy as np
        import tensorflow as tf
        payload = json.loads(sys.stdin.read())
        loaded = tf.saved_model.load(payload["path"])
        users = tf.constant(payload["users"], tf.int64)
        recommended = loaded.signatures["recommend"](user_id=users)
        scores = loaded.signatures["score_items"](user_id=users)["scores"]
        served = loaded.signatures["serving_default"](examples=tf.constant([base64.b64decode(payload["example"])]))
        print(json.dumps({"item_ids": recommended["item_ids"].numpy().tolist(), "scores": scores.numpy().tolist(),
                          "from_example": served["item_ids"].numpy().tolist(),
                          "signatures": sorted(loaded.signatures)}))
    """
    import base64

    served = run_fresh(code, {"path": str(path), "users": users.tolist(),
                              "example": base64.b64encode(example).decode()})
    assert served["signatures"] == ["recommend", "score_items", "serving_default"]
    np.testing.assert_array_equal(served["item_ids"], expected_ids.numpy())
    np.testing.assert_allclose(served["scores"], model({USER: users})["scores"].numpy(), rtol=1e-5, atol=1e-5)
    assert served["from_example"][0] == served["item_ids"][1]
    exported, in_memory = FAMILY.evaluate_export(path, data, "test"), FAMILY.evaluate(model, data, "test")
    assert FAMILY.headline(exported) == pytest.approx(FAMILY.headline(in_memory), rel=1e-6)

"""EMER (ensemble ranking over a request's candidates): its parts by hand, the request data,
learning, the self-adjusting weights, round trips, and an export served without the package."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrec_onerec import families
from tfrec_onerec.data.ensemble_requests import (CANDIDATES, EXPOSED, GRADE, OBJECTIVES, PXTR_FEATURES,
                                                 USER_FEATURE, RequestConfig, normalized_ranks, request_spec)
from tfrec_onerec.families.ensemble_ranking import grade_pair_accuracy, top_value
from tfrec_onerec.models.kuaishou import emer
from tfrec_onerec.models.kuaishou.emer import EMER, dcg_at_k, pairwise_logistic
from tests.fresh_process import run_fresh

FAMILY = families.get("ensemble_ranking")
WORLD = {"simulator_users": 500, "simulator_items": 300, "seed": 0}


def small_spec(candidates=4):
    return request_spec(10, 12, RequestConfig(candidates=candidates, exposed=2))


def request_rows(spec, rng, size=3):
    width = spec[CANDIDATES].max_len
    rows = {USER_FEATURE: rng.integers(1, 11, size), CANDIDATES: np.stack([rng.permutation(12)[:width] + 1
                                                                        for _ in range(size)])}
    rows.update({name: rng.uniform(0.05, 0.95, (size, width)).astype(np.float32) for name in PXTR_FEATURES})
    return rows


# -- parts by hand ------------------------------------------------------------------------------
def test_normalized_ranks_by_hand():
    values = np.array([[0.1, 0.5, 0.5, 0.2, 0.9], [0.3, 0.1, 0.2, 0.9, 0.7]], np.float32)
    mask = np.array([[True] * 5, [True, True, True, False, False]])
    ranks = emer.normalized_ranks(tf.constant(values), tf.constant(mask)).numpy()
    # row 0: order 0.9, 0.5 (first), 0.5, 0.2, 0.1 -> ranks 4, 1, 2, 3, 0 over 5
    np.testing.assert_allclose(ranks[0], [0.8, 0.2, 0.4, 0.6, 0.0])
    # row 1: three candidates 0.3, 0.1, 0.2 -> 0, 2, 1 over 3; the empty slots 1
    np.testing.assert_allclose(ranks[1], [0.0, 2 / 3, 1 / 3, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(normalized_ranks(values[:1]), ranks[:1])  # the data's numpy twin


def test_pairwise_logistic_and_dcg_by_hand():
    scores = tf.constant([[2.0, 0.0, 1.0]])
    prefer = np.zeros((1, 3, 3), bool)
    prefer[0, 0, 1] = prefer[0, 2, 1] = True  # candidates 0 and 2 above candidate 1
    expected = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0))])
    assert float(pairwise_logistic(scores, tf.constant(prefer))) == pytest.approx(expected, rel=1e-6)
    assert float(pairwise_logistic(scores, tf.zeros((1, 3, 3), tf.bool))) == 0.0
    relevance = tf.constant([[0.5, 1.0, 0.25]])
    mask = tf.constant([[True, True, True]])
    # top 2 by score: candidate 0 (0.5) then 2 (0.25): 0.5 / log2(2) + 0.25 / log2(3)
    assert float(dcg_at_k(scores, relevance, mask, 2)[0]) == pytest.approx(0.5 + 0.25 / np.log2(3), rel=1e-6)
    # a masked candidate is never in the top
    hidden = tf.constant([[False, True, True]])
    assert float(dcg_at_k(scores, relevance, hidden, 2)[0]) == pytest.approx(0.25 + 1.0 / np.log2(3), rel=1e-6)


def test_the_loss_is_the_posterior_pairs_plus_the_weighted_prior_pairs():
    spec = small_spec()
    model = EMER(spec, objectives=["p_ctr", "p_swt"], model_dim=8, ffn_dim=8, head_units=[4])
    rows = request_rows(spec, np.random.default_rng(0), size=2)
    features = {k: rows[k] for k in model.input_names}
    grade = np.array([[2, 0, 1, 0], [0, 1, 0, 0]], np.float32)
    exposed = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.float32)
    scores = model(features)["score"]
    parts = model.losses_of(features, {GRADE: grade, EXPOSED: exposed}, scores)
    s = scores.numpy()
    posterior = [np.log1p(np.exp(s[0, j] - s[0, i])) for i, j in ((0, 1), (0, 2), (2, 1))]
    posterior.append(np.log1p(np.exp(s[1, 0] - s[1, 1])))  # row 1: candidate 1 (grade 1) above candidate 0
    assert float(parts["posterior"]) == pytest.approx(np.mean(posterior), rel=1e-5)
    np.testing.assert_allclose(parts["weights"].numpy(), [1.0, 1.0], rtol=1e-6)  # the reference is the model
    prior = []
    for name in ("p_ctr", "p_swt"):
        v = rows[name]
        pairs = [np.log1p(np.exp(s[b, j] - s[b, i])) for b in range(2) for i in range(4) for j in range(4)
                 if v[b, i] > v[b, j]]
        prior.append(np.mean(pairs))
    assert float(parts["prior"]) == pytest.approx(np.mean(prior), rel=1e-5)
    total = model.compute_loss(rows, {GRADE: grade, EXPOSED: exposed}, {"score": scores}, training=False)
    assert float(total) == pytest.approx(float(parts["posterior"] + parts["prior"]), rel=1e-6)


def test_an_objective_the_model_trails_its_reference_on_gains_weight():
    """The Advantage Evaluator: w_x = DCG@K(reference) / DCG@K(model), clipped."""
    spec = small_spec()
    model = EMER(spec, objectives=["p_ctr"], weight_bounds=(0.5, 2.0), dcg_k=2, model_dim=8, ffn_dim=8)
    rows = request_rows(spec, np.random.default_rng(1))
    features = {k: rows[k] for k in model.input_names}
    reference = model.reference(features).numpy()
    # scores that order p_ctr worst-first trail the reference: weight above 1 (here clipped at 2)
    worst_first = tf.constant(-rows["p_ctr"])
    assert float(model.objective_weights(features, worst_first)[0]) > 1.0
    best_first = tf.constant(rows["p_ctr"] * 100.0)
    ours = dcg_at_k(best_first, rows["p_ctr"], rows[CANDIDATES] > 0, 2).numpy().mean()
    theirs = dcg_at_k(tf.constant(reference), rows["p_ctr"], rows[CANDIDATES] > 0, 2).numpy().mean()
    expected = np.clip(theirs / ours, 0.5, 2.0)
    assert float(model.objective_weights(features, best_first)[0]) == pytest.approx(expected, rel=1e-5)
    assert expected <= 1.0  # leading (or tying) the reference: no more weight


def test_bad_configurations_are_refused_with_the_reason():
    spec = small_spec()
    with pytest.raises(ValueError, match="objectives must be numeric features of 4 values"):
        EMER(spec, objectives=["candidate_ids"])
    with pytest.raises(ValueError, match="weight_bounds must satisfy 0 < low <= 1 <= high"):
        EMER(spec, weight_bounds=(1.5, 2.0))
    with pytest.raises(ValueError, match="training batches need the targets"):
        model = EMER(spec)
        rows = request_rows(spec, np.random.default_rng(0))
        model.compute_loss(rows, {GRADE: rows["p_ctr"]}, model(rows))


# -- the request data ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = FAMILY.prepare("simulator", WORLD, directory=tmp_path_factory.mktemp("ensemble") / "data")
    # every epoch kept (no best-weights restore), so the reference's last refresh is known
    config = FAMILY.train_config(FAMILY.model_class("emer"), {"epochs": 3, "early_stopping_patience": 100,
                                                              "verbose": 0, "seed": 0})
    result = FAMILY.fit("emer", data, config, hyperparameters={"reference_sync_steps": 20})
    return data, result.model


def test_requests_hold_k_shown_candidates_with_graded_feedback(trained):
    data, _ = trained
    rows = data.columns("train")
    config = RequestConfig(**data.metadata["requests_config"])
    assert len(rows[USER_FEATURE]) == (config.requests_per_user - 2) * WORLD["simulator_users"]
    candidates = rows[CANDIDATES]
    assert all(len(set(row)) == config.candidates for row in candidates)  # distinct, no empty slot
    np.testing.assert_array_equal(rows[EXPOSED].sum(axis=1), config.exposed)
    assert np.all(rows[GRADE][rows[EXPOSED] == 0] == 0) and rows[GRADE].max() <= 4
    assert rows[GRADE][rows[EXPOSED] == 1].mean() > 0.2  # feedback happens
    for name in PXTR_FEATURES:
        assert np.all((rows[name] > 0) & (rows[name] < 1))
    assert len(PXTR_FEATURES) == len(OBJECTIVES)


def test_it_learns_to_show_better_items_than_the_log_and_chance(trained):
    """The truth (each candidate's expected value) is known: the model's shown items are
    worth far more than chance's, more than the logging policy's, and near the oracle's."""
    data, model = trained
    results = FAMILY.evaluate(model, data, "test")
    rankers = results["rankers"]
    assert rankers["oracle"]["value"] >= rankers["model"]["value"]
    assert rankers["model"]["value"] > rankers["logging"]["value"]
    assert rankers["model"]["value"] > 1.5 * rankers["random"]["value"]
    assert results["value_vs_oracle"] > 0.95
    assert rankers["model"]["grade_pair_accuracy"] > 0.58 > rankers["random"]["grade_pair_accuracy"]
    print("\n" + FAMILY.format_results(results))


def test_the_reference_is_refreshed_every_sync_steps(trained, tmp_path):
    data, model = trained
    steps = int(model.optimizer.iterations)
    assert steps % model.reference_sync_steps != 0  # the last refresh was some steps before the end
    assert not all(np.array_equal(a, b) for a, b in zip(model.reference.get_weights(), model.scorer.get_weights()))
    assert not model.reference.trainable_weights  # never trained itself
    clone = EMER.from_config(model.get_config())
    clone.build()
    clone.set_weights(model.get_weights())
    clone.sync_reference()
    for a, b in zip(clone.reference.get_weights(), clone.scorer.get_weights()):
        np.testing.assert_array_equal(a, b)
    # a training step at a multiple of the period refreshes it first; any other step leaves it
    clone.compile(optimizer=keras.optimizers.Adam(1e-3))
    batch = next(iter(FAMILY.dataset(data, "train", FAMILY.train_config(), training=True)))
    before = clone.reference.get_weights()
    clone.optimizer.iterations.assign(1)
    clone.train_on_batch(*batch)
    for a, b in zip(clone.reference.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    scorer = clone.scorer.get_weights()
    clone.optimizer.iterations.assign(clone.reference_sync_steps)
    clone.train_on_batch(*batch)
    for a, b in zip(clone.reference.get_weights(), scorer):
        np.testing.assert_array_equal(a, b)


def test_helpers_by_hand():
    value = np.array([[1.0, 3.0, 2.0, 0.0]])
    assert top_value(np.array([[0.1, 0.2, 0.9, 5.0]]), value, np.array([[True, True, True, False]]), 2)[0] == 5.0
    grade = np.array([[2.0, 1.0, 0.0, 0.0]])
    shown = np.array([[True, True, True, False]])
    # pairs by grade: (0,1), (0,2), (1,2); scores order (0,1) right, (0,2) right, (1,2) tied: 2.5 / 3
    assert grade_pair_accuracy(np.array([[3.0, 1.0, 1.0, 9.0]]), grade, shown) == pytest.approx(2.5 / 3)


# -- round trips and export ---------------------------------------------------------------------------
def test_round_trips_keep_the_config_and_the_outputs(trained, tmp_path):
    data, model = trained
    rows = {k: v[:8] for k, v in data.columns("test").items()}
    features = {k: rows[k] for k in model.input_names}
    expected = model(features)["score"].numpy()
    clone = EMER.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    clone.build()
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(features)["score"].numpy(), expected, rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "emer.keras")
    loaded = keras.models.load_model(tmp_path / "emer.keras")
    np.testing.assert_allclose(loaded(features)["score"].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_the_export_ranks_requests_in_a_process_without_the_package(trained, tmp_path):
    data, model = trained
    path = FAMILY.export(model, tmp_path / "emer", data)
    rows = {k: v[:5] for k, v in data.columns("test").items()}
    features = {k: rows[k] for k in model.input_names}
    expected = model(features)["score"].numpy()
    code = """
        import json, sys
        import numpy as np
        import tensorflow as tf
        payload = json.loads(sys.stdin.read())
        loaded = tf.saved_model.load(payload["path"])
        features = {k: tf.constant(np.array(v, dtype=np.float32 if k.startswith("p_") else np.int64))
                    for k, v in payload["features"].items()}
        ranked = loaded.signatures["rank"](**features)
        scores = loaded.signatures["predict"](**features)["score"]
        print(json.dumps({"positions": ranked["positions"].numpy().tolist(),
                          "item_ids": ranked["item_ids"].numpy().tolist(),
                          "sorted": ranked["scores"].numpy().tolist(), "scores": scores.numpy().tolist(),
                          "signatures": sorted(loaded.signatures)}))
    """
    served = run_fresh(code, {"path": str(path), "features": {k: v.tolist() for k, v in features.items()}})
    assert served["signatures"] == ["predict", "rank", "serving_default"]
    np.testing.assert_allclose(served["scores"], expected, rtol=1e-5, atol=1e-5)
    positions = np.array(served["positions"])
    np.testing.assert_array_equal(positions, np.argsort(-np.array(served["scores"]), axis=1, kind="stable"))
    np.testing.assert_array_equal(served["item_ids"], np.take_along_axis(features[CANDIDATES], positions, axis=1))
    assert np.all(np.diff(served["sorted"], axis=1) <= 0)
    # the family scores the export as it scores the model
    exported, in_memory = FAMILY.evaluate_export(path, data, "test"), FAMILY.evaluate(model, data, "test")
    assert FAMILY.headline(exported) == pytest.approx(FAMILY.headline(in_memory), rel=1e-6)
    for name, found in in_memory["rankers"].items():
        assert exported["rankers"][name] == pytest.approx(found, rel=1e-6)
    assert json.loads((path / "assets.extra" / "tfrec_onerec.json").read_text())["family"] == "ensemble_ranking"

"""Listwise losses (TF-Ranking math as Keras 3 losses) and the TF-Ranking import shim.

Values are checked against numpy implementations of the documented formulas, training
against data with a known best ranking, and serialization through get_config and `.keras`.
"""
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrec_onerec import losses, metrics
from tfrec_onerec.compat import tf_ranking

LOSSES = [losses.SoftmaxListwiseLoss, losses.ApproxNDCGLoss, losses.ListMLELoss]


# -- numpy references (padding = label < 0, dropped from the list) --------------------------------
def log_softmax(x):
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def softmax_loss(y, s, temperature=1.0):
    valid = y >= 0
    return float(-(y[valid] * log_softmax(s[valid] / temperature)).sum())


def approx_ndcg_loss(y, s, temperature=0.1):
    valid = y >= 0
    y, s = y[valid], s[valid] / temperature
    gains = 2.0 ** y - 1.0
    sigmoid = 1.0 / (1.0 + np.exp(-(s[None, :] - s[:, None])))  # [i, j] = sigmoid(s_j - s_i)
    ranks = 1.0 + sigmoid.sum(axis=1) - 0.5  # the j = i term is sigmoid(0) = 1/2
    idcg = (np.sort(gains)[::-1] / np.log2(np.arange(2, len(y) + 2))).sum()
    return float(-(gains / np.log2(1.0 + ranks)).sum() / idcg) if idcg > 0 else 0.0


def list_mle_loss(y, s, temperature=1.0):
    valid = y >= 0
    y, s = y[valid], s[valid] / temperature
    assert len(set(y.tolist())) == len(y), "reference needs distinct labels (TF-Ranking shuffles ties)"
    ordered = s[np.argsort(-y)]
    return float(sum(-log_softmax(ordered[r:])[0] for r in range(len(ordered))))


REFERENCES = {losses.SoftmaxListwiseLoss: softmax_loss, losses.ApproxNDCGLoss: approx_ndcg_loss,
              losses.ListMLELoss: list_mle_loss}

# Distinct labels (ListMLE's order is then unique), padding, and one list with no relevant item.
LABELS = np.array([[0.0, 3.0, 1.0, 2.0, -1.0],
                   [2.0, 0.0, 1.0, -1.0, -1.0],
                   [1.0, 0.0, 4.0, 2.0, 3.0],
                   [0.0, -1.0, -1.0, -1.0, -1.0]])
SCORES = np.array([[0.1, 2.0, -1.0, 0.4, 9.0],
                   [0.5, 0.2, 0.3, -7.0, 5.0],
                   [1.5, -0.5, 0.7, 0.2, 0.0],
                   [0.3, 0.2, 0.1, 0.0, 0.0]])


@pytest.mark.parametrize("temperature", [None, 0.5])
@pytest.mark.parametrize("loss_class", LOSSES)
def test_values_equal_the_numpy_formulas(loss_class, temperature):
    loss = loss_class(temperature=temperature)
    per_list = [REFERENCES[loss_class](y, s, loss.temperature) for y, s in zip(LABELS, SCORES)]
    # Keras 3's default reduction: the mean over the lists of the batch.
    assert float(loss(LABELS, SCORES)) == pytest.approx(np.mean(per_list), rel=1e-5, abs=1e-6)
    unreduced = loss_class(temperature=temperature, reduction=None)(LABELS, SCORES)
    np.testing.assert_allclose(np.asarray(unreduced), per_list, rtol=1e-5, atol=1e-6)


def test_softmax_loss_by_hand():
    # one relevant item: -log softmax(s)_pos; graded labels weigh each item's log-probability
    s = np.array([0.1, 2.0, -1.0])
    expected = -math.log(math.exp(2.0) / sum(math.exp(v) for v in s))
    assert float(losses.SoftmaxListwiseLoss()([[0.0, 1.0, 0.0]], [s])) == pytest.approx(expected, rel=1e-6)
    expected = -(2 * log_softmax(s)[1] + 1 * log_softmax(s)[0])
    assert float(losses.SoftmaxListwiseLoss()([[1.0, 2.0, 0.0]], [s])) == pytest.approx(expected, rel=1e-6)
    # a list without relevant items contributes 0 to the batch mean
    assert float(losses.SoftmaxListwiseLoss()([[0.0, 0.0, 0.0]], [s])) == 0.0


def test_list_mle_on_a_known_permutation():
    # labels put the items in the order 1, 3, 2, 0; Plackett-Luce: pick 1 among all, then 3
    # among {3, 2, 0}, then 2 among {2, 0}, then 0.
    s = np.array([0.2, 1.0, -0.3, 0.5])
    expected = -(log_softmax(s)[1] + log_softmax(s[[3, 2, 0]])[0] + log_softmax(s[[2, 0]])[0])
    got = float(losses.ListMLELoss()([[0.0, 3.0, 1.0, 2.0]], [s]))
    assert got == pytest.approx(expected, rel=1e-6)
    # the best order gives the lowest loss among these scorings
    better = float(losses.ListMLELoss()([[0.0, 3.0, 1.0, 2.0]], [[0.0, 3.0, 1.0, 2.0]]))
    assert better < got


def test_approx_ndcg_is_close_to_minus_ndcg_at_a_low_temperature():
    labels, scores = np.array([[3.0, 0.0, 1.0, 2.0]]), np.array([[0.3, 0.9, 0.1, 0.5]])
    value = float(losses.ApproxNDCGLoss(temperature=0.01)(labels, scores))
    assert value == pytest.approx(-metrics.ndcg_at_k(labels, scores, None), abs=1e-3)


@pytest.mark.parametrize("shift", [-60.0, 0.0, 120.0])
@pytest.mark.parametrize("loss_class", LOSSES)
def test_padding_is_ignored_whatever_the_scores(loss_class, shift):
    """Negative labels are padding; the padded list's loss is the short list's, also for
    scores far from 0 (TF-Ranking alone fails there: see tfrec_onerec.losses)."""
    y, s = np.array([[2.0, 0.0, 1.0]]), np.array([[0.3, 0.5, 0.1]]) + shift
    padded_y = np.array([[2.0, -1.0, 0.0, -1.0, 1.0, -1.0]])
    padded_s = np.array([[0.3, 50.0, 0.5, -80.0, 0.1, 0.0]]) + shift
    short = float(loss_class()(y, s))
    assert np.isfinite(short)
    assert float(loss_class()(padded_y, padded_s)) == pytest.approx(short, rel=1e-5, abs=1e-6)


def test_sample_weight_is_per_list():
    loss = losses.SoftmaxListwiseLoss()
    per_list = np.array([softmax_loss(y, s) for y, s in zip(LABELS, SCORES)])
    weights = np.array([1.0, 0.0, 2.0, 1.0])
    # sum_over_batch_size: sum of weighted values / number of lists
    assert float(loss(LABELS, SCORES, sample_weight=weights)) == pytest.approx((weights * per_list).sum() / 4, rel=1e-5)


def test_bad_inputs_are_explained():
    with pytest.raises(ValueError, match=r"expects y_pred of shape \(batch, list_size\)"):
        losses.SoftmaxListwiseLoss()(np.ones((2, 3, 1)), np.ones((2, 3, 1)))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        losses.ListMLELoss(temperature=0.0)


# -- training --------------------------------------------------------------------------------------
def ranking_data(n, seed):
    """Lists of 5 items with 4 features; relevance (0..3) is a known monotone function of
    x @ w, so scoring by x @ w is the best ranking."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5, 4)).astype(np.float32)
    relevance = np.clip(np.round(x @ np.array([1.0, -0.5, 0.0, 0.25]) + 1.0), 0, 3).astype(np.float32)
    return x, relevance


def list_scorer():
    """A Keras 3 model scoring every item of a list with the same Dense layer: (batch, 5)."""
    return keras.Sequential([keras.Input((5, 4)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1),
                             keras.layers.Reshape((5,))])


@pytest.mark.parametrize("loss_class", LOSSES)
def test_a_keras3_model_learns_a_known_ranking(loss_class):
    keras.utils.set_random_seed(0)
    x, y = ranking_data(2000, 0)
    x_test, y_test = ranking_data(500, 1)
    best = metrics.ndcg_at_k(y_test, x_test @ np.array([1.0, -0.5, 0.0, 0.25]), 3)
    model = list_scorer()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss_class())
    before = metrics.ndcg_at_k(y_test, model.predict(x_test, verbose=0), 3)
    history = model.fit(x, y, epochs=5, batch_size=64, verbose=0)
    after = metrics.ndcg_at_k(y_test, model.predict(x_test, verbose=0), 3)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert after > before + 0.1 and after > 0.95 * best, (before, after, best)


def test_loss_under_a_distribution_strategy_is_not_scaled():
    """Keras 3 runs the loss in a tf.distribute replica context; the value must stay the mean."""
    x, y = ranking_data(64, 2)
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        model = list_scorer()
        model.compile(optimizer="adam", loss=losses.SoftmaxListwiseLoss())
    scores = model.predict(x, verbose=0)
    expected = np.mean([softmax_loss(yy, ss) for yy, ss in zip(y, scores)])
    assert model.evaluate(x, y, batch_size=16, verbose=0) == pytest.approx(expected, rel=1e-4)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)


# -- serialization ---------------------------------------------------------------------------------
@pytest.mark.parametrize("loss_class", LOSSES)
def test_config_round_trip(loss_class):
    loss = loss_class(temperature=0.5, name="mine", reduction="sum")
    config = loss.get_config()
    assert config["temperature"] == 0.5 and config["name"] == "mine" and config["reduction"] == "sum"
    clone = loss_class.from_config(config)
    assert clone.get_config() == config
    assert float(clone(LABELS[:3, :4], SCORES[:3, :4])) == pytest.approx(float(loss(LABELS[:3, :4], SCORES[:3, :4])))
    assert keras.saving.get_registered_name(loss_class) == f"tfrec_onerec>{loss_class.__name__}"
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(revived) is loss_class and revived.get_config() == config


def test_model_compiled_with_the_loss_saves_and_loads_as_keras_file(tmp_path):
    keras.utils.set_random_seed(1)
    x, y = ranking_data(128, 3)
    model = list_scorer()
    model.compile(optimizer="adam", loss=losses.SoftmaxListwiseLoss(temperature=2.0))
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "ranker.keras")
    loaded = keras.models.load_model(tmp_path / "ranker.keras")
    assert isinstance(loaded.loss, losses.SoftmaxListwiseLoss) and loaded.loss.temperature == 2.0
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-6)
    loaded.fit(x, y, epochs=1, verbose=0)  # and it keeps training


# -- the TF-Ranking import shim --------------------------------------------------------------------
def test_load_is_cached_and_leaves_no_estimator_stand_ins_behind():
    tfr = tf_ranking.load()
    assert tf_ranking.load() is tfr
    assert hasattr(tfr.keras.losses, "SoftmaxLoss") and hasattr(tfr.keras.metrics, "NDCGMetric")
    for name in tf_ranking.ESTIMATOR_MODULES:
        assert name not in sys.modules
    assert "estimator" not in vars(tf) and "estimator" not in vars(tf.compat.v1)
    # TF-Ranking's Estimator code kept the stand-in; using it fails with an explanation
    stand_in = sys.modules["tensorflow_ranking.python.keras.estimator"].tf_estimator
    with pytest.raises(RuntimeError, match="tf.estimator was removed in TensorFlow 2.16"):
        stand_in.RunConfig()


def run_python(code, **env):
    environment = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env=environment)


def test_load_refuses_without_legacy_keras():
    result = run_python("""
        import tfrec_onerec
        from tfrec_onerec.compat import tf_ranking
        try:
            tf_ranking.load()
        except RuntimeError as error:
            print("REFUSED:", error)
    """, TF_USE_LEGACY_KERAS="0")
    assert "REFUSED: TF-Ranking needs TF_USE_LEGACY_KERAS=1" in result.stdout, result.stderr[-2000:]
    assert "before TensorFlow is imported" in result.stdout


def test_load_refuses_when_tf_keras_was_resolved_to_keras3_first():
    result = run_python("""
        import os
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
        import tensorflow as tf
        tf.keras.layers  # resolves tf.keras to Keras 3 before tfrec_onerec sets the variable
        import tfrec_onerec
        from tfrec_onerec.compat import tf_ranking
        try:
            tf_ranking.load()
        except RuntimeError as error:
            print("REFUSED:", error)
    """)
    assert "REFUSED: TF-Ranking needs tf.keras to be tf-keras" in result.stdout, result.stderr[-2000:]

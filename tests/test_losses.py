"""Listwise losses (TF-Ranking math as Keras 3 losses): values, training, serialization."""
import keras
import numpy as np
import pytest

from tfrec_onerec import losses, metrics

LABELS = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
SCORES = np.array([[0.1, 2.0, -1.0], [0.5, 0.2, 0.3]])


def log_softmax(x):
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def test_softmax_loss_by_hand_and_padding_is_ignored():
    expected = -np.mean(log_softmax(SCORES)[[0, 1], [1, 0]])
    assert float(losses.SoftmaxListwiseLoss()(LABELS, SCORES)) == pytest.approx(expected, rel=1e-5)
    # label -1 marks padding: the item with score 100 must not count
    padded = float(losses.SoftmaxListwiseLoss()(np.array([[0.0, 1.0, -1.0]]), np.array([[0.1, 2.0, 100.0]])))
    assert padded == pytest.approx(-log_softmax(np.array([0.1, 2.0]))[1], rel=1e-5)


def test_list_mle_by_hand_for_a_strict_order():
    # labels 2 > 1 > 0 fix the order (items 0, 1, 2); Plackett-Luce negative log-likelihood
    s = np.array([1.0, 0.5, -0.3])
    expected = -(log_softmax(s)[0] + log_softmax(s[1:])[0] + 0.0)
    got = float(losses.ListMLELoss()(np.array([[2.0, 1.0, 0.0]]), s[None]))
    assert got == pytest.approx(expected, rel=1e-5)


def test_approx_ndcg_is_lower_for_a_better_ranking():
    labels = np.array([[3.0, 0.0, 1.0]])
    good, bad = np.array([[3.0, -2.0, 1.0]]), np.array([[-2.0, 3.0, 1.0]])
    assert float(losses.ApproxNDCGLoss()(labels, good)) < float(losses.ApproxNDCGLoss()(labels, bad))


def ranking_data(n, seed):
    """Lists of 5 items with 4 features each; relevance is a known linear function."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5, 4)).astype(np.float32)
    relevance = np.clip(np.round(x @ np.array([1.0, -0.5, 0.0, 0.25]) + 1.0), 0, 3).astype(np.float32)
    return x, relevance


@pytest.mark.parametrize("loss", [losses.SoftmaxListwiseLoss(), losses.ApproxNDCGLoss(), losses.ListMLELoss()])
def test_a_keras3_model_learns_a_known_ranking(loss):
    keras.utils.set_random_seed(0)
    x, y = ranking_data(2000, 0)
    model = keras.Sequential([keras.Input((5, 4)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1),
                              keras.layers.Reshape((5,))])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss)
    x_test, y_test = ranking_data(500, 1)
    before = metrics.ndcg_at_k(y_test, model.predict(x_test, verbose=0), 3).value
    history = model.fit(x, y, epochs=5, batch_size=64, verbose=0)
    after = metrics.ndcg_at_k(y_test, model.predict(x_test, verbose=0), 3).value
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert after > max(before, 0.9)


def test_config_round_trip_and_keras_file(tmp_path):
    loss = losses.ApproxNDCGLoss(temperature=0.5, name="approx")
    clone = losses.ApproxNDCGLoss.from_config(loss.get_config())
    assert clone.get_config() == loss.get_config() and clone.temperature == 0.5
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss=losses.SoftmaxListwiseLoss(temperature=2.0))
    model.fit(np.eye(3, dtype=np.float32), LABELS[[0, 1, 0]], epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.loss, losses.SoftmaxListwiseLoss) and loaded.loss.temperature == 2.0

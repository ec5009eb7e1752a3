"""DIEN: the attention-steered GRU step by hand, the auxiliary loss by hand, learning a known
answer, round trips and an export that serves without the package."""
import keras
import numpy as np
import pytest

from tfrec_onerec import models, training
from tfrec_onerec.features.datasets import columns_dataset
from tfrec_onerec.layers.interest_evolution import AttentionalGRUCell, InterestEvolution
from tfrec_onerec.metrics import auc
from tfrec_onerec.models.sequence.dien import auxiliary_loss

from fresh_process import check_ranker_round_trip
from known_answer import known_answer_columns, known_answer_spec


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def features_only(columns):
    return {k: v for k, v in columns.items() if k != "click"}


@pytest.fixture(scope="module")
def trained():
    spec = known_answer_spec()
    keras.utils.set_random_seed(0)
    model, history = training.fit(
        lambda: models.get("dien")(spec, ["click"], mlp_units=(32, 16)),
        columns_dataset(known_answer_columns(4000, 0), spec, ["click"], batch_size=128, shuffle=True),
        config=training.TrainConfig(epochs=6, learning_rate=3e-3, verbose=0))
    return spec, model, history.history["loss"]


def evolve(mode, sequence, attention, mask=None, weights_from=None):
    layer = InterestEvolution(sequence.shape[-1], mode)
    layer(sequence, attention, mask=mask)
    if weights_from is not None:
        layer.set_weights(weights_from.get_weights())
    return layer, numpy(layer(sequence, attention, mask=mask))


def test_augru_with_attention_one_is_a_gru_and_with_attention_zero_stands_still():
    rng = np.random.default_rng(0)
    sequence = rng.normal(size=(3, 5, 4)).astype("float32")
    gru = keras.layers.GRU(4)
    expected = numpy(gru(sequence))
    for mode in ("augru", "aigru"):  # a = 1 scales neither the update gate nor the input
        _, out = evolve(mode, sequence, np.ones((3, 5)), weights_from=gru)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    _, out = evolve("augru", sequence, np.zeros((3, 5)), weights_from=gru)
    np.testing.assert_array_equal(out, 0.0)  # the state never leaves its zero start

    cell = AttentionalGRUCell(4, "augru")
    previous = rng.normal(size=(3, 4)).astype("float32")
    steps = [np.concatenate([sequence[:, 0], np.full((3, 1), a, "float32")], axis=1) for a in (0.0, 0.5, 1.0)]
    still, _ = cell(steps[0], [previous])
    np.testing.assert_allclose(numpy(still), previous, rtol=1e-6)
    # AUGRU interpolates: with a = 0.5 the step moves half as far, gate by gate, as with a = 1
    half, full = (numpy(cell(step, [previous])[0]) for step in steps[1:])
    keep = numpy(keras.ops.sigmoid(steps[2][:, :4] @ numpy(cell.kernel)[:, :4] + numpy(cell.bias)[0, :4]
                                   + previous @ numpy(cell.recurrent_kernel)[:, :4] + numpy(cell.bias)[1, :4]))
    candidate = (full - keep * previous) / (1 - keep)
    np.testing.assert_allclose(half, previous + 0.5 * (1 - keep) * (candidate - previous), rtol=1e-4, atol=1e-5)


def test_agru_uses_the_attention_as_its_update_gate_and_padding_is_skipped():
    rng = np.random.default_rng(1)
    sequence = rng.normal(size=(2, 4, 3)).astype("float32")
    cell = AttentionalGRUCell(3, "agru")
    previous = rng.normal(size=(2, 3)).astype("float32")
    step = np.concatenate([sequence[:, 0], np.full((2, 1), 0.25, "float32")], axis=1)
    full, _ = cell(np.concatenate([sequence[:, 0], np.ones((2, 1), "float32")], axis=1), [previous])
    quarter, _ = cell(step, [previous])
    np.testing.assert_allclose(numpy(quarter), 0.75 * previous + 0.25 * numpy(full), rtol=1e-5, atol=1e-6)

    attention = rng.uniform(size=(2, 4)).astype("float32")
    mask = np.array([[True, True, False, False], [True, True, True, True]])
    layer, padded = evolve("augru", sequence, attention, mask)
    short = numpy(layer(sequence[:, :2], attention[:, :2]))
    np.testing.assert_allclose(padded[0], short[0], rtol=1e-5, atol=1e-6)  # padded steps leave the state


def test_auxiliary_loss_by_hand():
    states = np.array([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]], "float32")
    behaviours = np.array([[[9.0, 9.0], [2.0, 0.0], [0.0, 1.0]]], "float32")
    negatives = np.array([[[9.0, 9.0], [0.0, 1.0], [1.0, 0.0]]], "float32")
    softplus = lambda x: np.log1p(np.exp(x))  # noqa: E731
    # step 0: h=(1,0) vs next (2,0): 2, negative (0,1): 0; step 1: h=(0,2) vs next (0,1): 2, negative (1,0): 0
    expected = (softplus(-2.0) + softplus(0.0)) * 2 / 2
    mask = np.array([[True, True, True]])
    np.testing.assert_allclose(numpy(auxiliary_loss(states, behaviours, negatives, mask)), expected, rtol=1e-6)
    # the last behaviour padded: only step 0 counts
    np.testing.assert_allclose(numpy(auxiliary_loss(states, behaviours, negatives, np.array([[True, True, False]]))),
                               softplus(-2.0) + softplus(0.0), rtol=1e-6)


def test_auxiliary_loss_is_added_in_training_only(trained):
    spec, model, _ = trained
    batch = features_only(known_answer_columns(8, 3))
    model(batch, training=False)
    assert not model.losses
    model(batch, training=True)
    assert len(model.losses) == 1 and float(numpy(model.losses[0])) > 0
    silent = models.get("dien")(spec, auxiliary_weight=0.0, behaviour_sum=False)
    silent(batch, training=True)
    assert not silent.losses
    # the summed behaviours and their product with the candidate widen the MLP's input by 2 x 12
    assert model.mlp.weights[0].shape[0] - silent.mlp.weights[0].shape[0] == 2 * (8 + 4)
    with pytest.raises(ValueError, match="evolution must be one of"):
        models.get("dien")(spec, evolution="lstm")


def test_learns_the_known_answer(trained):
    _, model, losses = trained
    test = known_answer_columns(1000, 1)
    scores = model.predict(features_only(test), batch_size=512, verbose=0)["click"]
    assert losses[-1] < losses[0]
    assert auc(test["click"], scores) > 0.9  # any candidate-only or constant score: 0.5


def test_round_trips_and_serves_without_the_package(trained, tmp_path):
    _, model, _ = trained
    loaded = check_ranker_round_trip(model, features_only(known_answer_columns(16, 2)), tmp_path)
    assert loaded.evolution == "augru" and loaded.behaviour_sum

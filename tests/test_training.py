"""The training entry point: task targets, early stopping, checkpoints, resuming."""
import keras
import numpy as np
import pytest

from tfrec_onerec import models, training
from tfrec_onerec.features import Task
from tfrec_onerec.features.datasets import columns_dataset

from known_answer import known_answer_columns, known_answer_spec


@pytest.fixture(scope="module")
def small():
    spec, cols = known_answer_spec(), known_answer_columns(512, 0)
    cols["watched"] = cols["click"]
    return spec, cols


def dataset(small, labels=("click",)):
    spec, cols = small
    return columns_dataset(cols, spec, list(labels), batch_size=128)


@pytest.mark.parametrize("monitor", ["auto", "val_loss"])
def test_early_stopping_stops_when_validation_stalls(small, monitor):
    spec, _ = small
    config = training.TrainConfig(epochs=10, learning_rate=0.0, early_stopping_patience=1, monitor=monitor,
                                  verbose=0)
    _, history = training.fit(lambda: models.get("din_base")(spec), dataset(small), dataset(small), config)
    assert len(history.history["loss"]) == 2  # nothing can improve with a zero learning rate


def test_the_monitored_quantity_is_a_logged_validation_metric(small):
    spec, _ = small
    for tasks in (["click"], ["click", "watched"]):
        model, history = training.fit(lambda: models.get("din_base")(spec, tasks), dataset(small, tasks),
                                      dataset(small, tasks), training.TrainConfig(epochs=1, verbose=0))
        name, mode = training.monitored_quantity(training.TrainConfig(), model.tasks)
        assert name in history.history and mode == "max"
    assert training.monitored_quantity(training.TrainConfig(), [Task("t", kind="regression")]) == ("val_loss", "min")


class WeightsPerEpoch(keras.callbacks.Callback):
    """Records the model's weights at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([w.copy() for w in self.model.get_weights()])


def test_best_checkpoint_holds_the_best_epochs_weights_not_the_last(small, tmp_path):
    spec, cols = small
    # Validation labels are the training labels flipped: the better the model learns the training
    # data, the lower its validation AUC, so an early epoch is the best and the later ones are worse.
    flipped = dict(cols, click=1.0 - cols["click"])
    validation = columns_dataset(flipped, spec, ["click"], batch_size=128)
    recorder = WeightsPerEpoch()
    config = training.TrainConfig(epochs=4, learning_rate=3e-3, early_stopping_patience=None,
                                  checkpoint_dir=str(tmp_path), verbose=0)
    model, history = training.fit(lambda: models.get("din_base")(spec), dataset(small), validation, config,
                                  callbacks=[recorder])
    auc = np.array(history.history["val_auc"])
    best, last = int(np.argmax(auc)), len(auc) - 1
    assert len(recorder.weights) == 4 and auc[last] < auc[best] - 0.01, auc  # the set-up: a later epoch is worse
    fresh = models.get("din_base")(spec)
    fresh({k: v[:2] for k, v in cols.items()})
    fresh.load_weights(tmp_path / "best.weights.h5")
    loaded = fresh.get_weights()
    assert len(loaded) == len(recorder.weights[best])
    for got, want in zip(loaded, recorder.weights[best]):
        np.testing.assert_array_equal(got, want)
    assert any(not np.array_equal(got, final) for got, final in zip(loaded, recorder.weights[last]))
    # Early stopping restores the same best epoch into the returned model.
    recorder = WeightsPerEpoch()
    config = training.TrainConfig(epochs=6, learning_rate=3e-3, early_stopping_patience=1, verbose=0)
    model, history = training.fit(lambda: models.get("din_base")(spec), dataset(small), validation, config,
                                  callbacks=[recorder])
    best = int(np.argmax(history.history["val_auc"]))
    assert len(history.history["loss"]) == best + 2  # stopped one epoch after the best
    for got, want in zip(model.get_weights(), recorder.weights[best]):
        np.testing.assert_array_equal(got, want)


def test_interrupted_training_resumes_from_its_last_epoch(small, tmp_path):
    spec, _ = small

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("killed")

    config = training.TrainConfig(epochs=4, checkpoint_dir=str(tmp_path), verbose=0)
    with pytest.raises(RuntimeError, match="killed"):
        training.fit(lambda: models.get("din_base")(spec), dataset(small), config=config, callbacks=[Crash()])
    _, history = training.fit(lambda: models.get("din_base")(spec), dataset(small), config=config)
    assert len(history.history["loss"]) == 2  # epochs 3 and 4 only; 1 and 2 were done before the crash


def test_tasks_are_mapped_to_their_label_columns(small):
    spec, _ = small
    model, history = training.fit(lambda: models.get("din_base")(spec, [Task("click", label="watched")]),
                                  dataset(small, ["watched"]), config=training.TrainConfig(epochs=1, verbose=0))
    assert len(history.history["loss"]) == 1 and list(model.tasks) == [Task("click", label="watched")]
    with pytest.raises(ValueError, match="no label column \\['like'\\]"):
        training.fit(lambda: models.get("din_base")(spec, ["like"]), dataset(small),
                     config=training.TrainConfig(epochs=1, verbose=0))


def test_task_losses_by_kind():
    losses, weights, metrics = training.task_losses([Task("click", weight=2.0), Task("watch", kind="regression")])
    assert isinstance(losses["click"], keras.losses.BinaryCrossentropy)
    assert isinstance(losses["watch"], keras.losses.MeanSquaredError)
    assert weights == {"click": 2.0, "watch": 1.0}
    assert [m.name for m in metrics["click"]] == ["auc"] and [m.name for m in metrics["watch"]] == ["rmse"]


def test_several_steps_per_execution_make_the_same_updates(small):
    """Running 3 steps per call into the compiled step (4 batches an epoch: calls of 3 and 1)
    changes how often Python runs, not what is learned."""
    spec, _ = small
    trained = []
    for steps in (1, 3):
        config = training.TrainConfig(epochs=2, learning_rate=3e-3, early_stopping_patience=None, verbose=0,
                                      steps_per_execution=steps)
        keras.utils.set_random_seed(0)
        model, history = training.fit(lambda: models.get("din_base")(spec), dataset(small), config=config)
        trained.append((model, history.history["loss"]))
    (one, one_loss), (three, three_loss) = trained
    np.testing.assert_allclose(three_loss, one_loss, rtol=1e-5)
    for a, b in zip(one.get_weights(), three.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

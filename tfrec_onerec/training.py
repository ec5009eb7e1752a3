"""Training on `model.fit`: task losses and metrics, checkpoints, early stopping, strategies."""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Callable, Sequence

import keras
import tensorflow as tf

from tfrec_onerec.features.spec import Task


@dataclasses.dataclass
class TrainConfig:
    """How a model is trained.

    Args:
        epochs: passes over the training data.
        learning_rate: Adam's learning rate.
        early_stopping_patience: epochs without improvement of ``monitor`` before stopping
            (the best weights are restored); ``None`` disables it.
        monitor: the validation quantity that early stopping and the best checkpoint
            follow. ``"auto"``: the first binary task's validation AUC (CTR models are
            selected on ranking quality; their log loss can worsen while AUC still
            improves), else the validation loss.
        checkpoint_dir: where the best weights (``best.weights.h5``) and the resumable
            training state (``backup/``) go; ``None`` disables both.
        jit_compile: compile the train step with XLA.
        verbose: Keras verbosity (1 = progress bar, 2 = a line per epoch); ``"auto"``: a
            progress bar on a terminal, a line per epoch in logs.
    """

    epochs: int = 3
    learning_rate: float = 1e-3
    early_stopping_patience: int | None = 2
    monitor: str = "auto"
    checkpoint_dir: str | None = None
    jit_compile: bool = False
    verbose: int | str = "auto"


def resolve_verbosity(verbose):
    """``"auto"`` -> 1 (progress bar) on a terminal, 2 (a line per epoch) otherwise."""
    if verbose != "auto":
        return verbose
    return 1 if sys.stdout.isatty() else 2


def task_losses(tasks: Sequence[Task]) -> tuple:
    """``(losses, loss_weights, metrics)`` dicts keyed by task name for `compile`."""
    losses, weights, metrics = {}, {}, {}
    for task in tasks:
        if task.kind == "binary":
            losses[task.name] = keras.losses.BinaryCrossentropy(name=f"{task.name}_bce")
            metrics[task.name] = [keras.metrics.AUC(name="auc")]
        else:
            losses[task.name] = keras.losses.MeanSquaredError(name=f"{task.name}_mse")
            metrics[task.name] = [keras.metrics.RootMeanSquaredError(name="rmse")]
        weights[task.name] = task.weight
    return losses, weights, metrics


def compile_model(model: keras.Model, config: TrainConfig) -> keras.Model:
    """Compiles a zoo model with Adam and its tasks' losses, weights and metrics."""
    losses, weights, metrics = task_losses(model.tasks)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=losses, loss_weights=weights,
                  metrics=metrics, jit_compile=config.jit_compile)
    return model


def task_targets(dataset: tf.data.Dataset, tasks: Sequence[Task]) -> tf.data.Dataset:
    """Maps a ``(features, {label: y})`` dataset to ``(features, {task: y})``."""
    def select(features, labels):
        missing = [t.label for t in tasks if t.label not in labels]
        if missing:
            raise ValueError(f"The dataset has no label column {missing}; it has {sorted(labels)}.")
        return features, {t.name: labels[t.label] for t in tasks}

    return dataset.map(select, num_parallel_calls=tf.data.AUTOTUNE)


def monitored_quantity(config: TrainConfig, tasks: Sequence[Task]) -> tuple:
    """``(name, mode)`` of the quantity early stopping and checkpoints follow."""
    if config.monitor != "auto":
        return config.monitor, "max" if config.monitor.endswith("auc") else "min"
    binary = [t for t in tasks if t.kind == "binary"]
    if not binary:
        return "val_loss", "min"
    # Keras prefixes metric names with the output name only when a model has several outputs.
    return ("val_auc" if len(tasks) == 1 else f"val_{binary[0].name}_auc"), "max"


def callbacks_for(config: TrainConfig, tasks: Sequence[Task], has_validation: bool) -> list:
    callbacks = []
    monitor, mode = monitored_quantity(config, tasks) if has_validation else ("loss", "min")
    if config.early_stopping_patience is not None and has_validation:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=config.early_stopping_patience, restore_best_weights=True))
    if config.checkpoint_dir:
        os.makedirs(config.checkpoint_dir, exist_ok=True)
        callbacks.append(keras.callbacks.ModelCheckpoint(
            os.path.join(config.checkpoint_dir, "best.weights.h5"), save_weights_only=True,
            monitor=monitor, mode=mode, save_best_only=True))
        callbacks.append(keras.callbacks.BackupAndRestore(os.path.join(config.checkpoint_dir, "backup")))
    return callbacks


def build_training_state(model: keras.Model, batch) -> None:
    """Creates the weights, the compiled loss and the metrics from one real batch.

    Keras would otherwise build them from symbolic stand-ins of the first batch, and under
    a `tf.distribute` strategy those stand-ins lose the int64 dtype of id features. Resuming
    from a backup also needs the weights to exist before `fit`.
    """
    features, targets = batch
    predictions = model(features)
    model.compute_loss(features, targets, predictions)
    model.compute_metrics(features, targets, predictions, sample_weight=None)
    model.reset_metrics()


def fit(build_model: Callable[[], keras.Model], train: tf.data.Dataset, validation: tf.data.Dataset | None = None,
        config: TrainConfig | None = None, strategy: tf.distribute.Strategy | None = None,
        callbacks: Sequence[keras.callbacks.Callback] = ()):
    """Builds, compiles and trains a model with `model.fit`.

    Args:
        build_model: returns a new, uncompiled zoo model; called inside the strategy's scope.
        train: batches of ``(features, {label: y})`` (labels are mapped to the model's tasks).
        validation: the same for validation (early stopping and best checkpoint), or None.
        config: the :class:`TrainConfig`.
        strategy: a `tf.distribute` strategy (e.g. MirroredStrategy); default: none.
        callbacks: more Keras callbacks, run after early stopping and checkpointing.

    Returns:
        ``(model, history)``.
    """
    config = config or TrainConfig()
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = compile_model(build_model(), config)
    train = task_targets(train, model.tasks)
    with strategy.scope():
        build_training_state(model, next(iter(train)))
    validation = task_targets(validation, model.tasks) if validation is not None else None
    history = model.fit(train, validation_data=validation, epochs=config.epochs, shuffle=False,
                        callbacks=callbacks_for(config, model.tasks, validation is not None) + list(callbacks),
                        verbose=resolve_verbosity(config.verbose))
    return model, history

"""Training on `model.fit`: task losses and metrics, checkpoints, early stopping, strategies.

Every model family (:mod:`tfrec_onerec.families`) trains through :func:`fit`. Two kinds of
model meet here: *task models* (a ``tasks`` attribute; one output per task, compiled with
the tasks' metrics, datasets of ``(features, {label: y})`` mapped to ``(features, {task: y})``,
plus ``{task: sample-space mask}`` sample weights when a task covers only part of the
examples) and models without tasks (datasets of ``(features, targets)`` passed through
unchanged). A model that overrides ``compute_loss`` owns its loss (SASRec's full softmax,
OneRec's next-token loss, the multi-task models' weighted task losses) and is compiled
without one; other task models are compiled with their tasks' losses and loss weights.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Callable, Sequence

import keras
import numpy as np
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
        steps_per_execution: training (and evaluation) steps run per call into the compiled
            function (Keras' ``steps_per_execution``): fewer Python round trips per step, the
            same updates in the same order. Batch-level callbacks see every N-th step.
            Default 1 (off): on 2 CPU cores ``benchmarks/training_levers.py`` found 16
            anywhere from 1.3x faster to 1.4x slower for DIN and SASRec from run to run,
            with identical metrics, so no gain is established yet.
        verbose: Keras verbosity (1 = progress bar, 2 = a line per epoch); ``"auto"``: a
            progress bar on a terminal, a line per epoch in logs.
        batch_size: examples per training batch (the families build their datasets with it).
        seed: the seed of weights and shuffling.
        strategy: ``"none"`` or ``"mirrored"`` (``tf.distribute.MirroredStrategy`` over the
            local devices); see :func:`make_strategy`.
        warmup_fraction: ``None`` (default): a constant learning rate. A fraction in
            [0, 1): Adam follows :func:`learning_rate_schedule` (linear warmup over that
            fraction of the steps, then cosine decay), over ``epochs`` times the batches of
            the training data.
    """

    epochs: int = 3
    learning_rate: float = 1e-3
    early_stopping_patience: int | None = 2
    monitor: str = "auto"
    checkpoint_dir: str | None = None
    jit_compile: bool = False
    steps_per_execution: int = 1
    verbose: int | str = "auto"
    batch_size: int = 256
    seed: int = 0
    strategy: str = "none"
    warmup_fraction: float | None = None

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"TrainConfig.strategy must be one of {STRATEGIES}, got {self.strategy!r}.")
        for name in ("epochs", "batch_size", "steps_per_execution"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 1, got {value!r}.")


STRATEGIES = ("none", "mirrored")


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy called `name` (``"none"``: the default strategy)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "none":
        return tf.distribute.get_strategy()
    raise ValueError(f"Unknown strategy {name!r}; strategies: {', '.join(STRATEGIES)}.")


def learning_rate_schedule(peak: float, total_steps: int, warmup_fraction: float | None = 0.05,
                           final_fraction: float = 0.05):
    """Linear warmup to `peak` over ``warmup_fraction`` of the steps, then cosine decay to
    ``final_fraction * peak`` at `total_steps`; a constant `peak` when ``warmup_fraction`` is None."""
    if warmup_fraction is None:
        return peak
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1) or None, got {warmup_fraction}.")
    warmup = max(1, int(round(warmup_fraction * total_steps)))
    return keras.optimizers.schedules.CosineDecay(0.0, max(1, total_steps - warmup), alpha=final_fraction,
                                                  warmup_target=peak, warmup_steps=warmup)


def has_tasks(model) -> bool:
    """True for task models (outputs keyed by task, compiled with the tasks' losses)."""
    return bool(getattr(model, "tasks", None))


def resolve_verbosity(verbose):
    """``"auto"`` -> 1 (progress bar) on a terminal, 2 (a line per epoch) otherwise."""
    if verbose != "auto":
        return verbose
    return 1 if sys.stdout.isatty() else 2


def owns_loss(model) -> bool:
    """True for a model whose class overrides ``compute_loss`` (compiled without a loss)."""
    return type(model).compute_loss is not keras.Model.compute_loss


def task_losses(tasks: Sequence[Task]) -> tuple:
    """``(losses, loss_weights, metrics)`` dicts keyed by task name for `compile` (the metrics
    are weighted: a task's sample-space mask arrives as its sample weight)."""
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


def compile_model(model: keras.Model, config: TrainConfig, steps_per_epoch: int | None = None) -> keras.Model:
    """Compiles a zoo model with Adam: a task model with its tasks' losses, weights and metrics,
    a model that owns its loss with the optimizer alone.

    Args:
        steps_per_epoch: batches per epoch, needed by ``config.warmup_fraction``'s schedule.
    """
    rate = config.learning_rate
    if config.warmup_fraction is not None:
        if not steps_per_epoch:
            raise ValueError("TrainConfig.warmup_fraction needs the number of training batches; the training "
                             "dataset's cardinality is unknown (give it with assert_cardinality).")
        rate = learning_rate_schedule(config.learning_rate, steps_per_epoch * config.epochs, config.warmup_fraction)
    optimizer = keras.optimizers.Adam(rate)
    if not has_tasks(model):
        model.compile(optimizer=optimizer, jit_compile=config.jit_compile,
                      steps_per_execution=config.steps_per_execution)
        return model
    losses, weights, metrics = task_losses(model.tasks)
    if owns_loss(model):
        losses = weights = None
    model.compile(optimizer=optimizer, loss=losses, loss_weights=weights, weighted_metrics=metrics,
                  jit_compile=config.jit_compile, steps_per_execution=config.steps_per_execution)
    return model


def task_targets(dataset: tf.data.Dataset, tasks: Sequence[Task]) -> tf.data.Dataset:
    """Maps a ``(features, {label: y})`` dataset to ``(features, {task: y})``, and, when a task
    has a ``sample_space``, to ``(features, {task: y}, {task: mask})`` (mask: that label
    column, 1 for the other tasks), so losses and weighted metrics see each task's examples."""
    masked = any(t.sample_space for t in tasks)

    def select(features, labels):
        missing = sorted({c for t in tasks for c in t.columns if c not in labels})
        if missing:
            raise ValueError(f"The dataset has no label column {missing}; it has {sorted(labels)}.")
        targets = {t.name: labels[t.label] for t in tasks}
        if not masked:
            return features, targets
        return features, targets, {t.name: labels[t.sample_space] if t.sample_space else tf.ones_like(labels[t.label])
                                   for t in tasks}

    return dataset.map(select, num_parallel_calls=tf.data.AUTOTUNE)


def monitored_quantity(config: TrainConfig, tasks: Sequence[Task]) -> tuple:
    """``(name, mode)`` of the quantity early stopping and checkpoints follow (``tasks`` empty:
    a model that owns its loss, followed by its validation loss). A named ``monitor`` is
    maximised when it is an AUC, a hit rate, a recall, an NDCG or an accuracy, else minimised."""
    tasks = tasks or ()
    if config.monitor != "auto":
        higher_is_better = config.monitor.endswith("auc") or any(
            word in config.monitor for word in ("hit_rate", "recall", "ndcg", "accuracy"))
        return config.monitor, "max" if higher_is_better else "min"
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
    features, targets, sample_weight = (tuple(batch) + (None,))[:3]
    predictions = model(features)
    model.compute_loss(features, targets, predictions, sample_weight, training=False)
    model.compute_metrics(features, targets, predictions, sample_weight=sample_weight)
    model.reset_metrics()


class StepTimer(keras.callbacks.Callback):
    """Times the training steps alone: not validation, not the first call of each epoch
    (which holds tracing and the pipeline's start-up). With ``steps_per_execution`` N, a
    call runs N steps (Keras reports its first and last step): each of them is credited
    the call's time / N.

    Attributes:
        step_seconds: the duration of every timed step.
    """

    def __init__(self):
        super().__init__()
        self.step_seconds = []
        self._start = None
        self._first_step = 0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter() if batch > 0 else None
        self._first_step = batch

    def on_train_batch_end(self, batch, logs=None):
        if self._start is not None:
            steps = max(1, batch - self._first_step + 1)
            self.step_seconds.extend([(time.perf_counter() - self._start) / steps] * steps)

    def seconds_per_step(self) -> float:
        """The median timed step, in seconds (nan before two steps of an epoch ran)."""
        return float(np.median(self.step_seconds)) if self.step_seconds else float("nan")


def steps_per_epoch(dataset: tf.data.Dataset) -> int | None:
    """The number of batches of `dataset`, when tf.data knows it."""
    n = int(dataset.cardinality())
    return n if n > 0 else None


def fit(build_model: Callable[[], keras.Model], train: tf.data.Dataset, validation: tf.data.Dataset | None = None,
        config: TrainConfig | None = None, strategy: tf.distribute.Strategy | None = None,
        callbacks: Sequence[keras.callbacks.Callback] = ()):
    """Builds, compiles and trains a model with `model.fit`.

    Args:
        build_model: returns a new, uncompiled zoo model; called inside the strategy's scope.
        train: batches of ``(features, {label: y})`` for a task model (labels are mapped to its
            tasks), or ``(features, targets)`` for a model that owns its loss.
        validation: the same for validation (early stopping and best checkpoint), or None.
        config: the :class:`TrainConfig`.
        strategy: a `tf.distribute` strategy; default: ``make_strategy(config.strategy)``.
        callbacks: more Keras callbacks, run after early stopping and checkpointing.

    Returns:
        ``(model, history)``.
    """
    config = config or TrainConfig()
    strategy = strategy or make_strategy(config.strategy)
    with strategy.scope():
        model = compile_model(build_model(), config, steps_per_epoch(train))
    tasks = model.tasks if has_tasks(model) else None
    if tasks:
        train = task_targets(train, tasks)
        validation = task_targets(validation, tasks) if validation is not None else None
    with strategy.scope():
        build_training_state(model, next(iter(train)))
    history = model.fit(train, validation_data=validation, epochs=config.epochs, shuffle=False,
                        callbacks=callbacks_for(config, tasks, validation is not None) + list(callbacks),
                        verbose=resolve_verbosity(config.verbose))
    return model, history

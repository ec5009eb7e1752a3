"""What every zoo model shares: its feature spec, its tasks, checked inputs, a typed signature."""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf
from keras import ops

from tfrec_onerec.features.datasets import example_batch
from tfrec_onerec.features.parsing import check_features
from tfrec_onerec.features.spec import Task, tasks_from_config, tasks_to_config
from tfrec_onerec.layers import as_feature_spec


def per_replica(loss):
    """`loss` divided by the replicas of the current `tf.distribute` strategy: each replica's
    gradients are summed, so a model that computes its own per-replica mean loss must scale it,
    as Keras' built-in losses do."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / replicas if replicas > 1 else loss


def masked_mean(values, mask):
    """Mean of (batch,) `values` over the examples where (batch,) `mask` is 1 (0 if none)."""
    mask = ops.cast(mask, values.dtype)
    return ops.sum(values * mask) / ops.maximum(ops.sum(mask), 1.0)


def example_losses(task: Task, y_true, y_pred):
    """(batch,) binary cross-entropy (probabilities) or squared error of one task."""
    y_true = ops.reshape(ops.cast(y_true, "float32"), (-1,))
    y_pred = ops.reshape(ops.cast(y_pred, "float32"), (-1,))
    if task.kind == "binary":
        y_pred = ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
        return -(y_true * ops.log(y_pred) + (1.0 - y_true) * ops.log(1.0 - y_pred))
    return ops.square(y_true - y_pred)


def mean_task_losses(tasks: Sequence[Task], y, y_pred, sample_weight=None):
    """(tasks,) each task's mean loss over its sample space (``sample_weight[task]``, the
    mask :func:`tfrec_onerec.training.task_targets` gives; None: every example).

    Args:
        y, y_pred: ``{task: (batch,) or (batch, 1)}`` labels and predictions (probabilities
            for binary tasks).
    """
    values = []
    for task in tasks:
        losses = example_losses(task, y[task.name], y_pred[task.name])
        mask = ops.ones_like(losses) if sample_weight is None else ops.reshape(sample_weight[task.name], (-1,))
        values.append(masked_mean(losses, mask))
    return ops.stack(values)


def as_tasks(tasks) -> list:
    """Task names, dicts or :class:`~tfrec_onerec.features.Task` s -> a list of Tasks."""
    return tasks_from_config([Task(t) if isinstance(t, str) else t for t in tasks])


class SpecBuiltModel:
    """Mixin for Keras models whose weights follow from a feature spec, not from input shapes.

    Needs ``self.feature_spec`` and ``self.input_names``. Keras' generic build would trace
    the model with float placeholders, which id features refuse; this one runs the model
    once on a spec-typed one-row batch, and a reloaded model (``.keras``) rebuilds the same way.
    """

    def build(self, input_shape=None):
        """Creates the weights by running the model once on a spec-typed batch."""
        if not self.built:
            self.call(example_batch(self.feature_spec.subset(self.input_names), size=1))
        self.built = True

    def get_build_config(self):
        # `build` needs only the spec (in `get_config`); Keras skips an empty build config.
        return {"input_names": list(self.input_names)}

    def build_from_config(self, config):
        self.build()


class RecommenderModel(SpecBuiltModel, keras.Model):
    """Base class of the zoo's models.

    Subclasses set ``self.input_names`` (the features they read) in ``__init__`` and call
    :meth:`checked_inputs` first thing in ``call``; they return ``{task: (batch, 1) tensor}``.
    (Keras' convention: a rank-1 ``(batch,)`` output makes Keras' built-in losses average over
    the batch before the distribution scaling, doubling gradients under a 2-replica
    MirroredStrategy; ``tests/models/test_din.py`` checks the updates match one device's.)

    Args:
        feature_spec: the :class:`~tfrec_onerec.features.FeatureSpec` or its config.
        tasks: the output tasks (names, dicts or Tasks); at least one.
    """

    def __init__(self, feature_spec, tasks: Sequence = ("click",), **kwargs):
        super().__init__(**kwargs)
        self.feature_spec = as_feature_spec(feature_spec)
        self.tasks = as_tasks(tasks)
        if not self.tasks:
            raise ValueError(f"{type(self).__name__}: at least one task is needed.")
        self.input_names = list(self.feature_spec.names)

    def checked_inputs(self, inputs) -> dict:
        """The model's features from `inputs`, checked against the spec (see `check_features`)."""
        return check_features(inputs, self.feature_spec, self.input_names)


    def input_signature(self) -> dict:
        """``{feature: tf.TensorSpec}`` of the inputs, batch dimension free."""
        spec = self.feature_spec
        return {name: tf.TensorSpec((None,) + spec[name].shape, spec[name].dtype, name=name)
                for name in self.input_names}

    @property
    def _default_save_signature(self):
        # Keras would derive a float32 signature from the build shapes; ours is typed by the spec.
        return tf.function(lambda features: self(features, training=False),
                           input_signature=[self.input_signature()])

    def get_config(self):
        return {**super().get_config(), "feature_spec": self.feature_spec.get_config(),
                "tasks": tasks_to_config(self.tasks)}

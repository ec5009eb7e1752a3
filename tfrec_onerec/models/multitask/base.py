"""What the multi-task rankers share: per-task outputs, masked task losses, loss weighting.

A multi-task model reads every feature as one flat vector (:class:`~tfrec_onerec.layers.
FlatFeatures`), turns it into one representation per task (:meth:`MultiTaskModel.represent`:
what distinguishes MMoE from PLE), and gives each task a tower
(:class:`~tfrec_onerec.layers.TaskTower`) and an output: a probability for a binary task, a
value for a regression task.

Its loss is its own (:meth:`MultiTaskModel.compute_loss`): for every task with a weight
above 0, the mean loss over the task's sample space (binary cross-entropy or squared
error; the sample space arrives as the task's sample weight, see
:func:`tfrec_onerec.training.task_targets`), summed by the model's ``loss_weighting``, plus
any model-specific term (:meth:`MultiTaskModel.extra_loss`, e.g. AITM's calibrator) and
the regularisation losses, divided by the replicas of a `tf.distribute` strategy.
"""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf
from keras import ops

from tfrec_onerec.features.spec import Task
from tfrec_onerec.layers import FlatFeatures, TaskTower
from tfrec_onerec.models.base import RecommenderModel, as_tasks, mean_task_losses, per_replica
from tfrec_onerec.models.multitask.loss_weighting import (GradNormWeighting, UncertaintyWeighting,
                                                          check_loss_weighting, fixed_total)


class MultiTaskModel(RecommenderModel):
    """Base class of the multi-task rankers (not registered itself).

    Args:
        feature_spec: the :class:`~tfrec_onerec.features.FeatureSpec` (or its config).
        tasks: the output tasks, at least two; a task's ``sample_space`` restricts its loss
            and metrics, a ``weight`` of 0 makes it an output that is not trained directly.
        tower_units: widths of each task tower's MLP.
        activation: activation of the towers (and of the experts, where a model has them).
        dropout: dropout in the towers. Default 0.
        l2: L2 penalty on the embeddings and kernels. Default 0.
        loss_weighting: ``"fixed"`` (default), ``"uncertainty"`` or ``"gradnorm"``
            (:mod:`~tfrec_onerec.models.multitask.loss_weighting`).
        gradnorm_alpha, gradnorm_learning_rate: GradNorm's asymmetry and step size.
        field_dim: the common field width of the flat features (for models that stack the
            fields, e.g. LT4REC's interaction; set by such a model, not saved in the config).

    Call:
        inputs: ``{feature: tensor}`` as parsed from the spec.
        Returns ``{task: (batch, 1)}``: probabilities (binary tasks) or values.
    """

    min_tasks = 2

    def __init__(self, feature_spec, tasks: Sequence = ("click", "conversion"), tower_units: Sequence[int] = (64,),
                 activation: str = "relu", dropout: float = 0.0, l2: float = 0.0, loss_weighting: str = "fixed",
                 gradnorm_alpha: float = 1.5, gradnorm_learning_rate: float = 0.025, field_dim: int | None = None,
                 **kwargs):
        super().__init__(feature_spec, tasks, **kwargs)
        if len(self.tasks) < self.min_tasks:
            raise ValueError(f"{type(self).__name__} needs at least {self.min_tasks} tasks, got "
                             f"{[t.name for t in self.tasks]}.")
        self.tower_units = [int(u) for u in tower_units]
        self.activation = activation
        self.dropout = dropout
        self.l2 = l2
        self.loss_weighting = check_loss_weighting(loss_weighting)
        self.gradnorm_alpha = float(gradnorm_alpha)
        self.gradnorm_learning_rate = float(gradnorm_learning_rate)
        self.flat = FlatFeatures(self.feature_spec, self.input_names, l2=l2, field_dim=field_dim, name="features")
        trained = self.trained_tasks
        if not trained:
            raise ValueError(f"{type(self).__name__}: every task has weight 0; nothing would be trained.")
        if loss_weighting == "uncertainty":
            self.weighting = UncertaintyWeighting([t.weight for t in trained], [t.kind == "binary" for t in trained],
                                                  name="uncertainty_weighting")
        elif loss_weighting == "gradnorm":
            self.weighting = GradNormWeighting([t.weight for t in trained], self.gradnorm_alpha,
                                               self.gradnorm_learning_rate, name="gradnorm_weighting")
        else:
            self.weighting = None
        if self.weighting is not None:
            self.weighting.build()  # before any loss is computed: a reloaded model has the weights to load
        self.task_loss_trackers = {t.name: keras.metrics.Mean(name=f"{t.name}_loss") for t in trained}

    @classmethod
    def default_tasks(cls, funnel: Sequence[str]) -> list:
        """The tasks trained when none are named: the data set's funnel (e.g. click, conversion)."""
        if len(funnel) < cls.min_tasks:
            raise ValueError(f"{cls.__name__} needs at least {cls.min_tasks} tasks; name them with --task.")
        return [Task(name) for name in funnel]

    @classmethod
    def output_tasks(cls, tasks: Sequence, hyperparameters=None) -> list:
        """The outputs, as tasks, of a model built with `tasks` (and `hyperparameters`): the
        tasks themselves, unless the model derives more (ESMM)."""
        return as_tasks(tasks)

    @property
    def trained_tasks(self) -> list:
        """The tasks with a loss (weight above 0), in order."""
        return [t for t in self.tasks if t.weight > 0]

    def make_towers(self, tasks: Sequence | None = None) -> list:
        """One :class:`~tfrec_onerec.layers.TaskTower` per task (default: every task)."""
        return [TaskTower(self.tower_units, self.activation, self.dropout, self.l2, name=f"{t.name}_tower")
                for t in (self.tasks if tasks is None else tasks)]

    def task_output(self, task: Task, logit):
        """A tower's (batch, 1) logit as the task's output: a probability or a value."""
        return ops.sigmoid(logit) if task.kind == "binary" else logit

    # -- the model ------------------------------------------------------------------------------
    def represent(self, x, training=None) -> tuple:
        """``(task representations, gate weights)``: one (batch, d) tensor per task from the
        (batch, width) flat features, and ``{gate: (batch, experts)}`` where the model has gates."""
        raise NotImplementedError

    def call(self, inputs, training=None):
        x = self.flat(self.checked_inputs(inputs))
        representations, _ = self.represent(x, training)
        return {t.name: self.task_output(t, tower(r, training=training)[0])
                for t, tower, r in zip(self.tasks, self.towers, representations)}

    def expert_utilisation(self, inputs) -> dict:
        """``{gate: (experts,) mean weight over the batch}`` of every gate (empty without gates):
        how much each expert is used, e.g. to spot experts no gate reads."""
        x = self.flat(self.checked_inputs(inputs))
        _, gates = self.represent(x, training=False)
        return {name: ops.convert_to_numpy(ops.mean(weights, axis=0)) for name, weights in gates.items()}

    # -- the loss -------------------------------------------------------------------------------
    def task_losses(self, y, y_pred, sample_weight=None):
        """(trained tasks,) each task's mean loss over its sample space."""
        return mean_task_losses(self.trained_tasks, y, y_pred, sample_weight)

    def extra_loss(self, y, y_pred, sample_weight=None):
        """A model-specific term added to the weighted task losses (default 0)."""
        return 0.0

    def weighted_total(self, losses):
        """The scalar sum of the (tasks,) task losses under the model's loss weighting."""
        if self.weighting is not None:
            return self.weighting(losses)
        return fixed_total(losses, [t.weight for t in self.trained_tasks])

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return self.total_loss(self.task_losses(y, y_pred, sample_weight), y, y_pred, sample_weight)

    def total_loss(self, losses, y, y_pred, sample_weight=None):
        """The training loss from the (trained tasks,) task losses (tracked as ``<task>_loss``)."""
        for k, task in enumerate(self.trained_tasks):
            self.task_loss_trackers[task.name].update_state(losses[k])
        total = self.weighted_total(losses) + self.extra_loss(y, y_pred, sample_weight)
        if self.losses:
            total = total + ops.sum(ops.stack(self.losses))
        return per_replica(total)

    # -- GradNorm -------------------------------------------------------------------------------
    def shared_layer(self) -> keras.layers.Layer:
        """The last layer all tasks share, whose gradient norms GradNorm balances (default: the
        input embeddings; models with a shared network return its last layer)."""
        return self.flat

    def train_step(self, data):
        if self.loss_weighting != "gradnorm":
            return super().train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        shared = self.shared_layer().trainable_weights
        with tf.GradientTape(persistent=True) as tape:
            y_pred = self(x, training=True)
            losses = self.task_losses(y, y_pred, sample_weight)
            each = tf.unstack(losses)  # sliced under the tape, so each task's loss has a gradient
            loss = self.total_loss(losses, y, y_pred, sample_weight)
        norms = []
        for task_loss in each:
            grads = [tf.convert_to_tensor(g) for g in tape.gradient(task_loss, shared) if g is not None]
            norms.append(tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads])) if grads else tf.zeros(()))
        gradients = tape.gradient(loss, self.trainable_weights)
        del tape
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        self.weighting.update(losses, tf.stack(norms))
        self._loss_tracker.update_state(loss * tf.distribute.get_strategy().num_replicas_in_sync,
                                        sample_weight=tf.shape(tf.nest.flatten(x)[0])[0])
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def get_config(self):
        return {**super().get_config(), "tower_units": self.tower_units, "activation": self.activation,
                "dropout": self.dropout, "l2": self.l2, "loss_weighting": self.loss_weighting,
                "gradnorm_alpha": self.gradnorm_alpha, "gradnorm_learning_rate": self.gradnorm_learning_rate}

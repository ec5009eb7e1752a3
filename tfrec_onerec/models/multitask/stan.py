"""STAN: Stage-Adaptive Network for multi-task recommendation (Li, Zheng, Xiao, Wang, RecSys
2023, arXiv 2306.12232): task losses weighted by each user's learned lifecycle preferences."""
from __future__ import annotations

import math
from typing import Sequence

import keras
from keras import ops

from tfrec_onerec.features.spec import Task
from tfrec_onerec.layers import FlatFeatures
from tfrec_onerec.models.base import as_tasks, example_losses, masked_mean
from tfrec_onerec.models.multitask.gated_experts import CGC
from tfrec_onerec.models.registry import register
from tfrec_onerec.serialization import register_serializable

PREFERENCE_SUFFIX = "_preference"


def rank_within_user(rows):
    """(batch,) 1, 2, ... over each user's examples of the batch (one after another): the
    counter increments of :meth:`STAN.resample`.

    Args:
        rows: (batch,) int32 user rows.
    """
    order = ops.argsort(rows)
    ordered = ops.take(rows, order)
    first = ops.concatenate([ops.ones((1,), "bool"), ops.not_equal(ordered[1:], ordered[:-1])], axis=0)
    positions = ops.arange(ops.shape(rows)[0], dtype="int32")
    segment = ops.cast(ops.cumsum(ops.cast(first, "int32")) - 1, "int32")
    segment_start = ops.segment_max(ops.where(first, positions, 0), segment, num_segments=ops.shape(rows)[0])
    ranks = positions - ops.take(segment_start, segment) + 1
    return ops.scatter(order[:, None], ranks, ops.shape(rows))


@register_serializable
class StagePreference(keras.layers.Layer):
    """STAN's preference branch: a user's preference for each task, from user features alone.

    With ``U`` the (features, dim) matrix of the user's feature vectors:
    ``U' = softmax(W_Q U (W_K U)^T / sqrt(features)) W_V U`` (attention across the
    features, ``W_*`` of shape (features, features)); per task ``k``,
    ``s_k = U' * softmax(U' W_k)`` (softmax over the dim axis, ``W_k`` of shape (dim, dim)) and
    ``y~_k = sigmoid(Dense(1)(flatten(s_k)))``.

    Args:
        num_tasks: tasks to give a preference for.

    Call:
        users: (batch, features, dim). Returns (batch, num_tasks) preferences in (0, 1).
    """

    def __init__(self, num_tasks: int, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = int(num_tasks)

    def build(self, users_shape):
        fields, dim = int(users_shape[1]), int(users_shape[2])
        self.query, self.key, self.value = (self.add_weight(name=n, shape=(fields, fields), initializer="glorot_uniform")
                                            for n in ("query", "key", "value"))
        self.task_attention = self.add_weight(name="task_attention", shape=(self.num_tasks, dim, dim),
                                              initializer="glorot_uniform")
        self.task_kernel = self.add_weight(name="task_kernel", shape=(self.num_tasks, fields * dim),
                                           initializer="glorot_uniform")
        self.task_bias = self.add_weight(name="task_bias", shape=(self.num_tasks,), initializer="zeros")

    def call(self, users):
        fields = users.shape[1]
        q, k, v = (ops.einsum("ij,bjd->bid", w, users) for w in (self.query, self.key, self.value))
        attended = ops.matmul(ops.softmax(ops.matmul(q, ops.transpose(k, (0, 2, 1))) / math.sqrt(fields), axis=-1), v)
        scaled = attended[:, None] * ops.softmax(ops.einsum("bfd,tde->btfe", attended, self.task_attention), axis=-1)
        flat = ops.reshape(scaled, (-1, self.num_tasks, scaled.shape[2] * scaled.shape[3]))
        return ops.sigmoid(ops.einsum("btx,tx->bt", flat, self.task_kernel) + self.task_bias)

    def get_config(self):
        return {**super().get_config(), "num_tasks": self.num_tasks}


@register("stan", family="pointwise")
class STAN(CGC):
    """STAN: a CGC backbone whose task losses each user's Beta-resampled preference weighs.

    * **Backbone**: one extraction level (:class:`~tfrec_onerec.models.multitask.gated_experts.
      CGC`; the paper limits shared experts to the first step), a tower per task.
    * **Preference branch** (:class:`StagePreference`) on the ``user`` features: for each task
      an output ``<task>_preference`` = ``y~_k``, trained by squared error on the user's rate of
      that task over earlier events (the label column ``prior_<label>``, e.g. ``prior_click``).
      The paper describes lifecycle stages (new, wander, stick, loyal) by such rates; the
      model learns a continuous stage, never a stage label.
    * **User-adaptive Beta resampling**: per user and task ``alpha = beta = 1`` and a counter
      ``c``; each training example of the user adds ``c <- c + 1``, ``alpha += y~ c``,
      ``beta += (1 - y~) c`` (so recent evidence counts more), and its task loss is weighted by
      ``gamma ~ Beta(alpha, beta)`` (no gradient). A user with few examples has a wide Beta,
      one with many a narrow one. Evaluation weighs by the Beta mean instead of a draw.
    * **Loss**: ``sum_k [mean(gamma_k * BCE_k) + MSE(y~_k, prior_k)]``.

    Choices where the paper leaves room: within a batch a user's examples count in batch
    order (training batches are shuffled, not in time order); user features of different
    widths are mapped to ``preference_dim`` linearly; the task attention's softmax runs over
    the feature vector's dimensions; the preference targets are rates over *all* earlier
    events of the log (0 before the first).

    Args:
        tasks: the main tasks (binary); each gets a preference output.
        preference_dim: the common width of the user feature vectors. Default 16.
        **kwargs: as :class:`CGC` (``task_experts``, ``shared_experts``, ``expert_units``,
            ``tower_units``...); fixed loss weighting only.
    """

    def __init__(self, feature_spec, tasks: Sequence = ("click", "conversion"), preference_dim: int = 16, **kwargs):
        main = as_tasks(tasks)
        super().__init__(feature_spec, self.output_tasks(main), **kwargs)
        if self.loss_weighting != "fixed":
            raise ValueError("STAN weighs its task losses by the users' preferences; it takes the fixed weighting.")
        if any(t.kind != "binary" for t in main):
            raise ValueError(f"STAN's tasks are binary; got {[(t.name, t.kind) for t in main]}.")
        self.preference_dim = int(preference_dim)
        user_features = [f.name for f in self.feature_spec if f.group == "user"]
        if not user_features:
            raise ValueError(f"STAN needs 'user' features for its preference branch; features are "
                             f"{list(self.feature_spec.names)}.")
        self.user_features = FlatFeatures(self.feature_spec, user_features, field_dim=self.preference_dim,
                                          name="user_features")
        self.preference = StagePreference(len(main), name="stage_preference")
        rows = self.feature_spec[self.feature_spec.user_key].num_rows
        for name in ("alpha", "beta"):
            setattr(self, name, self.add_weight(name=name, shape=(rows, len(main)), initializer="ones",
                                                trainable=False, aggregation="only_first_replica"))
        self.counts = self.add_weight(name="counts", shape=(rows,), initializer="zeros", trainable=False,
                                      aggregation="only_first_replica")
        self.seed_generator = keras.random.SeedGenerator(0)

    @classmethod
    def output_tasks(cls, tasks: Sequence, hyperparameters=None) -> list:
        """The main tasks, then ``<task>_preference`` per task (regression on ``prior_<label>``)."""
        main = as_tasks(tasks)
        return main + [Task(t.name + PREFERENCE_SUFFIX, label=f"prior_{t.label}", kind="regression") for t in main]

    @property
    def main_tasks(self) -> list:
        """The tasks without the preference outputs."""
        return [t for t in self.tasks if not t.name.endswith(PREFERENCE_SUFFIX)]

    def call(self, inputs, training=None):
        features = self.checked_inputs(inputs)
        representations, _ = self.represent(self.flat(features), training)
        preference = self.preference(self.user_features.stacked(features))
        out = {t.name: self.task_output(t, tower(r, training=training)[0])
               for t, tower, r in zip(self.main_tasks, self.towers, representations)}
        out.update({t.name + PREFERENCE_SUFFIX: preference[:, k:k + 1] for k, t in enumerate(self.main_tasks)})
        return out

    def num_gates(self) -> int:
        return len(self.main_tasks)

    def make_towers(self, tasks=None) -> list:
        return super().make_towers(self.main_tasks if tasks is None else tasks)  # no tower for a preference

    # -- the loss -------------------------------------------------------------------------------
    def resample(self, users, preference, training: bool):
        """(batch, tasks) loss weights: Beta draws after this batch's update (training), else the
        Beta means. Updates the users' ``alpha``, ``beta`` and counters when training."""
        rows = ops.cast(self.flat.embedding.lookup_ids(self.feature_spec.user_key, users), "int32")  # OOV-safe
        if training:
            counter = ops.take(self.counts, rows) + ops.cast(rank_within_user(rows), "float32")  # c of each example
            step = ops.stop_gradient(preference) * counter[:, None]
            self.alpha.assign(self.alpha + ops.scatter(rows[:, None], step, ops.shape(self.alpha)))
            self.beta.assign(self.beta + ops.scatter(rows[:, None], counter[:, None] - step, ops.shape(self.beta)))
            self.counts.assign(self.counts + ops.scatter(rows[:, None], ops.ones_like(counter), ops.shape(self.counts)))
        alpha, beta = ops.take(self.alpha, rows, axis=0), ops.take(self.beta, rows, axis=0)
        if not training:
            return alpha / (alpha + beta)
        return keras.random.beta(ops.shape(alpha), alpha, beta, seed=self.seed_generator)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        preference = ops.concatenate([y_pred[t.name + PREFERENCE_SUFFIX] for t in self.main_tasks], axis=-1)
        gamma = ops.stop_gradient(self.resample(x[self.feature_spec.user_key], preference, training))
        losses = []
        for k, task in enumerate(self.main_tasks):
            mask = (ops.ones_like(gamma[:, k]) if sample_weight is None
                    else ops.reshape(ops.cast(sample_weight[task.name], gamma.dtype), (-1,)))
            losses.append(masked_mean(gamma[:, k] * example_losses(task, y[task.name], y_pred[task.name]), mask))
        for task in self.tasks[len(self.main_tasks):]:
            losses.append(ops.mean(example_losses(task, y[task.name], y_pred[task.name])))
        return self.total_loss(ops.stack(losses), y, y_pred, sample_weight)

    def get_config(self):
        from tfrec_onerec.features.spec import tasks_to_config

        return {**super().get_config(), "tasks": tasks_to_config(self.main_tasks), "preference_dim": self.preference_dim}

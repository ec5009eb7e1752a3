"""Adaptive Information Transfer Multi-task (Xi et al., KDD 2021) for sequential conversion funnels."""
from __future__ import annotations

import math
from typing import Sequence

import keras
from keras import ops

from tfrec_onerec.layers import MLP
from tfrec_onerec.models.multitask.base import MultiTaskModel
from tfrec_onerec.models.registry import register
from tfrec_onerec.serialization import register_serializable


@register_serializable
class InformationTransfer(keras.layers.Layer):
    """AITM's adaptive information transfer: attention over {transferred, own} vectors.

    Args:
        units: width of the queries, keys and values (the paper's 32).

    Call:
        transferred: (batch, d) what the previous task passes on. own: (batch, d) this
        task's tower output. Returns ``(mixed, weights)``: (batch, units) and (batch, 2),
        the attention on ``[transferred, own]``.
    """

    def __init__(self, units: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.query = keras.layers.Dense(self.units, use_bias=False, name="query")
        self.key = keras.layers.Dense(self.units, use_bias=False, name="key")
        self.value = keras.layers.Dense(self.units, use_bias=False, name="value")

    def build(self, transferred_shape, own_shape=None):
        for dense in (self.query, self.key, self.value):
            dense.build(transferred_shape)

    def call(self, transferred, own):
        inputs = ops.stack([transferred, own], axis=1)  # (batch, 2, d)
        scores = ops.sum(self.query(inputs) * self.key(inputs), axis=-1) / math.sqrt(self.units)
        weights = ops.softmax(scores, axis=-1)
        return ops.sum(ops.expand_dims(weights, -1) * self.value(inputs), axis=1), weights

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@register("aitm", family="pointwise")
class AITM(MultiTaskModel):
    """AITM: per-task towers with information transferred along the funnel, and a calibrator.

    Tasks are the funnel's steps in order (e.g. click, conversion), each over every
    impression. Task ``t``'s tower output ``q_t`` is combined with ``p_{t-1}``, the previous
    task's result passed through a transfer layer (``Dense(transfer_units)``, ReLU), by
    :class:`InformationTransfer`; the result ``z_t`` gives task t's probability (the first
    task's ``z`` is its tower output) and is what task t passes on.

    The behavioural expectation calibrator adds
    ``calibrator_weight * sum_t mean(max(p_t - p_{t-1}, 0))``: a later step (conversion)
    should never be more probable than an earlier one (click).

    Args:
        tower_units: widths of each task's tower. Default ``(128, 64, 32)`` as in the paper.
        transfer_units: width of the transfer layer and of the attention. Default 32.
        calibrator_weight: the calibrator's weight. Default 0.6 as in the paper.
        **kwargs: as :class:`~tfrec_onerec.models.multitask.base.MultiTaskModel`.
    """

    def __init__(self, feature_spec, tasks: Sequence = ("click", "conversion"),
                 tower_units: Sequence[int] = (128, 64, 32), transfer_units: int = 32, calibrator_weight: float = 0.6,
                 **kwargs):
        super().__init__(feature_spec, tasks, tower_units=tower_units, **kwargs)
        if any(t.kind != "binary" for t in self.tasks):
            raise ValueError(f"AITM's tasks are steps of a funnel (binary); got {[(t.name, t.kind) for t in self.tasks]}.")
        self.transfer_units = int(transfer_units)
        self.calibrator_weight = float(calibrator_weight)
        self.task_mlps = [MLP(self.tower_units, self.activation, self.dropout, self.l2, name=f"{t.name}_tower")
                          for t in self.tasks]
        self.transfers = [keras.layers.Dense(self.transfer_units, activation="relu", name=f"{t.name}_transfer")
                          for t in self.tasks[:-1]]
        self.attention = [InformationTransfer(self.transfer_units, name=f"{t.name}_information_transfer")
                          for t in self.tasks[1:]]
        self.heads = [keras.layers.Dense(1, name=f"{t.name}_logit") for t in self.tasks]

    def represent(self, x, training=None):
        """Each task's ``z_t`` and ``{task: (batch, 2) attention on [transferred, own]}``."""
        own = [mlp(x, training=training) for mlp in self.task_mlps]
        z, weights = [own[0]], {}
        for t in range(1, len(self.tasks)):
            mixed, weights[self.tasks[t].name] = self.attention[t - 1](self.transfers[t - 1](z[-1]), own[t])
            z.append(mixed)
        return z, weights

    def call(self, inputs, training=None):
        x = self.flat(self.checked_inputs(inputs))
        z, _ = self.represent(x, training)
        return {t.name: self.task_output(t, head(zt)) for t, head, zt in zip(self.tasks, self.heads, z)}

    def calibrator(self, y_pred):
        """``sum_t mean(max(p_t - p_{t-1}, 0))`` over consecutive funnel steps (scalar)."""
        p = [ops.reshape(y_pred[t.name], (-1,)) for t in self.tasks]
        return ops.sum(ops.stack([ops.mean(ops.relu(later - earlier)) for earlier, later in zip(p, p[1:])]))

    def extra_loss(self, y, y_pred, sample_weight=None):
        return self.calibrator_weight * self.calibrator(y_pred)

    def get_config(self):
        return {**super().get_config(), "transfer_units": self.transfer_units,
                "calibrator_weight": self.calibrator_weight}

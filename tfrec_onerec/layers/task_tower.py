"""A task tower: an MLP on a task's representation, ending in one logit."""
from __future__ import annotations

from typing import Sequence

import keras

from tfrec_onerec.layers.mlp import MLP
from tfrec_onerec.serialization import register_serializable


@register_serializable
class TaskTower(keras.layers.Layer):
    """``MLP(units) -> Dense(1)``: the logit (or regression value) of one task.

    Args:
        units: widths of the MLP; empty: the logit reads the input directly.
        activation, dropout, l2: as :class:`~tfrec_onerec.layers.MLP`.

    Call:
        inputs: (batch, in_dim). Returns ``(logit, hidden)``: (batch, 1) and the MLP's
        output (batch, units[-1]) (the input itself without units), which AITM transfers.
    """

    def __init__(self, units: Sequence[int] = (), activation: str = "relu", dropout: float = 0.0, l2: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.units = [int(u) for u in units]
        self.activation = activation
        self.dropout = dropout
        self.l2 = l2
        self.mlp = MLP(self.units, activation, dropout, l2, name="mlp") if self.units else None
        self.logit = keras.layers.Dense(1, name="logit")

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.mlp is not None:
            self.mlp.build(shape)
            shape = self.mlp.compute_output_shape(shape)
        self.logit.build(shape)

    def call(self, inputs, training=None):
        hidden = self.mlp(inputs, training=training) if self.mlp is not None else inputs
        return self.logit(hidden), hidden

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation,
                "dropout": self.dropout, "l2": self.l2}

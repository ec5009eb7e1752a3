"""The multilayer perceptron block."""
from typing import Sequence

import keras

from tfrec_onerec.layers.activations import activation_layer
from tfrec_onerec.serialization import register_serializable


@register_serializable
class MLP(keras.layers.Layer):
    """A stack of ``Dense -> activation -> dropout`` blocks.

    Args:
        units: widths of the hidden layers, e.g. ``(200, 80)``.
        activation: ``"dice"``, ``"prelu"`` or any Keras activation name. Default ``"relu"``.
        dropout: dropout rate after each block. Default 0.
        l2: L2 penalty on the kernels. Default 0.

    Call:
        inputs: float tensor (..., in_dim). Returns (..., units[-1]).
    """

    def __init__(self, units: Sequence[int], activation: str = "relu", dropout: float = 0.0,
                 l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not units or any(int(u) < 1 for u in units):
            raise ValueError(f"MLP: units must be a non-empty list of positive widths, got {units!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLP: dropout must be in [0, 1), got {dropout}.")
        self.units = [int(u) for u in units]
        self.activation = activation
        self.dropout = dropout
        self.l2 = l2
        regularizer = keras.regularizers.L2(l2) if l2 else None
        self.dense_layers = [keras.layers.Dense(u, kernel_regularizer=regularizer, name=f"dense_{i}")
                             for i, u in enumerate(self.units)]
        self.activations = [activation_layer(activation, f"{activation}_{i}") for i in range(len(self.units))]
        self.dropouts = [keras.layers.Dropout(dropout) for _ in self.units] if dropout else []

    def build(self, input_shape):
        shape = tuple(input_shape)
        for dense, act in zip(self.dense_layers, self.activations):
            dense.build(shape)
            shape = shape[:-1] + (dense.units,)
            act.build(shape)

    def call(self, inputs, training=None):
        x = inputs
        for i, (dense, act) in enumerate(zip(self.dense_layers, self.activations)):
            x = act(dense(x))  # Keras passes `training` on to layers that take it (Dice)
            if self.dropouts:
                x = self.dropouts[i](x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.units[-1],)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation,
                "dropout": self.dropout, "l2": self.l2}

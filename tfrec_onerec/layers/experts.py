"""Experts and their softmax gates: the parts of MoE, MMoE, CGC and PLE."""
from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from tfrec_onerec.layers.activations import activation_layer
from tfrec_onerec.serialization import register_serializable


@register_serializable
class ExpertGroup(keras.layers.Layer):
    """``num_experts`` MLP experts of the same shape, reading the same input.

    The experts' kernels are stacked (one ``(experts, in, out)`` weight per layer) so a
    group is one batched matrix product per layer, not one per expert.

    Args:
        num_experts: experts in the group (>= 1).
        units: widths of each expert's layers, e.g. ``(64,)``.
        activation: activation after every layer (a Keras name, ``"dice"`` or ``"prelu"``).
        l2: L2 penalty on the kernels. Default 0.

    Call:
        inputs: (batch, in_dim). Returns (batch, num_experts, units[-1]).
    """

    def __init__(self, num_experts: int, units: Sequence[int], activation: str = "relu", l2: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        if int(num_experts) < 1:
            raise ValueError(f"ExpertGroup: num_experts must be >= 1, got {num_experts}.")
        if not units or any(int(u) < 1 for u in units):
            raise ValueError(f"ExpertGroup: units must be a non-empty list of positive widths, got {units!r}.")
        self.num_experts = int(num_experts)
        self.units = [int(u) for u in units]
        self.activation = activation
        self.l2 = l2
        self.activations = [activation_layer(activation, f"{activation}_{i}") for i in range(len(self.units))]

    def build(self, input_shape):
        regularizer = keras.regularizers.L2(self.l2) if self.l2 else None
        width = int(input_shape[-1])
        self.kernels, self.biases = [], []
        for i, units in enumerate(self.units):
            self.kernels.append(self.add_weight(name=f"kernel_{i}", shape=(self.num_experts, width, units),
                                                initializer="glorot_uniform", regularizer=regularizer))
            self.biases.append(self.add_weight(name=f"bias_{i}", shape=(self.num_experts, units), initializer="zeros"))
            self.activations[i].build((None, self.num_experts, units))
            width = units

    def call(self, inputs):
        x = ops.einsum("bi,eio->beo", inputs, self.kernels[0]) + self.biases[0]
        x = self.activations[0](x)
        for kernel, bias, activation in zip(self.kernels[1:], self.biases[1:], self.activations[1:]):
            x = activation(ops.einsum("bei,eio->beo", x, kernel) + bias)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_experts, self.units[-1])

    def get_config(self):
        return {**super().get_config(), "num_experts": self.num_experts, "units": self.units,
                "activation": self.activation, "l2": self.l2}


@register_serializable
class Gate(keras.layers.Layer):
    """A softmax gate: from its input, one weight per expert, summing to 1.

    Args:
        num_experts: the experts it mixes.

    Call:
        inputs: (batch, in_dim) the gate's input. experts: (batch, num_experts, dim).
        Returns ``(mixture, weights)``: (batch, dim) and (batch, num_experts).
    """

    def __init__(self, num_experts: int, **kwargs):
        super().__init__(**kwargs)
        self.num_experts = int(num_experts)
        self.dense = keras.layers.Dense(self.num_experts, name="logits")

    def build(self, inputs_shape, experts_shape=None):
        self.dense.build(inputs_shape)

    def call(self, inputs, experts):
        weights = ops.softmax(self.dense(inputs), axis=-1)
        return ops.einsum("be,bed->bd", weights, experts), weights

    def get_config(self):
        return {**super().get_config(), "num_experts": self.num_experts}

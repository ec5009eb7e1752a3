"""Dense layers whose kernel is seen through one of several fixed 0/1 masks (sparse sharing)."""
from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from tfrec_onerec.layers.activations import activation_layer
from tfrec_onerec.serialization import register_serializable


@register_serializable
class MaskedDense(keras.layers.Layer):
    """``activation(x @ (kernel * masks[k]) + bias)``: one kernel, ``num_masks`` masks.

    A weight whose mask entry is 0 is exactly zero for that mask's user, whatever the
    kernel holds, and gets no gradient through it; other masks may still use and train it
    (LT4REC's neuron-level sparse sharing between tasks). The masks are non-trainable
    weights (saved with the model) and start all ones.

    Args:
        units: output width.
        num_masks: how many masks (one per task).
        activation: a Keras activation name (``"dice"``/``"prelu"`` too); ``None``: linear.

    Call:
        inputs: (batch, in_dim). mask_index: which mask (a Python int).
        Returns (batch, units).
    """

    def __init__(self, units: int, num_masks: int, activation: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.num_masks = int(num_masks)
        if self.units < 1 or self.num_masks < 1:
            raise ValueError(f"MaskedDense: units and num_masks must be >= 1, got {units}, {num_masks}.")
        self.activation = activation
        self.activation_layer = activation_layer(activation, "activation") if activation else None

    def build(self, input_shape):
        width = int(input_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=(width, self.units), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        self.masks = self.add_weight(name="masks", shape=(self.num_masks, width, self.units), initializer="ones",
                                     trainable=False)
        if self.activation_layer is not None:
            self.activation_layer.build((None, self.units))

    def masked_kernel(self, mask_index: int):
        """The (in_dim, units) kernel as mask `mask_index` lets its user see it."""
        return self.kernel * self.masks[mask_index]

    def call(self, inputs, mask_index: int = 0):
        x = ops.matmul(inputs, self.masked_kernel(mask_index)) + self.bias
        return self.activation_layer(x) if self.activation_layer is not None else x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "num_masks": self.num_masks,
                "activation": self.activation}


@register_serializable
class MaskedMLP(keras.layers.Layer):
    """A stack of :class:`MaskedDense` layers sharing the mask index.

    Args:
        units: widths of the layers, e.g. ``(512, 256, 128)``.
        num_masks: masks per layer (one per task).
        activation: activation of every layer. Default ``"relu"``.

    Call:
        inputs: (batch, in_dim). mask_index: which mask. Returns (batch, units[-1]).
    """

    def __init__(self, units: Sequence[int], num_masks: int, activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        if not units:
            raise ValueError("MaskedMLP: units must be a non-empty list of widths.")
        self.units = [int(u) for u in units]
        self.num_masks = int(num_masks)
        self.activation = activation
        self.dense_layers = [MaskedDense(u, num_masks, activation, name=f"masked_dense_{i}")
                             for i, u in enumerate(self.units)]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.dense_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, inputs, mask_index: int = 0):
        x = inputs
        for layer in self.dense_layers:
            x = layer(x, mask_index=mask_index)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.units[-1],)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "num_masks": self.num_masks,
                "activation": self.activation}

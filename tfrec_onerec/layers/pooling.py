"""Masked pooling of a sequence of vectors."""
import keras
from keras import ops

from tfrec_onerec.serialization import register_serializable

POOLING_MODES = ("sum", "mean")


@register_serializable
class SequencePooling(keras.layers.Layer):
    """Sums or averages the non-padding steps of a sequence (DIN's base model sum-pools).

    Args:
        mode: ``"sum"`` or ``"mean"``. An all-padding row pools to zeros in both modes.

    Call:
        values: (batch, length, dim) floats. key_mask: (batch, length) bool, True = real step.
        Returns (batch, dim).
    """

    def __init__(self, mode: str = "sum", **kwargs):
        super().__init__(**kwargs)
        if mode not in POOLING_MODES:
            raise ValueError(f"SequencePooling: mode must be one of {POOLING_MODES}, got {mode!r}.")
        self.mode = mode

    def call(self, values, key_mask):
        weights = ops.cast(key_mask, values.dtype)
        total = ops.sum(values * ops.expand_dims(weights, -1), axis=1)
        if self.mode == "mean":
            total = total / ops.maximum(ops.sum(weights, axis=1, keepdims=True), 1.0)
        return total

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}

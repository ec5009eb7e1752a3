"""DLRM's feature interaction: the pairwise dot products of the field vectors."""
from __future__ import annotations

import numpy as np
from keras import layers, ops

from tfrec_onerec.serialization import register_serializable


@register_serializable
class DotInteraction(layers.Layer):
    """The dot product of every pair of distinct fields (the strict upper triangle of
    ``F F^T``; the full matrix repeats each pair and adds each field's squared norm).

    Call:
        inputs: (batch, fields, dim). Returns (batch, fields * (fields - 1) / 2), pairs in
        row-major order ``(0, 1), (0, 2), ..., (1, 2), ...``.
    """

    def call(self, inputs):
        fields = inputs.shape[1]
        products = ops.einsum("bfd,bgd->bfg", inputs, inputs)
        rows, cols = np.triu_indices(fields, k=1)
        flat = ops.reshape(products, (-1, fields * fields))
        return ops.take(flat, rows * fields + cols, axis=1)

    def compute_output_shape(self, input_shape):
        fields = input_shape[1]
        return (input_shape[0], fields * (fields - 1) // 2)

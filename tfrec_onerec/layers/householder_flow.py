"""Householder flow: a volume-preserving normalizing flow (Tomczak & Welling, 2016).

Each step reflects a vector in the hyperplane orthogonal to a vector ``u_k``::

    H_k = I - 2 u_k u_k^T / ||u_k||^2          (orthogonal, |det H_k| = 1)
    z_k = H_k z_{k-1}

so the flow changes the shape of a distribution (a diagonal Gaussian becomes one with a full
covariance) but never its volume: ``log q_K(z_K) = log q_0(z_0)``, and a variational loss
needs no log-determinant term. The vectors are conditioned on the example, as in the paper:
``u_1 = W_1 h + b_1`` from a conditioning vector ``h``, then ``u_k = W_k u_{k-1} + b_k``.
"""
from __future__ import annotations

import keras
from keras import ops

from tfrec_onerec.layers._validation import check_positive
from tfrec_onerec.serialization import register_serializable


def householder_reflect(z, u):
    """(batch, d) `z` reflected in the hyperplane orthogonal to (batch, d) `u` (per row).
    A zero `u` leaves its row unchanged."""
    squared_norm = ops.sum(u * u, axis=-1, keepdims=True)
    scale = ops.where(squared_norm > 0, 2.0 / ops.maximum(squared_norm, 1e-12), 0.0)
    return z - scale * ops.sum(u * z, axis=-1, keepdims=True) * u


@register_serializable
class HouseholderFlow(keras.layers.Layer):
    """K conditioned Householder reflections of a (batch, d) vector.

    Args:
        steps: K, the number of reflections (0: the identity).

    Call:
        z: (batch, d) the vectors to transform.
        condition: (batch, c) what the reflection vectors are computed from.
        Returns (batch, d): ``H_K ... H_1 z`` (same norm as `z`, per row).
    """

    def __init__(self, steps: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.steps = int(steps)
        if self.steps < 0:
            raise ValueError(f"HouseholderFlow: steps must be >= 0, got {steps!r}.")
        self.projections = []

    def build(self, z_shape, condition_shape=None):
        check_positive("HouseholderFlow", "the vector width", z_shape[-1])
        self.projections = [keras.layers.Dense(z_shape[-1], name=f"reflection_{k}") for k in range(self.steps)]
        inputs = condition_shape
        for projection in self.projections:
            projection.build(inputs)
            inputs = (None, z_shape[-1])
        self.built = True

    def reflection_vectors(self, condition) -> list:
        """The K (batch, d) vectors ``u_k`` for (batch, c) `condition`."""
        vectors, inputs = [], condition
        for projection in self.projections:
            inputs = projection(inputs)
            vectors.append(inputs)
        return vectors

    def call(self, z, condition):
        for u in self.reflection_vectors(condition):
            z = householder_reflect(z, u)
        return z

    def compute_output_shape(self, z_shape, condition_shape=None):
        return tuple(z_shape)

    def get_config(self):
        return {**super().get_config(), "steps": self.steps}

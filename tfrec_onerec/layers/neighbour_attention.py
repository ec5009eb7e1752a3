"""Neighbour enhancement: attention over a node's neighbours of each type, then across the types."""
from __future__ import annotations

import keras
from keras import ops

from tfrec_onerec.layers._validation import check_positive
from tfrec_onerec.serialization import register_serializable


def masked_softmax(scores, mask, axis: int = -1):
    """Softmax of `scores` over `axis` among the entries where `mask` is True; 0 elsewhere,
    and 0 everywhere on a slice with no True entry (it then sums to 0, not 1)."""
    mask = ops.cast(mask, scores.dtype)
    scores = ops.where(mask > 0, scores, ops.full_like(scores, -1e9))
    weights = ops.exp(scores - ops.max(scores, axis=axis, keepdims=True)) * mask
    return weights / ops.maximum(ops.sum(weights, axis=axis, keepdims=True), 1e-12)


@register_serializable
class NeighbourAttention(keras.layers.Layer):
    """One vector from a node's neighbours of several types (NeighbourEnhancedDNN, DLP-KDD 2021).

    With ``attention=True`` (the paper's two levels):

    * **node level**, within each neighbour type ``t`` (a GAT head: Velickovic et al. 2018)::

          e_j   = LeakyReLU_0.2(a_t^T [W_t h ; W_t n_j])        h: the node, n_j: its neighbours
          alpha = softmax over the real neighbours j of e_j
          z_t   = sum_j alpha_j W_t n_j                           (units,)

    * **type level**, across the types (HAN's semantic attention, Wang et al. 2019), per
      example rather than averaged over the batch, so a score never depends on the other
      examples of its batch::

          s_t  = q^T tanh(U z_t + b)
          beta = softmax over the types with at least one neighbour of s_t
          z    = sum_t beta_t z_t

    The node level is the released code's attention (scores of the projected target and
    neighbours, softmax over the neighbours, no activation after the sum), here masked and
    with one projection per type. With ``attention=False`` (the released code's pooling): ``z_t`` is the mean of the real
    neighbours' vectors and ``z`` the mean of ``z_t`` over the types that have neighbours.
    A node without any neighbour gets ``z = 0`` in both modes. The node itself is not among
    its neighbours (no self-loop): the model feeds its own embedding to the ranker beside ``z``.

    Args:
        num_types: T, the neighbour types.
        units: width of ``W_t`` and of the output; ``None`` (default): the input width. With
            ``attention=False`` the output is the input width.
        type_units: width of the type-level projection ``U``. Default 16.
        attention: the two attention levels; False: masked means. Default True.

    Call:
        node: (batch, d) the node's own vector. neighbours: (batch, T, K, d) its neighbours'
        vectors. mask: (batch, T, K) bool, True at real neighbours.
        Returns (batch, units).
    """

    def __init__(self, num_types: int, units: int | None = None, type_units: int = 16, attention: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_types = check_positive("NeighbourAttention", "num_types", num_types)
        self.units = None if units is None else check_positive("NeighbourAttention", "units", units)
        self.type_units = check_positive("NeighbourAttention", "type_units", type_units)
        self.attention = bool(attention)

    def build(self, node_shape, neighbours_shape=None, mask_shape=None):
        dim = int(node_shape[-1])
        if neighbours_shape is not None and int(neighbours_shape[-1]) != dim:
            raise ValueError(f"NeighbourAttention: node width {dim} and neighbour width {neighbours_shape[-1]} "
                             "differ.")
        if not self.attention:
            return
        units = self.units or dim
        types = self.num_types
        self.projection = self.add_weight(name="projection", shape=(types, dim, units), initializer="glorot_uniform")
        self.node_score = self.add_weight(name="node_score", shape=(types, units), initializer="glorot_uniform")
        self.neighbour_score = self.add_weight(name="neighbour_score", shape=(types, units),
                                               initializer="glorot_uniform")
        self.type_projection = self.add_weight(name="type_projection", shape=(units, self.type_units),
                                               initializer="glorot_uniform")
        self.type_bias = self.add_weight(name="type_bias", shape=(self.type_units,), initializer="zeros")
        self.type_query = self.add_weight(name="type_query", shape=(self.type_units,), initializer="glorot_uniform")

    def type_vectors(self, node, neighbours, mask):
        """(batch, T, units) ``z_t`` of every type (0 for a type without neighbours)."""
        real = ops.cast(mask, neighbours.dtype)
        if not self.attention:
            total = ops.sum(neighbours * ops.expand_dims(real, -1), axis=2)
            return total / ops.maximum(ops.sum(real, axis=2, keepdims=True), 1.0)
        projected_node = ops.einsum("bd,tdu->btu", node, self.projection)
        projected = ops.einsum("btkd,tdu->btku", neighbours, self.projection)
        scores = (ops.expand_dims(ops.sum(projected_node * self.node_score, axis=-1), -1)
                  + ops.sum(projected * self.neighbour_score[:, None, :], axis=-1))  # (B, T, K)
        alpha = masked_softmax(ops.leaky_relu(scores, negative_slope=0.2), mask)
        return ops.sum(ops.expand_dims(alpha, -1) * projected, axis=2)

    def type_weights(self, vectors, type_mask):
        """(batch, T) ``beta``: type-level attention, or the uniform mean over the types with
        neighbours when ``attention=False``; all 0 for a node without neighbours."""
        if not self.attention:
            real = ops.cast(type_mask, vectors.dtype)
            return real / ops.maximum(ops.sum(real, axis=-1, keepdims=True), 1.0)
        hidden = ops.tanh(ops.einsum("btu,uv->btv", vectors, self.type_projection) + self.type_bias)
        return masked_softmax(ops.einsum("btv,v->bt", hidden, self.type_query), type_mask)

    def call(self, node, neighbours, mask):
        vectors = self.type_vectors(node, neighbours, mask)
        beta = self.type_weights(vectors, ops.any(mask, axis=-1))
        return ops.sum(ops.expand_dims(beta, -1) * vectors, axis=1)

    def compute_output_shape(self, node_shape, neighbours_shape=None, mask_shape=None):
        width = node_shape[-1] if not self.attention else (self.units or node_shape[-1])
        return (node_shape[0], width)

    def get_config(self):
        return {**super().get_config(), "num_types": self.num_types, "units": self.units,
                "type_units": self.type_units, "attention": self.attention}

"""DIN's target attention: the activation unit and weighted sum pooling."""
from typing import Sequence

import keras
from keras import ops

from tfrec_onerec.layers.mlp import MLP
from tfrec_onerec.serialization import register_serializable


@register_serializable
class TargetAttention(keras.layers.Layer):
    """Weights each behaviour by its relevance to the candidate and sum-pools them.

    The activation unit of DIN (Zhou et al., KDD 2018, Fig. 2) scores behaviour ``e_j``
    against candidate ``v_a``::

        w_j = Dense_1(MLP([e_j, v_a, e_j - v_a, e_j * v_a]))
        v_U = sum_j w_j * e_j                              (padding steps have w_j = 0)

    As in the paper the weights are not normalised by default (``softmax=False``), which
    keeps the intensity of the user's interest; ``softmax=True`` normalises them over the
    non-padding steps. A row with no behaviour pools to zeros either way.

    Args:
        hidden_units: the activation unit's MLP widths. Default ``(80, 40)``.
        activation: ``"dice"`` (default), ``"prelu"`` or a Keras activation.
        softmax: normalise the weights with a masked softmax. Default False.

    Call:
        query: (batch, dim) candidate embedding. keys: (batch, length, dim) behaviours.
        key_mask: (batch, length) bool, True for real behaviours.
        Returns (batch, dim).
    """

    def __init__(self, hidden_units: Sequence[int] = (80, 40), activation: str = "dice",
                 softmax: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = list(hidden_units)
        self.activation = activation
        self.softmax = softmax
        self.unit = MLP(self.hidden_units, activation=activation, name="activation_unit")
        self.score = keras.layers.Dense(1, name="score")

    def build(self, query_shape, keys_shape=None, key_mask_shape=None):
        keys_shape = tuple(keys_shape)
        self.unit.build(keys_shape[:-1] + (4 * keys_shape[-1],))
        self.score.build(keys_shape[:-1] + (self.hidden_units[-1],))

    def attention_weights(self, query, keys, key_mask, training=None):
        """(batch, length) weights of the behaviours; 0 on padding."""
        length = ops.shape(keys)[1]
        queries = ops.repeat(ops.expand_dims(query, 1), length, axis=1)
        features = ops.concatenate([keys, queries, keys - queries, keys * queries], axis=-1)
        scores = ops.squeeze(self.score(self.unit(features, training=training)), -1)
        mask = ops.cast(key_mask, scores.dtype)
        if not self.softmax:
            return scores * mask
        scores = ops.where(key_mask, scores, ops.full_like(scores, -1e9))
        scores = scores - ops.max(scores, axis=-1, keepdims=True)
        exp = ops.exp(scores) * mask
        return exp / ops.maximum(ops.sum(exp, axis=-1, keepdims=True), 1e-12)

    def call(self, query, keys, key_mask, training=None):
        weights = self.attention_weights(query, keys, key_mask, training=training)
        return ops.sum(keys * ops.expand_dims(weights, -1), axis=1)

    def compute_output_shape(self, query_shape, keys_shape=None, key_mask_shape=None):
        return tuple(query_shape)

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "activation": self.activation, "softmax": self.softmax}


@register_serializable
class MultiHeadTargetAttention(keras.layers.Layer):
    """Multi-head attention of the candidate over a few behaviours (SIM's Exact Search Unit).

    Head ``h`` scores behaviour ``z_j`` against candidate ``e_a`` by the inner product of
    two projections, normalises over the real behaviours, and pools the behaviours
    themselves (SIM, Pi et al. CIKM 2020, Eq. 3)::

        a^h_j  = softmax_j( <W^h_b z_j, W^h_a e_a> / sqrt(head_dim) )
        head_h = sum_j a^h_j z_j
        output = [head_1, ..., head_H]

    A row with no real behaviour pools to zeros.

    Args:
        num_heads: H. Default 4.
        head_dim: width of each head's projections; default: the behaviours' width.

    Call:
        query: (batch, dq) candidate. keys: (batch, K, dz) behaviours.
        key_mask: (batch, K) bool, True for real behaviours.
        Returns (batch, H * dz).
    """

    def __init__(self, num_heads: int = 4, head_dim: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if int(num_heads) < 1:
            raise ValueError(f"MultiHeadTargetAttention: num_heads must be >= 1, got {num_heads}.")
        self.num_heads = int(num_heads)
        self.head_dim = int(head_dim) if head_dim else None

    def build(self, query_shape, keys_shape=None, key_mask_shape=None):
        width = self.head_dim or int(keys_shape[-1])
        self.query_projection = self.add_weight(name="query_projection", initializer="glorot_uniform",
                                                shape=(int(query_shape[-1]), self.num_heads, width))
        self.key_projection = self.add_weight(name="key_projection", initializer="glorot_uniform",
                                              shape=(int(keys_shape[-1]), self.num_heads, width))

    def attention_weights(self, query, keys, key_mask):
        """(batch, H, K) each head's weights over the behaviours; 0 on padding."""
        queries = ops.einsum("bd,dhw->bhw", query, self.query_projection)
        projected = ops.einsum("bkd,dhw->bhkw", keys, self.key_projection)
        scores = ops.einsum("bhkw,bhw->bhk", projected, queries) / ops.sqrt(ops.cast(ops.shape(queries)[-1], "float32"))
        mask = ops.expand_dims(key_mask, 1)
        scores = ops.where(mask, scores, ops.full_like(scores, -1e9))
        exp = ops.exp(scores - ops.max(scores, axis=-1, keepdims=True)) * ops.cast(mask, scores.dtype)
        return exp / ops.maximum(ops.sum(exp, axis=-1, keepdims=True), 1e-12)

    def call(self, query, keys, key_mask):
        heads = ops.einsum("bhk,bkd->bhd", self.attention_weights(query, keys, key_mask), keys)
        return ops.reshape(heads, (-1, self.num_heads * keys.shape[-1]))

    def compute_output_shape(self, query_shape, keys_shape=None, key_mask_shape=None):
        return (query_shape[0], self.num_heads * keys_shape[-1])

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "head_dim": self.head_dim}

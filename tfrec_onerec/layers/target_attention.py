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

"""STAMP: Short-Term Attention/Memory Priority model (Liu et al., KDD 2018).

STAMP reads a session's items and weighs the general interest of the whole session against
the current interest of its last click. For the prefix ``x_1..x_t`` (item embeddings)::

    m_s     = mean(x_1..x_t)                                  (session memory)
    alpha_i = w_0 . sigmoid(W_1 x_i + W_2 x_t + W_3 m_s + b_a)  for i <= t   (Eq. 7, not normalised)
    m_a     = sum_i alpha_i x_i                               (attention memory, Eq. 8)
    h_s     = tanh(W_s m_a + b_s),   h_t = tanh(W_t x_t + b_t)  (the two MLP cells)
    z_i     = <h_s, h_t, x_i> = sum_k h_s[k] h_t[k] x_i[k]    (trilinear score of item i)

and a softmax over all items gives the next-item distribution. The representation of
position t is therefore ``h_s * h_t`` and the item table is the output layer, which makes
STAMP a :class:`~tfrec_onerec.models.sequence.next_item.NextItemModel`: it trains with the
full-softmax cross-entropy at every position of a sequence (each position is the last click
of its prefix) and shares the next-item recommendation and export.

``attention=False`` gives the paper's STMP, which uses ``m_s`` in place of ``m_a``. The
paper applies a sigmoid to ``z_i`` before the softmax; like the released code this one
feeds ``z_i`` to the softmax directly (a sigmoid bounds every logit to (0, 1), which leaves
the softmax nearly uniform over thousands of items).
"""
from __future__ import annotations

import keras
from keras import ops

from tfrec_onerec.models.registry import register
from tfrec_onerec.models.sequence.next_item import NextItemModel


@register("stamp", family="next_item")
class STAMP(NextItemModel):
    """STAMP: attention to the session's items steered by the last click, trilinear scores.

    Args:
        feature_spec, sequence_feature, l2, top_n: as
            :class:`~tfrec_onerec.models.sequence.next_item.NextItemModel` (the sequence
            feature's ``embedding_dim`` is d).
        attention: use the attention memory ``m_a`` (STAMP, default); False: the session
            mean ``m_s`` (STMP).

    Call:
        inputs: ``{sequence_feature: (batch, L) int ids}`` (oldest first, right-padded).
        Returns (batch, L, d) ``h_s * h_t`` of every prefix, zero at padded positions.
    """

    def __init__(self, feature_spec, sequence_feature: str | None = None, attention: bool = True, l2: float = 0.0,
                 top_n: int = 10, **kwargs):
        super().__init__(feature_spec, sequence_feature, l2=l2, top_n=top_n, **kwargs)
        self.attention = bool(attention)
        if self.attention:
            self.item_projection = keras.layers.Dense(self.dim, use_bias=False, name="w1")
            self.last_projection = keras.layers.Dense(self.dim, use_bias=False, name="w2")
            self.memory_projection = keras.layers.Dense(self.dim, name="w3")  # its bias is b_a
            self.attention_vector = keras.layers.Dense(1, use_bias=False, name="w0")
        self.general_interest = keras.layers.Dense(self.dim, activation="tanh", name="general_interest")
        self.current_interest = keras.layers.Dense(self.dim, activation="tanh", name="current_interest")

    def attention_memory(self, x, memory):
        """(batch, L, d) ``m_a`` of every prefix from (batch, L, d) items `x` and their
        (batch, L, d) prefix means `memory`; the (batch, L, L) weights ``alpha[t, i]`` are 0
        for ``i > t``."""
        steered = self.last_projection(x) + self.memory_projection(memory)  # (batch, L_t, d)
        hidden = ops.sigmoid(ops.expand_dims(steered, 2) + ops.expand_dims(self.item_projection(x), 1))
        alpha = ops.squeeze(self.attention_vector(hidden), -1)  # (batch, L_t, L_i)
        causal = ops.tril(ops.ones((self.max_len, self.max_len), alpha.dtype))
        return ops.matmul(alpha * causal, x)

    def call(self, inputs, training=None):
        ids = self.ids(inputs)
        real = ops.cast(ops.not_equal(ids, 0), "float32")  # (batch, L)
        x = self.embed(ids)  # zeros at padding
        memory = ops.cumsum(x, axis=1) / ops.expand_dims(ops.maximum(ops.cumsum(real, axis=1), 1.0), -1)
        session = self.attention_memory(x, memory) if self.attention else memory
        return self.general_interest(session) * self.current_interest(x) * ops.expand_dims(real, -1)

    def get_config(self):
        return {**super().get_config(), "attention": self.attention}

"""Deep Interest Evolution Network (Zhou et al., AAAI 2019).

DIEN reads the same features as :class:`~tfrec_onerec.models.sequence.din.DIN` (user
profile, candidate, behaviour sequence, context) and replaces DIN's attention pooling with
two recurrent layers:

* **interest extractor**: a GRU over the behaviour embeddings ``e_1..e_T`` (oldest first)
  gives interest states ``h_1..h_T``. Its **auxiliary loss** asks each state to tell the
  behaviour that really came next from a sampled one (paper Eq. 1)::

      L_aux = -mean_t [ log sigmoid(<h_t, e_{t+1}>) + log(1 - sigmoid(<h_t, e^-_{t+1}>)) ]

  over the steps whose next behaviour is real. The negative ``e^-_{t+1}`` is the behaviour
  at the same step of the next row of the batch (a sample of the behaviour distribution
  that needs no item-to-attribute table in the graph; the paper samples from the item
  pool). It is added to the CTR loss with weight ``auxiliary_weight`` (the paper's alpha, 1).
* **interest evolving layer**: attention of each state to the candidate ``e_a``,
  ``a_t = softmax_t(h_t W e_a)`` (Eq. 4, over the real steps), steers a second GRU, by
  default an AUGRU (:mod:`tfrec_onerec.layers.interest_evolution`); its last state ``h'_T``
  is the user's interest in this candidate.

The MLP reads ``[user profile, candidate, h'_T, context]`` (Fig. 2) and, with
``behaviour_sum=True`` (the default, as in the released code whose runs the paper reports), also
the sum of the behaviour embeddings and its product with the candidate, ``[sum_t e_t,
e_a * sum_t e_t]``. Both GRUs are as wide as a behaviour embedding (the sum of the history
features' widths), which the inner product of the auxiliary loss needs.
"""
from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from tfrec_onerec.layers.interest_evolution import EVOLUTION_MODES, InterestEvolution
from tfrec_onerec.models.base import per_replica
from tfrec_onerec.models.registry import register
from tfrec_onerec.models.sequence.din import DINBase


def auxiliary_loss(states, behaviours, negatives, mask):
    """DIEN's auxiliary loss (module docstring).

    Args:
        states: (batch, T, d) interest states h_t. behaviours: (batch, T, d) embeddings e_t.
        negatives: (batch, T, d) embeddings of sampled behaviours (step t+1 is compared with h_t).
        mask: (batch, T) bool, True for real behaviours; a pair counts when its next
            behaviour and its negative are both real.

    Returns:
        Scalar mean binary cross-entropy over the counted pairs (0 when there is none).
    """
    now, after, negative = states[:, :-1], behaviours[:, 1:], negatives[:, 1:]
    positive_logit = ops.sum(now * after, axis=-1)
    negative_logit = ops.sum(now * negative, axis=-1)
    # -log sigmoid(x) = softplus(-x); -log(1 - sigmoid(x)) = softplus(x)
    pair_loss = ops.softplus(-positive_logit) + ops.softplus(negative_logit)
    counted = ops.cast(mask[:, 1:], pair_loss.dtype)
    return ops.sum(pair_loss * counted) / ops.maximum(ops.sum(counted), 1.0)


@register("dien", family="pointwise")
class DIEN(DINBase):
    """Deep Interest Evolution Network: GRU interest extractor with an auxiliary loss, then AUGRU.

    Args:
        evolution: how attention steers the evolving GRU, ``"augru"`` (default, the
            paper's), ``"agru"`` or ``"aigru"``.
        auxiliary_weight: weight of the auxiliary loss (alpha). Default 1.0; 0 turns it off.
        behaviour_sum: also feed the MLP the summed behaviours and their product with the
            candidate (the released code). Default True; False: the final interest alone (Fig. 2).
        **kwargs: as :class:`~tfrec_onerec.models.sequence.din.DINBase` (``feature_spec``,
            ``tasks``, ``mlp_units``, ``activation``, ``dropout``, ``l2``).

    Call:
        inputs: ``{feature: tensor}`` as parsed from the spec. Returns ``{task: (batch, 1)
        probability}``. In training the auxiliary loss is added to ``model.losses``.
    """

    def __init__(self, feature_spec, tasks: Sequence = ("click",), evolution: str = "augru",
                 auxiliary_weight: float = 1.0, behaviour_sum: bool = True, **kwargs):
        if evolution not in EVOLUTION_MODES:
            raise ValueError(f"DIEN: evolution must be one of {EVOLUTION_MODES}, got {evolution!r}.")
        self.evolution = evolution
        self.auxiliary_weight = float(auxiliary_weight)
        self.behaviour_sum = bool(behaviour_sum)
        super().__init__(feature_spec, tasks, **kwargs)
        width = sum(f.embedding_dim for f in self.history_features)
        self.extractor = keras.layers.GRU(width, return_sequences=True, name="interest_extractor")
        self.attention_kernel = keras.layers.Dense(width, use_bias=False, name="attention_kernel")
        self.evolving = InterestEvolution(width, evolution, name="interest_evolving")

    def _make_pooling(self):
        return None  # the extractor and the evolving layer pool the behaviours

    def interest_attention(self, states, query, key_mask):
        """(batch, T) attention ``softmax_t(h_t W e_a)`` over the real steps (0 on padding)."""
        scores = ops.sum(states * ops.expand_dims(self.attention_kernel(query), 1), axis=-1)
        scores = ops.where(key_mask, scores, ops.full_like(scores, -1e9))
        weights = ops.exp(scores - ops.max(scores, axis=-1, keepdims=True)) * ops.cast(key_mask, scores.dtype)
        return weights / ops.maximum(ops.sum(weights, axis=-1, keepdims=True), 1e-12)

    def _pool(self, query, keys, key_mask, training=None):
        states = self.extractor(keys, mask=key_mask, training=training)
        if training and self.auxiliary_weight:
            negatives = ops.roll(keys, 1, axis=0)
            mask = ops.logical_and(key_mask, ops.roll(key_mask, 1, axis=0))
            self.add_loss(per_replica(self.auxiliary_weight * auxiliary_loss(states, keys, negatives, mask)))
        interest = self.evolving(states, self.interest_attention(states, query, key_mask), mask=key_mask)
        if not self.behaviour_sum:
            return interest
        summed = ops.sum(keys * ops.expand_dims(ops.cast(key_mask, keys.dtype), -1), axis=1)
        return ops.concatenate([interest, summed, query * summed], axis=-1)

    def get_config(self):
        return {**super().get_config(), "evolution": self.evolution, "auxiliary_weight": self.auxiliary_weight,
                "behaviour_sum": self.behaviour_sum}

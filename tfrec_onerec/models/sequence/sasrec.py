"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

The model reads a user's item sequence and, at every position ``t``, predicts the item
that comes next::

    x_t   = sqrt(d) * E[s_t] + P[t]                          (item embedding + learned position)
    H     = LN(Block_N(... Block_1(Dropout(x)) ...))         (causal self-attention blocks)
    r_t,i = <H_t, E[i]>                                      (the item table is the output layer)

Each block is a pre-LN :class:`~tfrec_onerec.layers.transformer.TransformerBlock` with a
causal mask and SASRec's point-wise feed-forward (ReLU, width d). The item table is shared
between input and output, as in the paper.

Training, inference and export are those of every next-item model
(:class:`~tfrec_onerec.models.sequence.next_item.NextItemModel`): next-item prediction at
every real position with the **full softmax** cross-entropy over all ``num_items`` items.
At MovieLens-100K's 1,682 items the full softmax is cheap, and it is the loss later work
found to train SASRec best (Klenitskiy & Vasilev, RecSys 2023). The paper's own loss (one
sampled negative per position, binary cross-entropy) is not implemented.

Sequences follow the package convention: oldest first, right-padded with 0 (see
:mod:`tfrec_onerec.data.sequences`). The user representation is the output at the last
real position. Padding (0) embeds to zeros and is masked; out-of-vocabulary ids
(``< 0`` or ``> num_items``) share the OOV embedding; neither is ever recommended.

Public API: :class:`SASRec` (registry name ``sasrec``): ``model(features)`` -> (batch, L, d)
hidden states; ``item_scores``, ``recommend``, ``score_items`` and the export endpoints of
:class:`~tfrec_onerec.models.sequence.next_item.NextItemModel`.
"""
from __future__ import annotations

import keras
from keras import ops

from tfrec_onerec.layers.position_embedding import PositionEmbedding
from tfrec_onerec.layers.transformer import TransformerBlock
from tfrec_onerec.models.registry import register
from tfrec_onerec.models.sequence.next_item import NextItemModel


@register("sasrec", family="next_item")
class SASRec(NextItemModel):
    """SASRec: causal self-attention over the item sequence, next-item full softmax.

    Args:
        feature_spec, sequence_feature, l2, top_n: as
            :class:`~tfrec_onerec.models.sequence.next_item.NextItemModel` (the sequence
            feature's ``embedding_dim`` is the model width d, its ``max_len`` the positions).
        num_blocks: self-attention blocks. Default 2 (the paper's).
        num_heads: attention heads (must divide d). Default 1 (the paper's).
        ffn_dim: hidden width of the feed-forward; ``None`` (default): d, as in the paper.
        dropout: dropout on embeddings, attention weights and residual branches. Default 0.2.
        activation: feed-forward activation. Default ``"relu"`` (the paper's).

    Call:
        inputs: ``{sequence_feature: (batch, L) int ids}`` (extra keys are ignored).
        Returns (batch, L, d) float32 hidden states, zero at padded positions.

    Export:
        ``tfrec_onerec.export.export_saved_model(model, "saved_models/sasrec")`` after the
        model is built (trained) writes :meth:`serving_endpoints` and :meth:`warmup_inputs`.
    """

    def __init__(self, feature_spec, sequence_feature: str | None = None, num_blocks: int = 2, num_heads: int = 1,
                 ffn_dim: int | None = None, dropout: float = 0.2, activation: str = "relu", l2: float = 0.0,
                 top_n: int = 10, **kwargs):
        super().__init__(feature_spec, sequence_feature, l2=l2, top_n=top_n, **kwargs)
        if num_blocks < 1:
            raise ValueError(f"SASRec: num_blocks must be >= 1, got {num_blocks}.")
        if self.dim % num_heads:
            raise ValueError(f"SASRec: num_heads={num_heads} must divide the embedding_dim "
                             f"{self.dim} of {self.sequence_feature!r}.")
        self.num_blocks = int(num_blocks)
        self.num_heads = int(num_heads)
        self.ffn_dim = ffn_dim
        self.dropout = dropout
        self.activation = activation

        self.positions = PositionEmbedding(self.max_len, name="positions")
        self.embedding_dropout = keras.layers.Dropout(dropout)
        self.blocks = [TransformerBlock(num_heads, ffn_dim=ffn_dim or self.dim, activation=activation, causal=True,
                                        dropout=dropout, name=f"block_{i}") for i in range(self.num_blocks)]
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")

    def call(self, inputs, training=None):
        ids = self.ids(inputs)
        return self.encode(self.tokens(ids), ops.not_equal(ids, 0), training=training)

    def tokens(self, ids):
        """(batch, L, d) input tokens of (batch, L) ids: ``sqrt(d) * E[s_t] + P[t]``."""
        x = self.embed(ids) * (self.dim ** 0.5)
        return x + self.positions(x)

    def encode(self, tokens, padding_mask, training=None):
        """(batch, L, d) hidden states of (batch, L, d) `tokens` (dropout, the causal blocks, the
        final norm), zero where the (batch, L) bool `padding_mask` is False."""
        x = self.embedding_dropout(tokens, training=training)
        x = x * ops.expand_dims(ops.cast(padding_mask, x.dtype), -1)
        for block in self.blocks:
            x = block(x, padding_mask=padding_mask, training=training)
        return self.final_norm(x) * ops.expand_dims(ops.cast(padding_mask, x.dtype), -1)

    def get_config(self):
        return {**super().get_config(), "num_blocks": self.num_blocks, "num_heads": self.num_heads,
                "ffn_dim": self.ffn_dim, "dropout": self.dropout, "activation": self.activation}

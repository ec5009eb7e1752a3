"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

The model reads a user's item sequence and, at every position ``t``, predicts the item
that comes next::

    x_t   = sqrt(d) * E[s_t] + P[t]                          (item embedding + learned position)
    H     = LN(Block_N(... Block_1(Dropout(x)) ...))         (causal self-attention blocks)
    r_t,i = <H_t, E[i]>                                      (the item table is the output layer)

Each block is a pre-LN :class:`~tfrec_onerec.layers.transformer.TransformerBlock` with a
causal mask and SASRec's point-wise feed-forward (ReLU, width d). The item table is shared
between input and output, as in the paper.

Training: next-item prediction at every real position with the **full softmax**
cross-entropy over all ``num_items`` items. At MovieLens-100K's 1,682 items the full
softmax is cheap, and it is the loss later work found to train SASRec best (Klenitskiy &
Vasilev, RecSys 2023). Padded positions (target 0) and out-of-vocabulary targets are left
out of the mean. The paper's own loss (one sampled negative per position,
binary cross-entropy) is not implemented.

Sequences follow the package convention: oldest first, right-padded with 0 (see
:mod:`tfrec_onerec.data.sequences`). The user representation is the output at the last
real position. Padding (0) embeds to zeros and is masked; out-of-vocabulary ids
(``< 0`` or ``> num_items``) share the OOV embedding; neither is ever recommended.

Public API:

* :class:`SASRec` (registry name ``sasrec``): ``model(features)`` -> (batch, L, d) hidden
  states; :meth:`SASRec.item_scores`, :meth:`SASRec.recommend`, :meth:`SASRec.score_items`.
* Export: :func:`tfrec_onerec.export.export_saved_model` writes ``recommend`` (raw history
  tensor) and ``serving_default`` (serialized tf.Example) signatures with a TF Serving
  warmup record each (:meth:`SASRec.serving_endpoints`, :meth:`SASRec.warmup_inputs`),
  loadable without tfrec_onerec.
* :func:`evaluate_full_ranking`: leave-one-out full-ranking Recall@K / NDCG@K.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfrec_onerec.data.sequences import NextItemData, exclude_seen
from tfrec_onerec.features.parsing import check_features, parse_examples
from tfrec_onerec.features.tfrecord import serialize_rows
from tfrec_onerec.layers import FeatureEmbedding, as_feature_spec
from tfrec_onerec.layers.position_embedding import PositionEmbedding
from tfrec_onerec.layers.transformer import TransformerBlock
from tfrec_onerec.metrics import ranking_metrics_from_ranks, target_ranks
from tfrec_onerec.models.base import SpecBuiltModel, per_replica
from tfrec_onerec.models.registry import register

RECOMMEND_SIGNATURE = "recommend"
SCORE_SIGNATURE = "score_items"
SERVING_SIGNATURE = "serving_default"
EXAMPLES_INPUT = "examples"


@register("sasrec", family="next_item")
class SASRec(SpecBuiltModel, keras.Model):
    """SASRec: causal self-attention over the item sequence, next-item full softmax.

    Args:
        feature_spec: the :class:`~tfrec_onerec.features.FeatureSpec` (or its config); it
            needs a ``sequence`` feature of item ids (e.g.
            :func:`~tfrec_onerec.data.sequences.next_item_spec`). Its ``embedding_dim`` is
            the model width d, its ``max_len`` the number of positions.
        sequence_feature: the name of that feature; default: the spec's only sequence
            feature (an error if there are several).
        num_blocks: self-attention blocks. Default 2 (the paper's).
        num_heads: attention heads (must divide d). Default 1 (the paper's).
        ffn_dim: hidden width of the feed-forward; ``None`` (default): d, as in the paper.
        dropout: dropout on embeddings, attention weights and residual branches. Default 0.2.
        activation: feed-forward activation. Default ``"relu"`` (the paper's).
        l2: L2 penalty on the looked-up item embeddings. Default 0.
        top_n: items :meth:`recommend` returns by default, and the exported signatures
            return (fixed in the SavedModel). Default 10; at most the number of items.

    Call:
        inputs: ``{sequence_feature: (batch, L) int ids}`` (extra keys are ignored).
        Returns (batch, L, d) float32 hidden states, zero at padded positions.

    Fit:
        ``model.compile(optimizer=...)`` (no loss: the model owns it) and
        ``model.fit(ds)`` on batches of ``({sequence_feature: (batch, L)}, (batch, L)
        next-item targets)`` such as :meth:`NextItemData.train_dataset`.

    Export:
        ``tfrec_onerec.export.export_saved_model(model, "saved_models/sasrec")`` after the
        model is built (trained) writes :meth:`serving_endpoints` and :meth:`warmup_inputs`.
    """

    def __init__(self, feature_spec, sequence_feature: str | None = None, num_blocks: int = 2, num_heads: int = 1,
                 ffn_dim: int | None = None, dropout: float = 0.2, activation: str = "relu", l2: float = 0.0,
                 top_n: int = 10, **kwargs):
        super().__init__(**kwargs)
        self.feature_spec = as_feature_spec(feature_spec)
        sequences = [f.name for f in self.feature_spec if f.kind == "sequence"]
        if sequence_feature is None:
            if len(sequences) != 1:
                raise ValueError(f"SASRec: pass sequence_feature; the spec has sequence features {sequences} "
                                 "(exactly one is needed to pick it by default).")
            sequence_feature = sequences[0]
        if sequence_feature not in sequences:
            raise ValueError(f"SASRec: sequence_feature {sequence_feature!r} is not a sequence feature of the spec; "
                             f"sequence features are {sequences}.")
        if num_blocks < 1:
            raise ValueError(f"SASRec: num_blocks must be >= 1, got {num_blocks}.")
        feature = self.feature_spec[sequence_feature]
        if isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or not 1 <= top_n <= feature.vocab_size:
            raise ValueError(f"SASRec: top_n must be an integer in 1..{feature.vocab_size} (the number of items), "
                             f"got {top_n!r}.")
        if feature.embedding_dim % num_heads:
            raise ValueError(f"SASRec: num_heads={num_heads} must divide the embedding_dim "
                             f"{feature.embedding_dim} of {sequence_feature!r}.")
        self.sequence_feature = sequence_feature
        self.num_blocks = int(num_blocks)
        self.num_heads = int(num_heads)
        self.ffn_dim = ffn_dim
        self.dropout = dropout
        self.activation = activation
        self.l2 = l2
        self.top_n = int(top_n)
        self.input_names = [sequence_feature]
        self.num_items = feature.vocab_size
        self.max_len = feature.max_len
        self.dim = feature.embedding_dim

        self.embedding = FeatureEmbedding(self.feature_spec, [sequence_feature], l2=l2, name="embedding")
        self.positions = PositionEmbedding(self.max_len, name="positions")
        self.embedding_dropout = keras.layers.Dropout(dropout)
        self.blocks = [TransformerBlock(num_heads, ffn_dim=ffn_dim or self.dim, activation=activation, causal=True,
                                        dropout=dropout, name=f"block_{i}") for i in range(self.num_blocks)]
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")

    # -- network ---------------------------------------------------------------------------
    def _ids(self, inputs):
        return check_features(inputs, self.feature_spec, self.input_names)[self.sequence_feature]

    def call(self, inputs, training=None):
        ids = self._ids(inputs)
        padding_mask = ops.not_equal(ids, 0)
        x = self.embedding({self.sequence_feature: ids})[self.sequence_feature] * (self.dim ** 0.5)
        x = x + self.positions(x)
        x = self.embedding_dropout(x, training=training)
        x = x * ops.expand_dims(ops.cast(padding_mask, x.dtype), -1)
        for block in self.blocks:
            x = block(x, padding_mask=padding_mask, training=training)
        return self.final_norm(x) * ops.expand_dims(ops.cast(padding_mask, x.dtype), -1)

    def item_embeddings(self):
        """(num_items, d): the output embeddings of items ``1..num_items`` (row j = item j+1)."""
        table = self.embedding.table(self.feature_spec[self.sequence_feature].vocab)
        return table[1:self.num_items + 1]

    def _logits(self, hidden):
        return ops.matmul(hidden, ops.transpose(ops.cast(self.item_embeddings(), hidden.dtype)))

    # -- training ----------------------------------------------------------------------------
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Mean full-softmax cross-entropy of the next item over real target positions.

        Args:
            y: (batch, L) next-item ids; positions with 0 (padding) or an id outside
                ``1..num_items`` are left out. y_pred: (batch, L, d) hidden states.

        Returns:
            The scalar loss, plus the model's added losses (e.g. L2), scaled for the
            number of replicas of a `tf.distribute` strategy.
        """
        targets = ops.cast(y, "int32")
        valid = ops.logical_and(targets >= 1, targets <= self.num_items)
        labels = ops.where(valid, targets - 1, 0)
        ce = keras.losses.sparse_categorical_crossentropy(labels, self._logits(y_pred), from_logits=True)
        weights = ops.cast(valid, ce.dtype)
        if sample_weight is not None:
            weights = weights * ops.cast(ops.reshape(sample_weight, (-1, 1)), ce.dtype)
        loss = ops.sum(ce * weights) / ops.maximum(ops.sum(weights), 1.0)
        for extra in self.losses:
            loss = loss + ops.cast(ops.sum(extra), loss.dtype)
        return per_replica(loss)

    # -- inference -------------------------------------------------------------------------
    def user_representation(self, inputs, training=None):
        """(batch, d): the hidden state at each history's last real position (zeros for an
        empty history)."""
        ids = self._ids(inputs)
        hidden = self(inputs, training=training)
        last = ops.maximum(ops.sum(ops.cast(ops.not_equal(ids, 0), "int32"), axis=1) - 1, 0)
        return ops.take_along_axis(hidden, ops.reshape(last, (-1, 1, 1)), axis=1)[:, 0, :]

    def item_scores(self, inputs, training=None):
        """(batch, num_items) scores of the next item; column j is item j + 1."""
        return self._logits(self.user_representation(inputs, training=training))

    def recommend(self, inputs, top_n: int | None = None, exclude_history: bool = True):
        """The top-N next items for each history, as graph ops (used by the export).

        Args:
            inputs: ``{sequence_feature: (batch, L) ids}``.
            top_n: items returned per row (at most num_items); default: the model's ``top_n``.
            exclude_history: never recommend an item of the history. Default True.

        Returns:
            ``(item_ids (batch, top_n) int64, scores (batch, top_n) float32)``, best first.
            Padding and OOV are never recommended; when fewer than top_n items are left
            after excluding the history, the remaining slots hold id 0 with score -inf.
        """
        top_n = min(int(self.top_n if top_n is None else top_n), self.num_items)
        scores = self.item_scores(inputs)
        if exclude_history:
            ids = self._ids(inputs)
            seen = ops.any(ops.equal(ops.expand_dims(ids, -1),
                                     ops.arange(1, self.num_items + 1, dtype=ids.dtype)[None, None, :]), axis=1)
            scores = ops.where(seen, ops.full_like(scores, -np.inf), scores)
        values, columns = ops.top_k(scores, top_n)
        item_ids = ops.where(ops.isinf(values), 0, ops.cast(columns, "int64") + 1)
        return item_ids, values

    def score_items(self, histories: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """numpy (n, num_items) :meth:`item_scores` of (n, L) right-padded histories, in batches."""
        histories = np.asarray(histories, np.int64)
        score = tf.function(lambda h: self.item_scores({self.sequence_feature: h}, training=False))
        return np.concatenate([score(tf.constant(histories[i:i + batch_size])).numpy()
                               for i in range(0, len(histories), batch_size)], axis=0)

    def input_signature(self) -> dict:
        """``{sequence_feature: tf.TensorSpec((None, L), int64)}``."""
        return {self.sequence_feature: tf.TensorSpec((None, self.max_len), tf.int64, name=self.sequence_feature)}

    def serving_endpoints(self) -> dict:
        """``{signature: (function, input signature)}`` for :func:`tfrec_onerec.export.export_saved_model`.

        * ``recommend``: ``{sequence_feature: (batch, L) int64}`` history (oldest first,
          right-padded with 0) -> ``{"item_ids": (batch, top_n) int64, "scores": (batch,
          top_n) float32}``, best first, never an item of the history, padding or OOV
          (slots beyond the items left after excluding the history hold id 0, score -inf).
        * ``serving_default``: ``examples`` (batch,) serialized tf.Example holding the
          sequence feature as an int64 list (any length; the newest L are kept) -> the same.
        * ``score_items``: the history as for ``recommend`` -> ``{"scores": (batch, num_items)
          float32}``, column j for item j + 1 (what full-ranking evaluation reads).

        Only core TensorFlow ops: the SavedModel loads with ``tf.saved_model.load`` in a
        process that never imports tfrec_onerec.
        """
        # A built model called without shapes keeps its weights and forgets the input shapes
        # Keras recorded in `fit`; from those Keras would trace an extra default function with
        # float inputs while saving, which the id check of `call` refuses.
        self.build()
        spec = self.feature_spec.subset(self.input_names)

        def recommend(features):
            item_ids, scores = self.recommend(features)
            return {"item_ids": item_ids, "scores": scores}

        def serve_examples(examples):
            return recommend(parse_examples(examples, spec))

        def score_items(features):
            return {"scores": self.item_scores(features)}

        return {RECOMMEND_SIGNATURE: (recommend, [self.input_signature()]),
                SERVING_SIGNATURE: (serve_examples, [tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)]),
                SCORE_SIGNATURE: (score_items, [self.input_signature()])}

    def warmup_inputs(self) -> dict:
        """One TF Serving warmup request per signature: a history of one item (item 1)."""
        history = np.zeros((1, self.max_len), np.int64)
        history[0, 0] = 1
        examples = serialize_rows({self.sequence_feature: history}, self.feature_spec.subset(self.input_names))
        return {RECOMMEND_SIGNATURE: {self.sequence_feature: history},
                SERVING_SIGNATURE: {EXAMPLES_INPUT: np.array(examples, dtype=object)},
                SCORE_SIGNATURE: {self.sequence_feature: history}}

    def get_config(self):
        return {**super().get_config(), "feature_spec": self.feature_spec.get_config(),
                "sequence_feature": self.sequence_feature, "num_blocks": self.num_blocks,
                "num_heads": self.num_heads, "ffn_dim": self.ffn_dim, "dropout": self.dropout,
                "activation": self.activation, "l2": self.l2, "top_n": self.top_n}


def evaluate_full_ranking(scores: np.ndarray, data: NextItemData, split: str = "test",
                          ks: Sequence[int] = (10, 20)) -> dict:
    """Leave-one-out full-ranking metrics: the target ranked among all unseen items.

    The items of each user's history before the target are excluded (set to -inf); the
    target's 1-based rank among the rest gives ``recall@k`` (= hit rate, one target per
    user), ``ndcg@k`` and ``mrr`` (:func:`tfrec_onerec.metrics.ranking_metrics_from_ranks`;
    ties rank the lower item id first, :func:`tfrec_onerec.metrics.target_ranks`).

    Args:
        scores: (U, num_items) scores of ``data``'s evaluated users for the split, column j
            = item j + 1 (e.g. ``model.score_items(data.inputs(split))``, or a popularity
            row broadcast to every user).
        data: the :class:`~tfrec_onerec.data.sequences.NextItemData`.
        split: ``"valid"`` or ``"test"``.
        ks: cut-offs.

    Returns:
        ``{"recall@k", "ndcg@k" for each k, "mrr", "users"}`` as floats (users: an int).
    """
    targets = data.targets(split)
    scores = np.broadcast_to(np.asarray(scores, np.float64), (len(targets), data.num_items))
    ranks = target_ranks(exclude_seen(scores, data.seen_mask(split)), targets - 1)
    metrics = ranking_metrics_from_ranks(ranks, ks)
    out = {}
    for k in ks:
        out[f"recall@{k}"] = metrics[f"hit_rate@{k}"]
        out[f"ndcg@{k}"] = metrics[f"ndcg@{k}"]
    out["mrr"] = metrics["mrr"]
    out["users"] = len(targets)
    return out

"""What every next-item model shares: the item table as output layer, the full-softmax loss,
top-N recommendation without seen items, and the serving endpoints.

A next-item model reads a user's item sequence (oldest first, right-padded with 0, as
:mod:`tfrec_onerec.data.sequences` writes it) and, at every position ``t``, returns a
representation ``H_t`` of the prefix ``s_1..s_t``; the score of item ``i`` as the next one is
``<H_t, E[i]>`` with ``E`` the model's item embedding table (shared by input and output).
A subclass writes only ``call`` (the network: ``(batch, L) ids -> (batch, L, d)``, zero at
padded positions, position t seeing nothing after t) and adds its ``get_config`` entries;
:class:`NextItemModel` gives it:

* training: next-item prediction at every real position with the **full softmax**
  cross-entropy over all ``num_items`` items (:meth:`NextItemModel.compute_loss`); padded
  positions (target 0) and out-of-vocabulary targets are left out of the mean;
* inference: the user representation at the last real position, every item's score,
  top-N recommendations that never repeat the history, padding or OOV;
* export (:func:`tfrec_onerec.export.export_saved_model`): ``recommend``, ``serving_default``
  (serialized tf.Example), ``score_items`` and ``retrieve`` (any k) signatures, each with a
  TF Serving warmup record, built from core TensorFlow ops only.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfrec_onerec.data.sequences import NextItemData
from tfrec_onerec.features.parsing import check_features, parse_examples
from tfrec_onerec.features.tfrecord import serialize_rows
from tfrec_onerec.layers import FeatureEmbedding, as_feature_spec
from tfrec_onerec.metrics import full_ranking_metrics
from tfrec_onerec.models.base import SpecBuiltModel, per_replica

RECOMMEND_SIGNATURE = "recommend"
SCORE_SIGNATURE = "score_items"
SERVING_SIGNATURE = "serving_default"
RETRIEVE_SIGNATURE = "retrieve"
K_INPUT = "k"
EXAMPLES_INPUT = "examples"


class NextItemModel(SpecBuiltModel, keras.Model):
    """Base class of the next-item models (module docstring).

    Args:
        feature_spec: the :class:`~tfrec_onerec.features.FeatureSpec` (or its config); it
            needs a ``sequence`` feature of item ids (e.g.
            :func:`~tfrec_onerec.data.sequences.next_item_spec`). Its ``embedding_dim`` is
            the model width d, its ``max_len`` the number of positions.
        sequence_feature: the name of that feature; default: the spec's only sequence
            feature (an error if there are several).
        l2: L2 penalty on the looked-up item embeddings. Default 0.
        top_n: items :meth:`recommend` returns by default, and the exported signatures
            return (fixed in the SavedModel). Default 10; at most the number of items.

    Attributes set for subclasses: ``sequence_feature``, ``num_items``, ``max_len``, ``dim``,
    ``embedding`` (the :class:`~tfrec_onerec.layers.FeatureEmbedding` of the sequence feature).

    Fit:
        ``model.compile(optimizer=...)`` (no loss: the model owns it) and ``model.fit(ds)`` on
        batches of ``({sequence_feature: (batch, L)}, (batch, L) next-item targets)`` such as
        :meth:`~tfrec_onerec.data.sequences.NextItemData.train_dataset`.
    """

    def __init__(self, feature_spec, sequence_feature: str | None = None, l2: float = 0.0, top_n: int = 10,
                 **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.feature_spec = as_feature_spec(feature_spec)
        sequences = [f.name for f in self.feature_spec if f.kind == "sequence"]
        if sequence_feature is None:
            if len(sequences) != 1:
                raise ValueError(f"{name}: pass sequence_feature; the spec has sequence features {sequences} "
                                 "(exactly one is needed to pick it by default).")
            sequence_feature = sequences[0]
        if sequence_feature not in sequences:
            raise ValueError(f"{name}: sequence_feature {sequence_feature!r} is not a sequence feature of the "
                             f"spec; sequence features are {sequences}.")
        feature = self.feature_spec[sequence_feature]
        if isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or not 1 <= top_n <= feature.vocab_size:
            raise ValueError(f"{name}: top_n must be an integer in 1..{feature.vocab_size} (the number of items), "
                             f"got {top_n!r}.")
        self.sequence_feature = sequence_feature
        self.l2 = l2
        self.top_n = int(top_n)
        self.input_names = [sequence_feature]
        self.num_items = feature.vocab_size
        self.max_len = feature.max_len
        self.dim = feature.embedding_dim
        self.embedding = FeatureEmbedding(self.feature_spec, [sequence_feature], l2=l2, name="embedding")

    # -- network helpers ----------------------------------------------------------------------
    def ids(self, inputs):
        """The (batch, L) item ids of `inputs`, checked against the spec."""
        return check_features(inputs, self.feature_spec, self.input_names)[self.sequence_feature]

    def embed(self, ids):
        """(batch, L, d) item embeddings of (batch, L) ids (zeros at padding)."""
        return self.embedding({self.sequence_feature: ids})[self.sequence_feature]

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
                ``1..num_items`` are left out. y_pred: (batch, L, d) representations.

        Returns:
            The scalar loss, plus the model's added losses (e.g. L2), scaled for the
            number of replicas of a `tf.distribute` strategy.
        """
        labels, valid = self.next_item_labels(y)
        ce = keras.losses.sparse_categorical_crossentropy(labels, self._logits(y_pred), from_logits=True)
        return self.mean_over_targets(ce, valid, sample_weight)

    def next_item_labels(self, y):
        """``(labels, valid)`` of (batch, L) next-item ids: the 0-based item column (0 where not
        valid) and whether the position has a target in ``1..num_items``."""
        targets = ops.cast(y, "int32")
        valid = ops.logical_and(targets >= 1, targets <= self.num_items)
        return ops.where(valid, targets - 1, 0), valid

    def mean_over_targets(self, per_position, valid, sample_weight=None):
        """The mean of (batch, L) `per_position` losses over the `valid` positions (rows weighted
        by `sample_weight`), plus the added losses, scaled for the replicas."""
        weights = ops.cast(valid, per_position.dtype)
        if sample_weight is not None:
            weights = weights * ops.cast(ops.reshape(sample_weight, (-1, 1)), per_position.dtype)
        loss = ops.sum(per_position * weights) / ops.maximum(ops.sum(weights), 1.0)
        for extra in self.losses:
            loss = loss + ops.cast(ops.sum(extra), loss.dtype)
        return per_replica(loss)

    # -- inference -------------------------------------------------------------------------
    def user_representation(self, inputs, training=None):
        """(batch, d): the representation at each history's last real position (zeros for an
        empty history); a model whose ``call`` returns (batch, L, ...) gets (batch, ...)."""
        ids = self.ids(inputs)
        hidden = self(inputs, training=training)
        positions = ops.arange(ops.shape(ids)[1], dtype="int32")[None, :]
        last = ops.max(ops.where(ops.not_equal(ids, 0), positions, 0), axis=1)  # a masked item (0) may sit inside
        index = ops.reshape(last, (-1,) + (1,) * (len(hidden.shape) - 1))
        return ops.take_along_axis(hidden, index, axis=1)[:, 0]

    def item_scores(self, inputs, training=None):
        """(batch, num_items) scores of the next item; column j is item j + 1."""
        return self._logits(self.user_representation(inputs, training=training))

    def history_mask(self, ids):
        """(batch, num_items) bool: True where item ``j + 1`` is in the (batch, L) `ids`."""
        return ops.any(ops.equal(ops.expand_dims(ids, -1),
                                 ops.arange(1, self.num_items + 1, dtype=ids.dtype)[None, None, :]), axis=1)

    def recommend(self, inputs, top_n=None, exclude_history: bool = True):
        """The top-N next items for each history, as graph ops (used by the export).

        Args:
            inputs: ``{sequence_feature: (batch, L) ids}``.
            top_n: items returned per row, an int (at most num_items) or a scalar int tensor
                (1..num_items, the ``retrieve`` signature's ``k``); default: the model's ``top_n``.
            exclude_history: never recommend an item of the history. Default True.

        Returns:
            ``(item_ids (batch, top_n) int64, scores (batch, top_n) float32)``, best first.
            Padding and OOV are never recommended; when fewer than top_n items are left
            after excluding the history, the remaining slots hold id 0 with score -inf.
        """
        top_n = self.top_n if top_n is None else top_n
        if isinstance(top_n, (int, np.integer)):
            top_n = min(int(top_n), self.num_items)
        scores = self.item_scores(inputs)
        if exclude_history:
            scores = ops.where(self.history_mask(self.ids(inputs)), ops.full_like(scores, -np.inf), scores)
        values, columns = ops.top_k(scores, top_n)
        item_ids = ops.where(ops.isinf(values), 0, ops.cast(columns, "int64") + 1)
        return item_ids, values

    def score_items(self, histories: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """numpy (n, num_items) :meth:`item_scores` of (n, L) right-padded histories, in batches."""
        histories = np.asarray(histories, np.int64)
        score = tf.function(lambda h: self.item_scores({self.sequence_feature: h}, training=False))
        return np.concatenate([score(tf.constant(histories[i:i + batch_size])).numpy()
                               for i in range(0, len(histories), batch_size)], axis=0)

    # -- export ------------------------------------------------------------------------------
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
        * ``retrieve``: the history as for ``recommend`` and ``k``, a scalar int32 in
          ``1..num_items`` -> ``recommend``'s outputs with k items per row: any number of
          items from the one export (a brute-force index over the item table in the graph).

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

        def retrieve(features, k):
            with tf.control_dependencies([
                    tf.debugging.assert_greater_equal(k, 1, message="retrieve: k must be at least 1"),
                    tf.debugging.assert_less_equal(k, self.num_items, message=f"retrieve: k must be at most "
                                                   f"{self.num_items}, the number of items")]):
                k = tf.identity(k)
            item_ids, scores = self.recommend(features, top_n=k)
            return {"item_ids": item_ids, "scores": scores}

        return {RECOMMEND_SIGNATURE: (recommend, [self.input_signature()]),
                SERVING_SIGNATURE: (serve_examples, [tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)]),
                SCORE_SIGNATURE: (score_items, [self.input_signature()]),
                RETRIEVE_SIGNATURE: (retrieve, [self.input_signature(), tf.TensorSpec([], tf.int32, name=K_INPUT)])}

    def warmup_inputs(self) -> dict:
        """One TF Serving warmup request per signature: a history of one item (item 1)."""
        history = np.zeros((1, self.max_len), np.int64)
        history[0, 0] = 1
        examples = serialize_rows({self.sequence_feature: history}, self.feature_spec.subset(self.input_names))
        return {RECOMMEND_SIGNATURE: {self.sequence_feature: history},
                SERVING_SIGNATURE: {EXAMPLES_INPUT: np.array(examples, dtype=object)},
                SCORE_SIGNATURE: {self.sequence_feature: history},
                RETRIEVE_SIGNATURE: {self.sequence_feature: history, K_INPUT: np.int32(self.top_n)}}

    def get_config(self):
        return {**super().get_config(), "feature_spec": self.feature_spec.get_config(),
                "sequence_feature": self.sequence_feature, "l2": self.l2, "top_n": self.top_n}


def evaluate_full_ranking(scores: np.ndarray, data: NextItemData, split: str = "test",
                          ks: Sequence[int] = (10, 20)) -> dict:
    """Leave-one-out full-ranking metrics of `data`'s users: the target ranked among all the
    items the user has not seen before it (:func:`tfrec_onerec.metrics.full_ranking_metrics`).

    Args:
        scores: (U, num_items) scores of ``data``'s evaluated users for the split, column j
            = item j + 1 (e.g. ``model.score_items(data.inputs(split))``, or a popularity
            row broadcast to every user).
        data: the :class:`~tfrec_onerec.data.sequences.NextItemData`.
        split: ``"valid"`` or ``"test"``.
        ks: cut-offs.

    Returns:
        ``{"recall@k", "ndcg@k" for each k, "mrr", "users"}`` (recall = hit rate: one target).
    """
    return full_ranking_metrics(scores, data.targets(split), data.seen_items(split), ks)

"""Kuaishou-EBR: embedding-based retrieval as one task per item cluster ("Divide and Conquer",
Zhang et al., WWW 2023, arXiv 2302.02657).

A single user embedding retrieving from the whole pool mixes a user's interests and lets the
popular clusters crowd out the rest. The paper splits the pool and the problem:

* **clusters**: the item pool is partitioned into K clusters (k-means on item vectors;
  :func:`cluster_items` clusters collaborative vectors of the training rows, so nothing of
  validation or test shapes them);
* **one retrieval task per cluster**, with in-cluster negatives: the user's embedding for
  cluster k must rank the next item above the other items *of its cluster*, which are the
  hard negatives (here the full softmax over the cluster's items);
* **prompts**: one user encoder (SASRec's) shared by every task, told which task it serves by
  a learned prompt ``p_k`` multiplied (Hadamard) into every input token::

      u_k = SASRec(x_1 * p_k, ..., x_t * p_k)        (x_t: item embedding + position)

* **a shared item tower**: the item embedding table (also the encoder's input table);
* **a user-intent model**: ``P(k | u) = softmax(W mean_k u_k + b)``, trained on the cluster of
  the next item;
* **controllable merge**: cluster k gets a share ``q_k = P(k | u)^alpha / sum_j P(j | u)^alpha``
  of the N retrieved items, each cluster's list in its own score order. Here the merge is one
  score per item, ``q_{k(i)} / rank_k(i)`` with ``rank_k(i)`` the item's 1-based rank within
  its cluster: taking the top N of it fills the lists by the D'Hondt divisor method, so
  cluster k gets about ``q_k * N`` items for any N (and exactly what D'Hondt apportions), and a
  top-k over one (batch, num_items) score serves every k from the one SavedModel.

Training loss at each real position t (target item i in cluster k = k(i))::

    L_t = -log softmax_{j in cluster k}(<u_k, E[j]>)[i]  +  intent_weight * -log P(k | u)

The encoder runs once per prompt: a step costs about K SASRec steps.

Items of the history are never retrieved: they are removed before the in-cluster ranks, so
they take no place of any quota (``recommend(exclude_history=False)`` is not offered).

Public API: :class:`KuaishouEBR` (registry name ``kuaishou_ebr``), :func:`cluster_items`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import keras
import numpy as np
from keras import ops

from tfrec_onerec.data.sequences import SEQUENCE_FEATURE, training_windows
from tfrec_onerec.models.registry import register
from tfrec_onerec.models.sequence.sasrec import SASRec


def cluster_items(windows: np.ndarray, num_items: int, num_clusters: int = 8, dim: int = 32,
                  seed: int = 0) -> np.ndarray:
    """Clusters the items by k-means on collaborative vectors of training rows.

    Args:
        windows: (n, m) item ids of training rows (each row's items count as co-consumed; 0 is
            padding).
        num_items: ids are ``1..num_items``.
        num_clusters: K.
        dim: width of the collaborative vectors (top eigenvectors of the items' PPMI,
            :func:`tfrec_onerec.data.item_embeddings.collaborative_embeddings`).
        seed: seeds the eigensolver and k-means.

    Returns:
        (num_items,) int64 cluster of item ``j + 1`` in ``0..K-1``; every cluster has items.
    """
    from tfrec_onerec.clustering import kmeans
    from tfrec_onerec.data.item_embeddings import collaborative_embeddings

    windows = np.asarray(windows, np.int64)
    rows, columns = np.nonzero((windows >= 1) & (windows <= num_items))
    vectors = collaborative_embeddings(rows, windows[rows, columns], num_items, dim, seed)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = np.where(norms > 0, vectors / np.maximum(norms, 1e-12), 0.0)
    return kmeans(vectors, num_clusters, seed=seed).assignment.astype(np.int64)


@register("kuaishou_ebr", family="next_item")
class KuaishouEBR(SASRec):
    """Multi-task embedding-based retrieval: a prompted SASRec user embedding per item cluster,
    in-cluster softmax, a user-intent model and the quota merge (module docstring).

    Args:
        feature_spec, sequence_feature, num_blocks, num_heads, ffn_dim, dropout, activation,
            l2, top_n: as :class:`~tfrec_onerec.models.sequence.sasrec.SASRec`.
        item_clusters: (num_items,) cluster of item ``j + 1``, ids ``0..K-1`` each used (e.g.
            :func:`cluster_items` of the training rows; the next_item family computes it).
        alpha: the merge's exponent: cluster shares ``P(k | u)^alpha`` (0: equal quotas;
            large: the likeliest cluster takes all). Default 1.
        intent_weight: weight of the user-intent loss. Default 1.

    Call:
        inputs: ``{sequence_feature: (batch, L) ids}``. Returns (batch, L, K, d): the hidden
        state of every position under every cluster's prompt.
    """

    def __init__(self, feature_spec, sequence_feature: str | None = None, item_clusters: Sequence[int] | None = None,
                 alpha: float = 1.0, intent_weight: float = 1.0, **kwargs):
        super().__init__(feature_spec, sequence_feature, **kwargs)
        if item_clusters is None:
            raise ValueError("KuaishouEBR: pass item_clusters, the cluster of every item (cluster_items of the "
                             "training rows; the next_item family computes it).")
        clusters = np.asarray(item_clusters, np.int64).reshape(-1)
        if len(clusters) != self.num_items:
            raise ValueError(f"KuaishouEBR: item_clusters has {len(clusters)} entries; the spec's "
                             f"{self.sequence_feature!r} has {self.num_items} items.")
        used = np.unique(clusters)
        if clusters.min() < 0 or not np.array_equal(used, np.arange(len(used))):
            raise ValueError(f"KuaishouEBR: item_clusters must number the clusters 0..K-1 with no gap; got the "
                             f"ids {used.tolist()[:20]}.")
        if alpha < 0:
            raise ValueError(f"KuaishouEBR: alpha must be >= 0, got {alpha}.")
        self.item_clusters = clusters
        self.num_clusters = len(used)
        self.alpha = float(alpha)
        self.intent_weight = float(intent_weight)
        self.membership = np.eye(self.num_clusters, dtype=bool)[clusters].T  # (K, num_items)
        self.prompts = self.add_weight(shape=(self.num_clusters, self.dim), initializer="ones", name="prompts")
        self.intent = keras.layers.Dense(self.num_clusters, name="intent")
        self.intent.build((None, self.dim))  # used by the loss and inference, never by `call`

    # -- network ----------------------------------------------------------------------------
    def call(self, inputs, training=None):
        ids = self.ids(inputs)
        batch, k = ops.shape(ids)[0], self.num_clusters
        tokens = ops.expand_dims(self.tokens(ids), 1) * ops.reshape(self.prompts, (1, k, 1, self.dim))
        mask = ops.repeat(ops.expand_dims(ops.not_equal(ids, 0), 1), k, axis=1)
        hidden = self.encode(ops.reshape(tokens, (-1, self.max_len, self.dim)),
                             ops.reshape(mask, (-1, self.max_len)), training=training)
        return ops.transpose(ops.reshape(hidden, (batch, k, self.max_len, self.dim)), (0, 2, 1, 3))

    def intent_logits(self, hidden):
        """(..., K) user-intent logits of (..., K, d) per-cluster user embeddings."""
        return self.intent(ops.mean(hidden, axis=-2))

    # -- training ---------------------------------------------------------------------------
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """In-cluster softmax of the next item under its cluster's prompt, plus
        ``intent_weight`` times the user-intent cross-entropy, over real target positions.

        Args:
            y: (batch, L) next-item ids. y_pred: (batch, L, K, d) from ``call``.
        """
        labels, valid = self.next_item_labels(y)
        cluster = ops.take(ops.convert_to_tensor(self.item_clusters, "int32"), labels)  # (batch, L)
        user = ops.take_along_axis(y_pred, ops.reshape(cluster, ops.shape(cluster) + (1, 1)), axis=2)[:, :, 0]
        logits = self._logits(user)  # (batch, L, num_items)
        in_cluster = ops.take(ops.convert_to_tensor(self.membership), cluster, axis=0)
        logits = ops.where(in_cluster, logits, ops.full_like(logits, -1e9))
        retrieval = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        intent = keras.losses.sparse_categorical_crossentropy(cluster, self.intent_logits(y_pred), from_logits=True)
        return self.mean_over_targets(retrieval + self.intent_weight * intent, valid, sample_weight)

    # -- inference --------------------------------------------------------------------------
    def cluster_shares(self, user):
        """(batch, K) quota shares ``P(k | u)^alpha``, normalised, of (batch, K, d) per-cluster
        user embeddings (:meth:`user_representation`)."""
        probabilities = ops.softmax(ops.cast(self.intent_logits(user), "float32"), axis=-1)
        powered = ops.power(probabilities, self.alpha)
        return powered / ops.sum(powered, axis=-1, keepdims=True)

    def item_scores(self, inputs, training=None):
        """(batch, num_items) merge scores ``q_{k(i)} / rank_k(i)`` (module docstring): the top N
        of a row is the quota merge of N items; items of the history score -inf."""
        ids = self.ids(inputs)
        user = self.user_representation(inputs, training=training)  # (batch, K, d)
        items = ops.cast(self.item_embeddings(), user.dtype)
        scores = ops.einsum("bkd,nd->bkn", user, items)
        allowed = ops.logical_and(ops.convert_to_tensor(self.membership)[None],
                                  ops.logical_not(self.history_mask(ids))[:, None, :])
        scores = ops.where(allowed, scores, ops.full_like(scores, -np.inf))
        ranks = ops.argsort(ops.argsort(-scores, axis=-1), axis=-1)  # 0-based rank within each cluster
        own = ops.convert_to_tensor(self.membership.astype(np.float32))[None]
        rank = ops.sum(ops.cast(ranks, "float32") * own, axis=1)  # (batch, num_items): in the item's cluster
        share = ops.matmul(self.cluster_shares(user), own[0])  # q_{k(i)}
        merged = share / (rank + 1.0)
        return ops.where(self.history_mask(ids), ops.full_like(merged, -np.inf), merged)

    def get_config(self):
        return {**super().get_config(), "item_clusters": self.item_clusters.tolist(), "alpha": self.alpha,
                "intent_weight": self.intent_weight}

    # -- family hook -------------------------------------------------------------------------
    @classmethod
    def derived_hyperparameters(cls, data, hyperparameters: Mapping) -> dict:
        """``item_clusters`` from the training split's rows (input window and targets) when not
        given (the family hook of :meth:`tfrec_onerec.families.base.ModelFamily.fit`);
        ``num_clusters`` (default 8) and ``cluster_seed`` (default 0) choose the clustering."""
        hyperparameters = dict(hyperparameters)
        num_clusters = int(hyperparameters.pop("num_clusters", 8))
        seed = int(hyperparameters.pop("cluster_seed", 0))
        if "item_clusters" not in hyperparameters:
            hyperparameters["item_clusters"] = cluster_items(
                training_windows(data), data.spec[SEQUENCE_FEATURE].vocab_size, num_clusters, seed=seed).tolist()
        return hyperparameters

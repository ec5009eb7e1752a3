"""Evaluation metrics in numpy: AUC, GAUC, LogLoss, and top-K ranking metrics.

Classification metrics take flat arrays of labels (0/1) and scores. Ranking metrics take
one row per query: ``relevance`` and ``scores`` of shape (num_queries, list_size); an item
is *relevant* when its relevance is > 0; within a row, items are ranked by descending
score, ties broken by position (the earlier item ranks first, a stable sort). Queries with
no relevant item are left out of the mean (they have no defined recall, NDCG or MRR) and
counted in the result's ``queries_skipped``.
"""
from __future__ import annotations

import dataclasses

import numpy as np


def _flat(labels, scores):
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"labels and scores differ in size: {labels.size} vs {scores.size}.")
    return labels, scores


def _tied_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks in ascending score order, tied scores sharing their mean rank."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    starts = np.r_[True, sorted_scores[1:] != sorted_scores[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], len(scores)] - 1
    mean_rank = (first + last) / 2.0 + 1.0
    ranks = np.empty(len(scores))
    ranks[order] = mean_rank[group]
    return ranks


def auc(labels, scores) -> float:
    """Area under the ROC curve: the probability that a random positive outscores a random
    negative, ties counting 1/2 (Mann-Whitney U over tied ranks).

    Args:
        labels: (n,) 0/1 labels.
        scores: (n,) scores; higher means more likely positive.

    Raises:
        ValueError: sizes differ, or the labels hold only one class.
    """
    labels, scores = _flat(labels, scores)
    positives = labels > 0.5
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs both classes; got {n_pos} positives and {n_neg} negatives.")
    ranks = _tied_ranks(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclasses.dataclass(frozen=True)
class GroupAUC:
    """The result of :func:`gauc`.

    Attributes:
        value: the weighted mean of per-group AUCs (NaN when no group has both classes).
        groups_used: groups with both classes, which enter the mean.
        groups_skipped: single-class groups, left out.
    """

    value: float
    groups_used: int
    groups_skipped: int


GAUC_WEIGHTINGS = ("impression", "user")


def gauc(labels, scores, groups, weighting: str = "impression") -> GroupAUC:
    """Group AUC: the AUC within each group (user), averaged over groups.

    ``GAUC = sum_u w_u * AUC_u / sum_u w_u`` over the groups that have at least one positive
    and one negative; single-class groups have no AUC and are skipped.

    Args:
        labels: (n,) 0/1 labels.
        scores: (n,) scores.
        groups: (n,) group keys (user ids).
        weighting: ``"impression"``: ``w_u`` = the group's number of examples (as in the
            DIN paper); ``"user"``: ``w_u`` = 1, the plain per-user mean.

    Returns:
        A :class:`GroupAUC`.
    """
    if weighting not in GAUC_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {GAUC_WEIGHTINGS}, got {weighting!r}.")
    labels, scores = _flat(labels, scores)
    groups = np.asarray(groups).reshape(-1)
    if groups.shape != labels.shape:
        raise ValueError(f"groups and labels differ in size: {groups.size} vs {labels.size}.")
    # Sort by (group, score); ranks within a group are global ranks minus the group's offset.
    _, group_index = np.unique(groups, return_inverse=True)
    order = np.lexsort((scores, group_index))
    g, s, y = group_index[order], scores[order], labels[order] > 0.5
    boundary = np.r_[True, g[1:] != g[:-1]]
    starts = np.flatnonzero(boundary)
    sizes = np.diff(np.r_[starts, len(g)])
    # Mean ranks of tied (group, score) runs, 1-based within the group.
    run_start = np.r_[True, (g[1:] != g[:-1]) | (s[1:] != s[:-1])]
    run_id = np.cumsum(run_start) - 1
    run_first = np.flatnonzero(run_start)
    run_last = np.r_[run_first[1:], len(g)] - 1
    group_offset = np.repeat(starts, sizes)
    ranks = ((run_first + run_last) / 2.0)[run_id] - group_offset + 1.0
    n_pos = np.add.reduceat(y.astype(np.float64), starts)
    n_neg = sizes - n_pos
    pos_rank_sum = np.add.reduceat(np.where(y, ranks, 0.0), starts)
    usable = (n_pos > 0) & (n_neg > 0)
    group_auc = (pos_rank_sum[usable] - n_pos[usable] * (n_pos[usable] + 1) / 2.0) / (n_pos[usable] * n_neg[usable])
    weights = sizes[usable].astype(np.float64) if weighting == "impression" else np.ones(int(usable.sum()))
    value = float(np.sum(weights * group_auc) / np.sum(weights)) if usable.any() else float("nan")
    return GroupAUC(value, int(usable.sum()), int((~usable).sum()))


def log_loss(labels, probabilities, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy, probabilities clipped to ``[eps, 1 - eps]``."""
    labels, p = _flat(labels, probabilities)
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(labels * np.log(p) + (1.0 - labels) * np.log(1.0 - p)))


# -- ranking ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RankingMetric:
    """A ranking metric's mean over queries with a relevant item, and the count it skipped."""

    value: float
    queries_used: int
    queries_skipped: int

    def __float__(self):
        return self.value


def _ranked_relevance(relevance, scores, k):
    relevance = np.asarray(relevance, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if relevance.ndim != 2 or relevance.shape != scores.shape:
        raise ValueError(f"relevance and scores must both be (num_queries, list_size); got {relevance.shape} "
                         f"and {scores.shape}.")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked = np.take_along_axis(relevance, order, axis=1)
    has_relevant = (relevance > 0).any(axis=1)
    return relevance, ranked[:, :k] if k is not None else ranked, has_relevant


def _mean(per_query, has_relevant) -> RankingMetric:
    used = int(has_relevant.sum())
    value = float(per_query[has_relevant].mean()) if used else float("nan")
    return RankingMetric(value, used, int(len(has_relevant) - used))


def ndcg_at_k(relevance, scores, k: int) -> RankingMetric:
    """NDCG@k with gain ``2^rel - 1`` and discount ``1 / log2(rank + 1)``, normalised by the
    ideal ordering's DCG@k."""
    relevance, top, has_relevant = _ranked_relevance(relevance, scores, k)
    discount = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    dcg = ((2.0 ** top - 1.0) * discount).sum(axis=1)
    ideal = -np.sort(-relevance, axis=1)[:, :k]
    idcg = ((2.0 ** ideal - 1.0) * discount[:ideal.shape[1]]).sum(axis=1)
    return _mean(np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0), has_relevant)


def recall_at_k(relevance, scores, k: int) -> RankingMetric:
    """Relevant items in the top k divided by all relevant items of the query."""
    relevance, top, has_relevant = _ranked_relevance(relevance, scores, k)
    hits = (top > 0).sum(axis=1)
    total = (relevance > 0).sum(axis=1)
    return _mean(np.divide(hits, total, out=np.zeros(len(hits)), where=total > 0), has_relevant)


def hit_rate_at_k(relevance, scores, k: int) -> RankingMetric:
    """1 when at least one relevant item is in the top k, else 0."""
    _, top, has_relevant = _ranked_relevance(relevance, scores, k)
    return _mean((top > 0).any(axis=1).astype(np.float64), has_relevant)


def mrr(relevance, scores, k: int | None = None) -> RankingMetric:
    """Mean reciprocal rank of the first relevant item (0 when none is in the top k)."""
    _, top, has_relevant = _ranked_relevance(relevance, scores, k)
    hit = top > 0
    first = np.argmax(hit, axis=1)
    return _mean(np.where(hit.any(axis=1), 1.0 / (first + 1.0), 0.0), has_relevant)

"""Evaluation metrics in numpy: AUC, GAUC, LogLoss, and top-K ranking metrics.

Every metric returns a Python ``float`` (GAUC returns a small :class:`GroupAUC` record that
also says how many groups it used). Inputs may be lists, numpy arrays or eager tensors.

Classification metrics (:func:`auc`, :func:`gauc`, :func:`log_loss`) take flat arrays: any
shape is accepted and flattened, and labels and scores must have the same number of elements.

Ranking metrics (:func:`ndcg_at_k`, :func:`recall_at_k`, :func:`hit_rate_at_k`, :func:`mrr`)
take one row per query, ``relevance`` and ``scores`` both of shape (num_queries, list_size),
with these conventions:

* **Relevant** means ``relevance > 0``. NDCG uses the graded value (gain ``2^rel - 1``); the
  other metrics only ask whether an item is relevant.
* **Padding**: an item with ``relevance < 0`` (e.g. -1) is not an item: it is never relevant
  and is ranked after every real item whatever its score, as in TF-Ranking (which also treats
  labels < 0 as padding). Lists of different lengths can thus share one padded array.
* **Order**: within a row, items are ranked by descending score. Ties are broken
  deterministically by position: of two items with equal scores, the one in the lower column
  ranks first (a stable sort). This is not neutral (ties favour earlier columns); break ties
  yourself (e.g. add tiny noise) if the column order carries information.
* **Queries with no relevant item** have no defined NDCG, recall or reciprocal rank; they are
  left out of the mean. The mean is over the remaining queries, and is NaN when none remain.
  (TF-Ranking's metrics instead count such queries as 0; see the tests for the conversion.)
* **k** is a positive int; a k larger than the list size means the whole list.

:func:`target_ranks` and :func:`ranking_metrics_from_ranks` cover the common full-ranking
case of retrieval evaluation, where each query has exactly one target among many candidates.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np

__all__ = [
    "GAUC_WEIGHTINGS", "GroupAUC", "auc", "gauc", "hit_rate_at_k", "log_loss", "mrr", "ndcg_at_k",
    "ranking_metrics_from_ranks", "recall_at_k", "target_ranks",
]

GAUC_WEIGHTINGS = ("impression", "user")


# -- classification ----------------------------------------------------------------------------
def _flat(name: str, values, dtype=np.float64) -> np.ndarray:
    array = np.asarray(values, dtype=dtype).reshape(-1)
    if dtype is np.float64 and np.isnan(array).any():
        raise ValueError(f"{name} contain NaN ({int(np.isnan(array).sum())} of {array.size} values).")
    return array


def _binary_labels_and_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = _flat("labels", labels)
    scores = _flat("scores", scores)
    if labels.shape != scores.shape:
        raise ValueError(f"labels and scores differ in size: {labels.size} vs {scores.size}.")
    bad = (labels != 0) & (labels != 1)
    if bad.any():
        raise ValueError(f"labels must be 0 or 1; got {int(bad.sum())} other values, e.g. {labels[bad][:3].tolist()}.")
    return labels.astype(bool), scores


def _group_aucs(positive: np.ndarray, scores: np.ndarray, group: np.ndarray, num_groups: int):
    """Per-group AUC by the rank-sum (Mann-Whitney U) formula, ties sharing their mean rank.

    Args:
        positive: (n,) bool.
        scores: (n,) float64.
        group: (n,) int group index in ``[0, num_groups)``.

    Returns:
        ``(auc, n_pos, n_neg, size)``, each (num_groups,); ``auc`` is NaN where a group lacks
        a class.
    """
    order = np.lexsort((scores, group))  # by group, then by score ascending
    g, s, y = group[order], scores[order], positive[order]
    n = len(g)
    # Runs of equal (group, score): every member gets the run's mean position.
    run_start = np.ones(n, dtype=bool)
    run_start[1:] = (g[1:] != g[:-1]) | (s[1:] != s[:-1])
    run_id = np.cumsum(run_start) - 1
    run_first = np.flatnonzero(run_start)
    run_last = np.append(run_first[1:], n) - 1
    mean_position = ((run_first + run_last) / 2.0)[run_id]  # 0-based, over the whole array
    size = np.bincount(g, minlength=num_groups)
    group_first = np.cumsum(size) - size  # 0-based position where each group starts
    rank = mean_position - group_first[g] + 1.0  # 1-based rank within the group
    n_pos = np.bincount(g, weights=y, minlength=num_groups)
    n_neg = size - n_pos
    pos_rank_sum = np.bincount(g, weights=np.where(y, rank, 0.0), minlength=num_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        group_auc = (pos_rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    group_auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return group_auc, n_pos, n_neg, size


def auc(labels, scores) -> float:
    """Area under the ROC curve.

    ``AUC = P(score of a random positive > score of a random negative)``, a tie counting 1/2,
    i.e. ``(#{(p, n): s_p > s_n} + 0.5 * #{(p, n): s_p = s_n}) / (n_pos * n_neg)`` over all
    positive-negative pairs. Computed in O(n log n) from the ranks of the scores (tied scores
    share their mean rank): ``(sum of positive ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``.

    Args:
        labels: (n,) labels, each 0 or 1 (any shape with n elements; flattened).
        scores: (n,) real scores, higher meaning more likely positive (any monotone score
            works: logits or probabilities).

    Returns:
        The AUC in [0, 1] as a float.

    Raises:
        ValueError: labels and scores differ in size, labels are not 0/1, a value is NaN, or
            the labels hold only one class (the AUC is then undefined).
    """
    positive, scores = _binary_labels_and_scores(labels, scores)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs both classes; got {n_pos} positives and {n_neg} negatives.")
    value, _, _, _ = _group_aucs(positive, scores, np.zeros(positive.size, dtype=np.int64), 1)
    return float(value[0])


@dataclasses.dataclass(frozen=True)
class GroupAUC:
    """The result of :func:`gauc`.

    Attributes:
        value: the weighted mean of the per-group AUCs; NaN when no group has both classes.
        groups_used: groups with at least one positive and one negative (enter the mean).
        groups_skipped: groups with a single class (no AUC; left out).
        weighting: ``"impression"`` or ``"user"``, as passed to :func:`gauc`.
    """

    value: float
    groups_used: int
    groups_skipped: int
    weighting: str = "impression"

    def __float__(self) -> float:
        return self.value


def gauc(labels, scores, groups, weighting: str = "impression") -> GroupAUC:
    """Group AUC: the AUC within each group (typically a user), averaged over groups.

    ``GAUC = sum_u w_u AUC_u / sum_u w_u`` over the groups ``u`` that have at least one
    positive and one negative example; ``AUC_u`` is :func:`auc` on the group's rows (ties
    count 1/2). Groups with a single class have no AUC and are skipped (counted in
    ``groups_skipped``); they carry no weight.

    Vectorized: one sort by (group, score) and a few ``bincount``s, no Python loop over rows
    or groups (200k rows in 1k groups take a few tens of milliseconds).

    Args:
        labels: (n,) labels, each 0 or 1.
        scores: (n,) real scores.
        groups: (n,) group keys (user ids): ints, strings, anything ``np.unique`` sorts.
        weighting: ``"impression"`` (default): ``w_u`` = number of rows of group ``u`` (its
            impressions), as in the DIN paper; ``"user"``: ``w_u = 1``, the plain mean of
            per-user AUCs.

    Returns:
        ``GroupAUC(value, groups_used, groups_skipped, weighting)``; ``float(result)`` is the
        value.

    Raises:
        ValueError: unknown weighting; labels, scores and groups differ in size; labels are
            not 0/1; a label or score is NaN.
    """
    if weighting not in GAUC_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {GAUC_WEIGHTINGS}, got {weighting!r}.")
    positive, scores = _binary_labels_and_scores(labels, scores)
    groups = np.asarray(groups).reshape(-1)
    if groups.shape != positive.shape:
        raise ValueError(f"groups and labels differ in size: {groups.size} vs {positive.size}.")
    keys, group = np.unique(groups, return_inverse=True)
    group_auc, _, _, size = _group_aucs(positive, scores, group.reshape(-1), len(keys))
    usable = ~np.isnan(group_auc)
    used = int(usable.sum())
    if used == 0:
        value = float("nan")
    else:
        weights = size[usable].astype(np.float64) if weighting == "impression" else np.ones(used)
        value = float(np.dot(weights, group_auc[usable]) / weights.sum())
    return GroupAUC(value, used, int(len(keys) - used), weighting)


def log_loss(labels, probs, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy (natural log).

    ``-mean(y log p + (1 - y) log(1 - p))`` with ``p`` clipped to ``[eps, 1 - eps]`` so that a
    confident mistake costs ``-log(eps)`` rather than infinity.

    Args:
        labels: (n,) labels in [0, 1] (usually 0/1; soft labels are allowed).
        probs: (n,) predicted probabilities of label 1, in [0, 1] (not logits).
        eps: clipping margin, in [0, 0.5).

    Returns:
        The mean loss as a float.

    Raises:
        ValueError: sizes differ, a value is NaN, labels or probabilities leave [0, 1] (the
            message suggests logits were passed), or a bad eps.
    """
    labels = _flat("labels", labels)
    p = _flat("probs", probs)
    if labels.shape != p.shape:
        raise ValueError(f"labels and probs differ in size: {labels.size} vs {p.size}.")
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"eps must be in [0, 0.5), got {eps}.")
    if labels.size == 0:
        raise ValueError("log_loss of no examples is undefined.")
    if labels.min() < 0 or labels.max() > 1:
        raise ValueError(f"labels must lie in [0, 1]; got values in [{labels.min()}, {labels.max()}].")
    if p.min() < 0 or p.max() > 1:
        raise ValueError(f"probs must lie in [0, 1]; got values in [{p.min()}, {p.max()}] (pass probabilities, "
                         "e.g. sigmoid(logits), not logits).")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(labels * np.log(p) + (1.0 - labels) * np.log1p(-p)))


# -- ranking -----------------------------------------------------------------------------------
def _ranked(relevance, scores, k: int | None):
    """Validates inputs; returns (relevance with padding as 0 (Q, L), relevance in ranked order
    cut at k (Q, min(k, L)), has_relevant (Q,) bool)."""
    relevance = np.asarray(relevance, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if relevance.ndim != 2 or relevance.shape != scores.shape:
        raise ValueError(f"relevance and scores must both be (num_queries, list_size); got {relevance.shape} and "
                         f"{scores.shape}.")
    if np.isnan(relevance).any() or np.isnan(scores).any():
        raise ValueError("relevance and scores must not contain NaN.")
    if k is not None and (isinstance(k, bool) or int(k) != k or k < 1):
        raise ValueError(f"k must be a positive int (or None for the whole list), got {k!r}.")
    padding = relevance < 0
    relevance = np.where(padding, 0.0, relevance)
    # Sort keys, last one primary: padding last, then descending score; lexsort is stable, so
    # equal keys keep their column order.
    order = np.lexsort((-scores, padding), axis=-1)
    ranked = np.take_along_axis(relevance, order, axis=1)
    if k is not None:
        ranked = ranked[:, :int(k)]
    return relevance, ranked, (relevance > 0).any(axis=1)


def _mean_over(per_query: np.ndarray, has_relevant: np.ndarray) -> float:
    if not has_relevant.any():
        return float("nan")
    return float(per_query[has_relevant].mean())


def ndcg_at_k(relevance, scores, k: int | None) -> float:
    """Mean NDCG@k over queries with a relevant item.

    For one query, with items sorted by descending score (ties by position, padding last)::

        DCG@k  = sum_{r=1..k} (2^rel_r - 1) / log2(r + 1)
        NDCG@k = DCG@k / IDCG@k

    where ``IDCG@k`` is the DCG@k of the same relevances sorted in descending order (the best
    possible ranking). Graded relevance is used as is (TF-Ranking's ``NDCGMetric`` defaults:
    same gain and discount).

    Args:
        relevance: (num_queries, list_size) graded relevance >= 0; < 0 marks padding.
        scores: (num_queries, list_size) scores; higher ranks first.
        k: cut-off (positive int); None for the whole list.

    Returns:
        The mean over queries with at least one ``relevance > 0`` (NaN if there are none).
    """
    relevance, top, has_relevant = _ranked(relevance, scores, k)
    discount = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    dcg = (np.expm1(top * np.log(2.0)) * discount).sum(axis=1)
    ideal = -np.sort(-relevance, axis=1)[:, :top.shape[1]]
    idcg = (np.expm1(ideal * np.log(2.0)) * discount).sum(axis=1)
    return _mean_over(np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0), has_relevant)


def recall_at_k(relevance, scores, k: int | None) -> float:
    """Mean Recall@k: (relevant items in the top k) / (relevant items of the query).

    Relevant means ``relevance > 0``. The denominator is the query's total number of relevant
    items, even when it exceeds k (so Recall@k < 1 is then unavoidable).

    Args:
        relevance: (num_queries, list_size); > 0 relevant, 0 not, < 0 padding.
        scores: (num_queries, list_size) scores.
        k: cut-off (positive int); None for the whole list (recall 1).

    Returns:
        The mean over queries with a relevant item (NaN if there are none).
    """
    relevance, top, has_relevant = _ranked(relevance, scores, k)
    hits = (top > 0).sum(axis=1)
    total = (relevance > 0).sum(axis=1)
    return _mean_over(np.divide(hits, total, out=np.zeros(len(hits)), where=total > 0), has_relevant)


def hit_rate_at_k(relevance, scores, k: int | None) -> float:
    """Mean HitRate@k (a.k.a. Hits@k): 1 if at least one relevant item is in the top k, else 0.

    Args:
        relevance: (num_queries, list_size); > 0 relevant, 0 not, < 0 padding.
        scores: (num_queries, list_size) scores.
        k: cut-off (positive int); None for the whole list.

    Returns:
        The mean over queries with a relevant item (NaN if there are none).
    """
    _, top, has_relevant = _ranked(relevance, scores, k)
    return _mean_over((top > 0).any(axis=1).astype(np.float64), has_relevant)


def mrr(relevance, scores, k: int | None = None) -> float:
    """Mean reciprocal rank: ``1 / rank`` of the highest-ranked relevant item.

    Ranks are 1-based. With a cut-off k, a query whose first relevant item is below rank k
    scores 0 (MRR@k).

    Args:
        relevance: (num_queries, list_size); > 0 relevant, 0 not, < 0 padding.
        scores: (num_queries, list_size) scores.
        k: optional cut-off (positive int); None (default) for the whole list.

    Returns:
        The mean over queries with a relevant item (NaN if there are none).
    """
    _, top, has_relevant = _ranked(relevance, scores, k)
    hit = top > 0
    first = np.argmax(hit, axis=1)
    return _mean_over(np.where(hit.any(axis=1), 1.0 / (first + 1.0), 0.0), has_relevant)


def target_ranks(scores, targets) -> np.ndarray:
    """The 1-based rank of each query's target item among all its candidates.

    Same tie rule as the ranking metrics: a candidate with a higher score, or an equal score
    and a lower column index, ranks before the target. Computed in O(num_candidates) per query
    without sorting (full-catalogue retrieval evaluation).

    Args:
        scores: (num_queries, num_candidates) scores.
        targets: (num_queries,) int column index of each query's target.

    Returns:
        (num_queries,) int64 ranks in ``[1, num_candidates]``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets).reshape(-1)
    if scores.ndim != 2 or len(targets) != len(scores):
        raise ValueError(f"Expected (num_queries, num_candidates) scores and (num_queries,) targets; got "
                         f"{scores.shape} and {targets.shape}.")
    if not np.issubdtype(targets.dtype, np.integer) or targets.min(initial=0) < 0 or \
            targets.max(initial=0) >= scores.shape[1]:
        raise ValueError(f"targets must be int column indices in [0, {scores.shape[1]}).")
    if np.isnan(scores).any():
        raise ValueError("scores must not contain NaN.")
    target_score = np.take_along_axis(scores, targets[:, None], axis=1)
    earlier = np.arange(scores.shape[1])[None, :] < targets[:, None]
    ahead = (scores > target_score) | ((scores == target_score) & earlier)
    return ahead.sum(axis=1).astype(np.int64) + 1


def ranking_metrics_from_ranks(ranks, ks: Iterable[int] = (1, 5, 10)) -> dict[str, float]:
    """Ranking metrics when each query has exactly one relevant item, from its rank.

    With one relevant item (relevance 1) at 1-based rank ``r``: ``HitRate@k = Recall@k =
    [r <= k]``, ``NDCG@k = [r <= k] / log2(r + 1)`` (the ideal DCG is 1) and the reciprocal
    rank is ``1 / r``. Equal to :func:`ndcg_at_k` etc. on one-hot relevance, without building
    the (num_queries, num_candidates) arrays. Use :func:`target_ranks` to get the ranks.

    Args:
        ranks: (num_queries,) 1-based ranks (ints >= 1).
        ks: cut-offs.

    Returns:
        ``{"hit_rate@k": ..., "ndcg@k": ... for each k, "mrr": ...}``, means over queries, as
        floats.
    """
    ranks = np.asarray(ranks).reshape(-1)
    if ranks.size == 0:
        raise ValueError("No ranks given.")
    if np.isnan(ranks.astype(np.float64)).any() or (ranks < 1).any() or (ranks != np.round(ranks)).any():
        raise ValueError("ranks must be integers >= 1 (1 = ranked first).")
    ranks = ranks.astype(np.float64)
    out = {}
    for k in ks:
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"every k must be a positive int, got {k!r}.")
        hit = ranks <= k
        out[f"hit_rate@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean())
    out["mrr"] = float((1.0 / ranks).mean())
    return out


def full_ranking_metrics(scores, targets, seen, ks: Iterable[int] = (10, 20)) -> dict:
    """Recall@K, NDCG@K and MRR of each row's target among the items it has not seen.

    Args:
        scores: (n, num_items) scores, column j for item j + 1 (a (num_items,) row broadcasts).
        targets: (n,) held-out item ids.
        seen: (n, S) ids seen before the target (0: padding); they are ranked last, the
            target itself never is.
        ks: cut-offs.

    Returns:
        ``{"recall@k", "ndcg@k" per k, "mrr", "users"}`` (recall = hit rate: one target per row).
    """
    targets, seen = np.asarray(targets).reshape(-1), np.asarray(seen)
    scores = np.array(np.broadcast_to(np.asarray(scores, np.float64), (len(targets), np.shape(scores)[-1])))
    rows = np.repeat(np.arange(len(targets)), seen.shape[1])
    columns = seen.reshape(-1) - 1
    keep = (columns >= 0) & (columns < scores.shape[1]) & (seen.reshape(-1) != np.repeat(targets, seen.shape[1]))
    scores[rows[keep], columns[keep]] = -np.inf
    found = ranking_metrics_from_ranks(target_ranks(scores, targets - 1), ks)
    out = {}
    for k in ks:
        out[f"recall@{k}"], out[f"ndcg@{k}"] = found[f"hit_rate@{k}"], found[f"ndcg@{k}"]
    return {**out, "mrr": found["mrr"], "users": int(len(targets))}

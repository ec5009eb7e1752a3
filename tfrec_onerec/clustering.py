"""Numpy clustering for residual quantization: k-means(++), balanced k-means, residual k-means.

OneRec (arXiv 2502.18965; technical report arXiv 2506.13695) turns every item into a short
code, its *semantic ID*, by residual quantization: level 1 quantizes the item vector ``x``
with a codebook ``C_1``, level 2 quantizes what is left, and so on::

    r_1 = x,    s_l = argmin_k ||r_l - C_l[k]||^2,    r_{l+1} = r_l - C_l[s_l]
    x ~ C_1[s_1] + C_2[s_2] + ... + C_L[s_L]

**Residual k-means** (:func:`residual_kmeans`), OneRec's choice ("RQ-Kmeans"), learns the
codebooks by k-means on the vectors, then on the residuals, level by level. With
``balanced=True`` every level's clusters have equal sizes (:func:`balanced_assignment`),
which spreads the items evenly over the codes and keeps the code distribution's entropy
high. (The codebooks learned by gradient instead, RQ-VAE, are
:class:`~tfrec_onerec.layers.quantizers.ResidualVectorQuantizer` and
:class:`~tfrec_onerec.models.generative.rq_vae.RQVAE`.)

These functions need ``n x K`` distance matrices: they suit the scaled-down settings
(thousands of items, tens to hundreds of codes), not 8192-code codebooks over millions of
items.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


def squared_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances.

    Args:
        x: (n, d) points. centroids: (K, d).

    Returns:
        (n, K) float64 ``||x_i - c_k||^2`` (clipped at 0 against round-off).
    """
    x = np.asarray(x, np.float64)
    centroids = np.asarray(centroids, np.float64)
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centroids.T + (centroids * centroids).sum(1)[None, :]
    return np.maximum(d, 0.0)


def balanced_sizes(n: int, num_clusters: int) -> tuple[int, int]:
    """``(n // K, n % K)``: every cluster gets ``n // K`` points and ``n % K`` of them one more."""
    return n // num_clusters, n % num_clusters


def _capacitated_greedy(distances: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Assigns rows to columns within their capacities; rows left when all are full get -1.

    Rounds of proposals: every unassigned point proposes to its nearest cluster that still
    has room; a cluster keeps the proposers with the largest *regret* (how much farther
    their next-best open cluster is), up to its spare capacity, and turns the others away.
    Each round either places every proposer or fills at least one cluster, so there are at
    most ``K + 1`` rounds of ``O(n K)`` vectorized work.
    """
    n, k = distances.shape
    assignment = np.full(n, -1, np.int64)
    capacity = capacity.astype(np.int64).copy()
    pending = np.arange(n)
    while pending.size and capacity.sum() > 0:
        open_ = capacity > 0
        cost = np.where(open_[None, :], distances[pending], np.inf)
        if open_.sum() > 1:
            two = np.partition(cost, 1, axis=1)[:, :2]
            regret = two[:, 1] - two[:, 0]
        else:
            regret = np.zeros(pending.size)
        choice = np.argmin(cost, axis=1)
        # Order proposers by cluster, then by regret (largest first), then by distance.
        order = np.lexsort((cost[np.arange(pending.size), choice], -regret, choice))
        chosen = choice[order]
        first = np.searchsorted(chosen, chosen, side="left")
        rank = np.arange(order.size) - first
        keep = rank < capacity[chosen]
        kept = order[keep]
        assignment[pending[kept]] = choice[kept]
        capacity -= np.bincount(choice[kept], minlength=k)
        pending = pending[np.sort(order[~keep])]
    return assignment


def balanced_assignment(distances: np.ndarray) -> np.ndarray:
    """Assigns n points to K clusters of equal size (``n // K``, and ``n % K`` clusters one more).

    A greedy capacity-constrained assignment (see :func:`_capacitated_greedy`): first every
    cluster takes ``n // K`` points, then the ``n % K`` points left go one per cluster.

    Args:
        distances: (n, K) costs of assigning point i to cluster k (e.g. squared distances).

    Returns:
        (n,) int64 cluster of every point; cluster sizes differ by at most one.
    """
    distances = np.asarray(distances, np.float64)
    n, k = distances.shape
    base, _ = balanced_sizes(n, k)
    # Phase 1 places k * base points; the n % K points it leaves go one per cluster.
    assignment = _capacitated_greedy(distances, np.full(k, base)) if base else np.full(n, -1, np.int64)
    rest = np.flatnonzero(assignment < 0)
    if rest.size:
        assignment[rest] = _capacitated_greedy(distances[rest], np.ones(k, np.int64))
    return assignment


def _kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007): (k, d) initial centroids."""
    n = x.shape[0]
    index = [int(rng.integers(n))]
    closest = squared_distances(x, x[index])[:, 0]
    for _ in range(1, k):
        total = closest.sum()
        i = int(rng.choice(n, p=closest / total)) if total > 0 else int(rng.integers(n))
        index.append(i)
        closest = np.minimum(closest, squared_distances(x, x[i:i + 1])[:, 0])
    return x[index].copy()


@dataclasses.dataclass
class KMeansResult:
    """What :func:`kmeans` returns.

    Attributes:
        centroids: (K, d) float64 cluster centres.
        assignment: (n,) int64 cluster of every point.
        inertia: sum over points of the squared distance to their centroid.
        iterations: Lloyd iterations run.
    """

    centroids: np.ndarray
    assignment: np.ndarray
    inertia: float
    iterations: int


def kmeans(x: np.ndarray, num_clusters: int, *, balanced: bool = False, max_iter: int = 50,
           seed: int = 0) -> KMeansResult:
    """Lloyd's k-means with k-means++ seeding, optionally with equal-size clusters.

    Balanced k-means alternates the capacity-constrained :func:`balanced_assignment` with
    the centroid update (the mean of each cluster) and keeps the solution of lowest
    inertia. Unbalanced k-means re-seeds an empty cluster at the point farthest from its
    centroid.

    Args:
        x: (n, d) points, ``n >= num_clusters``.
        num_clusters: K.
        balanced: equal cluster sizes (OneRec's balanced k-means). Default False.
        max_iter: most Lloyd iterations; stops earlier when the assignment is stable.
        seed: seeds the k-means++ initialisation.

    Returns:
        A :class:`KMeansResult`.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"kmeans: x must be (n, d), got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise ValueError("kmeans: x has NaN or infinite values.")
    if not 1 <= int(num_clusters) <= x.shape[0]:
        raise ValueError(f"kmeans: num_clusters must be in [1, n={x.shape[0]}], got {num_clusters}.")
    if int(max_iter) < 1:
        raise ValueError(f"kmeans: max_iter must be >= 1, got {max_iter}.")
    k = int(num_clusters)
    rng = np.random.default_rng(seed)
    centroids = _kmeans_plus_plus(x, k, rng)
    best = None
    assignment = None
    for iteration in range(1, int(max_iter) + 1):
        distances = squared_distances(x, centroids)
        new = balanced_assignment(distances) if balanced else np.argmin(distances, axis=1)
        inertia = float(distances[np.arange(len(x)), new].sum())
        if best is None or inertia < best.inertia - 1e-12:
            best = KMeansResult(centroids.copy(), new.copy(), inertia, iteration)
        if assignment is not None and np.array_equal(new, assignment):
            break
        assignment = new
        counts = np.bincount(assignment, minlength=k)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assignment, x)
        empty = counts == 0
        centroids = np.where(empty[:, None], centroids, sums / np.maximum(counts, 1)[:, None])
        if empty.any():  # only without balancing: move empty clusters to the worst-served points
            far = np.argsort(-distances[np.arange(len(x)), assignment], kind="stable")[:empty.sum()]
            centroids[empty] = x[far]
    # The best assignment's own centroids (means) can only lower its inertia further.
    counts = np.bincount(best.assignment, minlength=k)
    sums = np.zeros_like(best.centroids)
    np.add.at(sums, best.assignment, x)
    means = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], best.centroids)
    inertia = float(((x - means[best.assignment]) ** 2).sum())
    return KMeansResult(means, best.assignment, inertia, iteration)


def residual_quantize(x: np.ndarray, codebooks: Sequence[np.ndarray]) -> np.ndarray:
    """Greedy residual quantization with fixed codebooks (nearest codeword at every level).

    Args:
        x: (n, d) vectors. codebooks: L arrays of shape (K_l, d).

    Returns:
        (n, L) int64 codes.
    """
    residual = np.asarray(x, np.float64).copy()
    codes = np.zeros((residual.shape[0], len(codebooks)), np.int64)
    for level, codebook in enumerate(codebooks):
        codes[:, level] = np.argmin(squared_distances(residual, codebook), axis=1)
        residual -= np.asarray(codebook, np.float64)[codes[:, level]]
    return codes


def residual_reconstruct(codes: np.ndarray, codebooks: Sequence[np.ndarray], levels: int | None = None) -> np.ndarray:
    """Sum of the chosen codewords of the first ``levels`` levels (all by default).

    Args:
        codes: (n, L) codes. codebooks: L arrays (K_l, d). levels: how many levels to sum.

    Returns:
        (n, d) float64 reconstruction.
    """
    codes = np.asarray(codes)
    levels = codes.shape[1] if levels is None else int(levels)
    out = np.zeros((codes.shape[0], np.asarray(codebooks[0]).shape[1]))
    for level in range(levels):
        out += np.asarray(codebooks[level], np.float64)[codes[:, level]]
    return out


def reconstruction_errors(x: np.ndarray, codes: np.ndarray, codebooks: Sequence[np.ndarray]) -> np.ndarray:
    """(L,) mean squared distance ``||x - sum_{j<=l} C_j[s_j]||^2`` after each level l."""
    x = np.asarray(x, np.float64)
    residual = x.copy()
    errors = []
    for level, codebook in enumerate(codebooks):
        residual = residual - np.asarray(codebook, np.float64)[np.asarray(codes)[:, level]]
        errors.append(float((residual ** 2).sum(1).mean()))
    return np.array(errors)


@dataclasses.dataclass
class ResidualQuantization:
    """What :func:`residual_kmeans` returns.

    Attributes:
        codebooks: L arrays of shape (K_l, d), float64.
        codes: (n, L) int64 codes of the fitted points.
        errors: (L,) mean squared reconstruction error after each level.
    """

    codebooks: list
    codes: np.ndarray
    errors: np.ndarray

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """(n, L) codes of new vectors x (n, d) by nearest codewords (no balancing)."""
        return residual_quantize(x, self.codebooks)

    def reconstruct(self, codes: np.ndarray | None = None, levels: int | None = None) -> np.ndarray:
        """(n, d) sum of the codewords of ``codes`` (default: the fitted points' codes)."""
        return residual_reconstruct(self.codes if codes is None else codes, self.codebooks, levels)


def _as_sizes(codebook_size, num_levels: int) -> list:
    sizes = [int(codebook_size)] * int(num_levels) if np.isscalar(codebook_size) else [int(s) for s in codebook_size]
    if int(num_levels) < 1 or len(sizes) != int(num_levels) or min(sizes) < 1:
        raise ValueError(f"num_levels must be >= 1 and codebook_size a positive int or one per level, "
                         f"got num_levels={num_levels}, codebook_size={codebook_size!r}.")
    return sizes


def residual_kmeans(x: np.ndarray, num_levels: int = 3, codebook_size: int | Sequence[int] = 32, *,
                    balanced: bool = True, max_iter: int = 50, seed: int = 0) -> ResidualQuantization:
    """Residual k-means ("RQ-Kmeans"): k-means on x, then on the residuals, level by level.

    Args:
        x: (n, d) vectors.
        num_levels: L. Default 3.
        codebook_size: K, or one size per level. Default 32.
        balanced: equal-size clusters at every level (OneRec). Default True.
        max_iter: Lloyd iterations per level.
        seed: level l uses seed ``seed + l``.

    Returns:
        A :class:`ResidualQuantization` with codebooks, codes and per-level errors.
    """
    sizes = _as_sizes(codebook_size, num_levels)
    residual = np.asarray(x, np.float64).copy()
    if residual.ndim != 2:
        raise ValueError(f"residual_kmeans: x must be (n, d), got shape {residual.shape}.")
    codebooks, codes = [], []
    for level, k in enumerate(sizes):
        fit = kmeans(residual, k, balanced=balanced, max_iter=max_iter, seed=seed + level)
        codebooks.append(fit.centroids)
        codes.append(fit.assignment)
        residual = residual - fit.centroids[fit.assignment]
    codes = np.stack(codes, 1)
    return ResidualQuantization(codebooks, codes, reconstruction_errors(x, codes, codebooks))

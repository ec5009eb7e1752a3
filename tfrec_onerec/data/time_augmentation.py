"""TiCoSeRec's time-interval aware sequence augmentations (Dang et al., AAAI 2023).

The paper observes that sequential recommenders learn best from sequences whose items come
at even time intervals, and augments sequences toward that. Each operator takes one user's
items and their timestamps (oldest first) and returns an augmented pair; the time intervals
decide *where* an operator acts:

* **Ti-Crop** keeps the ``int(crop_rate * n)``-item window whose intervals vary least;
* **Ti-Reorder** shuffles the items of the ``int(reorder_rate * n)``-item window whose
  intervals vary least (the timestamps stay where they are);
* **Ti-Mask** replaces ``int(mask_rate * n)`` randomly chosen items by the mask id (0, the
  padding id, as in the released code: a model then skips them);
* **Ti-Substitute** replaces the ``max(1, int(substitute_rate * n))`` items followed by the
  smallest intervals with their most similar item;
* **Ti-Insert** inserts, after each of the ``max(1, int(insert_rate * n))`` items followed by
  the largest intervals, its most similar item, at the middle of the interval (so the
  intervals become more even).

"The window whose intervals vary least" minimises the population variance of the window's
consecutive time differences; ties go to the most recent window. "Followed by the smallest
(largest) interval" ranks each item but the last by the interval to the next item (stable
sort; the last item has no next one here, the released code uses the training target's time).

:func:`augment` is the paper's control strategy: a sequence longer than ``threshold`` (12)
gets one of the five operators at random, a shorter one one of Substitute, Insert and Mask.
Similarity is :class:`ItemSimilarity`, item-based collaborative filtering with inverse user
frequency (the released code's default), fitted on training sequences only.

Defaults are the released code's rates: crop 0.7, reorder 0.2, mask 0.5, substitute 0.1,
insert 0.5. Every operator is deterministic given its ``numpy`` random generator.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

OPERATORS = ("crop", "reorder", "mask", "substitute", "insert")
SHORT_SEQUENCE_OPERATORS = ("substitute", "insert", "mask")
MASK_ID = 0


def _checked(items, times) -> tuple[np.ndarray, np.ndarray]:
    items, times = np.asarray(items, np.int64).reshape(-1), np.asarray(times, np.float64).reshape(-1)
    if items.shape != times.shape:
        raise ValueError(f"items and times must have the same length; got {items.shape[0]} items and "
                         f"{times.shape[0]} timestamps.")
    if np.any(np.diff(times) < 0):
        raise ValueError("times must be in increasing order (oldest first).")
    return items, times


def least_varying_window(times: np.ndarray, length: int) -> int:
    """The start of the `length`-item window whose consecutive time differences have the least
    population variance (ties: the most recent window).

    Args:
        times: (n,) timestamps, oldest first. length: window length, 1..n.
    """
    n = len(times)
    if length <= 2:  # one interval or none: every window varies by 0
        return n - length
    gaps = np.diff(times)
    windows = np.lib.stride_tricks.sliding_window_view(gaps, length - 1)  # (n - length + 1, length - 1)
    variances = windows.var(axis=1)
    return int(len(variances) - 1 - np.argmin(variances[::-1]))


def ti_crop(items, times, rng: np.random.Generator | None = None, rate: float = 0.7):
    """Keeps the ``max(1, int(rate * n))``-item window whose intervals vary least."""
    items, times = _checked(items, times)
    length = max(1, int(rate * len(items)))
    if length >= len(items):
        return items, times
    start = least_varying_window(times, length)
    return items[start:start + length], times[start:start + length]


def ti_reorder(items, times, rng: np.random.Generator, rate: float = 0.2):
    """Shuffles the items of the ``int(rate * n)``-item window whose intervals vary least
    (unchanged when that is under 2 items); the timestamps keep their places."""
    items, times = _checked(items, times)
    length = int(rate * len(items))
    if length < 2:
        return items, times
    start = least_varying_window(times, length)
    out = items.copy()
    out[start:start + length] = rng.permutation(items[start:start + length])
    return out, times


def ti_mask(items, times, rng: np.random.Generator, rate: float = 0.5, mask_id: int = MASK_ID):
    """Replaces ``int(rate * n)`` items at random positions by `mask_id`."""
    items, times = _checked(items, times)
    count = int(rate * len(items))
    out = items.copy()
    out[rng.choice(len(items), size=count, replace=False)] = mask_id
    return out, times


def _followed_by(times: np.ndarray, count: int, largest: bool) -> np.ndarray:
    """Positions of the `count` items followed by the smallest (largest) intervals."""
    gaps = np.diff(times)
    order = np.argsort(-gaps if largest else gaps, kind="stable")
    return np.sort(order[:count])


def ti_substitute(items, times, rng: np.random.Generator | None = None, similarity: "ItemSimilarity" = None,
                  rate: float = 0.1):
    """Replaces the ``max(1, int(rate * n))`` items followed by the smallest intervals with their
    most similar item (unchanged under 2 items)."""
    items, times = _checked(items, times)
    if len(items) < 2:
        return items, times
    positions = _followed_by(times, min(max(1, int(rate * len(items))), len(items) - 1), largest=False)
    out = items.copy()
    out[positions] = similarity.most_similar(items[positions])
    return out, times


def ti_insert(items, times, rng: np.random.Generator | None = None, similarity: "ItemSimilarity" = None,
              rate: float = 0.5):
    """Inserts each of the ``max(1, int(rate * n))`` items followed by the largest intervals'
    most similar item right after it, timestamped at the middle of the interval (unchanged under
    2 items)."""
    items, times = _checked(items, times)
    if len(items) < 2:
        return items, times
    positions = _followed_by(times, min(max(1, int(rate * len(items))), len(items) - 1), largest=True)
    new_items = similarity.most_similar(items[positions])
    new_times = (times[positions] + times[positions + 1]) / 2.0
    return np.insert(items, positions + 1, new_items), np.insert(times, positions + 1, new_times)


def augment(items, times, rng: np.random.Generator, similarity: "ItemSimilarity", threshold: int = 12,
            rates: dict | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """The paper's control strategy: one operator drawn uniformly from all five for a sequence
    longer than `threshold`, from Substitute, Insert and Mask otherwise.

    Args:
        items: (n,) item ids, oldest first. times: (n,) their timestamps.
        rng: the random generator (operator choice, reorder and mask positions).
        similarity: the fitted :class:`ItemSimilarity` (substitute and insert).
        threshold: sequence length above which every operator may be drawn. Default 12.
        rates: ``{operator: rate}`` overriding the defaults of the module docstring.

    Returns:
        ``(items, times, operator name)``.
    """
    rates = dict(rates or {})
    unknown = set(rates) - set(OPERATORS)
    if unknown:
        raise ValueError(f"Unknown augmentation operators {sorted(unknown)}; operators are {list(OPERATORS)}.")
    choices = OPERATORS if len(np.asarray(items).reshape(-1)) > threshold else SHORT_SEQUENCE_OPERATORS
    name = choices[int(rng.integers(len(choices)))]
    kwargs = {"rate": rates[name]} if name in rates else {}
    if name in ("substitute", "insert"):
        kwargs["similarity"] = similarity
    operator = {"crop": ti_crop, "reorder": ti_reorder, "mask": ti_mask, "substitute": ti_substitute,
                "insert": ti_insert}[name]
    out_items, out_times = operator(items, times, rng, **kwargs)
    return out_items, out_times, name


class ItemSimilarity:
    """Item-based collaborative filtering with inverse user frequency (ItemCF-IUF)::

        sim(i, j) = sum over users u who have both i and j of 1 / log(1 + |I_u|)
                    / sqrt(N_i * N_j)

    with ``I_u`` the user's distinct items and ``N_i`` the number of users with item i. Fit it
    on training sequences only: validation and test items must not shape the augmentations.

    Args:
        num_items: ids are ``1..num_items``.
    """

    def __init__(self, num_items: int):
        self.num_items = int(num_items)
        self.neighbour = np.arange(self.num_items + 1, dtype=np.int64)  # until fitted: every item itself

    def fit(self, sequences: Sequence[np.ndarray]) -> "ItemSimilarity":
        """Fits the most similar item of every item on `sequences` (each a user's item ids; 0
        and ids outside ``1..num_items`` are ignored). An item that shares no user with another
        gets the most frequent other item."""
        from scipy import sparse

        rows, columns, weights = [], [], []
        for user, sequence in enumerate(sequences):
            sequence = np.asarray(sequence, np.int64)
            distinct = np.unique(sequence[(sequence >= 1) & (sequence <= self.num_items)])
            rows.append(np.full(len(distinct), user))
            columns.append(distinct)
            weights.append(np.full(len(distinct), 1.0 / np.log1p(max(len(distinct), 1))))
        rows, columns, weights = (np.concatenate(x) if x else np.zeros(0) for x in (rows, columns, weights))
        shape = (len(sequences), self.num_items + 1)
        has = sparse.csr_matrix((np.ones_like(weights), (rows, columns)), shape=shape)
        weighted = sparse.csr_matrix((weights, (rows, columns)), shape=shape)
        co = (has.T @ weighted).tocsr()  # (I+1, I+1): sum of the IUF weights of common users
        co.setdiag(0)
        co.eliminate_zeros()
        users_of = np.asarray(has.sum(axis=0)).reshape(-1)
        norm = np.sqrt(np.maximum(users_of, 1.0))
        scores = sparse.diags(1.0 / norm) @ co @ sparse.diags(1.0 / norm)
        scores = scores.tocsr()
        by_frequency = np.argsort(-users_of[1:], kind="stable") + 1
        for item in range(1, self.num_items + 1):
            start, end = scores.indptr[item], scores.indptr[item + 1]
            if end > start:
                values, neighbours = scores.data[start:end], scores.indices[start:end]
                best = np.flatnonzero(values == values.max())
                self.neighbour[item] = neighbours[best].min()  # ties: the lower id
            elif self.num_items > 1:
                self.neighbour[item] = by_frequency[0] if by_frequency[0] != item else by_frequency[1]
        return self

    def most_similar(self, items) -> np.ndarray:
        """The most similar item of each id of `items` (padding and unknown ids map to themselves)."""
        items = np.asarray(items, np.int64)
        known = (items >= 1) & (items <= self.num_items)
        return np.where(known, self.neighbour[np.clip(items, 0, self.num_items)], items)


def augmented_views(items: np.ndarray, times: np.ndarray, rng: np.random.Generator, similarity: ItemSimilarity,
                    views: int = 2, threshold: int = 12, rates: dict | None = None) -> np.ndarray:
    """`views` independent :func:`augment` ations of every row of a right-padded batch.

    Args:
        items: (batch, L) item ids, oldest first, right-padded with 0.
        times: (batch, L) their timestamps (values at padding are ignored).
        rng, similarity, threshold, rates: as :func:`augment`.
        views: augmentations per row. Default 2 (CoSeRec's pair of views).

    Returns:
        (views, batch, L) int64: each augmented sequence, its most recent L items kept
        (Ti-Insert lengthens a sequence), right-padded with 0. A row without items stays empty.
    """
    items, times = np.asarray(items, np.int64), np.asarray(times, np.float64)
    if items.ndim != 2 or items.shape != times.shape:
        raise ValueError(f"items and times must be (batch, L) arrays of one shape; got {items.shape} and "
                         f"{times.shape}.")
    out = np.zeros((views,) + items.shape, np.int64)
    lengths = (items != 0).sum(axis=1)
    for row, length in enumerate(lengths):
        if length == 0:
            continue
        for view in range(views):
            augmented, _, _ = augment(items[row, :length], times[row, :length], rng, similarity, threshold, rates)
            kept = augmented[-items.shape[1]:]
            out[view, row, :len(kept)] = kept
    return out

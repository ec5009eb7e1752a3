"""Turning an interaction log into model samples: histories, negatives, splits.

One sample per logged event plus, for implicit feedback where every event is a positive,
``num_negatives`` sampled negatives:

* **History**: the user's earlier interactions (or earlier *behaviour* events, such as
  clicks in an exposure log), oldest first, cut to the ``max_len`` most
  recent and padded with 0 on the right (the convention of :mod:`tfrec_onerec.features.spec`).
  Ties in time are ordered by item id. A user's first interaction has an all-padding history.
* **Negatives** (implicit feedback): for each positive, ``num_negatives`` items (in
  validation and test ``eval_negatives``) drawn
  uniformly, with a seeded generator, from the items the user never interacted with in the
  whole log (so a negative is never a future positive). A negative copies its positive's
  user, history and time and has every label 0.
* **Splits**: ``"leave-one-out"``: each user's last interaction (and its negatives) is
  the test set, the one before it validation, the rest training. ``"temporal"``: global
  time cut-offs at the ``temporal_fractions`` quantiles of the timestamps.
  ``"user-temporal"``: the same fractions taken of each user's own events in time order
  (the last 10% of a user's events test, the 10% before validation, at least one each, the
  rest training, by default), so every user with at least three events is in every split.
  ``"cold-users"``: whole users held out: a seeded shuffle of the users puts the first 80% of
  them (all their events) in training, the next 10% in validation and the rest in test, so a
  test user has no training event at all (cold start; histories still hold the user's own
  earlier events, as a new user's requests would).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np
import pandas as pd

SPLITS = ("train", "valid", "test")
SPLIT_METHODS = ("leave-one-out", "temporal", "user-temporal", "cold-users")


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """How samples are built.

    Args:
        max_len: history length kept (the most recent ids).
        num_negatives: sampled negatives per positive in training (0 for explicit feedback).
        eval_negatives: sampled negatives per positive in validation and test; ``None``
            means ``num_negatives``. With leave-one-out, several negatives per user make
            per-user metrics (GAUC) rank one positive among ``1 + eval_negatives`` items.
        split: ``"leave-one-out"``, ``"temporal"``, ``"user-temporal"`` or ``"cold-users"``
            (module docstring).
        temporal_fractions: (train, valid) fractions for the temporal splits: of the log's
            time span (``"temporal"``) or of each user's events (``"user-temporal"``); of the
            users for ``"cold-users"``.
        seed: seed of the negative sampler and of the cold-users shuffle.
    """

    max_len: int = 50
    num_negatives: int = 1
    eval_negatives: int | None = 4
    split: str = "leave-one-out"
    temporal_fractions: tuple = (0.8, 0.1)
    seed: int = 0

    def __post_init__(self):
        if self.split not in SPLIT_METHODS:
            raise ValueError(f"split must be one of {SPLIT_METHODS}, got {self.split!r}.")
        if self.max_len < 1 or self.num_negatives < 0 or (self.eval_negatives or 0) < 0:
            raise ValueError(f"max_len must be >= 1 and negatives >= 0, got max_len={self.max_len}, "
                             f"num_negatives={self.num_negatives}, eval_negatives={self.eval_negatives}.")

    def negatives_per_split(self) -> np.ndarray:
        """(3,) negatives per positive for train, valid, test."""
        evaluation = self.num_negatives if self.eval_negatives is None else self.eval_negatives
        return np.array([self.num_negatives, evaluation, evaluation])


def order_events(events: pd.DataFrame) -> pd.DataFrame:
    """Sorts a log by user, then time, then item id (the order histories are read in)."""
    return events.sort_values(["user_id", "timestamp", "item_id"], kind="stable", ignore_index=True)


def history_positions(user_ids: np.ndarray, max_len: int, behaviour: np.ndarray | None = None,
                      rows: np.ndarray | None = None) -> tuple:
    """Where each event's history lies among the behaviour events (see :func:`history_matrix`).

    Args:
        user_ids: (n,) ints, the log ordered by :func:`order_events`.
        max_len: history length kept.
        behaviour: (n,) bool, which events enter histories; default: all.
        rows: (m,) the events whose histories are wanted; default: all n.

    Returns:
        ``(positions, valid)``, both (m, max_len): ``positions`` index the behaviour events
        (``np.flatnonzero(behaviour)``), oldest first; ``valid`` is False on padding, where
        the position is 0.
    """
    n = len(user_ids)
    behaviour = np.ones(n, bool) if behaviour is None else np.asarray(behaviour, bool)
    rows = np.arange(n) if rows is None else np.asarray(rows, np.int64)
    before = np.cumsum(behaviour) - behaviour  # (n,) behaviour events before i, any user
    new_user = np.r_[True, user_ids[1:] != user_ids[:-1]]
    first = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))
    kept = np.minimum(before - before[first], max_len)[rows]  # (m,) this user's, capped
    slots = np.arange(max_len)
    positions = before[rows, None] - kept[:, None] + slots[None, :]
    valid = slots[None, :] < kept[:, None]
    return np.where(valid, positions, 0), valid


def history_matrix(user_ids: np.ndarray, item_ids: np.ndarray, max_len: int,
                   behaviour: np.ndarray | None = None, rows: np.ndarray | None = None) -> np.ndarray:
    """Each event's history: the items of the same user's earlier behaviour events.

    Args:
        user_ids: (n,) ints, the log ordered by :func:`order_events`.
        item_ids: (n,) ints.
        max_len: history length kept.
        behaviour: (n,) bool, which events enter histories (e.g. clicks in an exposure
            log); default: all.
        rows: (m,) the events whose histories are wanted; default: all n. (A long history
            of a few events costs m x max_len, not n x max_len.)

    Returns:
        (m, max_len) int64: row k holds the up to ``max_len`` most recent behaviour items
        strictly before event ``rows[k]``, oldest first, right-padded with 0.
    """
    behaviour = np.ones(len(user_ids), bool) if behaviour is None else np.asarray(behaviour, bool)
    positions, valid = history_positions(user_ids, max_len, behaviour, rows)
    behaviour_items = np.asarray(item_ids)[behaviour]
    if not len(behaviour_items):
        return np.zeros(positions.shape, np.int64)
    return np.where(valid, behaviour_items[positions], 0).astype(np.int64)


NUM_TIME_BUCKETS = 16
"""Time-interval buckets of :func:`time_interval_buckets` (ids 1..16; 0 is padding)."""


def time_interval_buckets(seconds: np.ndarray) -> np.ndarray:
    """Log-scale buckets of how long ago a behaviour happened (SIM's time-interval feature).

    Bucket ``1 + floor(log2(1 + hours))``, capped at :data:`NUM_TIME_BUCKETS`: 1 is under an
    hour, 2 one to three hours, 3 three to seven, ..., 16 over 3.7 years.

    Args:
        seconds: non-negative intervals (any shape).

    Returns:
        int64 buckets in 1..NUM_TIME_BUCKETS, of the same shape.
    """
    hours = np.maximum(np.asarray(seconds, np.float64), 0.0) / 3600.0
    return np.minimum(1 + np.floor(np.log2(1.0 + hours)), NUM_TIME_BUCKETS).astype(np.int64)


def sample_negatives(user_ids: np.ndarray, num_items: int, seen_keys: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Draws, per user id, one item in 1..num_items the user never interacted with.

    Args:
        user_ids: (m,) ints.
        num_items: the item ids are 1..num_items.
        seen_keys: sorted unique ``user_id * (num_items + 1) + item_id`` of the log.
        rng: the seeded generator.

    Returns:
        (m,) int64 item ids.
    """
    items = rng.integers(1, num_items + 1, size=len(user_ids))
    todo = np.arange(len(user_ids))
    for _ in range(1000):
        keys = user_ids[todo] * (num_items + 1) + items[todo]
        clash = np.isin(keys, seen_keys, assume_unique=False)
        todo = todo[clash]
        if not len(todo):
            return items.astype(np.int64)
        items[todo] = rng.integers(1, num_items + 1, size=len(todo))
    raise ValueError("Could not sample negatives: some users interacted with (almost) every item.")


def assign_splits(user_ids: np.ndarray, timestamps: np.ndarray, config: SampleConfig) -> np.ndarray:
    """(n,) split index per event (0 train, 1 valid, 2 test) for a log in event order."""
    if config.split == "temporal":
        train_end, valid_end = np.quantile(timestamps, np.cumsum(config.temporal_fractions))
        return np.where(timestamps <= train_end, 0, np.where(timestamps <= valid_end, 1, 2))
    if config.split == "cold-users":  # whole users: a seeded shuffle, the first users train, the last test
        users = np.unique(user_ids)
        rank = np.empty(int(users.max()) + 1, np.int64)
        rank[np.random.default_rng(config.seed).permutation(users)] = np.arange(len(users))
        train_users, valid_users = (np.round(np.cumsum(config.temporal_fractions) * len(users))).astype(np.int64)
        position = rank[user_ids]
        return np.where(position < train_users, 0, np.where(position < valid_users, 1, 2))
    if config.split == "user-temporal":  # each user's own events, oldest first: train, valid, test
        first = np.r_[True, user_ids[1:] != user_ids[:-1]]
        user_index = np.cumsum(first) - 1
        count = np.bincount(user_index)[user_index]
        rank = np.arange(len(user_ids)) - np.flatnonzero(first)[user_index]
        valid_fraction = config.temporal_fractions[1]
        test_fraction = 1.0 - sum(config.temporal_fractions)
        held = count >= 3  # users with fewer events train only
        test = np.where(held, np.maximum(np.round(count * test_fraction), 1), 0)
        valid = np.where(held, np.maximum(np.round(count * valid_fraction), 1), 0)
        return np.where(rank >= count - test, 2, np.where(rank >= count - test - valid, 1, 0))
    last = np.r_[user_ids[1:] != user_ids[:-1], True]
    second_last = np.r_[last[1:], False] & ~last
    return np.where(last, 2, np.where(second_last, 1, 0))


def prior_means(user_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(n,) each event's mean of `values` over the same user's *earlier* events (0 for a
    user's first event); the log is in :func:`order_events` order."""
    values = np.asarray(values, dtype=np.float64)
    first = np.r_[True, user_ids[1:] != user_ids[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(values)), 0))
    before = np.cumsum(values) - values  # the sum over every earlier event of the log
    earlier = before - before[start]  # ... of the same user only
    count = np.arange(len(values)) - start
    return np.where(count > 0, earlier / np.maximum(count, 1), 0.0).astype(np.float32)


def build_samples(events: pd.DataFrame, num_items: int, user_table: Mapping[str, np.ndarray],
                  item_table: Mapping[str, np.ndarray], history_of: Mapping[str, str],
                  labels: Mapping[str, np.ndarray], config: SampleConfig,
                  behaviour: np.ndarray | None = None, prior_means_of: tuple = (), sampled: np.ndarray | None = None,
                  time_bucket_feature: str = "") -> dict:
    """Builds the columns of every split.

    Args:
        events: the log with ``user_id``, ``item_id``, ``timestamp``; it must already be in
            :func:`order_events` order (``labels`` are aligned with it).
        num_items: item ids are 1..num_items.
        user_table: ``{feature: (num_users + 1,) array}`` indexed by user id.
        item_table: ``{feature: (num_items + 1,) array}`` indexed by item id; index 0 must
            hold 0 (the padding id), so padded history positions stay 0.
        history_of: ``{history feature: item feature}``, e.g. ``{"hist_item_id": "item_id"}``.
            The item feature ``"item_id"`` is the item id itself.
        labels: ``{label: (n,) array}`` for the logged events; sampled negatives get 0.
        config: how to build.
        behaviour: (n,) bool, the events that enter histories (default: all). An exposure
            log with real negatives passes its clicks here and ``num_negatives=0``.
        prior_means_of: labels whose per-user running mean is added as a label column
            ``prior_<label>``: the mean over the user's earlier logged events (0 for the
            first; a sampled negative copies its positive's). STAN's task-preference targets.
        sampled: (n,) bool, the events that become samples (default: all). Histories and
            prior means still read every event, so a long log can yield a few samples with
            long histories (SIM's lifelong behaviours). Splits are assigned among them.
        time_bucket_feature: if given, the name of a history column of
            :func:`time_interval_buckets` of each history entry's age at the sample's time
            (0 on padding).

    Returns:
        ``{split: {column: array}}`` for ``train``, ``valid``, ``test``; each positive is
        followed by its negatives.
    """
    user_ids = events["user_id"].to_numpy(np.int64)
    item_ids = events["item_id"].to_numpy(np.int64)
    timestamps = events["timestamp"].to_numpy(np.int64)
    n = len(events)
    behaviour = np.ones(n, bool) if behaviour is None else np.asarray(behaviour, bool)
    rows = np.arange(n) if sampled is None else np.flatnonzero(sampled)
    tables = dict(item_table, item_id=np.arange(num_items + 1))
    positions, valid = history_positions(user_ids, config.max_len, behaviour, rows)
    histories = np.where(valid, item_ids[behaviour][positions] if behaviour.any() else 0, 0)  # (m, max_len)
    split = assign_splits(user_ids[rows], timestamps[rows], config)

    # Each positive is followed by its negatives; their number depends on the split.
    counts = 1 + config.negatives_per_split()[split]
    sample = np.repeat(np.arange(len(rows)), counts)  # (rows of the output,) -> index into rows
    source = rows[sample]  # -> index into events
    group_start = np.repeat(np.cumsum(counts) - counts, counts)
    is_positive = np.arange(len(source)) == group_start
    candidates = item_ids[source].copy()
    if not is_positive.all():
        seen = np.unique(user_ids * (num_items + 1) + item_ids)
        rng = np.random.default_rng(config.seed)
        candidates[~is_positive] = sample_negatives(user_ids[source[~is_positive]], num_items, seen, rng)

    columns = {"timestamp": timestamps[source]}
    for name, table in user_table.items():
        columns[name] = np.asarray(table)[user_ids[source]]
    for name, table in item_table.items():
        columns[name] = np.asarray(table)[candidates]
    columns["item_id"] = candidates
    for hist_name, item_feature in history_of.items():
        columns[hist_name] = np.asarray(tables[item_feature])[histories][sample]
    if time_bucket_feature:
        age = timestamps[rows, None] - timestamps[behaviour][positions] if behaviour.any() else 0
        columns[time_bucket_feature] = np.where(valid, time_interval_buckets(age), 0)[sample]
    for name, values in labels.items():
        columns[name] = np.where(is_positive, np.asarray(values, dtype=np.float32)[source], 0.0).astype(np.float32)
    for name in prior_means_of:
        columns[f"prior_{name}"] = prior_means(user_ids, labels[name])[source]
    columns["user_id"] = user_ids[source]

    row_split = split[sample]
    return {name: {c: v[row_split == i] for c, v in columns.items()} for i, name in enumerate(SPLITS)}

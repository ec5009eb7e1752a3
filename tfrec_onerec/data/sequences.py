"""Next-item data: per-user item sequences, the leave-one-out split, full-ranking inputs.

From an interaction log (MovieLens-100K ratings, or the simulator's clicks) each user's
items are ordered by time (ties by item id, as :func:`tfrec_onerec.data.samples.order_events`),
optionally keeping only the first interaction with each item. Then, per user with at least
three items (leave-one-out, as in SASRec and RecBole):

* **test**: the last item is the target; the input is every earlier item;
* **validation**: the second-last item is the target; the input is every item before it;
* **training**: the remaining items ``s_1..s_m``. Next-item training pairs every position
  with its successor: input ``s_1..s_{m-1}``, target ``s_2..s_m``. Sequences longer than
  ``max_len`` are cut, from the most recent end, into consecutive windows of ``max_len``
  steps, so every training target is used once.

Users with one or two items have no validation/test target; with two items their pair
still enters training.

Padding (the package convention of :mod:`tfrec_onerec.features.spec`): every row holds
ids oldest first, keeps the ``max_len`` most recent, and is **right-padded** with 0. A
next-item model therefore reads position ``t`` to predict the target at ``t``; a target
row carries 0 wherever the input is padding (left out of the loss), and the
representation of a history is the model's output at its last real position
(``length - 1``). With causal attention, right padding never influences real positions.

Scores for full ranking have one column per item: column ``j`` is item ``j + 1`` (ids
``1..num_items``; padding and OOV are never candidates). :meth:`NextItemData.seen_mask`
marks, per user, the items of the whole history before the target (not only the last
``max_len``), which full ranking excludes.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tfrec_onerec.data.samples import order_events

if TYPE_CHECKING:  # TensorFlow and the spec are imported when used
    import tensorflow as tf

    from tfrec_onerec.data.movielens import MovieLens100K
    from tfrec_onerec.data.simulator import SimulatedData
    from tfrec_onerec.features import FeatureSpec

SEQUENCE_FEATURE = "item_seq"
TARGET_FEATURE = "next_item_seq"
"""The next-item family's rows: the item after each position of ``item_seq``."""
TIME_FEATURE = "time_seq"
EVAL_SPLITS = ("valid", "test")


def next_item_spec(num_items: int, max_len: int = 50, embedding_dim: int = 64,
                   name: str = SEQUENCE_FEATURE) -> "FeatureSpec":
    """The spec of next-item data: one item-id sequence feature (``group="history"``).

    Args:
        num_items: item ids are ``1..num_items``.
        max_len: sequence length kept.
        embedding_dim: width of the item embedding (the model width of SASRec).
        name: the feature name. Default ``"item_seq"``.
    """
    from tfrec_onerec.features import Feature, FeatureSpec

    return FeatureSpec([Feature(name, "sequence", vocab_size=num_items, embedding_dim=embedding_dim, vocab="item",
                                max_len=max_len, group="history",
                                description="the user's items, oldest first, right-padded with 0")],
                       user_key="user_id")


def user_sequences(events: pd.DataFrame, unique: bool = True, with_times: bool = False) -> tuple:
    """Each user's items in time order.

    Args:
        events: a log with ``user_id``, ``item_id`` and ``timestamp`` columns.
        unique: keep only a user's first interaction with each item. Default True.
        with_times: also return each sequence's timestamps.

    Returns:
        ``(user_ids (U,), sequences)``: sorted user ids and, for each, an int64 array of
        item ids, oldest first; with `with_times`, ``(user_ids, sequences, times)`` with
        ``times`` the matching float64 timestamp arrays.
    """
    missing = {"user_id", "item_id", "timestamp"} - set(events.columns)
    if missing:
        raise ValueError(f"events need columns user_id, item_id, timestamp; missing {sorted(missing)}.")
    ordered = order_events(events[["user_id", "item_id", "timestamp"]])
    if unique:
        ordered = ordered.drop_duplicates(["user_id", "item_id"], keep="first", ignore_index=True)
    users = ordered["user_id"].to_numpy()
    items = ordered["item_id"].to_numpy().astype(np.int64)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    if with_times:
        times = ordered["timestamp"].to_numpy().astype(np.float64)
        return users[starts].astype(np.int64), np.split(items, starts[1:]), np.split(times, starts[1:])
    return users[starts].astype(np.int64), np.split(items, starts[1:])


def _pad_right(rows: list, max_len: int, dtype=np.int64) -> np.ndarray:
    """(n,) id lists -> (n, max_len) `dtype`, the most recent max_len kept, right-padded with 0."""
    out = np.zeros((len(rows), max_len), dtype)
    for i, row in enumerate(rows):
        kept = row[-max_len:]
        out[i, :len(kept)] = kept
    return out


def _windows(sequence: np.ndarray, max_len: int) -> list:
    """(input, target) windows of `sequence` of at most max_len steps, cut from the end
    (of timestamps too: a window's input times are its items')."""
    inputs, targets = sequence[:-1], sequence[1:]
    return [(inputs[max(0, end - max_len):end], targets[max(0, end - max_len):end])
            for end in range(len(inputs), 0, -max_len)]


@dataclasses.dataclass(frozen=True, eq=False)
class NextItemData:
    """A leave-one-out split of per-user item sequences (see the module docstring).

    ``U`` is the number of users with a validation/test target, ``W`` the number of
    training windows, ``L = max_len``.

    Attributes:
        num_items: item ids are ``1..num_items``.
        max_len: L.
        feature: the name of the sequence feature (see :func:`next_item_spec`).
        train_inputs: (W, L) int64 input windows, right-padded.
        train_targets: (W, L) int64, the next item at each position (0 at padding).
        user_ids: (U,) the evaluated users.
        sequences: U arrays, each user's full item sequence (oldest first).
        item_counts: (num_items,) float64, how often each item occurs in the training
            part (every user's sequence without its validation and test items); the
            popularity baseline's scores.
        train_times: (W, L) float64, the time of each input item in seconds after the
            window's first item (0 at padding), or None for a log without timestamps.
        times: U arrays, the timestamps of ``sequences`` (or None).
    """

    num_items: int
    max_len: int
    feature: str
    train_inputs: np.ndarray
    train_targets: np.ndarray
    user_ids: np.ndarray
    sequences: list
    item_counts: np.ndarray
    train_times: np.ndarray | None = None
    times: list | None = None

    def spec(self, embedding_dim: int = 64) -> "FeatureSpec":
        """The :func:`next_item_spec` of this data."""
        return next_item_spec(self.num_items, self.max_len, embedding_dim, self.feature)

    def _cut(self, split: str) -> int:
        if split not in EVAL_SPLITS:
            raise ValueError(f"split must be one of {EVAL_SPLITS}, got {split!r}.")
        return 2 if split == "valid" else 1

    def inputs(self, split: str) -> np.ndarray:
        """(U, L) int64: each user's history before the split's target, right-padded."""
        cut = self._cut(split)
        return _pad_right([s[:-cut] for s in self.sequences], self.max_len)

    def targets(self, split: str) -> np.ndarray:
        """(U,) int64: the second-last (``"valid"``) or last (``"test"``) item of each user."""
        cut = self._cut(split)
        return np.array([s[-cut] for s in self.sequences], np.int64)

    def seen_items(self, split: str) -> np.ndarray:
        """(U, longest history) int64: each user's whole history before the split's target,
        right-padded with 0 (what full ranking excludes)."""
        cut = self._cut(split)
        histories = [s[:-cut] for s in self.sequences]
        return _pad_right(histories, max(1, max(len(h) for h in histories)))

    def seen_mask(self, split: str) -> np.ndarray:
        """(U, num_items) bool: True where item ``j + 1`` is in the user's whole history
        before the split's target (these are excluded from full ranking)."""
        cut = self._cut(split)
        mask = np.zeros((len(self.sequences), self.num_items), bool)
        for row, sequence in enumerate(self.sequences):
            history = sequence[:-cut]
            mask[row, history[(history >= 1) & (history <= self.num_items)] - 1] = True
        return mask

    def train_dataset(self, batch_size: int = 128, shuffle: bool = True, seed: int | None = 0,
                      with_times: bool = False) -> "tf.data.Dataset":
        """Batches of ``({feature: (batch, L) inputs}, (batch, L) targets)``, int64.

        Args:
            batch_size: windows per batch; the last batch may be smaller.
            shuffle: reshuffle the windows every epoch (seeded).
            seed: the shuffle seed.
            with_times: add ``{TIME_FEATURE: (batch, L) float32}``, :attr:`train_times`
                (what time-aware augmentations read).
        """
        import tensorflow as tf

        features = {self.feature: self.train_inputs}
        if with_times:
            features[TIME_FEATURE] = self.train_times.astype(np.float32)
        ds = tf.data.Dataset.from_tensor_slices((features, self.train_targets))
        if shuffle:
            ds = ds.shuffle(len(self.train_inputs), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def leave_one_out(events: pd.DataFrame, num_items: int, max_len: int = 50, unique: bool = True,
                  feature: str = SEQUENCE_FEATURE) -> NextItemData:
    """Builds the leave-one-out next-item split of a log (see the module docstring).

    Args:
        events: ``user_id``, ``item_id``, ``timestamp`` columns; item ids in 1..num_items.
        num_items: the size of the item vocabulary.
        max_len: L, the sequence length of inputs. Default 50.
        unique: keep only each user's first interaction with an item. Default True.
        feature: the sequence feature's name.

    Returns:
        The :class:`NextItemData`.

    Raises:
        ValueError: bad max_len or num_items, an item id outside 1..num_items, or no
            user with three items.
    """
    if max_len < 1 or num_items < 1:
        raise ValueError(f"max_len and num_items must be >= 1, got max_len={max_len}, num_items={num_items}.")
    items = events["item_id"].to_numpy()
    if len(items) and (items.min() < 1 or items.max() > num_items):
        raise ValueError(f"item ids must lie in 1..num_items={num_items}; got values in "
                         f"[{items.min()}, {items.max()}].")
    user_ids, sequences, times = user_sequences(events, unique, with_times=True)
    evaluated = np.array([len(s) >= 3 for s in sequences], bool)
    if not evaluated.any():
        raise ValueError("No user has the three items leave-one-out needs (train, validation, test).")
    windows, time_windows, counts = [], [], np.zeros(num_items + 1)
    for sequence, sequence_times, has_eval in zip(sequences, times, evaluated):
        end = len(sequence) - 2 if has_eval else len(sequence)
        windows += _windows(sequence[:end], max_len)
        time_windows += [inputs - inputs[0] for inputs, _ in _windows(sequence_times[:end], max_len)]
        np.add.at(counts, sequence[:end], 1.0)
    train_inputs = _pad_right([w[0] for w in windows], max_len)
    train_targets = _pad_right([w[1] for w in windows], max_len)
    return NextItemData(num_items=int(num_items), max_len=int(max_len), feature=feature,
                        train_inputs=train_inputs, train_targets=train_targets, user_ids=user_ids[evaluated],
                        sequences=[s for s, keep in zip(sequences, evaluated) if keep], item_counts=counts[1:],
                        train_times=_pad_right(time_windows, max_len, np.float64),
                        times=[t for t, keep in zip(times, evaluated) if keep])


def movielens_next_item(data: "MovieLens100K", max_len: int = 50) -> NextItemData:
    """MovieLens-100K as next-item data: every rating is an interaction (implicit feedback)."""
    return leave_one_out(data.ratings, data.num_items, max_len)


def simulator_next_item(data: "SimulatedData", max_len: int = 50, unique: bool = True) -> NextItemData:
    """The simulator's clicked items as next-item data (exposures without a click are dropped)."""
    log = data.interactions
    return leave_one_out(log[log["click"] > 0], len(data.items), max_len, unique)


def training_windows(data) -> np.ndarray:
    """(W, 2L) the items of every training row of prepared next-item data (a
    :class:`~tfrec_onerec.families.FamilyData`): each window's inputs, then its targets. Only the
    training split is read: what a model fits on these never sees validation or test items."""
    rows = data.columns("train")
    return np.concatenate([rows[SEQUENCE_FEATURE], rows[TARGET_FEATURE]], axis=1)


def exclude_seen(scores: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """`scores` (U, num_items) with the `seen` (U, num_items) items set to -inf (float64)."""
    scores = np.asarray(scores, np.float64)
    if scores.shape != np.shape(seen):
        raise ValueError(f"scores and seen must both be (users, num_items); got {scores.shape} and "
                         f"{np.shape(seen)}.")
    return np.where(seen, -np.inf, scores)

"""MovieLens-100K as session samples for generative models (OneRec), with leave-one-out splits.

The same columns as :mod:`tfrec_onerec.data.sessions` builds from the simulator, so one
OneRec trains on either:

* static user features ``user_id``, ``gender``, ``age``, ``occupation`` (ids of
  :func:`tfrec_onerec.data.movielens.user_table`);
* ``short_item_ids``: the last ``short_len`` movies the user rated before the sample's
  position; ``positive_item_ids``: the last ``positive_len`` movies rated >= ``like_rating``
  before it (both oldest first, right-padded with 0);
* ``session_item_ids``: the target, the next ``session_len`` movies rated from that
  position on (right-padded with 0 at the end of the training part);
* ``seen_item_ids`` (``valid`` and ``test`` only): every movie the user rated before the
  target, oldest first, right-padded with 0 to the longest such history. Full-ranking
  evaluation removes them from the ranked list, as SASRec's evaluation
  (:meth:`~tfrec_onerec.data.sequences.NextItemData.seen_mask`) does.

Splits (leave-one-out, as :mod:`tfrec_onerec.data.samples` and SASRec's
:mod:`tfrec_onerec.data.sequences` use): a user's last rating is the ``test`` target, the
one before it the ``valid`` target (both one-item sessions: full-ranking evaluation asks for
the next movie), and every earlier position with at least ``min_history`` ratings before it
is a ``train`` sample whose session never reaches into the validation or test ratings.
Ratings are read in :func:`~tfrec_onerec.data.samples.order_events` order.
"""
from __future__ import annotations

import numpy as np

from tfrec_onerec.data.movielens import MovieLens100K, user_table
from tfrec_onerec.data.samples import history_matrix, order_events
from tfrec_onerec.data.sessions import POSITIVE_FEATURE, SESSION_FEATURE, SHORT_FEATURE

STATIC_FEATURES = ("gender", "age", "occupation")
SEEN_FEATURE = "seen_item_ids"


def movielens_sessions(data: MovieLens100K, session_len: int = 3, short_len: int = 10, positive_len: int = 20,
                       like_rating: int = 4, min_history: int = 1) -> dict:
    """``{"train" | "valid" | "test": {column: array}}`` (see the module docstring).

    Returns:
        Per split: ``user_id`` (n,), the static features (n,), ``short_item_ids``
        (n, short_len), ``positive_item_ids`` (n, positive_len), ``session_item_ids``
        (n, session_len) int64; ``valid`` and ``test`` also ``seen_item_ids`` (n, longest
        history) int64.
    """
    if min(session_len, short_len, positive_len) < 1:
        raise ValueError(f"session_len, short_len and positive_len must be >= 1, got "
                         f"{session_len}, {short_len}, {positive_len}.")
    events = order_events(data.ratings)
    users, items = events["user_id"].to_numpy(np.int64), events["item_id"].to_numpy(np.int64)
    liked = events["rating"].to_numpy() >= like_rating
    short = history_matrix(users, items, short_len)
    positive = history_matrix(users, items, positive_len, behaviour=liked)
    new_user = np.r_[True, users[1:] != users[:-1]]
    first = np.maximum.accumulate(np.where(new_user, np.arange(len(users)), 0))
    position = np.arange(len(users)) - first                       # index within the user's sequence
    length = np.bincount(users)[users]                              # the user's number of ratings
    # Next session_len items from each row, cut at the start of the user's validation rating.
    offsets = np.arange(session_len)
    ahead = np.arange(len(users))[:, None] + offsets[None, :]
    train_end = (first + length - 2)[:, None]                        # index of the validation rating
    inside = ahead < train_end
    session = np.where(inside, items[np.minimum(ahead, len(items) - 1)], 0)
    statics = user_table(data)

    def rows(mask, targets):
        out = {"user_id": users[mask], SHORT_FEATURE: short[mask], POSITIVE_FEATURE: positive[mask],
               SESSION_FEATURE: targets}
        out.update({name: statics[name][users[mask]] for name in STATIC_FEATURES})
        return out

    def seen(mask):
        """(rows, longest history) every item of the row's user before the row, right-padded."""
        before, starts = position[mask], first[mask]
        slots = np.arange(max(int(before.max(initial=0)), 1))
        inside = slots[None, :] < before[:, None]
        return np.where(inside, items[np.minimum(starts[:, None] + slots[None, :], len(items) - 1)], 0)

    train = (position >= min_history) & (position < length - 2)
    valid, test = position == length - 2, position == length - 1
    single = np.zeros((len(users), session_len), np.int64)
    single[:, 0] = items
    return {"train": rows(train, session[train]),
            "valid": {**rows(valid, single[valid]), SEEN_FEATURE: seen(valid)},
            "test": {**rows(test, single[test]), SEEN_FEATURE: seen(test)}}

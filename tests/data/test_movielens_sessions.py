"""MovieLens-100K session samples: hand-made log, leave-one-out, no leakage; and the real data's counts."""
import numpy as np
import pandas as pd
import pytest

from tfrec_onerec.data import movielens
from tfrec_onerec.data.movielens_sessions import movielens_sessions
from tfrec_onerec.data.sessions import POSITIVE_FEATURE, SESSION_FEATURE, SHORT_FEATURE


def tiny():
    users = pd.DataFrame({"user_id": [1, 2], "age": [30, 50], "gender": ["F", "M"],
                          "occupation": ["writer", "doctor"], "zip_code": ["1", "2"]})
    # user 1 rates items 10..15 in time order (ratings 5, 2, 4, 1, 5, 3); user 2 rates 20, 21, 22.
    ratings = pd.DataFrame({"user_id": [1] * 6 + [2] * 3, "item_id": [10, 11, 12, 13, 14, 15, 20, 21, 22],
                            "rating": [5, 2, 4, 1, 5, 3, 4, 4, 4], "timestamp": [1, 2, 3, 4, 5, 6, 1, 2, 3]})
    return movielens.MovieLens100K(ratings=ratings, users=users, items=pd.DataFrame(), kg=pd.DataFrame(),
                                   links=pd.DataFrame(), source="tiny")


def test_sessions_by_hand():
    splits = movielens_sessions(tiny(), session_len=2, short_len=2, positive_len=2)
    train = splits["train"]
    # user 1: validation target 14, test 15; train positions 1..3 (items 11, 12, 13), sessions stop
    # before 14. User 2 (3 ratings) has no training position with a history before it.
    assert train["user_id"].tolist() == [1, 1, 1]
    assert train[SESSION_FEATURE].tolist() == [[11, 12], [12, 13], [13, 0]]
    assert train[SHORT_FEATURE].tolist() == [[10, 0], [10, 11], [11, 12]]
    assert train[POSITIVE_FEATURE].tolist() == [[10, 0], [10, 0], [10, 12]]  # ratings >= 4 only
    assert splits["valid"][SESSION_FEATURE].tolist() == [[14, 0], [21, 0]]
    assert splits["test"][SESSION_FEATURE].tolist() == [[15, 0], [22, 0]]
    assert splits["test"][SHORT_FEATURE].tolist() == [[13, 14], [20, 21]]
    assert splits["test"]["gender"].tolist()[0] != splits["test"]["gender"].tolist()[1]


def test_bad_lengths_are_named():
    with pytest.raises(ValueError, match="must be >= 1"):
        movielens_sessions(tiny(), session_len=0)


def test_evaluation_rows_list_every_item_seen_before_the_target():
    from tfrec_onerec.data.movielens_sessions import SEEN_FEATURE

    splits = movielens_sessions(tiny(), session_len=2, short_len=2, positive_len=2)
    # user 1: valid target 14 after 10..13, test target 15 after 10..14; user 2: 21 after 20, 22 after 20, 21.
    assert splits["valid"][SEEN_FEATURE].tolist() == [[10, 11, 12, 13], [20, 0, 0, 0]]
    assert splits["test"][SEEN_FEATURE].tolist() == [[10, 11, 12, 13, 14], [20, 21, 0, 0, 0]]
    assert SEEN_FEATURE not in splits["train"]

"""Evaluation helpers: the long-tail users and predictions restricted to a subset, by hand."""
import numpy as np
import pytest

from tfrec_onerec import evaluation


def test_least_active_users_by_hand():
    # Training clicks: user 1 x3, user 2 x1, user 3 x2, user 5 x0 (one non-click row); user 4 unseen.
    users = np.array([1, 1, 1, 2, 3, 3, 5, 2])
    positive = np.array([1, 1, 1, 1, 1, 1, 0, 0])
    # Candidates' activity: 1 -> 3, 2 -> 1, 3 -> 2, 4 -> 0, 5 -> 0; the 0.4 quantile of (3, 1, 2, 0, 0) is 0.6.
    np.testing.assert_array_equal(evaluation.least_active_users(users, positive, [5, 4, 3, 2, 1, 1], 0.4), [4, 5])
    np.testing.assert_array_equal(evaluation.least_active_users(users, positive, [1, 2, 3], 0.5), [2, 3])
    np.testing.assert_array_equal(evaluation.least_active_users(users, positive, [1, 2, 3], 1.0), [1, 2, 3])
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\], got 0"):
        evaluation.least_active_users(users, positive, [1], 0)


def test_restrict_keeps_the_chosen_examples_of_every_array():
    out = {"scores": {"click": np.array([0.1, 0.9, 0.4])}, "labels": {"click": np.array([0, 1, 1])},
           "users": np.array([7, 8, 9])}
    kept = evaluation.restrict(out, [True, False, True])
    np.testing.assert_array_equal(kept["scores"]["click"], [0.1, 0.4])
    np.testing.assert_array_equal(kept["labels"]["click"], [0, 1])
    np.testing.assert_array_equal(kept["users"], [7, 9])

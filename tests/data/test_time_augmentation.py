"""TiCoSeRec's time-interval augmentations on hand-made sequences, the control strategy, and
the ItemCF-IUF similarity by hand."""
import numpy as np
import pytest

from tfrec_onerec.data import time_augmentation as ta

ITEMS = np.arange(1, 9)
TIMES = np.array([0, 1, 2, 3, 10, 20, 21, 22], float)  # intervals 1 1 1 7 10 1 1


class Successor:
    """A similarity whose most similar item of i is i + 100."""

    def most_similar(self, items):
        return np.asarray(items) + 100


def test_the_least_varying_window_and_its_ties():
    assert ta.least_varying_window(TIMES, 4) == 0  # intervals 1 1 1: variance 0
    assert ta.least_varying_window(TIMES, 3) == 5  # 0-variance windows at 0, 1 and 5: the most recent
    assert ta.least_varying_window(np.array([0.0, 5.0, 6.0]), 2) == 1


def test_crop_keeps_the_evenest_window_and_reorder_shuffles_it():
    items, times = ta.ti_crop(ITEMS, TIMES, rate=0.5)
    np.testing.assert_array_equal(items, [1, 2, 3, 4])
    np.testing.assert_array_equal(times, [0, 1, 2, 3])
    shuffled, times = ta.ti_reorder(ITEMS, TIMES, np.random.default_rng(3), rate=0.5)
    np.testing.assert_array_equal(times, TIMES)
    assert sorted(shuffled[:4]) == [1, 2, 3, 4] and not np.array_equal(shuffled[:4], [1, 2, 3, 4])
    np.testing.assert_array_equal(shuffled[4:], ITEMS[4:])
    # under two items in the window: nothing to reorder
    np.testing.assert_array_equal(ta.ti_reorder(ITEMS, TIMES, np.random.default_rng(0), rate=0.2)[0], ITEMS)


def test_mask_hides_half_the_items_reproducibly():
    masked, times = ta.ti_mask(ITEMS, TIMES, np.random.default_rng(0))
    assert (masked == ta.MASK_ID).sum() == 4
    kept = masked != ta.MASK_ID
    np.testing.assert_array_equal(masked[kept], ITEMS[kept])
    np.testing.assert_array_equal(times, TIMES)
    np.testing.assert_array_equal(ta.ti_mask(ITEMS, TIMES, np.random.default_rng(0))[0], masked)


def test_substitute_at_the_smallest_and_insert_at_the_largest_intervals():
    items, times = ta.ti_substitute(ITEMS, TIMES, similarity=Successor(), rate=0.25)
    np.testing.assert_array_equal(items, [101, 102, 3, 4, 5, 6, 7, 8])  # intervals of 1, the earliest first
    np.testing.assert_array_equal(times, TIMES)
    items, times = ta.ti_insert(ITEMS, TIMES, similarity=Successor(), rate=0.25)
    # after item 5 (interval 10) and item 4 (interval 7), each at the middle of its interval
    np.testing.assert_array_equal(items, [1, 2, 3, 4, 104, 5, 105, 6, 7, 8])
    np.testing.assert_array_equal(times, [0, 1, 2, 3, 6.5, 10, 15, 20, 21, 22])
    assert np.diff(times).var() < np.diff(TIMES).var()  # more even, the paper's aim
    one = (np.array([7]), np.array([5.0]))
    for operator in (ta.ti_substitute, ta.ti_insert):
        np.testing.assert_array_equal(operator(*one, similarity=Successor())[0], [7])


def test_the_control_strategy_and_bad_input():
    short = {ta.augment(ITEMS, TIMES, np.random.default_rng(seed), Successor())[2] for seed in range(40)}
    assert short == set(ta.SHORT_SEQUENCE_OPERATORS)
    long_items, long_times = np.arange(1, 14), np.arange(13.0)
    drawn = {ta.augment(long_items, long_times, np.random.default_rng(seed), Successor())[2] for seed in range(60)}
    assert drawn == set(ta.OPERATORS)
    first, second = (ta.augment(long_items, long_times, np.random.default_rng(7), Successor()) for _ in range(2))
    np.testing.assert_array_equal(first[0], second[0])
    with pytest.raises(ValueError, match="Unknown augmentation operators \\['shift'\\]"):
        ta.augment(ITEMS, TIMES, np.random.default_rng(0), Successor(), rates={"shift": 0.1})
    with pytest.raises(ValueError, match="8 items and 7 timestamps"):
        ta.ti_crop(ITEMS, TIMES[:-1])
    with pytest.raises(ValueError, match="increasing order"):
        ta.ti_crop(ITEMS, TIMES[::-1])


def test_item_similarity_by_hand():
    # IUF weights: user 0 (3 items) 1/log 4; users 1, 2 (2 items) 1/log 3
    similarity = ta.ItemSimilarity(5).fit([np.array([1, 2, 3]), np.array([1, 2, 0]), np.array([3, 4])])
    # sim(3, 4) = (1/log 3) / sqrt(2 * 1) = 0.64 beats sim(3, 1) = sim(3, 2) = (1/log 4) / 2 = 0.36
    np.testing.assert_array_equal(similarity.most_similar([1, 2, 3, 4]), [2, 1, 4, 3])
    assert similarity.most_similar([5])[0] == 1  # no common user: the most frequent other item
    np.testing.assert_array_equal(similarity.most_similar([0, 9]), [0, 9])  # padding, unknown

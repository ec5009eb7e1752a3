"""Next-item data: time order, leave-one-out, windows, padding, exclusion, datasets."""
import numpy as np
import pandas as pd
import pytest

from tfrec_onerec.data import sequences


def log(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


# user 1: items 5, 3, 9, 7 (given out of order); user 2: 4, 4 (a repeat), 8, 2, 6; user 3: 1, 2 only.
EVENTS = log([(1, 9, 30), (1, 5, 10), (1, 3, 20), (1, 7, 40),
              (2, 4, 1), (2, 4, 2), (2, 8, 3), (2, 2, 4), (2, 6, 5),
              (3, 1, 1), (3, 2, 2)])


def test_user_sequences_are_time_ordered_and_deduplicated():
    users, seqs = sequences.user_sequences(EVENTS)
    np.testing.assert_array_equal(users, [1, 2, 3])
    assert [s.tolist() for s in seqs] == [[5, 3, 9, 7], [4, 8, 2, 6], [1, 2]]
    _, with_repeats = sequences.user_sequences(EVENTS, unique=False)
    assert with_repeats[1].tolist() == [4, 4, 8, 2, 6]
    # ties in time are ordered by item id
    _, tied = sequences.user_sequences(log([(1, 9, 5), (1, 2, 5), (1, 4, 1)]))
    assert tied[0].tolist() == [4, 2, 9]


def test_leave_one_out_by_hand():
    data = sequences.leave_one_out(EVENTS, num_items=10, max_len=3)
    np.testing.assert_array_equal(data.user_ids, [1, 2])  # user 3 has no validation/test item
    np.testing.assert_array_equal(data.targets("test"), [7, 6])
    np.testing.assert_array_equal(data.targets("valid"), [9, 2])
    np.testing.assert_array_equal(data.inputs("test"), [[5, 3, 9], [4, 8, 2]])
    np.testing.assert_array_equal(data.inputs("valid"), [[5, 3, 0], [4, 8, 0]])  # right-padded
    # training: user 1 [5, 3] -> (5 -> 3); user 2 [4, 8] -> (4 -> 8); user 3 [1, 2] -> (1 -> 2)
    np.testing.assert_array_equal(data.train_inputs, [[5, 0, 0], [4, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(data.train_targets, [[3, 0, 0], [8, 0, 0], [2, 0, 0]])
    counts = np.zeros(10)
    counts[[4, 2, 3, 7, 0, 1]] = 1  # items 5, 3, 4, 8, 1, 2 (column j = item j + 1)
    np.testing.assert_array_equal(data.item_counts, counts)
    seen = data.seen_mask("test")
    assert seen.shape == (2, 10)
    assert np.flatnonzero(seen[0]).tolist() == [2, 4, 8]  # items 3, 5, 9
    assert np.flatnonzero(data.seen_mask("valid")[1]).tolist() == [3, 7]  # items 4, 8


def test_long_sequences_become_consecutive_windows_from_the_end():
    events = log([(1, i, i * i) for i in range(1, 13)])  # items 1..12: train 1..10, valid 11, test 12
    data = sequences.leave_one_out(events, num_items=12, max_len=4)
    np.testing.assert_array_equal(data.train_inputs, [[6, 7, 8, 9], [2, 3, 4, 5], [1, 0, 0, 0]])
    # each input item's time after its window's first (item i came at i * i), 0 at padding
    np.testing.assert_array_equal(data.train_times, [[0, 13, 28, 45], [0, 5, 12, 21], [0, 0, 0, 0]])
    assert [t.tolist() for t in data.times] == [[float(i * i) for i in range(1, 13)]]
    np.testing.assert_array_equal(data.train_targets, [[7, 8, 9, 10], [3, 4, 5, 6], [2, 0, 0, 0]])
    # every training target appears exactly once
    targets = data.train_targets[data.train_targets > 0]
    assert sorted(targets.tolist()) == list(range(2, 11))
    # the test input keeps the most recent max_len items, oldest first
    np.testing.assert_array_equal(data.inputs("test"), [[8, 9, 10, 11]])
    assert data.seen_mask("test")[0].sum() == 11  # the whole history, not only the last 4


def test_train_dataset_yields_feature_dicts_and_targets():
    data = sequences.leave_one_out(EVENTS, num_items=10, max_len=3)
    features, targets = next(iter(data.train_dataset(batch_size=8, shuffle=False)))
    assert set(features) == {"item_seq"}
    np.testing.assert_array_equal(features["item_seq"].numpy(), data.train_inputs)
    timed, _ = next(iter(data.train_dataset(batch_size=8, shuffle=False, with_times=True)))
    np.testing.assert_array_equal(timed["time_seq"].numpy(), data.train_times)
    np.testing.assert_array_equal(targets.numpy(), data.train_targets)
    assert features["item_seq"].dtype.name == "int64"
    spec = data.spec(embedding_dim=8)
    assert spec["item_seq"].max_len == 3 and spec["item_seq"].vocab_size == 10
    assert spec["item_seq"].embedding_dim == 8


def test_exclude_seen_and_errors():
    scores = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(sequences.exclude_seen(scores, np.array([[False, True, False]])),
                                  [[1.0, -np.inf, 3.0]])
    with pytest.raises(ValueError, match="scores and seen must both be"):
        sequences.exclude_seen(scores, np.zeros((1, 2), bool))
    with pytest.raises(ValueError, match="item ids must lie in 1..num_items=5"):
        sequences.leave_one_out(EVENTS, num_items=5)
    with pytest.raises(ValueError, match="No user has the three items"):
        sequences.leave_one_out(log([(1, 1, 1), (1, 2, 2)]), num_items=5)
    with pytest.raises(ValueError, match="missing \\['timestamp'\\]"):
        sequences.user_sequences(EVENTS.drop(columns="timestamp"))
    data = sequences.leave_one_out(EVENTS, num_items=10)
    with pytest.raises(ValueError, match="split must be one of"):
        data.inputs("train")


def test_movielens_and_simulator_sources():
    from tfrec_onerec.data.movielens import load_movielens_100k
    from tfrec_onerec.data.simulator import SimulatorConfig, simulate

    ml = sequences.movielens_next_item(load_movielens_100k(), max_len=50)
    assert len(ml.user_ids) == 943 and ml.num_items == 1682
    assert ml.item_counts.sum() + 2 * 943 == 100_000  # every rating is train, valid or test
    assert ml.train_inputs.shape[1] == 50 and (ml.train_inputs[:, 0] > 0).all()

    sim = simulate(SimulatorConfig(num_users=50, num_items=40, sessions_per_user=4))
    data = sequences.simulator_next_item(sim, max_len=10)
    clicks = sim.interactions[sim.interactions["click"] > 0]
    first_clicks = clicks.drop_duplicates(["user_id", "item_id"])
    users = first_clicks.groupby("user_id").size()
    assert len(data.user_ids) == int((users >= 3).sum())
    for user, seq in zip(data.user_ids[:5], data.sequences[:5]):
        assert seq.tolist() == first_clicks[first_clicks["user_id"] == user]["item_id"].tolist()

"""Histories, negative sampling and splits, on hand-made logs."""
import numpy as np
import pandas as pd
import pytest

from tfrec_onerec.data.samples import (NUM_TIME_BUCKETS, SampleConfig, build_samples, history_matrix, order_events,
                                        time_interval_buckets)


def log():
    # user 1 rates items 3, 1, 2 at t=10, 20, 20 (tie broken by item id); user 2 rates 4, 5.
    return order_events(pd.DataFrame({"user_id": [1, 1, 1, 2, 2], "item_id": [3, 2, 1, 4, 5],
                                      "timestamp": [10, 20, 20, 5, 6]}))


def test_history_is_previous_items_oldest_first_right_padded():
    events = log()
    assert events["item_id"].tolist() == [3, 1, 2, 4, 5]
    hist = history_matrix(events["user_id"].to_numpy(), events["item_id"].to_numpy(), max_len=2)
    np.testing.assert_array_equal(hist, [[0, 0], [3, 0], [3, 1], [0, 0], [4, 0]])
    hist1 = history_matrix(events["user_id"].to_numpy(), events["item_id"].to_numpy(), max_len=1)
    np.testing.assert_array_equal(hist1[:, 0], [0, 3, 1, 0, 4])  # truncation keeps the newest


def test_history_of_behaviour_events_only():
    # one user, five exposures; items 7 and 9 were clicked
    users = np.ones(5, np.int64)
    items = np.array([6, 7, 8, 9, 5])
    clicked = np.array([False, True, False, True, False])
    hist = history_matrix(users, items, 3, behaviour=clicked)
    np.testing.assert_array_equal(hist, [[0, 0, 0], [0, 0, 0], [7, 0, 0], [7, 0, 0], [7, 9, 0]])
    two_users = history_matrix(np.array([1, 1, 2, 2]), np.array([3, 4, 5, 6]), 2,
                               behaviour=np.array([True, True, False, True]))
    np.testing.assert_array_equal(two_users, [[0, 0], [3, 0], [0, 0], [0, 0]])


def build(config, num_items=8):
    events = log()
    genre = np.array([0, 1, 1, 2, 2, 3, 3, 4, 4])
    return build_samples(events, num_items, {"age": np.array([0, 7, 8])}, {"genre": genre},
                         {"hist_item_id": "item_id", "hist_genre": "genre"},
                         {"click": np.ones(len(events))}, config)


def test_leave_one_out_split_and_negatives_follow_their_positive():
    splits = build(SampleConfig(max_len=3, num_negatives=2, eval_negatives=3, seed=1))
    test = splits["test"]
    assert test["click"].tolist() == [1, 0, 0, 0, 1, 0, 0, 0]
    assert test["item_id"][0] == 2 and test["item_id"][4] == 5  # the last item of each user
    for start, user, seen in ((0, 1, {1, 2, 3}), (4, 2, {4, 5})):
        negatives = test["item_id"][start + 1:start + 4]
        assert not set(negatives) & seen and (test["user_id"][start:start + 4] == user).all()
        assert (test["hist_item_id"][start + 1:start + 4] == test["hist_item_id"][start]).all()
    np.testing.assert_array_equal(test["hist_genre"][0], [2, 1, 0])  # genres of items 3, 1
    assert test["age"][0] == 7 and test["age"][4] == 8
    assert splits["valid"]["item_id"][0] == 1 and len(splits["train"]["click"]) == 1 + 2


def test_negative_sampling_is_seeded():
    a = build(SampleConfig(num_negatives=2, seed=3))["train"]["item_id"]
    b = build(SampleConfig(num_negatives=2, seed=3))["train"]["item_id"]
    c = build(SampleConfig(num_negatives=2, seed=4))["train"]["item_id"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) or len(a) < 4


def test_temporal_split_cuts_on_time():
    splits = build(SampleConfig(split="temporal", num_negatives=0, eval_negatives=0, temporal_fractions=(0.4, 0.2)))
    assert [len(splits[s]["timestamp"]) for s in ("train", "valid", "test")] == [2, 1, 2]
    assert splits["train"]["timestamp"].max() <= splits["valid"]["timestamp"].min()
    assert splits["valid"]["timestamp"].max() <= splits["test"]["timestamp"].min()


def test_impossible_negatives_are_reported():
    with pytest.raises(ValueError, match="every item"):
        build(SampleConfig(num_negatives=1), num_items=3)  # user 1 has rated all 3 items


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="split must be one of"):
        SampleConfig(split="random")


def test_prepared_cache_key_follows_the_data_version(monkeypatch, tmp_path):
    from tfrec_onerec.data import prepared, registry

    monkeypatch.setenv("TFREC_ONEREC_DATA_DIR", str(tmp_path))
    built = []

    def fake_prepare(dataset, directory, config=None, data_path=None):
        built.append(directory)
        directory.mkdir(parents=True)
        (directory / prepared.METADATA_FILE).write_text("{}")
        (directory / prepared.SPEC_FILE).write_text(prepared.FeatureSpec([]).to_json())

    monkeypatch.setattr(prepared, "prepare", fake_prepare)
    prepared.prepare_cached("simulator")
    prepared.prepare_cached("simulator")  # reused
    builder = registry.get("simulator")
    import dataclasses
    monkeypatch.setitem(registry._DATASETS, "simulator", dataclasses.replace(builder, version=builder.version + 1))
    prepared.prepare_cached("simulator")  # a new version is rebuilt elsewhere
    assert len(built) == 2 and built[0] != built[1]


def test_sampled_events_keep_histories_from_the_whole_log_and_age_buckets():
    # one user: exposures at t = 0, 3600, 7200 s (item 3 and 4 clicked), 3 * 3600 s; only the last
    # two events become samples, their histories still read the earlier clicks
    events = pd.DataFrame({"user_id": [1, 1, 1, 1], "item_id": [3, 4, 5, 6],
                           "timestamp": [0, 3600, 7200, 3 * 3600 + 1]})
    splits = build_samples(events, 8, {}, {}, {"hist_item_id": "item_id"}, {"click": np.ones(4)},
                           SampleConfig(max_len=3, num_negatives=0, eval_negatives=0, split="temporal",
                                        temporal_fractions=(0.5, 0.0)),
                           behaviour=np.array([True, True, False, False]), sampled=np.array([0, 0, 1, 1], bool),
                           time_bucket_feature="hist_age")
    rows = {name: split["item_id"].tolist() for name, split in splits.items()}
    assert rows == {"train": [5], "valid": [], "test": [6]}
    np.testing.assert_array_equal(splits["test"]["hist_item_id"], [[3, 4, 0]])
    # ages 3 h + 1 s and 2 h + 1 s: buckets 1 + floor(log2(1 + hours)) = 3 and 2
    np.testing.assert_array_equal(splits["test"]["hist_age"], [[3, 2, 0]])
    np.testing.assert_array_equal(splits["train"]["hist_age"], [[2, 2, 0]])  # 2 h and 1 h: both "1 to 3 hours"
    np.testing.assert_array_equal(time_interval_buckets([0, 3599, 3600, 10 ** 12]), [1, 1, 2, NUM_TIME_BUCKETS])
    np.testing.assert_array_equal(history_matrix(events["user_id"].to_numpy(), events["item_id"].to_numpy(), 2,
                                                 rows=np.array([3])), [[4, 5]])


def test_user_temporal_split_holds_out_each_users_latest_events():
    from tfrec_onerec.data.samples import assign_splits

    users = np.repeat([1, 2, 3, 4], [10, 3, 2, 20])
    times = np.concatenate([np.arange(10) * 100, [5, 6, 7], [1, 2], np.arange(20)])
    split = assign_splits(users, times, SampleConfig(split="user-temporal"))
    # 10 events: 8 / 1 / 1; 3 events: 1 / 1 / 1; 2 events: training only; 20 events: 16 / 2 / 2
    assert split.tolist() == ([0] * 8 + [1, 2]) + [0, 1, 2] + [0, 0] + ([0] * 16 + [1, 1, 2, 2])
    wider = assign_splits(users, times, SampleConfig(split="user-temporal", temporal_fractions=(0.5, 0.25)))
    assert np.bincount(wider[-20:]).tolist() == [10, 5, 5]


def test_cold_users_split_holds_out_whole_users():
    from tfrec_onerec.data.samples import assign_splits

    users = np.repeat(np.arange(1, 21), 3)
    times = np.tile([1, 2, 3], 20)
    split = assign_splits(users, times, SampleConfig(split="cold-users", seed=4))
    per_user = split.reshape(20, 3)
    assert (per_user == per_user[:, :1]).all()  # a user's events share one split
    assert np.bincount(per_user[:, 0]).tolist() == [16, 2, 2]
    shuffled = np.random.default_rng(4).permutation(np.arange(1, 21))
    assert sorted(shuffled[16:18]) == sorted(np.flatnonzero(per_user[:, 0] == 1) + 1)
    assert sorted(shuffled[18:]) == sorted(np.flatnonzero(per_user[:, 0] == 2) + 1)
    other = assign_splits(users, times, SampleConfig(split="cold-users", seed=5))
    assert not np.array_equal(other, split)

"""Session samples of the simulator: contexts, targets, labels, splits, quality."""
import dataclasses

import numpy as np
import pytest
from hand_made_world import hand_world

from tfrec_onerec.data import sessions
from tfrec_onerec.data.sessions import SessionConfig, SessionQuality
from tfrec_onerec.features.datasets import columns_dataset

# The hand-written log the expectations below read is LOG of tests/hand_made_world.py.
HAND_CONFIG = SessionConfig(session_len=3, short_len=2, positive_len=2, split_fractions=(0.6, 0.2))


def all_rows(data):
    """The splits' rows concatenated back, keyed by session id."""
    columns = {name: np.concatenate([data.splits[s][name] for s in ("train", "valid", "test")])
               for name in data.splits["train"]}
    return {int(sid): {name: values[i] for name, values in columns.items()}
            for i, sid in enumerate(columns["session_id"])}


def test_exposed_sessions_of_a_hand_made_log():
    data = sessions.build_sessions(hand_world(), HAND_CONFIG)
    rows = all_rows(data)
    assert sorted(rows) == [1, 2, 3, 4, 5]
    # Histories hold only events strictly before the session, oldest first, right-padded.
    assert rows[1]["short_item_ids"].tolist() == [0, 0] and rows[1]["positive_item_ids"].tolist() == [0, 0]
    assert rows[2]["short_item_ids"].tolist() == [6, 0] and rows[2]["positive_item_ids"].tolist() == [6, 0]
    # Session 3: clicks before are 6, 1, 3 -> the 2 most recent; positives 6 (view), 1 (like), 3 (follow).
    assert rows[3]["short_item_ids"].tolist() == [1, 3] and rows[3]["positive_item_ids"].tolist() == [1, 3]
    assert rows[4]["short_item_ids"].tolist() == [0, 0]  # user 2's first session: user 1's past is not theirs
    assert rows[5]["short_item_ids"].tolist() == [2, 0] and rows[5]["positive_item_ids"].tolist() == [2, 0]
    # Targets: the first 3 exposures in order, padded.
    assert rows[3]["session_item_ids"].tolist() == [4, 5, 6]
    assert rows[4]["session_item_ids"].tolist() == [2, 3, 0] and rows[4]["session_length"] == 2
    assert rows[1]["session_item_ids"].tolist() == [6, 0, 0]
    # Per-item labels of session 3: watch 30/20 and 2/10 of the durations.
    r = rows[3]
    assert r["item_click"].tolist() == [1, 1, 0] and r["item_view"].tolist() == [1, 0, 0]
    assert r["item_share"].tolist() == [0, 1, 0] and r["item_like"].tolist() == [0, 0, 0]
    np.testing.assert_allclose(r["item_watch_ratio"], [1.5, 0.2, 0.0], rtol=1e-6)
    # Session labels: means over the real items; swt is normalised by max_watch_ratio = 2.
    np.testing.assert_allclose([r["swt"], r["vtr"], r["wtr"], r["ltr"], r["ctr"]],
                               [(1.5 + 0.2) / 2 / 3, 1 / 3, 0, 0, 2 / 3], rtol=1e-6)
    assert r["total_watch_time"] == pytest.approx(32.0)
    r = rows[2]  # items 1 (view, like), 2 (no click), 3 (5/20 watched, follow)
    np.testing.assert_allclose([r["swt"], r["vtr"], r["wtr"], r["ltr"], r["ctr"]],
                               [(1.0 + 0.25) / 2 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3], rtol=1e-6)
    r = rows[4]  # k = 2 real items: 2 (20/10 watched, view), 3 (no click)
    np.testing.assert_allclose([r["swt"], r["vtr"], r["ctr"]], [2.0 / 2 / 2, 1 / 2, 1 / 2], rtol=1e-6)
    assert r["user_id"] == 2 and r["age_bucket"] == 5 and r["lifecycle_stage"] == 4


def test_split_by_session_start_time():
    data = sessions.build_sessions(hand_world(), HAND_CONFIG)
    # Starts 10, 100, 500, 1000, 2000: quantiles 0.6 -> 700 and 0.8 -> 1200.
    assert data.splits["train"]["session_id"].tolist() == [1, 2, 4]
    assert data.splits["valid"]["session_id"].tolist() == [3]
    assert data.splits["test"]["session_id"].tolist() == [5]
    assert data.splits["train"]["timestamp"].tolist() == [10, 100, 500]


def test_clicked_targets_skip_unclicked_and_drop_sessions_without_clicks():
    data = sessions.build_sessions(hand_world(), dataclasses.replace(HAND_CONFIG, target="clicked"))
    rows = all_rows(data)
    assert 5 not in rows  # no click
    assert rows[3]["session_item_ids"].tolist() == [4, 5, 1]  # 6 was not clicked
    assert rows[2]["session_item_ids"].tolist() == [1, 3, 0]
    assert rows[3]["ctr"] == 1.0
    np.testing.assert_allclose(rows[3]["swt"], (1.5 + 0.2 + 0.3) / 2 / 3, rtol=1e-6)


def test_windows_add_later_parts_of_a_session_in_its_split():
    default = sessions.build_sessions(hand_world(), HAND_CONFIG)
    data = sessions.build_sessions(hand_world(), dataclasses.replace(HAND_CONFIG, windows=True))
    # Session 3 has 4 exposures: windows (4, 5, 6) and (1); every other session fits in one.
    valid = data.splits["valid"]
    assert valid["session_id"].tolist() == [3, 3] and valid["timestamp"].tolist() == [1000, 1060]
    assert [len(data.splits[s]["session_id"]) for s in ("train", "test")] == [3, 1]
    for split in ("train", "valid", "test"):  # the first windows are the default samples
        first = {name: values[:len(default.splits[split]["session_id"])] for name, values in data.splits[split].items()}
        for name, values in default.splits[split].items():
            np.testing.assert_array_equal(first[name], values, err_msg=f"{split} {name}")
    second = {name: values[1] for name, values in valid.items()}
    # Histories strictly before exposure 1060: clicks 6, 1, 3, 4, 5 and the same positives -> the 2 latest.
    assert second["short_item_ids"].tolist() == [4, 5] and second["positive_item_ids"].tolist() == [4, 5]
    assert second["session_item_ids"].tolist() == [1, 0, 0] and second["session_length"] == 1
    # Item 1 watched 3 s of 10: swt = 0.3 / 2, no view, clicked.
    np.testing.assert_allclose([second["swt"], second["vtr"], second["ctr"]], [0.15, 0.0, 1.0], rtol=1e-6)
    # Clicked targets: session 3's clicks 4, 5, 1 make windows (4, 5) and (1) at m = 2.
    clicked = sessions.build_sessions(hand_world(), dataclasses.replace(HAND_CONFIG, session_len=2, target="clicked",
                                                                       windows=True))
    rows = [(int(sid), items.tolist()) for split in ("train", "valid", "test")
            for sid, items in zip(clicked.splits[split]["session_id"], clicked.splits[split]["session_item_ids"])]
    assert sorted(rows) == [(1, [6, 0]), (2, [1, 3]), (3, [1, 0]), (3, [4, 5]), (4, [2, 0])]
    with pytest.raises(ValueError, match="windows"):
        SessionConfig(windows="yes")


def test_quality_filter_checks_each_criterion():
    # Rows: all good | 2 clicks only | 50 s only | no interaction | all good but only a share.
    columns = {"item_click": np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 1, 1], [1, 1, 1]]),
               "total_watch_time": np.array([90.0, 90.0, 50.0, 90.0, 60.0]),
               "item_like": np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]]),
               "item_follow": np.zeros((5, 3), np.int8),
               "item_share": np.array([[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1]]),
               "session_id": np.arange(1, 6)}
    assert SessionQuality().mask(columns).tolist() == [True, False, False, False, True]
    assert SessionQuality(min_items=2).mask(columns).tolist() == [True, True, False, False, True]
    assert SessionQuality(min_watch_time=0).mask(columns).tolist() == [True, False, True, False, True]
    assert SessionQuality(require_interaction=False).mask(columns).tolist() == [True, False, False, True, True]
    assert SessionQuality(0, 0.0, False).mask(columns).all()
    assert SessionQuality().select(columns)["session_id"].tolist() == [1, 5]


def test_select_on_session_data_and_bad_arguments():
    data = sessions.build_sessions(hand_world(), HAND_CONFIG)
    kept = data.select(SessionQuality(min_items=2, min_watch_time=10.0))  # sessions 2 (15 s) and 3 (32 s)
    assert [kept.splits[s]["session_id"].tolist() for s in ("train", "valid", "test")] == [[2], [3], []]
    assert [len(data.select(SessionQuality(min_watch_time=16.0)).splits[s]["session_id"])
            for s in ("train", "valid", "test")] == [0, 0, 0]
    with pytest.raises(ValueError, match="min_items"):
        SessionQuality(min_items=-1)
    with pytest.raises(ValueError, match="target"):
        SessionConfig(target="watched")
    with pytest.raises(ValueError, match="session_len"):
        SessionConfig(session_len=0)
    with pytest.raises(ValueError, match="split_fractions"):
        SessionConfig(split_fractions=(0.8, 0.3))


def test_histories_match_a_brute_force_reading_of_the_log(small_world):
    config = SessionConfig(short_len=4, positive_len=5)
    data = sessions.build_sessions(small_world, config)
    rows = all_rows(data)
    log = small_world.interactions
    duration = small_world.items["duration"].to_numpy()[log["item_id"] - 1]
    positive = (log["click"] == 1) & ((log["watch_time"] >= duration) | (log["like"] == 1) | (log["follow"] == 1)
                                      | (log["share"] == 1))
    rng = np.random.default_rng(0)
    for sid in rng.choice(sorted(rows), 60, replace=False):
        row = rows[sid]
        session = log[log["session_id"] == sid]
        before = log[(log["user_id"] == row["user_id"]) & (log["timestamp"] < session["timestamp"].min())]
        for name, mask, length in (("short_item_ids", before["click"] == 1, 4),
                                   ("positive_item_ids", positive[before.index], 5)):
            expected = before["item_id"][mask].tolist()[-length:]
            assert row[name].tolist() == expected + [0] * (length - len(expected)), (sid, name)
        assert row["session_item_ids"][:row["session_length"]].tolist() == session["item_id"].tolist()[:3]
    # The splits follow time and the spec's columns feed a tf.data pipeline.
    ends = [data.splits[s]["timestamp"] for s in ("train", "valid", "test")]
    assert ends[0].max() <= ends[1].min() and ends[1].max() <= ends[2].min()
    batch = next(iter(columns_dataset(data.splits["train"], data.spec, list(sessions.SESSION_TASKS),
                                      batch_size=8)))
    assert batch[0]["session_item_ids"].shape == (8, 3) and batch[1]["ltr"].shape == (8,)


def test_candidate_sessions_repeat_the_context():
    context = {"user_id": np.array([1, 2]), "short_item_ids": np.array([[1, 0], [2, 3]]),
               "session_item_ids": np.zeros((2, 3), np.int64)}
    out = sessions.candidate_sessions(context, np.arange(1, 13).reshape(2, 2, 3))
    assert out["user_id"].tolist() == [1, 1, 2, 2]
    assert out["short_item_ids"].tolist() == [[1, 0], [1, 0], [2, 3], [2, 3]]
    assert out["session_item_ids"].tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]
    assert sessions.candidate_sessions(context, [[1, 2, 3], [4, 5, 6]])["session_item_ids"].shape == (2, 3)
    with pytest.raises(ValueError, match="item_ids must have shape"):
        sessions.candidate_sessions(context, np.ones((3, 3)))

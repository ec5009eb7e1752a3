"""The short-video simulator: determinism, funnel invariants, ground truth that drives the log."""
import numpy as np
import pandas as pd
import pytest

from tfrec_onerec.data import short_video
from tfrec_onerec.data.samples import SampleConfig
from tfrec_onerec.data.simulator import SimulatorConfig, simulate


@pytest.fixture(scope="module")
def world():
    return simulate(SimulatorConfig(seed=7, num_users=1500, num_items=600))


def test_same_seed_same_world_other_seed_other_world(world):
    again = simulate(SimulatorConfig(seed=7, num_users=1500, num_items=600))
    pd.testing.assert_frame_equal(again.interactions, world.interactions)
    pd.testing.assert_frame_equal(again.social_edges, world.social_edges)
    other = simulate(SimulatorConfig(seed=8, num_users=1500, num_items=600))
    assert not other.interactions["item_id"].head(100).equals(world.interactions["item_id"].head(100))


def test_ids_are_dense_and_one_based(world):
    log = world.interactions
    assert world.users["user_id"].tolist() == list(range(1, 1501))
    assert world.items["item_id"].tolist() == list(range(1, 601))
    assert log["user_id"].between(1, 1500).all() and log["item_id"].between(1, 600).all()
    assert world.items["category"].between(1, world.config.num_categories).all()
    assert world.item_content.shape == (600, world.config.content_dim) and world.item_content.dtype == np.float32


def test_funnel_invariants(world):
    log = world.interactions
    no_click = log["click"] == 0
    for outcome in ("like", "follow", "share", "conversion"):
        assert (log.loc[no_click, outcome] == 0).all(), outcome
    assert (log.loc[no_click, "watch_time"] == 0).all()
    duration = world.items["duration"].to_numpy()[log["item_id"] - 1]
    assert (log["watch_time"] <= duration + 0.05).all() and (log.loc[~no_click, "watch_time"] > 0).all()
    assert 0.1 < log["click"].mean() < 0.5 and 0 < log["conversion"].sum() < log["click"].sum()


def test_timestamps_increase_within_each_user(world):
    log = world.interactions
    assert (np.diff(log["user_id"]) >= 0).all()
    same_user = np.diff(log["user_id"]) == 0
    assert (np.diff(log["timestamp"])[same_user] > 0).all()


def test_clicks_follow_the_true_click_probability(world):
    log = world.interactions
    recomputed = world.true_click_probability(log["user_id"], log["item_id"])
    np.testing.assert_allclose(recomputed, log["p_click"])
    quintile = pd.qcut(log["p_click"], 5, labels=False)
    rate = log.groupby(quintile)["click"].mean()
    assert rate.is_monotonic_increasing and rate.iloc[-1] > 2 * rate.iloc[0]
    expected = log.groupby(quintile)["p_click"].mean()
    np.testing.assert_allclose(rate, expected, atol=0.02)  # calibrated: the log is drawn from p_click
    preference = world.true_preference(log["user_id"], log["item_id"])
    assert np.corrcoef(preference, log["click"])[0, 1] > 0.1


def test_conversions_follow_the_true_conversion_probability(world):
    clicked = world.interactions[world.interactions["click"] == 1]
    np.testing.assert_allclose(world.true_conversion_probability(clicked["user_id"], clicked["item_id"]),
                               clicked["p_conversion"])
    assert clicked["conversion"].mean() == pytest.approx(clicked["p_conversion"].mean(), abs=0.01)


def test_friends_share_interests(world):
    u = world.user_interest
    edges = world.social_edges
    assert (edges["src"] < edges["dst"]).all() and not edges.duplicated().any()
    friends = np.einsum("nd,nd->n", u[edges["src"] - 1], u[edges["dst"] - 1]).mean()
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(u), (2, 5000))
    assert friends > np.einsum("nd,nd->n", u[a], u[b]).mean() + 0.2


def test_loyal_users_are_more_active_than_new_users(world):
    per_user = world.interactions.groupby("user_id").size().reindex(world.users["user_id"], fill_value=0)
    stage = world.users.set_index("user_id")["lifecycle_stage"]
    assert per_user[stage == 4].mean() > 2 * per_user[stage == 1].mean()


def test_item_content_clusters_by_category(world):
    content = world.item_content / np.linalg.norm(world.item_content, axis=1, keepdims=True)
    category = world.items["category"].to_numpy()
    similarity = content @ content.T
    same = category[:, None] == category[None, :]
    off_diagonal = ~np.eye(len(category), dtype=bool)
    assert similarity[same & off_diagonal].mean() > similarity[~same].mean() + 0.3


@pytest.mark.parametrize("kwargs, field", [
    (dict(num_users=0), "num_users"), (dict(session_length=1), "session_length"),
    (dict(exploration=1.5), "exploration"), (dict(num_categories=50, num_items=10), "num_categories"),
])
def test_invalid_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"SimulatorConfig.{field}"):
        SimulatorConfig(**kwargs)


def test_samples_are_exposures_with_clicked_histories(world):
    splits = short_video.build_samples(world, SampleConfig(num_negatives=0, eval_negatives=0, split="temporal"))
    total = sum(len(s["click"]) for s in splits.values())
    assert total == world.num_interactions
    train = splits["train"]
    clicked_items = set(zip(world.interactions.loc[world.interactions["click"] == 1, "user_id"],
                            world.interactions.loc[world.interactions["click"] == 1, "item_id"]))
    rows = np.flatnonzero((train["hist_item_id"] > 0).any(axis=1))[:200]
    for r in rows:
        for item in train["hist_item_id"][r][train["hist_item_id"][r] > 0]:
            assert (train["user_id"][r], item) in clicked_items
    with pytest.raises(ValueError, match="real negatives"):
        short_video.build_samples(world, SampleConfig(num_negatives=1))

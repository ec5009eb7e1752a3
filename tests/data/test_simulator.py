"""The short-video simulator: determinism, ids, funnel invariants, and ground truth that drives the log."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from tfrec_onerec.data import short_video, simulator
from tfrec_onerec.data.samples import SampleConfig

CONFIG = simulator.SimulatorConfig(seed=7, num_users=1500, num_items=600)


@pytest.fixture(scope="module")
def world():
    return simulator.simulate(CONFIG)


def _frames(data):
    return {"users": data.users, "items": data.items, "social_edges": data.social_edges,
            "interactions": data.interactions}


def _cosine(a, b):
    return np.einsum("nd,nd->n", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_same_seed_same_world_other_seed_other_world(world):
    again = simulator.simulate(CONFIG, progress=True)
    for name, frame in _frames(world).items():
        pd.testing.assert_frame_equal(_frames(again)[name], frame, check_exact=True, obj=name)
    for name in ("item_content", "user_interest", "item_latent"):
        np.testing.assert_array_equal(getattr(again, name), getattr(world, name))

    other = simulator.simulate(dataclasses.replace(CONFIG, seed=8))
    assert not np.allclose(other.user_interest, world.user_interest)
    assert not other.interactions["item_id"].head(1000).equals(world.interactions["item_id"].head(1000))
    assert not other.social_edges.equals(world.social_edges)


def test_log_knobs_leave_the_world_unchanged(world):
    """Each stage draws from its own stream: more sessions, same users, items and friends."""
    busier = simulator.simulate(dataclasses.replace(CONFIG, sessions_per_user=3.0, exploration=0.5))
    for name in ("users", "items", "social_edges"):
        pd.testing.assert_frame_equal(_frames(busier)[name], _frames(world)[name], obj=name)
    assert busier.num_interactions < world.num_interactions


def test_ids_are_dense_one_based_and_typed(world):
    c = world.config
    users, items, log = world.users, world.items, world.interactions
    assert users["user_id"].tolist() == list(range(1, c.num_users + 1))
    assert items["item_id"].tolist() == list(range(1, c.num_items + 1))
    assert users["age_bucket"].between(1, 7).all() and users["gender"].between(1, 2).all()
    assert set(users["lifecycle_stage"]) == {1, 2, 3, 4} and (users["activity"] > 0).all()
    assert set(items["category"]) == set(range(1, c.num_categories + 1))
    assert (items["duration"] > 0).all() and np.isfinite(items["popularity"]).all()
    for frame, columns in ((users, ("user_id", "age_bucket", "gender", "lifecycle_stage")),
                           (items, ("item_id", "category")),
                           (log, ("user_id", "item_id", "session_id", "position", "timestamp")),
                           (world.social_edges, ("src", "dst"))):
        for column in columns:
            assert frame[column].dtype == np.int64, column
    for column in ("click", "like", "follow", "share", "conversion"):
        assert log[column].dtype == np.int8 and set(log[column].unique()) <= {0, 1}, column
    assert log["user_id"].between(1, c.num_users).all() and log["item_id"].between(1, c.num_items).all()
    assert log["user_id"].nunique() == c.num_users  # every user has at least one session
    assert world.num_interactions == len(log)
    assert world.item_content.shape == (c.num_items, c.content_dim) and world.item_content.dtype == np.float32
    assert world.user_interest.shape == (c.num_users, c.latent_dim)
    assert world.item_latent.shape == (c.num_items, c.latent_dim)
    np.testing.assert_allclose(np.linalg.norm(world.user_interest, axis=1), 1.0)


def test_sessions_are_numbered_in_log_order_with_consecutive_positions(world):
    log = world.interactions
    sessions = log["session_id"].to_numpy()
    assert sessions[0] == 1 and set(np.diff(sessions)) <= {0, 1}  # dense and in log order
    assert log.groupby("session_id")["user_id"].nunique().eq(1).all()
    expected = log.groupby("session_id").cumcount().to_numpy()
    np.testing.assert_array_equal(log["position"], expected)


def test_funnel_invariants(world):
    log = world.interactions
    no_click = log["click"] == 0
    for outcome in ("like", "follow", "share", "conversion", "watch_time"):
        assert (log.loc[no_click, outcome] == 0).all(), outcome
    duration = world.items["duration"].to_numpy()[log["item_id"] - 1]
    assert (log["watch_time"] <= world.config.max_watch_ratio * duration).all()
    assert (log.loc[~no_click, "watch_time"] > 0).all()
    clicked = log[~no_click]
    assert 0.1 < log["click"].mean() < 0.5
    assert 0 < clicked["conversion"].mean() < 1 and 0 < clicked["like"].mean() < 1
    assert clicked["follow"].mean() < clicked["like"].mean()  # rarer engagement is rarer
    assert log["p_click"].between(0, 1).all() and log["p_conversion"].between(0, 1).all()


def test_log_is_sorted_by_user_then_strictly_increasing_time(world):
    log = world.interactions
    same_user = np.diff(log["user_id"]) == 0
    assert (np.diff(log["user_id"]) >= 0).all()
    assert (np.diff(log["timestamp"])[same_user] > 0).all()
    assert (log["timestamp"] >= simulator.EPOCH).all()
    # a user's sessions do not overlap: each starts after the previous one's last exposure
    bounds = log.groupby("session_id").agg(user=("user_id", "first"), start=("timestamp", "min"),
                                           end=("timestamp", "max"))
    next_same_user = bounds["user"].to_numpy()[1:] == bounds["user"].to_numpy()[:-1]
    assert (bounds["start"].to_numpy()[1:] > bounds["end"].to_numpy()[:-1])[next_same_user].all()


def test_ground_truth_reproduces_the_logged_probabilities(world):
    log = world.interactions
    np.testing.assert_array_equal(world.true_click_probability(log["user_id"], log["item_id"]), log["p_click"])
    np.testing.assert_array_equal(world.true_conversion_probability(log["user_id"], log["item_id"]),
                                  log["p_conversion"])
    users, items = np.array([1, 5, 1500]), np.array([600, 2, 17])
    expected = np.einsum("nd,nd->n", world.user_interest[users - 1], world.item_latent[items - 1])
    np.testing.assert_allclose(world.true_preference(users, items), expected)
    # the documented formula of p_click
    c = world.config
    stage_bias = simulator.STAGE_BIAS[world.users["lifecycle_stage"].to_numpy()[users - 1] - 1]
    logit = (c.click_scale * expected + c.popularity_scale * world.items["popularity"].to_numpy()[items - 1]
             + stage_bias + c.click_bias)
    np.testing.assert_allclose(world.true_click_probability(users, items), 1 / (1 + np.exp(-logit)))


@pytest.mark.parametrize("user_ids, item_ids, name", [([0], [1], "user_ids"), ([1501], [1], "user_ids"),
                                                       ([1], [0], "item_ids"), ([1], [601], "item_ids"),
                                                       ([1.0], [1], "user_ids")])
def test_ground_truth_rejects_ids_out_of_range(world, user_ids, item_ids, name):
    with pytest.raises(ValueError, match=name):
        world.true_click_probability(user_ids, item_ids)


def test_clicks_follow_the_true_click_probability(world):
    log = world.interactions
    quintile = pd.qcut(log["p_click"], 5, labels=False)
    rate = log.groupby(quintile)["click"].mean()
    assert rate.is_monotonic_increasing and rate.iloc[-1] > 3 * rate.iloc[0]
    np.testing.assert_allclose(rate, log.groupby(quintile)["p_click"].mean(), atol=0.02)  # calibrated
    assert np.corrcoef(log["p_click"], log["click"])[0, 1] > 0.3
    preference = world.true_preference(log["user_id"], log["item_id"])
    assert np.corrcoef(preference, log["click"])[0, 1] > 0.2


def test_conversions_among_clicks_follow_the_true_conversion_probability(world):
    clicked = world.interactions[world.interactions["click"] == 1]
    tercile = pd.qcut(clicked["p_conversion"], 3, labels=False)
    rate = clicked.groupby(tercile)["conversion"].mean()
    assert rate.is_monotonic_increasing and rate.iloc[-1] > 2 * rate.iloc[0]
    np.testing.assert_allclose(rate, clicked.groupby(tercile)["p_conversion"].mean(), atol=0.02)
    assert clicked["conversion"].mean() == pytest.approx(clicked["p_conversion"].mean(), abs=0.01)


def test_logging_policy_follows_interest_and_popularity_but_explores(world):
    log = world.interactions
    shown = world.true_preference(log["user_id"], log["item_id"]).mean()
    rng = np.random.default_rng(0)
    random_pairs = world.true_preference(rng.integers(1, 1501, 20_000), rng.integers(1, 601, 20_000)).mean()
    assert shown > random_pairs + 0.05
    exposures = np.bincount(log["item_id"], minlength=world.config.num_items + 1)[1:]
    assert np.corrcoef(world.items["popularity"], exposures)[0, 1] > 0.3
    assert (exposures > 0).all()  # exploration reaches every item


def test_sessions_are_coherent(world):
    """Consecutive exposures of a session share a category more often than random exposures."""
    log = world.interactions
    category = world.items["category"].to_numpy()[log["item_id"] - 1]
    same_session = log["session_id"].to_numpy()[1:] == log["session_id"].to_numpy()[:-1]
    within = (category[1:] == category[:-1])[same_session].mean()
    shuffled = np.random.default_rng(0).permutation(category)
    assert within > 2 * (shuffled[1:] == shuffled[:-1]).mean()


def test_friends_share_interests(world):
    edges, interest = world.social_edges, world.user_interest
    assert (edges["src"] < edges["dst"]).all() and not edges.duplicated().any()
    assert edges["src"].min() >= 1 and edges["dst"].max() <= world.config.num_users
    mean_degree = 2 * len(edges) / world.config.num_users
    assert 0.85 * world.config.friends_per_user < mean_degree <= world.config.friends_per_user
    friends = _cosine(interest[edges["src"] - 1], interest[edges["dst"] - 1]).mean()
    a, b = np.random.default_rng(0).integers(0, len(interest), (2, 20_000))
    assert friends > _cosine(interest[a], interest[b]).mean() + 0.2


def test_relations_are_homophilous_to_their_known_degree(world):
    """Relation 1 is the friendship graph; family (homophily 0.9), colleague (0.5) and follow
    (0.0) links share interests in that order, follow no more than random pairs."""
    relations, interest = world.social_relations, world.user_interest
    assert list(relations.columns) == ["src", "dst", "relation"]
    assert all(relations[c].dtype == np.int64 for c in relations.columns)
    pd.testing.assert_frame_equal(relations[relations["relation"] == 1][["src", "dst"]].reset_index(drop=True),
                                  world.social_edges.reset_index(drop=True))
    assert (relations["src"] < relations["dst"]).all() and not relations.duplicated().any()
    similarity = {}
    for relation, edges in relations.groupby("relation"):
        if relation > 1:
            degree = 2 * len(edges) / world.config.num_users
            assert 0.85 * world.config.relation_degree < degree <= world.config.relation_degree
        similarity[relation] = _cosine(interest[edges["src"] - 1], interest[edges["dst"] - 1]).mean()
    assert sorted(similarity) == [1, 2, 3, 4] and simulator.RELATIONS[3] == "follow"
    a, b = np.random.default_rng(0).integers(0, len(interest), (2, 20_000))
    random_pairs = _cosine(interest[a], interest[b]).mean()
    assert similarity[1] > similarity[2] > similarity[3] + 0.1 > similarity[4] + 0.2
    assert abs(similarity[4] - random_pairs) < 0.03


def test_relation_knobs_leave_the_log_and_the_friendships_unchanged(world):
    other = simulator.simulate(dataclasses.replace(CONFIG, relation_homophily=(0.0, 0.0, 1.0), relation_degree=2))
    for name in ("users", "items", "social_edges", "interactions"):
        pd.testing.assert_frame_equal(_frames(other)[name], _frames(world)[name], obj=name)
    assert not other.social_relations.equals(world.social_relations)
    with pytest.raises(ValueError, match=r"relation_homophily must be a tuple of 3 numbers in \[0, 1\]"):
        simulator.SimulatorConfig(relation_homophily=(0.5, 1.5, 0.0))
    with pytest.raises(ValueError, match="relation_degree must be an integer >= 0"):
        simulator.SimulatorConfig(relation_degree=-1)


def test_loyal_users_are_more_active_than_new_users(world):
    log = world.interactions
    stage = world.users.set_index("user_id")["lifecycle_stage"]
    per_user = log.groupby("user_id").size().reindex(stage.index, fill_value=0).groupby(stage).mean()
    assert per_user.is_monotonic_increasing and per_user[4] > 2 * per_user[1]
    session_length = log.groupby("session_id").agg(stage=("user_id", "first"), n=("position", "size"))
    session_length["stage"] = stage.to_numpy()[session_length["stage"] - 1]
    length_by_stage = session_length.groupby("stage")["n"].mean()
    assert length_by_stage[4] > length_by_stage[1]
    assert log.loc[log["user_id"].map(stage) == 4, "click"].mean() > log.loc[log["user_id"].map(stage) == 1,
                                                                                 "click"].mean()


def test_item_content_clusters_by_category(world):
    content = world.item_content / np.linalg.norm(world.item_content, axis=1, keepdims=True)
    category = world.items["category"].to_numpy()
    similarity = content @ content.T
    same = category[:, None] == category[None, :]
    off_diagonal = ~np.eye(len(category), dtype=bool)
    assert similarity[same & off_diagonal].mean() > similarity[~same].mean() + 0.3


@pytest.mark.parametrize("kwargs, field", [
    (dict(num_users=0), "num_users"), (dict(num_items=2.5), "num_items"), (dict(seed=-1), "seed"),
    (dict(session_length=0.5), "session_length"), (dict(sessions_per_user=0), "sessions_per_user"),
    (dict(exploration=1.5), "exploration"), (dict(session_focus=-0.1), "session_focus"),
    (dict(num_categories=50, num_items=10), "num_categories"), (dict(friends_per_user=10, num_users=10),
                                                                "friends_per_user"),
    (dict(item_noise=-1.0), "item_noise"), (dict(click_bias=float("nan")), "click_bias"),
])
def test_invalid_config_names_the_field_and_value(kwargs, field):
    with pytest.raises(ValueError, match=rf"SimulatorConfig\.{field} must be .*got {kwargs[field]!r}"):
        simulator.SimulatorConfig(**kwargs)


def test_samples_are_exposures_with_clicked_histories(world):
    splits = short_video.build_samples(world, SampleConfig(num_negatives=0, eval_negatives=0, split="temporal"))
    assert sum(len(s["click"]) for s in splits.values()) == world.num_interactions
    log = world.interactions
    clicked_items = set(zip(log.loc[log["click"] == 1, "user_id"], log.loc[log["click"] == 1, "item_id"]))
    train = splits["train"]
    for r in np.flatnonzero((train["hist_item_id"] > 0).any(axis=1))[:200]:
        for item in train["hist_item_id"][r][train["hist_item_id"][r] > 0]:
            assert (train["user_id"][r], item) in clicked_items
    with pytest.raises(ValueError, match="real negatives"):
        short_video.build_samples(world, SampleConfig(num_negatives=1))


def test_periodic_interests_cycle_through_each_users_interest_categories():
    config = short_video.lifelong_world(num_users=60, num_items=400)
    data = simulator.simulate(config)
    log = data.interactions
    first = log.groupby("user_id")["session_id"].transform("min").to_numpy()
    block = (log["session_id"].to_numpy() - first) // config.interest_period_sessions % 3
    focus = data.interest_categories[log["user_id"].to_numpy() - 1, block]
    category = data.items["category"].to_numpy()[log["item_id"].to_numpy() - 1]
    in_focus = (category == focus).mean()
    shifted = data.interest_categories[log["user_id"].to_numpy() - 1, (block + 1) % 3]
    assert in_focus > 0.3 and (category == shifted).mean() < in_focus / 3, in_focus  # 60% of slots explore
    # what users like does not cycle: the same interest drives every click probability
    np.testing.assert_allclose(data.true_click_probability(log["user_id"], log["item_id"]), log["p_click"])
    assert data.interest_categories.shape == (60, 3) and data.interest_categories.min() >= 1
    # the default world is unchanged by the option's existence: no periodic focus
    default = simulator.simulate(dataclasses.replace(config, interest_period_sessions=0))
    assert default.interactions["user_id"].equals(log["user_id"])  # same sessions ...
    assert not default.interactions["item_id"].equals(log["item_id"])  # ... other intents


def test_lifelong_samples_have_long_histories_of_the_last_sessions_only():
    config = short_video.lifelong_world(num_users=30, num_items=400)
    data = simulator.simulate(config)
    splits = short_video.build_samples(data, SampleConfig(max_len=1000, num_negatives=0, eval_negatives=0,
                                                          split="temporal"), sample_sessions=2, time_buckets=True)
    rows = sum(len(s["click"]) for s in splits.values())
    assert rows == short_video.last_sessions(data.interactions, 2).sum() < len(data.interactions) / 100
    test = splits["test"]
    lengths = (test["hist_item_id"] > 0).sum(axis=1)
    assert np.median(lengths) == 1000
    np.testing.assert_array_equal(test["hist_time_bucket"] > 0, test["hist_item_id"] > 0)
    # buckets of a history never grow towards the recent end
    steps = np.diff(test["hist_time_bucket"], axis=1)
    assert (steps[test["hist_item_id"][:, 1:] > 0] <= 0).all()

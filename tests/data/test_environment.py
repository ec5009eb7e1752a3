"""The simulator as an environment: feedback and exits follow the ground truth, runs are
reproducible, sessions end, oracle policies show the myopic / long-term trade-off."""
import numpy as np
import pytest

from tfrec_onerec.data import simulator
from tfrec_onerec.data.environment import (FEEDBACK, EnvironmentConfig, Sessions, ShortVideoEnvironment,
                                           logged_steps, oracle_policy, random_policy, rollout, sampling_policy,
                                           unseen_argmax)


@pytest.fixture(scope="module")
def world():
    return simulator.simulate(simulator.SimulatorConfig(seed=0, num_users=2000, num_items=500))


def test_feedback_and_exits_follow_the_ground_truth(world):
    """20,000 sessions of one user shown the same first item: the click rate, mean watch time
    and exit rate match the truth (watch-ratio noise integrated by quadrature)."""
    env = ShortVideoEnvironment(world, seed=3)
    user, item, n = 7, 42, 20_000
    sessions = env.reset(np.full(n, user))
    answer = env.step(sessions, np.full(n, item))
    truth = env.expected_step(user, item)
    assert truth["p_click"] == pytest.approx(world.true_click_probability([user], [item])[0])
    for observed, expected in ((answer["click"], truth["p_click"]), (answer["exit"], truth["p_exit"])):
        assert abs(observed.mean() - expected) < 4 * np.sqrt(expected * (1 - expected) / n)
    watch = answer["watch_time"]
    assert abs(watch.mean() - truth["reward"]) < 4 * watch.std() / np.sqrt(n)
    np.testing.assert_array_equal(answer["reward"], watch)
    # The exit probability by hand: a click watched for the whole allowed ratio lowers the logit by 3.
    duration = world.items["duration"].to_numpy()[item - 1]
    full = duration * world.config.max_watch_ratio
    np.testing.assert_allclose(env.exit_probability([0.0, full], [item, item]),
                               1 / (1 + np.exp([1.2, 1.2 + 3.0])))


def test_steps_record_feedback_and_ended_sessions_stay_ended(world):
    env = ShortVideoEnvironment(world, EnvironmentConfig(max_length=3), seed=0)
    sessions = env.reset([1, 2, 3, 4])
    for step in range(3):
        was_active = sessions.active.copy()
        answer = env.step(sessions, np.array([10, 11, 12, 13]) + step)
        assert not answer["exit"][~was_active].any() and not answer["click"][~was_active].any()
        np.testing.assert_array_equal(sessions.items[was_active, step], (np.array([10, 11, 12, 13]) + step)[was_active])
        np.testing.assert_array_equal(sessions.items[~was_active, step], 0)
    assert not sessions.active.any()  # every session ends at max_length
    assert sessions.length.max() == 3 and sessions.length.min() >= 1
    np.testing.assert_array_equal(sessions.length, (sessions.items > 0).sum(axis=1))
    np.testing.assert_allclose(sessions.returns, sessions.feedback["watch_time"].sum(axis=1))
    assert np.all(sessions.feedback["watch_time"][sessions.feedback["click"] == 0] == 0)


def test_runs_are_reproducible_and_seeds_differ(world):
    users = np.arange(1, 301)
    runs = [rollout(ShortVideoEnvironment(world, seed=seed), random_policy(ShortVideoEnvironment(world), 5), users)
            for seed in (1, 1, 2)]
    np.testing.assert_array_equal(runs[0].items, runs[1].items)
    np.testing.assert_array_equal(runs[0].feedback["watch_time"], runs[1].feedback["watch_time"])
    assert not np.array_equal(runs[0].length, runs[2].length)


def test_policies_never_repeat_an_item_within_a_session(world):
    env = ShortVideoEnvironment(world, EnvironmentConfig(exit_bias=-8.0, exit_satisfaction=0.0, max_length=40), seed=0)
    sessions = rollout(env, oracle_policy(env, "myopic"), np.arange(1, 101))
    assert sessions.length.min() == 40  # nobody leaves early at an exit probability of 0.03%
    for row in sessions.items:
        assert len(set(row.tolist())) == 40
    scores = np.zeros((1, 4))
    state = env.reset([1])
    state.items[0, :2] = [1, 3]
    assert unseen_argmax(scores + np.array([[9.0, 1.0, 8.0, 2.0]]), state)[0] == 4  # items 1 and 3 were shown


def test_the_long_term_oracle_keeps_users_longer_and_earns_more_than_the_myopic_one(world):
    """The myopic oracle takes the highest expected watch time now; the long-term one trades it
    against the exit probability (reward / p_exit). Over 2,000 users and 3 environment seeds the
    long-term oracle's sessions are longer and earn more in total, while each of its steps earns
    less; a random policy is far below both."""
    users = np.arange(1, 2001)
    results = {}
    for name in ("myopic", "long_term", "random"):
        truth = ShortVideoEnvironment(world)
        policy = random_policy(truth, 0) if name == "random" else oracle_policy(truth, name)  # one truth per policy
        runs = [rollout(ShortVideoEnvironment(world, seed=seed), policy, users) for seed in range(3)]
        steps = np.concatenate([(r.items > 0).ravel() for r in runs])
        rewards = np.concatenate([r.feedback["reward"].ravel() for r in runs])
        results[name] = {"return": np.mean([r.returns.mean() for r in runs]),
                         "length": np.mean([r.length.mean() for r in runs]), "per_step": rewards[steps].mean()}
    myopic, long_term = results["myopic"], results["long_term"]
    assert long_term["return"] > 1.02 * myopic["return"]
    assert long_term["length"] > 1.04 * myopic["length"]
    assert long_term["per_step"] < myopic["per_step"]
    assert results["random"]["return"] < 0.2 * myopic["return"]


def test_bad_input_names_the_problem(world):
    env = ShortVideoEnvironment(world)
    with pytest.raises(ValueError, match=r"reward must be one of \('click', 'watch_time'"):
        EnvironmentConfig(reward="dwell")
    with pytest.raises(ValueError, match="max_length must be a positive int, got 0"):
        EnvironmentConfig(max_length=0)
    with pytest.raises(ValueError, match=r"user ids must be in 1..2000, got values in \[0, 3\]"):
        env.reset([0, 3])
    sessions = env.reset([1, 2])
    with pytest.raises(ValueError, match=r"one item per session is needed \(2\); got 3"):
        env.step(sessions, [1, 2, 3])
    with pytest.raises(ValueError, match=r"item ids must be in 1..500 for active sessions, got values in \[1, 501\]"):
        env.step(sessions, [1, 501])
    with pytest.raises(ValueError, match="objective must be 'myopic' or 'long_term'"):
        oracle_policy(env, "greedy")


@pytest.mark.parametrize("reward", ["click", "like", "conversion"])
def test_expected_reward_of_binary_feedback(world, reward):
    env = ShortVideoEnvironment(world, EnvironmentConfig(reward=reward), seed=11)
    user, item, n = 5, 17, 40_000
    answer = env.step(env.reset(np.full(n, user)), np.full(n, item))
    expected = env.expected_step(user, item)["reward"]
    assert abs(answer["reward"].mean() - expected) < 4 * np.sqrt(expected * (1 - expected) / n) + 1e-4


def test_logged_steps_by_hand():
    """Two ended sessions: user 5 saw items 7, 3, 9; user 6 saw item 4."""
    items = np.array([[7, 3, 9, 0], [4, 0, 0, 0]])
    feedback = {name: np.zeros((2, 4)) for name in FEEDBACK + ("reward",)}
    feedback["reward"][0, :3] = [10.0, 0.0, 5.0]
    feedback["reward"][1, 0] = 2.0
    sessions = Sessions(np.array([5, 6]), items, feedback, np.array([3, 1]), np.array([False, False]))
    rows = logged_steps(sessions, history_len=2)
    np.testing.assert_array_equal(rows["user_id"], [5, 5, 5, 6])
    np.testing.assert_array_equal(rows["position"], [0, 1, 2, 0])
    np.testing.assert_array_equal(rows["item_id"], [7, 3, 9, 4])
    np.testing.assert_array_equal(rows["history"], [[0, 0], [7, 0], [7, 3], [0, 0]])
    np.testing.assert_array_equal(rows["exit"], [0, 0, 1, 1])
    np.testing.assert_array_equal(rows["next_item_id"], [3, 9, 0, 0])
    np.testing.assert_allclose(rows["return_to_go"], [15.0, 5.0, 5.0, 2.0])
    np.testing.assert_allclose(rows["reward"], [10.0, 0.0, 5.0, 2.0])
    sessions.active[0] = True
    with pytest.raises(ValueError, match="some sessions have not ended"):
        logged_steps(sessions)


def test_the_sampling_policy_explores_yet_favours_clicks(world):
    users = np.arange(1, 501)
    logs = {}
    for name, policy in (("sampling", sampling_policy(ShortVideoEnvironment(world), seed=0)),
                         ("random", random_policy(ShortVideoEnvironment(world), seed=0))):
        logs[name] = logged_steps(rollout(ShortVideoEnvironment(world, seed=0), policy, users))
    sampled = logs["sampling"]
    assert sampled["click"].mean() > 1.5 * logs["random"]["click"].mean()
    first = sampled["item_id"][sampled["position"] == 0]
    assert len(np.unique(first)) > 100  # 500 users' first items: many different actions
    again = logged_steps(rollout(ShortVideoEnvironment(world, seed=0), sampling_policy(ShortVideoEnvironment(world),
                                                                                         seed=0), users))
    np.testing.assert_array_equal(again["item_id"], sampled["item_id"])
    with pytest.raises(ValueError, match="temperature must be > 0 and exploration in"):
        sampling_policy(ShortVideoEnvironment(world), temperature=0.0)

"""SessionLTV: the quantile loss and the next state by hand, the SARSA target, learning a
known long-term value, round trips, a fresh-process export, and the family's rollouts."""
import numpy as np
import pytest
import tensorflow as tf

from tfrec_onerec import families, models
from tfrec_onerec.data import session_steps
from tfrec_onerec.data.environment import EnvironmentConfig, ShortVideoEnvironment, rollout
from tfrec_onerec.data.session_steps import (ITEM_FEATURE, NEXT_ITEM, SESSION_ITEMS, STATE_FEATURES, STEP_FEATURE,
                                             LogConfig, current_state, session_step_spec)
from tfrec_onerec.models.session_policy import next_session_items
from tfrec_onerec.models.onerec_series.session_ltv import (SessionLTV, quantile_huber_loss,
                                                           quantile_levels)
from tests.session_policy_checks import check_rollouts_and_export

FAMILY = families.get("session_value")
WORLD = {"simulator_users": 400, "simulator_items": 60, "seed": 0, "sessions_per_user": 4}


def test_quantile_huber_loss_by_hand():
    assert quantile_levels(4).tolist() == [0.125, 0.375, 0.625, 0.875]
    quantiles = np.array([[0.0, 2.0]], np.float32)  # levels 0.25, 0.75
    targets = np.array([[1.0, 3.5]], np.float32)
    # u_ij = t_j - q_i: q0 -> (1, 3.5), q1 -> (-1, 1.5); huber_1: 0.5, 3.0 ; 0.5, 1.0
    # weights |tau - 1{u<0}|: q0 (0.25, 0.25), q1 (0.25 for u=-1, 0.75 for u=1.5)
    expected = np.mean([0.25 * 0.5 + 0.25 * 0.5, 0.25 * 3.0 + 0.75 * 1.0])  # sum over i, mean over j
    assert float(quantile_huber_loss(quantiles, targets)[0]) == pytest.approx(expected)
    # Minimised by the target's quantiles: a spread target pulls the levels apart.
    samples = np.linspace(-1, 1, 101, dtype=np.float32)[None]
    q = tf.Variable(np.zeros((1, 4), np.float32))

    @tf.function
    def descend():
        for _ in tf.range(300):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(quantile_huber_loss(q, samples, kappa=0.01))
            q.assign_sub(0.02 * tape.gradient(loss, q))

    descend()
    np.testing.assert_allclose(q.numpy()[0], [-0.75, -0.25, 0.25, 0.75], atol=0.04)


def test_next_session_items_appends_and_drops_the_oldest():
    items = np.array([[0, 0, 0], [4, 0, 0], [4, 5, 0], [4, 5, 6]], np.int64)
    after = next_session_items(tf.constant(items), tf.constant([7, 7, 7, 7], tf.int64)).numpy()
    np.testing.assert_array_equal(after, [[7, 0, 0], [4, 7, 0], [4, 5, 7], [5, 6, 7]])


def test_current_state_of_sessions_by_hand():
    from tfrec_onerec.data.environment import Sessions

    items = np.array([[3, 4, 5, 0], [0, 0, 0, 0]], np.int64)
    sessions = Sessions(np.array([2, 1]), items, {}, np.array([3, 0]), np.array([True, True]))
    histories = np.array([[9, 0], [8, 7]], np.int64)
    state = current_state(sessions, 2, histories)
    np.testing.assert_array_equal(state[SESSION_ITEMS], [[4, 5], [0, 0]])  # the newest 2, oldest first
    np.testing.assert_array_equal(state[STEP_FEATURE], [4, 1])
    np.testing.assert_array_equal(state["user_history"], [[8, 7], [9, 0]])


def small_spec():
    return session_step_spec(5, 6, LogConfig(history_len=3, user_history_len=2,
                                             environment=EnvironmentConfig(max_length=8)))


def rows(n, rng):
    batch = {"user_id": rng.integers(1, 6, n), "user_history": rng.integers(0, 7, (n, 2)),
             SESSION_ITEMS: np.zeros((n, 3), np.int64), STEP_FEATURE: np.ones(n, np.int64),
             ITEM_FEATURE: rng.integers(1, 7, n), NEXT_ITEM: rng.integers(0, 7, n)}
    return {k: np.asarray(v, np.int64) for k, v in batch.items()}


def test_the_loss_is_the_sum_of_its_parts_with_the_sarsa_target_by_hand():
    model = SessionLTV(small_spec(), num_quantiles=4, discount=0.5, reward_scale=2.0, long_term_weight=1.5,
                       loss_weights={"reward": 1.0, "exit": 0.5, "return": 2.0, "state_value": 3.0})
    batch = rows(5, np.random.default_rng(0))
    y = {"reward": np.array([4.0, 0.0, 2.0, 6.0, 1.0], np.float32), "exit": np.array([0, 1, 0, 1, 0], np.float32)}
    out = model(batch)
    loss = float(model.compute_loss(batch, y, out))
    # The next state: the item appended, the step plus one; its quantiles are the bootstrap's.
    following = {**batch, SESSION_ITEMS: next_session_items(batch[SESSION_ITEMS], batch[ITEM_FEATURE]).numpy(),
                 STEP_FEATURE: batch[STEP_FEATURE] + 1, ITEM_FEATURE: batch[NEXT_ITEM]}
    following.pop(NEXT_ITEM)
    after = model(following)
    np.testing.assert_allclose(out["next_quantiles"], after["quantiles"], rtol=1e-5, atol=1e-6)
    r, e = y["reward"] / 2.0, y["exit"]
    target = r[:, None] + 0.5 * (1 - e[:, None]) * out["next_quantiles"].numpy() / 2.0  # terminal rows: r only
    p = out["exit"].numpy()[:, 0]
    expected = (np.square(out["reward"].numpy()[:, 0] / 2.0 - r)
                + 0.5 * -(e * np.log(p) + (1 - e) * np.log(1 - p))
                + 2.0 * quantile_huber_loss(out["quantiles"].numpy() / 2.0, target).numpy()
                + 3.0 * quantile_huber_loss(out["state_quantiles"].numpy() / 2.0, target).numpy())
    assert loss == pytest.approx(expected.mean(), rel=1e-4)
    # decomposed value = reward + weight * discount * (1 - p_exit) * mean V(state after the item)
    rest = 0.5 * (1 - out["exit"].numpy()) * after["state_quantiles"].numpy().mean(1, keepdims=True)
    np.testing.assert_allclose(out["value"], out["reward"].numpy() + 1.5 * rest, rtol=1e-5, atol=1e-5)
    # the "return" estimate: reward + weight * (mean return - reward)
    model.value_estimate = "return"
    again = model(batch)
    np.testing.assert_allclose(again["value"], again["reward"] + 1.5 * (again["quantiles"].numpy().mean(1, keepdims=True)
                                                                        - again["reward"]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="next_item_id"):
        model.compute_loss(batch, y, model({k: v for k, v in batch.items() if k != NEXT_ITEM}))


def test_item_scores_are_the_heads_of_every_candidate():
    """All items scored at once (the pooled session updated without re-embedding it) equal
    the model called on each (state, item) pair, for sessions empty, partial and full."""
    model = SessionLTV(small_spec(), num_quantiles=4, long_term_weight=1.3)
    state = {"user_id": np.array([1, 2, 3]), "user_history": np.array([[1, 2], [0, 0], [3, 0]]),
             SESSION_ITEMS: np.array([[0, 0, 0], [4, 0, 0], [4, 5, 6]]), STEP_FEATURE: np.array([1, 2, 4])}
    state = {k: np.asarray(v, np.int64) for k, v in state.items()}
    scores = model.item_scores(state)
    for item in range(1, 7):
        pair = model({**state, ITEM_FEATURE: np.full(3, item, np.int64)})
        for name in ("value", "reward", "exit"):
            np.testing.assert_allclose(scores[name][:, item - 1], pair[name][:, 0], rtol=1e-5, atol=1e-5)


def test_it_learns_a_long_term_value_the_reward_hides():
    """Item 1 pays 1 and ends the session; item 2 pays 0.5 and the session goes on (the logged
    next item is 1 or 2 at random, ending at step 4): a myopic ranker prefers item 1, the
    value at step 1 prefers item 2 (0.5 + 0.9 * ~1.2 > 1)."""
    rng = np.random.default_rng(1)
    spec = small_spec()
    sessions = []
    for _ in range(3000):
        step, shown = 1, []
        while True:
            item = int(rng.integers(1, 3))
            last = item == 1 or step == 4
            sessions.append((item, 1.0 if item == 1 else 0.5, float(last), step, list(shown[-3:])))
            if last:
                break
            shown.append(item)
            step += 1
        # next items: the following row's item
    items = np.array([s[0] for s in sessions])
    ends = np.array([s[2] for s in sessions])
    next_items = np.where(ends[:-1] == 1, 0, items[1:])
    next_items = np.append(next_items, 0)
    n = len(items)
    x = {"user_id": np.ones(n, np.int64), "user_history": np.zeros((n, 2), np.int64),
         SESSION_ITEMS: np.array([s[4] + [0] * (3 - len(s[4])) for s in sessions], np.int64),
         STEP_FEATURE: np.array([s[3] for s in sessions], np.int64), ITEM_FEATURE: items.astype(np.int64),
         NEXT_ITEM: next_items.astype(np.int64)}
    y = {"reward": np.array([s[1] for s in sessions], np.float32), "exit": ends.astype(np.float32)}
    import keras

    keras.utils.set_random_seed(0)
    model = SessionLTV(spec, state_units=[16], pair_units=[16], num_quantiles=8, discount=0.9)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x, y, batch_size=256, epochs=25, verbose=0)
    start = {"user_id": np.ones(2, np.int64), "user_history": np.zeros((2, 2), np.int64),
             SESSION_ITEMS: np.zeros((2, 3), np.int64), STEP_FEATURE: np.ones(2, np.int64),
             ITEM_FEATURE: np.array([1, 2], np.int64)}
    out = model(start)
    reward, value, leaves = (out[k].numpy()[:, 0] for k in ("reward", "value", "exit"))
    assert reward[0] > reward[1] + 0.3  # the myopic ranking: item 1
    assert value[1] > value[0] + 0.3  # the long-term ranking: item 2
    assert leaves[0] > 0.9 and leaves[1] < 0.1
    # the truth of item 2 at step 1: 0.5 + 0.9 * E[return from step 2] (about 1.23 from there)
    assert 1.2 < value[1] < 1.9


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = FAMILY.prepare("simulator", WORLD, directory=tmp_path_factory.mktemp("session-value") / "data")
    config = FAMILY.train_config(models.get("session_ltv"), {"epochs": 2})
    result = FAMILY.fit("session_ltv", data, config, hyperparameters={"state_units": [32], "pair_units": [32],
                                                                       "num_quantiles": 8})
    return data, result.model


def test_the_family_data_is_the_environment_log(trained):
    data, _ = trained
    columns = data.columns("train")
    assert data.metadata["steps"]["train"] == len(columns[ITEM_FEATURE])
    ends = columns["exit"] == 1
    # one row per exposure; every session ends once; the next item is 0 exactly at the end
    assert ends.sum() == WORLD["sessions_per_user"] * WORLD["simulator_users"]
    np.testing.assert_array_equal(columns[NEXT_ITEM] == 0, ends)
    np.testing.assert_array_equal(columns[NEXT_ITEM][:-1][~ends[:-1]], columns[ITEM_FEATURE][1:][~ends[:-1]])
    # the first step of a session has no session items; later ones hold the previous item
    first = columns[STEP_FEATURE] == 1
    assert (columns[SESSION_ITEMS][first] == 0).all()
    assert data.metadata["mean_reward"] == pytest.approx(columns["reward"].mean(), rel=1e-5)


def test_rollouts_rank_the_policies_and_the_export_scores_the_same(trained, tmp_path):
    data, model = trained
    check_rollouts_and_export(model, data, tmp_path / "export")
    assert "'valid' or 'test'" in str(pytest.raises(ValueError, FAMILY.evaluate, model, data, "train").value)


def test_round_trips_keep_the_config_and_the_outputs(trained, tmp_path):
    import keras

    _, model = trained
    clone = SessionLTV.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert model.reward_scale == pytest.approx(trained[0].metadata["mean_reward"])  # derived from the log
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    batch = {name: trained[0].columns("valid")[name][:5] for name in model.input_names}
    for name in ("value", "quantiles"):
        np.testing.assert_allclose(loaded(batch)[name], model(batch)[name], rtol=1e-5, atol=1e-5)


def test_bad_configuration_is_named():
    spec = small_spec()
    with pytest.raises(ValueError, match="discount must be in"):
        SessionLTV(spec, discount=1.0)
    with pytest.raises(ValueError, match="value_estimate must be one of"):
        SessionLTV(spec, value_estimate="max")
    with pytest.raises(ValueError, match="state_features must be a non-empty subset"):
        SessionLTV(spec, state_features=["age"])
    with pytest.raises(ValueError, match="loss_weights takes"):
        SessionLTV(spec, loss_weights={"ctr": 1.0})
    with pytest.raises(ValueError, match="lacks \\['session_step'\\]"):
        SessionLTV(spec.subset([n for n in spec.names if n != STEP_FEATURE]))
    with pytest.raises(ValueError, match="top_n must be in 1..6"):
        SessionLTV(spec, top_n=7)

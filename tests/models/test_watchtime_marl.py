"""WatchTimeMARL (MMRF): the imagined items and the policy's expectation by hand, the critics'
and actors' losses against their formulas, the agents' attentive collaboration, learning a
long-term value the immediate reward hides, round trips, a fresh-process export and the
family's rollouts."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrec_onerec import families, models
from tfrec_onerec.data.environment import EnvironmentConfig
from tfrec_onerec.data.session_steps import ITEM_FEATURE, SESSION_ITEMS, STEP_FEATURE, LogConfig, session_step_spec
from tfrec_onerec.models.kuaishou.watchtime_marl import WatchTimeMARL, expected_under_policy, sample_unshown
from tfrec_onerec.models.session_policy import shown_items_mask
from tests.session_policy_checks import check_rollouts_and_export

FAMILY = families.get("session_value")
WORLD = {"simulator_users": 400, "simulator_items": 60, "seed": 0, "sessions_per_user": 4}
SMALL = {"state_units": [16], "agent_units": 8, "user_units": [16], "pair_units": [16], "imagined_samples": 2}


def small_spec(items=6, max_length=8):
    return session_step_spec(5, items, LogConfig(history_len=3, user_history_len=2,
                                                 environment=EnvironmentConfig(max_length=max_length)))


def test_sample_unshown_draws_distinct_items_outside_the_session():
    shown = np.zeros((3, 6), bool)
    shown[0, [0, 2]] = True  # items 1 and 3
    shown[1, 1:] = True  # only item 1 is left
    scores = np.array([[0.9, 0.8, 0.7, 0.1, 0.5, 0.3], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]], np.float32)
    np.testing.assert_array_equal(sample_unshown(scores[:1], shown[:1], 3).numpy(), [[2, 5, 6]])
    assert sample_unshown(scores[1:], shown[1:2], 1).numpy().tolist() == [[1]]
    rng = np.random.default_rng(0)
    shown = rng.random((200, 6)) < 0.3
    shown = shown[(~shown).sum(axis=1) >= 3]  # rows with at least three free items
    drawn = sample_unshown(rng.random(shown.shape).astype(np.float32), shown, 3).numpy()
    assert all(len(set(row)) == 3 and not shown[i][row - 1].any() for i, row in enumerate(drawn))


def test_expected_under_policy_and_the_shown_mask_by_hand():
    logits = np.log(np.array([[[1.0, 3.0]], [[1.0, 1.0]]], np.float32))  # softmax (0.25, 0.75), (0.5, 0.5)
    values = np.array([[[4.0, 8.0]], [[2.0, 6.0]]], np.float32)
    np.testing.assert_allclose(expected_under_policy(logits, values).numpy(), [[7.0], [4.0]], rtol=1e-6)
    mask = shown_items_mask(np.array([[2, 4, 0], [0, 0, 0]], np.int64), 5).numpy()
    np.testing.assert_array_equal(mask, [[False, True, False, True, False], [False] * 5])


def batch_of(n, rng, items=6):
    x = {"user_id": rng.integers(1, 6, n), "user_history": rng.integers(0, items + 1, (n, 2)),
         SESSION_ITEMS: np.stack([rng.permutation(np.arange(1, items + 1))[:3] for _ in range(n)]) * (
             np.arange(3)[None] < rng.integers(0, 4, (n, 1))),
         STEP_FEATURE: rng.integers(1, 5, n), ITEM_FEATURE: rng.integers(1, items + 1, n)}
    x = {k: np.asarray(v, np.int64) for k, v in x.items()}
    y = {"reward": rng.random(n).astype(np.float32) * 4, "exit": (rng.random(n) < 0.3).astype(np.float32),
         "click": (rng.random(n) < 0.5).astype(np.float32), "like": np.zeros(n, np.float32),
         "follow": (rng.random(n) < 0.1).astype(np.float32)}
    return x, y


def test_the_critic_and_actor_losses_match_their_formulas():
    """Without imagined rows: critic = sum_k (Q_k(s, a) - r_k - discount (1 - exit) V_k(s'))^2,
    actor = -sum_k sum_i aim_k log pi_k, aim_k = softmax((Q_k (+ weight * Q_main for the auxiliary
    agents)) / temperature) over the unshown items; the user
    model's part is what its tracker recorded (its dropout makes each pass differ)."""
    model = WatchTimeMARL(small_spec(), aspects=["click", "follow"], discount=0.5,
                          reward_scale=2.0, main_gradient_weight=0.25, temperature=0.5,
                          **{**SMALL, "imagined_samples": 0})
    x, y = batch_of(7, np.random.default_rng(0))
    model(x)
    total = float(model.compute_loss(x, y, None))
    q = model.critic_network.values(x).numpy()  # (B, K, I)
    rows = np.arange(7)
    logged = q[rows, :, x[ITEM_FEATURE] - 1]  # (B, K)
    after = {**x, SESSION_ITEMS: model.after(x, x[ITEM_FEATURE])[SESSION_ITEMS].numpy(),
             STEP_FEATURE: x[STEP_FEATURE] + 1}
    logits = model.target_agent_network.logits(after).numpy()  # the bootstrap reads the target networks
    pi_after = np.exp(logits - logits.max(-1, keepdims=True))
    pi_after /= pi_after.sum(-1, keepdims=True)
    v_after = (pi_after * model.target_critic_network.values(after).numpy()).sum(-1)  # (B, K)
    rewards = np.stack([y["reward"] / 2.0, y["click"], y["follow"]], axis=1)
    critic = (np.square(logged - rewards - 0.5 * (1 - y["exit"])[:, None] * v_after)).sum(1)
    assert float(model.critic_loss_tracker.result()) == pytest.approx(critic.mean(), rel=1e-4)
    logits = model.agent_network.logits(x).numpy()
    shown = x[SESSION_ITEMS]
    for b in range(7):  # the session's items are never chosen
        for item in shown[b][shown[b] > 0]:
            assert (logits[b, :, item - 1] < -1e8).all()
    log_pi = logits - logits.max(-1, keepdims=True)
    log_pi -= np.log(np.exp(log_pi).sum(-1, keepdims=True))
    guide = np.concatenate([np.zeros_like(q[:, :1]), np.repeat(q[:, :1], 2, axis=1)], axis=1)
    aims = np.where(logits < -1e8, -np.inf, (q + 0.25 * guide) / 0.5)  # temperature 0.5
    aims = np.exp(aims - aims.max(-1, keepdims=True))
    aims /= aims.sum(-1, keepdims=True)
    actor = -(aims * np.where(aims > 0, log_pi, 0.0)).sum(axis=(1, 2))
    user = float(model.user_model_loss_tracker.result())
    assert total == pytest.approx(user + critic.mean() + actor.mean(), rel=1e-4, abs=1e-4)
    with pytest.raises(ValueError, match="need the labels \\['follow'\\]"):
        model.compute_loss(x, {k: v for k, v in y.items() if k != "follow"}, None)


def test_target_networks_start_equal_and_follow_by_the_update_rate():
    model = WatchTimeMARL(small_spec(), aspects=["click"], target_update_rate=0.1, **SMALL)
    x, y = batch_of(64, np.random.default_rng(4))
    model(x)
    pairs = model.target_pairs()
    assert len(pairs) == len(model.agent_network.weights) + len(model.critic_network.weights) > 10
    assert all(np.array_equal(t.numpy(), o.numpy()) for t, o in pairs)
    trained = {id(v) for v in model.trainable_variables}
    assert not any(id(t) in trained for t, _ in pairs) and all(id(o) in trained for _, o in pairs)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [(t.numpy(), o.numpy()) for t, o in pairs]
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)  # one step
    for (target, online), (t0, _) in zip(pairs, before):
        np.testing.assert_allclose(target.numpy(), 0.1 * online.numpy() + 0.9 * t0, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(o.numpy(), o0) for (_, o), (_, o0) in zip(pairs, before))


def test_imagined_rows_answer_unshown_items_by_the_user_model():
    """The imagined loss reads only items outside the session and the logged item, and its
    rewards are the user model's: a user model that answers 0 everywhere, with the critic's
    future zeroed by discount 0, leaves the imagined loss at the critics' squared Q."""
    model = WatchTimeMARL(small_spec(), aspects=[], discount=0.0, **SMALL)
    x, y = batch_of(5, np.random.default_rng(1))
    model(x)
    heads = model.user_heads
    heads.kernel.assign(tf.zeros_like(heads.kernel))
    heads.bias.assign(tf.zeros_like(heads.bias))  # reward 0; the exit 0.5
    q = model.critic_network.values(x)
    shown = tf.logical_or(shown_items_mask(x[SESSION_ITEMS], 6), tf.one_hot(x[ITEM_FEATURE] - 1, 6) > 0)
    # the model's first draw (its generator is still unused), replayed by a generator of the same seed
    draws = sample_unshown(keras.random.uniform((5, 6), seed=keras.random.SeedGenerator(model.seed)), shown, 2).numpy()
    assert not np.take_along_axis(shown.numpy(), draws - 1, axis=1).any()
    imagined = model.imagined_loss(x, model.user_state(x), q, shown).numpy()
    expected = np.square(np.take_along_axis(q.numpy()[:, 0], draws - 1, axis=1)).mean(axis=1)
    np.testing.assert_allclose(imagined, expected, rtol=1e-5, atol=1e-6)


def test_the_main_agent_reads_the_auxiliary_agents_through_attention():
    model = WatchTimeMARL(small_spec(), aspects=["click", "like"], **SMALL)
    x, _ = batch_of(4, np.random.default_rng(2))
    agents = model.agent_network
    before = agents.actions(x).numpy()
    kernel = agents.split.kernel.numpy()
    kernel[:, 2] += np.random.default_rng(3).normal(size=kernel[:, 2].shape)  # the "like" agent's embedding
    agents.split.kernel.assign(kernel)
    after = agents.actions(x).numpy()
    assert np.abs(after[:, 0] - before[:, 0]).max() > 1e-3  # the main agent's action moved with it
    alone = WatchTimeMARL(small_spec(), aspects=[], **SMALL)
    assert alone.agent_network.actions(x).shape == (4, 1, 32)


def test_it_learns_a_long_term_value_the_reward_hides():
    """Logged sessions show random unshown items (at most 3 steps): item 1 pays 1 and ends the
    session, item 2 pays 0.5 and the session goes on, the others pay 0. Best first step:
    item 2 (0.5 + 0.9 * 1 = 1.4 against 1). The main agent's action must rank item 2 first,
    the user model's immediate reward item 1."""
    rng = np.random.default_rng(1)
    spec = small_spec(max_length=3)
    rows = []
    for _ in range(2500):
        shown = []
        for step in range(1, 4):
            item = int(rng.choice([i for i in range(1, 7) if i not in shown]))
            last = item == 1 or step == 3
            rows.append((item, {1: 1.0, 2: 0.5}.get(item, 0.0), float(last), step, shown + [0] * (3 - len(shown))))
            if last:
                break
            shown.append(item)
    n = len(rows)
    x = {"user_id": np.ones(n, np.int64), "user_history": np.zeros((n, 2), np.int64),
         SESSION_ITEMS: np.array([r[4] for r in rows], np.int64), STEP_FEATURE: np.array([r[3] for r in rows], np.int64),
         ITEM_FEATURE: np.array([r[0] for r in rows], np.int64)}
    y = {"reward": np.array([r[1] for r in rows], np.float32), "exit": np.array([r[2] for r in rows], np.float32),
         "click": (x[ITEM_FEATURE] == 1).astype(np.float32)}
    keras.utils.set_random_seed(0)
    model = WatchTimeMARL(spec, aspects=["click"], discount=0.9, target_update_rate=0.1, temperature=0.1, **SMALL)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x, y, batch_size=256, epochs=15, verbose=0)
    start = {"user_id": np.ones(1, np.int64), "user_history": np.zeros((1, 2), np.int64),
             SESSION_ITEMS: np.zeros((1, 3), np.int64), STEP_FEATURE: np.ones(1, np.int64)}
    scores = {k: v.numpy()[0] for k, v in model.item_scores(start).items()}
    assert scores["value"].argmax() == 1  # item 2: the long-term choice
    assert scores["reward"].argmax() == 0  # item 1: the myopic one
    assert scores["q_value"][1] > scores["q_value"][0]
    assert 1.2 < scores["q_value"][1] < 1.6  # the truth: 1.4


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = FAMILY.prepare("simulator", WORLD, directory=tmp_path_factory.mktemp("session-value") / "data")
    config = FAMILY.train_config(models.get("watchtime_marl"), {"epochs": 2})
    # a sharper aim than the default's: two epochs of a small model on 400 users leave its critics' gaps small
    return data, FAMILY.fit("watchtime_marl", data, config, hyperparameters={**SMALL, "temperature": 0.3}).model


def test_rollouts_rank_the_policies_and_the_export_scores_the_same(trained, tmp_path):
    data, model = trained
    check_rollouts_and_export(model, data, tmp_path / "export")


def test_round_trips_keep_the_config_and_the_outputs(trained, tmp_path):
    data, model = trained
    clone = WatchTimeMARL.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert model.reward_scale == pytest.approx(data.metadata["mean_reward"])  # derived from the log
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    batch = {name: data.columns("valid")[name][:5] for name in model.input_names}
    for name in ("value", "q_value", "reward", "aspect_values"):
        np.testing.assert_allclose(loaded(batch)[name], model(batch)[name], rtol=1e-5, atol=1e-5)


def test_bad_configuration_is_named():
    spec = small_spec()
    with pytest.raises(ValueError, match="aspects must be distinct names among"):
        WatchTimeMARL(spec, aspects=["comment"], imagined_samples=0)
    with pytest.raises(ValueError, match="discount must be in"):
        WatchTimeMARL(spec, discount=1.0, imagined_samples=0)
    with pytest.raises(ValueError, match="dropout must be in \\(0, 1\\)"):
        WatchTimeMARL(spec, dropout=0.0, imagined_samples=0)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        WatchTimeMARL(spec, agent_units=10, num_heads=3, imagined_samples=0)
    with pytest.raises(ValueError, match="imagined_samples must be in 0..2"):
        WatchTimeMARL(spec, imagined_samples=3)
    with pytest.raises(ValueError, match="lacks \\['session_step'\\]"):
        WatchTimeMARL(spec.subset([n for n in spec.names if n != STEP_FEATURE]))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        WatchTimeMARL(spec, temperature=0.0, imagined_samples=0)
    with pytest.raises(ValueError, match="target_update_rate must be in"):
        WatchTimeMARL(spec, target_update_rate=0.0, imagined_samples=0)
    with pytest.raises(ValueError, match="top_n must be in 1..6"):
        WatchTimeMARL(spec, top_n=7, imagined_samples=0)

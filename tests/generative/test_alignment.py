"""DPO preference alignment: the loss by hand, sequence log-probabilities, and a training step's effect."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrec_onerec.data.sessions import SESSION_FEATURE
from tfrec_onerec.models.generative.alignment import (AlignmentConfig, dpo_loss, frozen_reference,
                                                      preference_pairs, session_log_prob, train_on_pairs)
from test_onerec import small_model, successor_data


def test_dpo_loss_by_hand():
    # margin = (-1 - -2) - (-3 - -2) = 2; loss = -log sigmoid(0.5 * 2) = log(1 + e^-1)
    loss = dpo_loss(tf.constant([-1.0]), tf.constant([-3.0]), tf.constant([-2.0]), tf.constant([-2.0]), beta=0.5)
    np.testing.assert_allclose(loss.numpy(), [np.log1p(np.exp(-1.0))], rtol=1e-6)
    # A policy equal to its reference: log 2, whatever the sessions.
    same = dpo_loss(tf.constant([-4.0]), tf.constant([-1.0]), tf.constant([-4.0]), tf.constant([-1.0]))
    np.testing.assert_allclose(same.numpy(), [np.log(2.0)], rtol=1e-6)
    # Direction: the loss falls as the chosen session's log-ratio grows and rises with the rejected one's;
    # d loss / d chosen = -beta * sigmoid(-beta * margin) (here margin = 2, beta = 0.5).
    chosen = tf.Variable([-3.0, -2.0, -1.0, 0.0])
    rejected = tf.Variable([-3.0, -3.0, -3.0, -3.0])
    with tf.GradientTape() as tape:
        losses = dpo_loss(chosen, rejected, tf.fill([4], -2.0), tf.fill([4], -2.0), beta=0.5)
    assert np.all(np.diff(losses.numpy()) < 0)
    d_chosen, d_rejected = tape.gradient(losses, [chosen, rejected])
    margins = np.array([0.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(d_chosen.numpy(), -0.5 / (1.0 + np.exp(0.5 * margins)), rtol=1e-5)
    np.testing.assert_allclose(d_rejected.numpy(), -d_chosen.numpy(), rtol=1e-6)


def test_reported_dpo_loss_and_margin_are_those_of_the_pairs():
    """One step over one batch: the stats come from the forward pass before the update, so they
    equal the DPO loss computed here from the policy's and the reference's session log-probs."""
    data = successor_data(8, seed=11)
    features = {k: v for k, v in data.items() if k != SESSION_FEATURE}
    chosen = data[SESSION_FEATURE]
    rejected = np.stack([(chosen[:, 0] + 10) % 48 + 1, (chosen[:, 0] + 20) % 48 + 1], axis=1)
    sample = {**{k: v[:1] for k, v in features.items()}, SESSION_FEATURE: chosen[:1]}
    keras.utils.set_random_seed(12)
    reference = frozen_reference(small_model(), sample)  # other weights than the policy: margins are not 0
    keras.utils.set_random_seed(13)
    model = small_model()
    log_prob = {name: (session_log_prob(model, features, pairs).numpy(),
                       session_log_prob(reference, features, pairs).numpy())
                for name, pairs in (("chosen", chosen), ("rejected", rejected))}
    margin = ((log_prob["chosen"][0] - log_prob["chosen"][1]) - (log_prob["rejected"][0] - log_prob["rejected"][1]))
    assert np.abs(margin).max() > 0.1
    beta = 0.5
    stats = train_on_pairs(model, reference, features, {"chosen": chosen, "rejected": rejected},
                           AlignmentConfig(epochs=1, batch_size=8, beta=beta, learning_rate=1e-3),
                           keras.optimizers.Adam(1e-3))
    np.testing.assert_allclose(stats["margin"], margin.mean(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats["dpo_loss"], np.mean(np.logaddexp(0.0, -beta * margin)), rtol=1e-4)


def test_session_log_prob_sums_code_token_log_probs():
    keras.utils.set_random_seed(1)
    model = small_model()
    data = successor_data(4, seed=0)
    sessions = data[SESSION_FEATURE].copy()
    sessions[1, 1] = 0  # a one-item session: only its 3 codes count
    features = {k: v for k, v in data.items() if k != SESSION_FEATURE}
    got = session_log_prob(model, features, sessions).numpy()
    logits = model({**features, SESSION_FEATURE: sessions}).numpy()
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    tokens = np.asarray(model.session_tokens(sessions))
    expected = np.zeros(4)
    for row in range(4):
        for t in range(tokens.shape[1] - 1):
            following = tokens[row, t + 1]
            if following > 1:  # a code token (not padding, not BOS)
                expected[row] += log_softmax[row, t, following]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_training_on_pairs_moves_probability_from_rejected_to_chosen():
    keras.utils.set_random_seed(2)
    model = small_model()
    data = successor_data(128, seed=5)
    features = {k: v for k, v in data.items() if k != SESSION_FEATURE}
    chosen = data[SESSION_FEATURE]
    rejected = np.stack([(chosen[:, 0] + 10) % 48 + 1, (chosen[:, 0] + 20) % 48 + 1], axis=1)
    reference = frozen_reference(model, {**{k: v[:1] for k, v in features.items()}, SESSION_FEATURE: chosen[:1]})
    before = (session_log_prob(model, features, chosen) - session_log_prob(model, features, rejected)).numpy()
    stats = train_on_pairs(model, reference, features, {"chosen": chosen, "rejected": rejected},
                           AlignmentConfig(epochs=3, batch_size=32, learning_rate=3e-3),
                           keras.optimizers.Adam(3e-3))
    after = (session_log_prob(model, features, chosen) - session_log_prob(model, features, rejected)).numpy()
    assert np.mean(after) > np.mean(before) + 1.0
    assert stats["margin"] > 0 and stats["dpo_loss"] < np.log(2.0)
    # The reference did not move.
    np.testing.assert_allclose(
        session_log_prob(reference, features, chosen).numpy(),
        session_log_prob(frozen_reference(reference, {**{k: v[:1] for k, v in features.items()},
                                                      SESSION_FEATURE: chosen[:1]}), features, chosen).numpy(),
        rtol=1e-5)


class RewardFavouringLowItems:
    """A stand-in reward model: sessions of small item ids are better."""

    def reward(self, inputs):
        return -np.asarray(inputs[SESSION_FEATURE], np.float32).sum(axis=1)


def test_preference_pairs_pick_the_best_and_worst_generated_session():
    keras.utils.set_random_seed(3)
    model = small_model()
    contexts = successor_data(6, seed=7)
    model(contexts)
    pairs = preference_pairs(model, RewardFavouringLowItems(), contexts, num_candidates=8)
    assert pairs["chosen"].shape == (6, 2) and pairs["rejected"].shape == (6, 2)
    assert np.all(pairs["chosen"].sum(axis=1) <= pairs["rejected"].sum(axis=1))
    np.testing.assert_allclose(pairs["chosen_reward"], -pairs["chosen"].sum(axis=1))


def test_bad_fraction_is_named():
    from tfrec_onerec.models.generative.alignment import align

    with pytest.raises(ValueError, match=r"user_fraction must be in \(0, 1\]"):
        align(small_model(), RewardFavouringLowItems(), {}, {}, AlignmentConfig(user_fraction=0.0))


def test_config_names_bad_values():
    for kwargs, name in ((dict(num_candidates=1), "num_candidates"), (dict(beta=0.0), "beta"),
                         (dict(anchor_weight=-1.0), "anchor_weight"), (dict(min_reward_margin=-0.1),
                                                                        "min_reward_margin"),
                         (dict(epochs=0), "epochs"), (dict(learning_rate=0.0), "learning_rate")):
        with pytest.raises(ValueError, match=name):
            AlignmentConfig(**kwargs)


def test_anchor_loss_trains_on_real_sessions():
    keras.utils.set_random_seed(4)
    model = small_model()
    data = successor_data(128, seed=9)
    features = {k: v for k, v in data.items() if k != SESSION_FEATURE}
    real = data[SESSION_FEATURE]
    chosen = np.stack([(real[:, 0] + 10) % 48 + 1, (real[:, 0] + 20) % 48 + 1], axis=1)
    rejected = np.stack([(real[:, 0] + 30) % 48 + 1, (real[:, 0] + 40) % 48 + 1], axis=1)
    pairs = {"chosen": chosen, "rejected": rejected}
    reference = frozen_reference(model, {**{k: v[:1] for k, v in features.items()}, SESSION_FEATURE: real[:1]})
    only_anchor = AlignmentConfig(epochs=3, batch_size=32, learning_rate=3e-3, chosen_weight=0.0, dpo_weight=0.0,
                                  anchor_weight=1.0)
    with pytest.raises(ValueError, match="anchor"):
        train_on_pairs(model, reference, features, pairs, only_anchor, keras.optimizers.Adam(3e-3))
    before = session_log_prob(model, features, real).numpy()
    stats = train_on_pairs(model, reference, features, pairs, only_anchor, keras.optimizers.Adam(3e-3),
                           anchor=data)
    after = session_log_prob(model, features, real).numpy()
    # With only the anchor term the model learns the real sessions, not the pairs.
    assert np.mean(after) > np.mean(before) + 1.0
    assert 0 < stats["anchor_loss"] < -np.mean(before) / 6  # per code token (6 per session)
    # With zero DPO and chosen weights the total is the anchor term plus the MoE balancing losses
    # (each at most aux_loss_weight x experts = 0.01 x 4, one per decoder layer); a leaked DPO term
    # (about log 2) or chosen NTP term (nats per token) would exceed that.
    assert stats["anchor_loss"] <= stats["loss"] <= stats["anchor_loss"] + 2 * 0.01 * 4


class ConstantReward:
    """A stand-in reward model that cannot tell sessions apart."""

    def reward(self, inputs):
        return np.full(len(inputs[SESSION_FEATURE]), 0.5, np.float32)


def test_margin_and_early_stop_leave_the_model_unchanged():
    from tfrec_onerec.models.generative.alignment import align

    keras.utils.set_random_seed(5)
    model = small_model()
    contexts = successor_data(40, seed=11)
    model(contexts)
    weights = model.get_weights()
    config = dict(iterations=2, user_fraction=0.5, num_candidates=4, epochs=1, batch_size=8, learning_rate=1e-2)
    calls = []

    def callback(iteration, _):
        calls.append(iteration)
        return {"seen": iteration}

    # No pair clears a margin of 0.1 under a constant reward: nothing trains.
    history = align(model, ConstantReward(), contexts, contexts, AlignmentConfig(min_reward_margin=0.1, **config),
                    callback=callback)
    assert len(history) == 1 and history[0]["pairs"] == 0 and not history[0]["kept"] and calls == []
    for got, want in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(got, want)
    # An improvement of 1000 is out of reach: the first iteration trains, is undone, and alignment stops.
    history = align(model, RewardFavouringLowItems(), contexts, contexts,
                    AlignmentConfig(early_stop=True, min_improvement=1000.0, **config), callback=callback)
    assert len(history) == 1 and history[0]["pairs"] == 20 and not history[0]["kept"] and calls == []
    for got, want in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(got, want)
    # Without early stopping both iterations are kept and reported through the callback.
    history = align(model, RewardFavouringLowItems(), contexts, contexts, AlignmentConfig(**config),
                    callback=callback)
    assert [h["kept"] for h in history] == [True, True] and calls == [1, 2] and history[1]["seen"] == 2
    assert history[1]["reward_before"] == history[0]["reward_after"]
    assert any(not np.array_equal(a, b) for a, b in zip(model.get_weights(), weights))

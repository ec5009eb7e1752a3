"""The simulator's ground truth: expected session metrics by hand, Table 1's mean and max, the log's means."""
import math

import numpy as np
import pytest
from hand_made_world import hand_world

from tfrec_onerec.data import sessions
from tfrec_onerec.data.simulator_truth import evaluate_sessions, session_value, true_session_metrics


def test_true_metrics_by_hand():
    world = hand_world()
    # User 1's interest is item 1's latent (preference 1) and orthogonal to item 2's (preference 0);
    # popularity 0; user 1 is in stage 2 (bias -0.1).
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    p1, p2 = sig(3.0 - 0.1 - 2.0), sig(-0.1 - 2.0)
    like = [p1 * sig(2.5 - 0.1 - 2.0), p2 * sig(-0.1 - 2.0)]
    follow = [p1 * sig(2.5 - 0.1 - 3.5), p2 * sig(-0.1 - 3.5)]
    mu = [2.0 - 0.1 - 1.0, -0.1 - 1.0]  # watch logit; view iff 2 * sigmoid(mu + 0.5 Z) >= 1 iff mu + 0.5 Z >= 0
    phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    view = [p1 * phi(mu[0] / 0.5), p2 * phi(mu[1] / 0.5)]
    z = np.linspace(-8, 8, 20001)
    density = np.exp(-z ** 2 / 2) / math.sqrt(2 * math.pi)
    ratio = [np.trapezoid(density / (1 + np.exp(-(m + 0.5 * z))), z) for m in mu]
    metrics = true_session_metrics(world, [1], [[1, 2, 0]])
    np.testing.assert_allclose(metrics["ctr"], [(p1 + p2) / 2], rtol=1e-9)
    np.testing.assert_allclose(metrics["ltr"], [sum(like) / 2], rtol=1e-9)
    np.testing.assert_allclose(metrics["wtr"], [sum(follow) / 2], rtol=1e-9)
    np.testing.assert_allclose(metrics["vtr"], [sum(view) / 2], rtol=1e-9)
    np.testing.assert_allclose(metrics["swt"], [(p1 * ratio[0] + p2 * ratio[1]) / 2], rtol=1e-7)

    # Table 1's mean and max: one session per user, then N per user (max = mean of each user's best).
    table = evaluate_sessions(world, [1, 1], [[1, 1, 1], [2, 2, 2]])
    assert table["ltr_mean"] == pytest.approx(sum(like) / 2) and table["ltr_max"] == pytest.approx(like[0])
    value = session_value(metrics)
    np.testing.assert_allclose(value, metrics["swt"] + metrics["vtr"] + metrics["wtr"] + metrics["ltr"])
    assert session_value(metrics, {"ltr": 2.0}) == pytest.approx(sum(like))
    table = evaluate_sessions(world, [1, 2], [[[1, 1], [2, 2]], [[2, 2], [2, 2]]])
    best_user2 = true_session_metrics(world, [2], [[2, 2]])["ltr"][0]
    assert table["ltr_max"] == pytest.approx((like[0] + best_user2) / 2)

    # Without watch noise a view is a step in the preference.
    still = hand_world(watch_noise=0.0)
    np.testing.assert_allclose(true_session_metrics(still, [1, 1], [[1], [2]])["vtr"], [p1, 0.0],
                               rtol=1e-12)
    with pytest.raises(ValueError, match="item_ids"):
        true_session_metrics(world, [1, 2], [[1, 2]])
    with pytest.raises(ValueError, match="item_ids must be integers"):
        true_session_metrics(world, [1], [[7]])


def test_true_metrics_are_the_expectation_of_the_logged_labels(small_world):
    """Over many logged sessions, the mean of each label matches the mean of its ground truth."""
    data = sessions.build_sessions(small_world)
    columns = {name: np.concatenate([data.splits[s][name] for s in ("train", "valid", "test")])
               for name in sessions.SESSION_LABELS + ("user_id", "session_item_ids")}
    truth = true_session_metrics(small_world, columns["user_id"], columns["session_item_ids"])
    for name in sessions.SESSION_LABELS:
        error = columns[name].std() / np.sqrt(len(columns[name]))
        assert abs(columns[name].mean() - truth[name].mean()) < 4 * error, name
        assert np.corrcoef(columns[name], truth[name])[0, 1] > 0.2, name

"""The short-video simulator's ground truth: expected outcomes and session metrics of any session.

:func:`true_session_metrics` gives the *expected* session labels (those of
:mod:`tfrec_onerec.data.sessions`) of any session if it were shown to the user (each item
exposed once), from the simulator's outcome model (module docstring of
:mod:`tfrec_onerec.data.simulator`; it reads only the simulator's public parameters: its
config, :data:`~tfrec_onerec.data.simulator.STAGE_BIAS` and
:data:`~tfrec_onerec.data.simulator.ENGAGEMENT_BIAS`). With ``p = p_click(u, i)``
(:meth:`~tfrec_onerec.data.simulator.SimulatedData.true_click_probability`),
``x = engagement_scale * preference + s_u``, ``mu = watch_scale * preference + s_u +
watch_bias`` and ``watch_cap = max_watch_ratio``::

    E[like]            = p * sigmoid(x + like_bias)          (likewise follow)
    E[view]            = p * P(watch_cap * sigmoid(mu + watch_noise * Z) >= view_threshold)
                       = p * Phi((mu - logit(view_threshold / watch_cap)) / watch_noise)
    E[watch / (watch_cap * duration)] = p * E_Z[sigmoid(mu + watch_noise * Z)]

(``Z ~ N(0, 1)``; the last expectation by 40-point Gauss-Hermite quadrature, exact to
about 1e-10). :func:`evaluate_sessions` averages them over users ("mean") and takes the
best ("max"), as the paper's Table 1 reports.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from scipy.special import ndtr

from tfrec_onerec.data import simulator
from tfrec_onerec.data.sessions import SESSION_LABELS

DEFAULT_REWARD_WEIGHTS = {"swt": 1.0, "vtr": 1.0, "wtr": 1.0, "ltr": 1.0}
"""Equal weights of the four towers in a session's scalar reward / value."""
_HERMITE_NODES, _HERMITE_WEIGHTS = np.polynomial.hermite_e.hermegauss(40)  # for E over N(0, 1)


def true_item_outcomes(data: simulator.SimulatedData, user_ids, item_ids, view_threshold: float = 1.0) -> dict:
    """Expected per-exposure outcomes of showing items to users (the simulator's truth).

    Args:
        data: the simulated world.
        user_ids: user ids (1..U), broadcastable against `item_ids`.
        item_ids: item ids (1..I).
        view_threshold: a view watches at least this multiple of the duration. Default 1.0.

    Returns:
        ``{"ctr", "swt", "vtr", "wtr", "ltr": float64 array of the broadcast shape}``: the
        probability of a click, the expected watch time / (``max_watch_ratio`` * duration),
        and the probabilities of a view, a follow and a like (formulas: module docstring).
    """
    c = data.config
    user_ids, item_ids = np.broadcast_arrays(np.asarray(user_ids), np.asarray(item_ids))
    preference = data.true_preference(user_ids, item_ids)
    p_click = data.true_click_probability(user_ids, item_ids)
    stage = data.users["lifecycle_stage"].to_numpy()[np.asarray(user_ids, np.int64) - 1]
    stage_bias = simulator.STAGE_BIAS[stage - 1]
    engagement = c.engagement_scale * preference + stage_bias
    mu = c.watch_scale * preference + stage_bias + c.watch_bias
    ratio = _expected_sigmoid(mu, c.watch_noise)
    cut = view_threshold / c.max_watch_ratio  # view iff sigmoid(mu + noise * Z) >= cut
    if cut >= 1:
        p_view = np.zeros_like(mu)
    elif c.watch_noise == 0:
        p_view = (mu >= np.log(cut / (1 - cut))).astype(np.float64)
    else:
        p_view = ndtr((mu - np.log(cut / (1 - cut))) / c.watch_noise)
    return {"ctr": p_click, "swt": p_click * ratio, "vtr": p_click * p_view,
            "wtr": p_click * _sigmoid(engagement + simulator.ENGAGEMENT_BIAS["follow"]),
            "ltr": p_click * _sigmoid(engagement + simulator.ENGAGEMENT_BIAS["like"])}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _expected_sigmoid(mu: np.ndarray, noise: float) -> np.ndarray:
    """``E[sigmoid(mu + noise * Z)]``, Z ~ N(0, 1), by Gauss-Hermite quadrature (elementwise)."""
    if noise == 0:
        return _sigmoid(mu)
    values = _sigmoid(mu[..., None] + noise * _HERMITE_NODES)
    return values @ _HERMITE_WEIGHTS / np.sqrt(2 * np.pi)


def true_session_metrics(data: simulator.SimulatedData, user_ids, item_ids, view_threshold: float = 1.0) -> dict:
    """Expected session labels of showing each session to its user (ground truth).

    Args:
        data: the simulated world.
        user_ids: (n,) user ids.
        item_ids: (n, m) one session per user, or (n, N, m) N sessions per user; 0 pads
            (padding items do not count; a session of padding only scores 0).
        view_threshold: as in :class:`~tfrec_onerec.data.sessions.SessionConfig`. Default 1.0.

    Returns:
        ``{"swt", "vtr", "wtr", "ltr", "ctr": (n,) or (n, N) float64}``: the expectations of
        the session labels of :mod:`tfrec_onerec.data.sessions`.
    """
    user_ids, item_ids = np.asarray(user_ids), np.asarray(item_ids)
    if user_ids.ndim != 1 or item_ids.ndim not in (2, 3) or item_ids.shape[0] != len(user_ids):
        raise ValueError(f"user_ids must be (n,) and item_ids (n, m) or (n, N, m); got {user_ids.shape} and "
                         f"{item_ids.shape}.")
    valid = item_ids != 0
    users = np.broadcast_to(user_ids.reshape((-1,) + (1,) * (item_ids.ndim - 1)), item_ids.shape)
    per_item = true_item_outcomes(data, users[valid], item_ids[valid], view_threshold)
    k = np.maximum(valid.sum(axis=-1), 1)
    out = {}
    for name in SESSION_LABELS:
        full = np.zeros(item_ids.shape)
        full[valid] = per_item[name]
        out[name] = full.sum(axis=-1) / k
    return out


def session_value(metrics: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None) -> np.ndarray:
    """One scalar per session: ``sum_t weights[t] * metrics[t]`` (default :data:`DEFAULT_REWARD_WEIGHTS`)."""
    weights = DEFAULT_REWARD_WEIGHTS if weights is None else weights
    return sum(float(w) * np.asarray(metrics[name], np.float64) for name, w in weights.items())


def evaluate_sessions(data: simulator.SimulatedData, user_ids, item_ids, view_threshold: float = 1.0,
                      weights: Mapping[str, float] | None = None) -> dict:
    """Table 1 of OneRec on the simulator: mean and max of the true session metrics.

    Args:
        data: the simulated world.
        user_ids: (n,) user ids.
        item_ids: (n, m) one generated session per user, or (n, N, m) N per user.
        view_threshold: as in :class:`~tfrec_onerec.data.sessions.SessionConfig`. Default 1.0.
        weights: tower weights of ``value`` (:func:`session_value`).

    Returns:
        ``{"<metric>_mean": float, "<metric>_max": float}`` for ``swt``, ``vtr``, ``wtr``,
        ``ltr``, ``ctr`` and ``value``. With one session per user, ``mean`` averages over
        users and ``max`` is the best user's; with N per user, ``mean`` averages over all
        sessions and ``max`` averages each user's best session (best of N).
    """
    metrics = true_session_metrics(data, user_ids, item_ids, view_threshold)
    metrics["value"] = session_value(metrics, weights)
    out = {}
    for name, values in metrics.items():
        out[f"{name}_mean"] = float(values.mean())
        out[f"{name}_max"] = float(values.max() if values.ndim == 1 else values.max(axis=1).mean())
    return out

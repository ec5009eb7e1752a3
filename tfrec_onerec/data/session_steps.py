"""Logged session steps: what a logging policy showed in the simulator environment, and what
happened next, one row per exposure (the data of the session-value family, SessionLTV's).

A session-value model learns from a log only: no candidate sets are stored, only what was
shown, the answer, whether the user left, and what was shown next. The log is played here:
a stochastic logging policy (:func:`~tfrec_onerec.data.environment.sampling_policy`) shows
items to every simulated user in the environment
(:class:`~tfrec_onerec.data.environment.ShortVideoEnvironment`), and each step becomes a row:

=================  ======================================================================
``user_id``        the user (1..U)
``user_history``   (H_u,) the user's last clicked items in the simulator's log before the
                   sessions (oldest first, right-padded with 0): their long-term interests
``session_items``  (H_s,) the items shown earlier in this session (the newest H_s)
``session_step``   the step's position in the session, 1-based (1..max_length)
``item_id``        the item shown (the action)
``next_item_id``   the item the logging policy showed next, 0 after the session's last
                   step (the SARSA action; a training target, never a serving input)
labels             ``reward`` (the environment's reward: watch seconds by default),
                   ``click``, ``like``, ``follow``, ``exit`` (1 at the session's last step) and
                   ``return_to_go`` (this step's reward plus every later one of the session)
=================  ======================================================================

Splits are independent plays of the same users (own environment and policy streams):
``train`` holds ``sessions_per_user`` sessions of every user, ``valid`` and ``test`` one each.
The family judges a model by playing new sessions with it, not on these rows; they serve
the validation loss and the offline diagnostics.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tfrec_onerec.data.environment import (EnvironmentConfig, Sessions, ShortVideoEnvironment, logged_steps,
                                           rollout, sampling_policy)
from tfrec_onerec.data.simulator import SimulatedData
from tfrec_onerec.features import Feature, FeatureSpec

USER_FEATURE, USER_HISTORY, SESSION_ITEMS, STEP_FEATURE = "user_id", "user_history", "session_items", "session_step"
ITEM_FEATURE, NEXT_ITEM = "item_id", "next_item_id"
STATE_FEATURES = (USER_FEATURE, USER_HISTORY, SESSION_ITEMS, STEP_FEATURE)
"""What a model reads of the state (serving inputs besides the candidate items)."""
STEP_LABELS = ("reward", "click", "like", "follow", "exit", "return_to_go")
SPLIT_SEEDS = {"train": 1, "valid": 2, "test": 3}
"""Offsets of each split's environment and policy seeds from the data seed."""


@dataclasses.dataclass(frozen=True)
class LogConfig:
    """How the log is played.

    Args:
        sessions_per_user: training sessions of every user. Default 10.
        history_len: ``session_items`` kept (H_s). Default 10.
        user_history_len: ``user_history`` kept (H_u). Default 20.
        temperature, exploration: the logging policy's
            (:func:`~tfrec_onerec.data.environment.sampling_policy`). Defaults 0.25, 0.2.
        environment: exits and reward (:class:`~tfrec_onerec.data.environment.EnvironmentConfig`);
            default :data:`LOG_ENVIRONMENT`.
    """

    sessions_per_user: int = 10
    history_len: int = 10
    user_history_len: int = 20
    temperature: float = 0.25
    exploration: float = 0.2
    environment: EnvironmentConfig | None = None

    def __post_init__(self):
        for name in ("sessions_per_user", "history_len", "user_history_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"LogConfig.{name} must be a positive int, got {value!r}.")
        if self.environment is None:
            object.__setattr__(self, "environment", LOG_ENVIRONMENT)


LOG_ENVIRONMENT = EnvironmentConfig(exit_popularity=1.0)
"""The environment the session-value family plays: popular items cost sessions (exit logit
+1 per standard deviation of popularity), so ranking by the immediate reward alone is myopic.
With it, on the 3,000 x 400 worlds of seeds 0-2, the myopic oracle's sessions return 192 s of
watch time and last 3.4 steps, the long-term oracle's 267 s and 9.0 steps
(``benchmarks/session_ltv_results.py``, ``docs/results/session_ltv.md``)."""


def user_histories(world: SimulatedData, length: int) -> np.ndarray:
    """(U, length) int64: row ``u - 1`` holds user u's last `length` clicked items of the
    simulator's log, oldest first, right-padded with 0."""
    from tfrec_onerec.features.parsing import pad_sequences_numpy

    clicks = world.interactions[world.interactions["click"] > 0]  # sorted by user, then time
    by_user = dict(tuple(clicks.groupby("user_id")["item_id"]))
    sequences = [by_user[u].to_numpy()[-length:] if u in by_user else np.zeros(0, np.int64)
                 for u in range(1, len(world.users) + 1)]
    return pad_sequences_numpy(sequences, length)


def state_columns(user_ids: np.ndarray, position: np.ndarray, history: np.ndarray,
                  histories: np.ndarray) -> dict:
    """The state features of steps: ``{user_id, user_history, session_items, session_step}``
    from (n,) users, (n,) 0-based positions, (n, H_s) session items and the (U, H_u)
    :func:`user_histories` table."""
    users = np.asarray(user_ids, np.int64)
    return {USER_FEATURE: users, USER_HISTORY: histories[users - 1], SESSION_ITEMS: np.asarray(history, np.int64),
            STEP_FEATURE: np.asarray(position, np.int64) + 1}


def current_state(sessions: Sessions, history_len: int, histories: np.ndarray) -> dict:
    """The state features (:func:`state_columns`) of every session of `sessions` before its
    next step: the newest `history_len` items it has shown, oldest first."""
    length = sessions.length
    history = np.zeros((len(length), history_len), np.int64)
    start = np.maximum(length - history_len, 0)
    for column in range(history_len):
        source = start + column
        valid = source < length
        history[valid, column] = sessions.items[valid, source[valid]]
    return state_columns(sessions.user_ids, np.minimum(length, sessions.items.shape[1] - 1), history, histories)


def session_step_spec(num_users: int, num_items: int, config: LogConfig) -> FeatureSpec:
    """The spec of logged-step rows (the module docstring)."""
    item = dict(vocab_size=num_items, vocab="item", embedding_dim=32)
    return FeatureSpec([
        Feature(USER_FEATURE, "categorical", vocab_size=num_users, embedding_dim=32, group="user",
                description="the user"),
        Feature(USER_HISTORY, "sequence", max_len=config.user_history_len, group="history",
                description="the user's last clicked items before the sessions, oldest first", **item),
        Feature(SESSION_ITEMS, "sequence", max_len=config.history_len, group="history",
                description="the items shown earlier in the session, oldest first", **item),
        Feature(STEP_FEATURE, "categorical", vocab_size=config.environment.max_length, embedding_dim=32,
                group="context", description="the step's position in the session (1-based)"),
        Feature(ITEM_FEATURE, "categorical", group="item", description="the item shown", **item),
        Feature(NEXT_ITEM, "categorical", group="target",
                description="the item the logging policy showed next (0 after the last step)", **item),
    ], labels=STEP_LABELS)


def play_log(world: SimulatedData, config: LogConfig, seed: int, sessions_per_user: int,
             histories: np.ndarray) -> dict:
    """The rows of `sessions_per_user` logged sessions of every user (module docstring)."""
    environment = ShortVideoEnvironment(world, config.environment, seed=seed)
    policy = sampling_policy(environment, config.temperature, config.exploration, seed=seed + 7919)
    users = np.arange(1, len(world.users) + 1)
    parts = []
    for _ in range(sessions_per_user):
        steps = logged_steps(rollout(environment, policy, users), config.history_len)
        parts.append({**state_columns(steps["user_id"], steps["position"], steps["history"], histories),
                      ITEM_FEATURE: steps["item_id"], NEXT_ITEM: steps["next_item_id"],
                      **{label: steps[label].astype(np.float32) for label in STEP_LABELS}})
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def build_session_steps(world: SimulatedData, config: LogConfig, seed: int = 0):
    """``(spec, {split: rows}, metadata)`` of the logged steps (module docstring)."""
    histories = user_histories(world, config.user_history_len)
    splits = {split: play_log(world, config, 1000 * seed + offset,
                              config.sessions_per_user if split == "train" else 1, histories)
              for split, offset in SPLIT_SEEDS.items()}
    train = splits["train"]
    metadata = {"steps": {split: int(len(rows[ITEM_FEATURE])) for split, rows in splits.items()},
                "logging_return": float(train["reward"].sum() / train["exit"].sum()),
                "mean_reward": float(train["reward"].mean()),
                "mean_session_length": float(len(train["exit"]) / train["exit"].sum())}
    return session_step_spec(len(world.users), len(world.items), config), splits, metadata

"""The simulator as an environment: a policy recommends, simulated users respond and may leave.

Logged data shows what a logging policy chose; judging a *new* policy on long-term engagement
needs users who answer it. :class:`ShortVideoEnvironment` plays the simulator's users
(:class:`~tfrec_onerec.data.simulator.SimulatedData`) one session each, for many users at once:
at every step the policy shows each active session one item, the user answers with the
simulator's own outcome model (click, then watch time, like, follow, share, conversion:
:meth:`~tfrec_onerec.data.simulator.SimulatedData.respond`), and then may leave the session.

Exits are what makes engagement long-term. After each exposure the user leaves with
probability::

    p_exit = sigmoid(exit_bias - exit_satisfaction * satisfaction + exit_popularity * popularity)
    satisfaction = watch_time / (duration * max_watch_ratio)     in [0, 1); 0 without a click

so an item watched through keeps the user, and one skipped or abandoned early sends them away.
``exit_popularity`` (0 by default) makes popular items, which draw clicks by their popularity
rather than by the user's taste (the simulator's ``popularity_scale``), end more sessions: the
trending item that wins the click and loses the user. It sharpens the conflict a myopic ranker
cannot see (the SessionLTV evaluation uses it).
A long video the user half-watches earns more watch time *now* than a short one they watch
to the end, but ends more sessions: a policy that maximises the immediate reward (the
myopic one) is not the one that maximises the session's total. A session also ends after
``max_length`` exposures.

Everything is seeded (one random stream per environment, drawn in a fixed order, so a run is
reproducible) and vectorised over the sessions. The ground truth is exposed
(:meth:`ShortVideoEnvironment.expected_step`: the click probability, the expected reward and
the exit probability of any (user, item), the watch-ratio noise integrated by Gauss-Hermite
quadrature), so tests and oracle policies can rank by it.

Example::

    world = simulator.simulate(simulator.SimulatorConfig(num_users=500, num_items=200))
    env = ShortVideoEnvironment(world, seed=0)
    sessions = rollout(env, oracle_policy(env, "long_term"), np.arange(1, 501))
    sessions.returns.mean(), sessions.length.mean()
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from scipy.special import expit as _sigmoid

from tfrec_onerec.data.simulator import ENGAGEMENT_BIAS, STAGE_BIAS, SimulatedData

FEEDBACK = ("click", "watch_time", "like", "follow", "share", "conversion")
"""The feedback of an exposure, as :meth:`SimulatedData.respond` draws it."""


@dataclasses.dataclass(frozen=True)
class EnvironmentConfig:
    """How users leave, and what a session is worth.

    Args:
        exit_bias: logit of leaving after an exposure with no satisfaction (no click).
            Default -1.2 (23%).
        exit_satisfaction: how much a fully watched exposure lowers that logit. Default 3.0
            (a video watched through: 1.5%).
        exit_popularity: how much an item's popularity (the simulator's item ``popularity``,
            about standard normal) raises the exit logit, clicked or not. Default 0.
        max_length: exposures after which every session ends. Default 50.
        reward: the feedback a session sums as its return, one of :data:`FEEDBACK`.
            Default ``"watch_time"`` (seconds).
    """

    exit_bias: float = -1.2
    exit_satisfaction: float = 3.0
    exit_popularity: float = 0.0
    max_length: int = 50
    reward: str = "watch_time"

    def __post_init__(self):
        if self.reward not in FEEDBACK:
            raise ValueError(f"EnvironmentConfig: reward must be one of {FEEDBACK}, got {self.reward!r}.")
        if int(self.max_length) != self.max_length or self.max_length < 1:
            raise ValueError(f"EnvironmentConfig: max_length must be a positive int, got {self.max_length!r}.")
        if not all(np.isfinite([self.exit_bias, self.exit_satisfaction, self.exit_popularity])):
            raise ValueError("EnvironmentConfig: exit_bias, exit_satisfaction and exit_popularity must be finite "
                             "numbers.")


@dataclasses.dataclass
class Sessions:
    """The state of a batch of sessions, one per user, updated in place by each step.

    ``B`` sessions, ``T = max_length`` steps. Step ``t`` of session ``b`` holds what was shown
    (``items[b, t]``, 0 where the session had already ended) and the user's answer.

    Attributes:
        user_ids: (B,) int64 users.
        items: (B, T) int64 items shown, 0 after the session ended.
        feedback: ``{name: (B, T) float64}`` for each of :data:`FEEDBACK` and ``"reward"``.
        length: (B,) int64 exposures so far.
        active: (B,) bool, True while the session goes on.
    """

    user_ids: np.ndarray
    items: np.ndarray
    feedback: dict
    length: np.ndarray
    active: np.ndarray

    @property
    def returns(self) -> np.ndarray:
        """(B,) each session's total reward so far."""
        return self.feedback["reward"].sum(axis=1)


class ShortVideoEnvironment:
    """Simulated users answering a policy's recommendations, one session per user.

    Args:
        world: the simulated world (:func:`~tfrec_onerec.data.simulator.simulate`).
        config: exits, session cap and reward (:class:`EnvironmentConfig`).
        seed: the environment's random stream.

    Example: see the module docstring.
    """

    def __init__(self, world: SimulatedData, config: EnvironmentConfig | None = None, seed: int = 0):
        self.world = world
        self.config = config or EnvironmentConfig()
        self.rng = np.random.default_rng(seed)
        self.num_users, self.num_items = len(world.users), len(world.items)
        self.duration = world.items["duration"].to_numpy()
        self.exit_shift = self.config.exit_popularity * world.items["popularity"].to_numpy()  # (I,) exit logit
        self.max_watch_ratio = world.config.max_watch_ratio

    def reset(self, user_ids) -> Sessions:
        """Starts one session for each of (B,) `user_ids` (1..num_users; a user may repeat)."""
        users = np.asarray(user_ids, np.int64).reshape(-1)
        if users.size and (users.min() < 1 or users.max() > self.num_users):
            raise ValueError(f"ShortVideoEnvironment.reset: user ids must be in 1..{self.num_users}, got values in "
                             f"[{users.min()}, {users.max()}].")
        shape = (len(users), self.config.max_length)
        return Sessions(users, np.zeros(shape, np.int64), {name: np.zeros(shape) for name in FEEDBACK + ("reward",)},
                        np.zeros(len(users), np.int64), np.ones(len(users), bool))

    def exit_probability(self, watch_time, item_ids) -> np.ndarray:
        """(n,) the probability of leaving after watching `watch_time` seconds of `item_ids`."""
        satisfaction = np.asarray(watch_time, np.float64) / (self.duration[np.asarray(item_ids) - 1]
                                                             * self.max_watch_ratio)
        return _sigmoid(self.config.exit_bias - self.config.exit_satisfaction * satisfaction
                        + self.exit_shift[np.asarray(item_ids) - 1])

    def step(self, sessions: Sessions, item_ids) -> dict:
        """Shows each active session one item; records the answers and who leaves.

        Args:
            sessions: :meth:`reset`'s state (updated in place).
            item_ids: (B,) items (1..num_items) for every session; entries of ended sessions
                are ignored.

        Returns:
            ``{name: (B,) array}``: each of :data:`FEEDBACK`, ``"reward"`` and ``"exit"`` (bool,
            True where the session ended at this step); zeros (and no exit) for sessions that
            had already ended.

        Raises:
            ValueError: a wrong number of items, or an item id out of range for an active session.
        """
        items = np.asarray(item_ids, np.int64).reshape(-1)
        if len(items) != len(sessions.user_ids):
            raise ValueError(f"ShortVideoEnvironment.step: one item per session is needed ({len(sessions.user_ids)}); "
                             f"got {len(items)}.")
        rows = np.flatnonzero(sessions.active)
        shown = items[rows]
        if shown.size and (shown.min() < 1 or shown.max() > self.num_items):
            raise ValueError(f"ShortVideoEnvironment.step: item ids must be in 1..{self.num_items} for active "
                             f"sessions, got values in [{shown.min()}, {shown.max()}].")
        answer = self.world.respond(sessions.user_ids[rows], shown, self.rng)
        answer = {name: np.asarray(answer[name], np.float64) for name in FEEDBACK}
        answer["reward"] = answer[self.config.reward]
        leaves = self.rng.random(len(rows)) < self.exit_probability(answer["watch_time"], shown)
        steps = sessions.length[rows]
        sessions.items[rows, steps] = shown
        for name, values in answer.items():
            sessions.feedback[name][rows, steps] = values
        sessions.length[rows] += 1
        ended = leaves | (sessions.length[rows] >= self.config.max_length)
        sessions.active[rows[ended]] = False
        out = {name: np.zeros(len(items)) for name in answer}
        for name, values in answer.items():
            out[name][rows] = values
        out["exit"] = np.zeros(len(items), bool)
        out["exit"][rows] = ended
        return out

    def expected_step(self, user_ids, item_ids, nodes: int = 24) -> dict:
        """The ground truth of showing `item_ids` to `user_ids` (broadcast), before any draw.

        Returns:
            ``{"p_click", "reward", "p_exit"}`` arrays: the click probability, the expected
            reward (watch time, or the expected count of a binary feedback) and the
            probability of leaving afterwards; the watch ratio's Gaussian noise is integrated
            by `nodes`-point Gauss-Hermite quadrature.
        """
        users, items = np.broadcast_arrays(np.asarray(user_ids, np.int64), np.asarray(item_ids, np.int64))
        c = self.world.config
        p_click = self.world.true_click_probability(users, items)
        z, weights = np.polynomial.hermite_e.hermegauss(nodes)
        weights = weights / weights.sum()
        ratio = _sigmoid(self.world.watch_logit(users, items)[..., None] + c.watch_noise * z)  # (..., nodes)
        bias = self.config.exit_bias + self.exit_shift[items - 1]
        exit_clicked = _sigmoid(bias[..., None] - self.config.exit_satisfaction * ratio) @ weights
        p_exit = (1.0 - p_click) * _sigmoid(bias) + p_click * exit_clicked
        if self.config.reward == "watch_time":
            reward = p_click * self.duration[items - 1] * self.max_watch_ratio * (ratio @ weights)
        elif self.config.reward == "click":
            reward = p_click
        else:
            reward = self._expected_engagement(users, items, p_click)
        return {"p_click": p_click, "reward": reward, "p_exit": np.minimum(p_exit, 1.0)}

    def _expected_engagement(self, users, items, p_click) -> np.ndarray:
        """The expected count of a binary feedback after a click (like, follow, share, conversion)."""
        if self.config.reward == "conversion":
            return p_click * self.world.true_conversion_probability(users, items)
        c = self.world.config
        stage = self.world.users["lifecycle_stage"].to_numpy()[users - 1]
        logit = (c.engagement_scale * self.world.true_preference(users, items) + STAGE_BIAS[stage - 1]
                 + ENGAGEMENT_BIAS[self.config.reward])
        return p_click * _sigmoid(logit)


Policy = Callable[[Sessions], np.ndarray]
"""A policy: the sessions' state -> (B,) the next item of every session."""


def rollout(environment: ShortVideoEnvironment, policy: Policy, user_ids) -> Sessions:
    """Plays one session per user of (B,) `user_ids` under `policy` until every session has ended.

    Returns:
        The final :class:`Sessions` (``returns``, ``length``, per-step ``items`` and ``feedback``).
    """
    sessions = environment.reset(user_ids)
    while sessions.active.any():
        environment.step(sessions, policy(sessions))
    return sessions


def unseen_argmax(scores: np.ndarray, sessions: Sessions) -> np.ndarray:
    """(B,) the best-scored item of each session among those it has not shown yet.

    Args:
        scores: (B, num_items) a score per session and item; column ``i`` is item ``i + 1``.
    """
    scores = np.array(scores, np.float64)
    rows, steps = np.nonzero(sessions.items)
    scores[rows, sessions.items[rows, steps] - 1] = -np.inf
    return scores.argmax(axis=1) + 1


def oracle_policy(environment: ShortVideoEnvironment, objective: str = "long_term") -> Policy:
    """A policy that knows the truth, never repeating an item within a session.

    ``"myopic"`` shows the item of highest expected immediate reward. ``"long_term"`` shows the
    item of highest ``reward / p_exit``: the value of showing that item again and again,
    ``r + (1 - p_exit) r + ... = r / p_exit``, an index that trades the reward now against
    keeping the user (the best stationary choice when items could repeat).
    """
    if objective not in ("myopic", "long_term"):
        raise ValueError(f"oracle_policy: objective must be 'myopic' or 'long_term', got {objective!r}.")
    items = np.arange(1, environment.num_items + 1)
    cache: dict = {}

    def scores_of(users: np.ndarray) -> np.ndarray:
        missing = np.setdiff1d(np.unique(users), np.fromiter(cache, np.int64, len(cache)))
        if missing.size:
            truth = environment.expected_step(missing[:, None], items[None, :])
            values = truth["reward"] if objective == "myopic" else truth["reward"] / truth["p_exit"]
            cache.update(zip(missing.tolist(), values))
        return np.stack([cache[u] for u in users.tolist()])

    return lambda sessions: unseen_argmax(scores_of(sessions.user_ids), sessions)


def random_policy(environment: ShortVideoEnvironment, seed: int = 0) -> Policy:
    """A policy that shows uniformly random unseen items (its own random stream)."""
    rng = np.random.default_rng(seed)
    return lambda sessions: unseen_argmax(rng.random((len(sessions.user_ids), environment.num_items)), sessions)


def sampling_policy(environment: ShortVideoEnvironment, temperature: float = 0.25, exploration: float = 0.2,
                    seed: int = 0) -> Policy:
    """A stochastic logging policy: with probability `exploration` a uniformly random unseen
    item, otherwise an unseen item drawn with probability proportional to
    ``p_click ** (1 / temperature)`` (a softmax of the true click log-probability over
    `temperature`), so a log holds many actions per state (what off-policy learning needs)
    while favouring clicks.
    """
    if temperature <= 0 or not 0.0 <= exploration <= 1.0:
        raise ValueError(f"sampling_policy: temperature must be > 0 and exploration in [0, 1]; got {temperature}, "
                         f"{exploration}.")
    rng = np.random.default_rng(seed)
    items = np.arange(1, environment.num_items + 1)
    cache: dict = {}

    def policy(sessions: Sessions) -> np.ndarray:
        missing = [u for u in np.unique(sessions.user_ids).tolist() if u not in cache]
        if missing:
            cache.update(zip(missing, environment.world.true_click_probability(np.array(missing)[:, None],
                                                                                items[None, :])))
        logits = np.log(np.stack([cache[u] for u in sessions.user_ids.tolist()])) / temperature
        gumbel = -np.log(-np.log(rng.random(logits.shape)))  # argmax of logits + Gumbel noise: a softmax draw
        uniform = rng.random(logits.shape)
        explore = rng.random(len(logits)) < exploration
        return unseen_argmax(np.where(explore[:, None], uniform, logits + gumbel), sessions)

    return policy


def logged_steps(sessions: Sessions, history_len: int = 10) -> dict:
    """The steps of finished sessions as rows for learning from the log (SessionLTV's data).

    Args:
        sessions: :func:`rollout`'s sessions (every one ended).
        history_len: items of the session shown before a step that its row keeps.

    Returns:
        ``{column: array}``, one row per exposure, session after session: ``user_id``,
        ``position`` (0-based), ``item_id``, ``history`` (n, history_len) the items shown
        earlier in the session (oldest first, left-aligned, 0-padded), each of
        :data:`FEEDBACK` and ``reward``, ``exit`` (1 at a session's last step), ``next_item_id``
        (the item logged next, 0 after the last step: the SARSA action) and ``return_to_go``
        (the reward of this step and every later step of the session).
    """
    if sessions.active.any():
        raise ValueError("logged_steps: some sessions have not ended; roll them out first (rollout).")
    rows, steps = np.nonzero(sessions.items)
    order = np.lexsort((steps, rows))
    rows, steps = rows[order], steps[order]
    length = sessions.length[rows]
    items = sessions.items
    width = items.shape[1]
    later = np.where(steps + 1 < width, items[rows, np.minimum(steps + 1, width - 1)], 0)
    history = np.zeros((len(rows), history_len), np.int64)
    start = np.maximum(steps - history_len, 0)  # the last history_len steps before this one
    for column in range(history_len):
        source = start + column
        valid = source < steps
        history[valid, column] = items[rows[valid], source[valid]]
    rewards = sessions.feedback["reward"]
    to_go = np.flip(np.cumsum(np.flip(rewards, axis=1), axis=1), axis=1)
    out = {"user_id": sessions.user_ids[rows], "position": steps.astype(np.int64), "item_id": items[rows, steps],
           "history": history, **{name: sessions.feedback[name][rows, steps] for name in FEEDBACK + ("reward",)},
           "exit": (steps + 1 == length).astype(np.int64),
           "next_item_id": np.where(steps + 1 < length, later, 0).astype(np.int64),
           "return_to_go": to_go[rows, steps]}
    return out

"""A seeded short-video recommendation simulator whose ground truth is known.

The world: items belong to categories and have latent vectors near their category's
centroid, a duration, a popularity (quality) and a content embedding; users have latent
interests (a mix of a few categories), a lifecycle stage (new, wander, stick, loyal) that
sets how active and how engaged they are, and friends chosen among users of similar taste.
Users come in sessions; in each session a logging policy shows items (mostly from the
categories the session is about, some at random); every exposure is logged with the
funnel click -> (watch time, like, follow, share, conversion).

The click and conversion probabilities are functions of (user, item) only::

    preference(u, i) = <interest_u, latent_i>
    p_click(u, i)      = sigmoid(click_scale * preference + popularity_i * popularity_scale
                                 + stage_bias[stage_u] + click_bias)
    p_conversion(u, i) = sigmoid(conversion_scale * preference + 0.5 * popularity_i
                                 + stage_bias[stage_u] + conversion_bias)    (given a click)

and :class:`SimulatedData` recomputes them exactly for any (user, item), so tests can check
that a model recovers what drives behaviour. Everything is vectorized numpy and determined
by the seed.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

STAGES = ("new", "wander", "stick", "loyal")
STAGE_ACTIVITY = np.array([0.5, 0.8, 1.2, 2.0])  # multiplies the expected number of sessions
STAGE_BIAS = np.array([-0.3, -0.1, 0.1, 0.3])  # added to click, like and conversion logits


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
    """The simulated world's size and behaviour.

    Args:
        seed: determines everything.
        num_users, num_items, num_categories: sizes (ids are 1-based and dense).
        latent_dim: width of the true interest and item vectors.
        content_dim: width of the item content embeddings.
        sessions_per_user: mean sessions of a user at activity 1 (scaled by stage).
        session_length: mean exposures per session (at least 2).
        friends_per_user: friends each user picks (edges are undirected).
        exploration: share of exposures the logging policy draws uniformly at random.
        policy_sharpness: how strongly the policy follows the session's interest.
        click_scale, popularity_scale, click_bias: the click logit's coefficients.
        conversion_scale, conversion_bias: the conversion logit's coefficients.
    """

    seed: int = 0
    num_users: int = 2000
    num_items: int = 1000
    num_categories: int = 20
    latent_dim: int = 16
    content_dim: int = 32
    sessions_per_user: float = 8.0
    session_length: float = 6.0
    friends_per_user: int = 5
    exploration: float = 0.3
    policy_sharpness: float = 3.0
    click_scale: float = 3.0
    popularity_scale: float = 0.5
    click_bias: float = -1.5
    conversion_scale: float = 2.0
    conversion_bias: float = -2.5

    def __post_init__(self):
        positive = ("num_users", "num_items", "num_categories", "latent_dim", "content_dim", "sessions_per_user")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"SimulatorConfig.{name} must be positive, got {getattr(self, name)!r}.")
        if self.session_length < 2:
            raise ValueError(f"SimulatorConfig.session_length must be >= 2, got {self.session_length!r}.")
        if self.num_categories > self.num_items:
            raise ValueError(f"SimulatorConfig.num_categories ({self.num_categories}) must not exceed "
                             f"num_items ({self.num_items}).")
        if not 0 <= self.friends_per_user < self.num_users:
            raise ValueError(f"SimulatorConfig.friends_per_user must be in [0, num_users), got "
                             f"{self.friends_per_user!r}.")
        if not 0.0 <= self.exploration <= 1.0:
            raise ValueError(f"SimulatorConfig.exploration must be in [0, 1], got {self.exploration!r}.")


@dataclasses.dataclass
class SimulatedData:
    """What :func:`simulate` returns: the log, the world, and its ground truth.

    Attributes:
        config: the configuration it was made with.
        users: ``user_id``, ``age_bucket`` (1..7), ``gender`` (1..2), ``lifecycle_stage``
            (1..4 = new, wander, stick, loyal), ``activity``.
        items: ``item_id``, ``category`` (1..C), ``duration`` (seconds), ``popularity``.
        item_content: (num_items, content_dim) float32 content embeddings; row i-1 is item i.
        social_edges: ``src``, ``dst`` user ids, one row per undirected pair (src < dst).
        interactions: one row per exposure, sorted by (user_id, timestamp): ``user_id``,
            ``item_id``, ``session_id``, ``position``, ``timestamp``, ``click``,
            ``watch_time``, ``like``, ``follow``, ``share``, ``conversion``, and the true
            ``p_click``, ``p_conversion`` the outcomes were drawn from.
        user_interest: (num_users, latent_dim) true interests; row u-1 is user u.
        item_latent: (num_items, latent_dim) true item vectors.
    """

    config: SimulatorConfig
    users: pd.DataFrame
    items: pd.DataFrame
    item_content: np.ndarray
    social_edges: pd.DataFrame
    interactions: pd.DataFrame
    user_interest: np.ndarray
    item_latent: np.ndarray

    @property
    def num_interactions(self) -> int:
        return len(self.interactions)

    def true_preference(self, user_ids, item_ids) -> np.ndarray:
        """(n,) true affinities ``<interest_u, latent_i>`` for arrays of ids."""
        u = self.user_interest[np.asarray(user_ids) - 1]
        i = self.item_latent[np.asarray(item_ids) - 1]
        return np.einsum("nd,nd->n", u, i)

    def _logit_parts(self, user_ids, item_ids):
        stage = self.users["lifecycle_stage"].to_numpy()[np.asarray(user_ids) - 1]
        popularity = self.items["popularity"].to_numpy()[np.asarray(item_ids) - 1]
        return self.true_preference(user_ids, item_ids), popularity, STAGE_BIAS[stage - 1]

    def true_click_probability(self, user_ids, item_ids) -> np.ndarray:
        """(n,) the probability of a click that the log's clicks were drawn from."""
        c = self.config
        preference, popularity, stage_bias = self._logit_parts(user_ids, item_ids)
        return _sigmoid(c.click_scale * preference + c.popularity_scale * popularity + stage_bias + c.click_bias)

    def true_conversion_probability(self, user_ids, item_ids) -> np.ndarray:
        """(n,) the probability of a conversion given a click."""
        c = self.config
        preference, popularity, stage_bias = self._logit_parts(user_ids, item_ids)
        return _sigmoid(c.conversion_scale * preference + 0.5 * popularity + stage_bias + c.conversion_bias)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _make_items(c: SimulatorConfig, rng, centroids):
    """Items: Zipf-like category sizes, latent vectors near their centroid, content, duration."""
    weights = 1.0 / np.sqrt(np.arange(1, c.num_categories + 1))
    category = np.r_[np.arange(c.num_categories),  # every category has an item
                     rng.choice(c.num_categories, c.num_items - c.num_categories, p=weights / weights.sum())]
    category = np.sort(category)  # items of a category are contiguous ids
    latent = _unit(centroids[category] + 0.35 * rng.normal(size=(c.num_items, c.latent_dim)))
    content_centroids = rng.normal(size=(c.num_categories, c.content_dim))
    content = content_centroids[category] + 0.4 * rng.normal(size=(c.num_items, c.content_dim))
    items = pd.DataFrame({
        "item_id": np.arange(1, c.num_items + 1, dtype=np.int64),
        "category": category.astype(np.int64) + 1,
        "duration": np.round(np.exp(rng.normal(np.log(40.0), 0.6, c.num_items)), 1),
        "popularity": rng.normal(0.0, 1.0, c.num_items),
    })
    return items, latent, content.astype(np.float32)


def _make_users(c: SimulatorConfig, rng, centroids):
    """Users: interests mixing up to three categories, demographics, lifecycle stage."""
    picks = rng.integers(0, c.num_categories, (c.num_users, 3))
    mix = rng.dirichlet([2.0, 1.0, 0.5], c.num_users)
    interest = _unit(np.einsum("uk,ukd->ud", mix, centroids[picks]) + 0.3 * rng.normal(size=(c.num_users, c.latent_dim)))
    stage = rng.choice(4, c.num_users, p=[0.3, 0.25, 0.25, 0.2]) + 1
    users = pd.DataFrame({
        "user_id": np.arange(1, c.num_users + 1, dtype=np.int64),
        "age_bucket": rng.integers(1, 8, c.num_users),
        "gender": rng.integers(1, 3, c.num_users),
        "lifecycle_stage": stage.astype(np.int64),
        "activity": STAGE_ACTIVITY[stage - 1] * rng.gamma(4.0, 0.25, c.num_users),
    })
    return users, interest


def _make_social_graph(c: SimulatorConfig, rng, interest):
    """Each user befriends the most similar of 30 random users (homophily)."""
    if c.friends_per_user == 0:
        return pd.DataFrame({"src": np.array([], np.int64), "dst": np.array([], np.int64)})
    pool = rng.integers(0, c.num_users, (c.num_users, 30))
    similarity = np.einsum("ud,upd->up", interest, interest[pool]) + 0.1 * rng.normal(size=pool.shape)
    similarity[pool == np.arange(c.num_users)[:, None]] = -np.inf
    best = np.argsort(-similarity, axis=1)[:, :c.friends_per_user]
    src = np.repeat(np.arange(c.num_users), c.friends_per_user)
    dst = np.take_along_axis(pool, best, 1).reshape(-1)
    pairs = np.unique(np.stack([np.minimum(src, dst), np.maximum(src, dst)], 1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return pd.DataFrame({"src": pairs[:, 0] + 1, "dst": pairs[:, 1] + 1})


def _make_sessions(c: SimulatorConfig, rng, users, interest):
    """Sessions per user (Poisson by activity), their drifted interests and start times."""
    counts = 1 + rng.poisson(c.sessions_per_user * users["activity"].to_numpy())
    session_user = np.repeat(np.arange(c.num_users), counts)  # 0-based, sorted
    drift = _unit(interest[session_user] + 0.4 * rng.normal(size=(len(session_user), c.latent_dim)))
    gaps = rng.exponential(86_400.0, len(session_user)) + 3_600.0  # >= 1 h between session starts
    first = np.r_[0, np.cumsum(counts)[:-1]]
    elapsed = np.cumsum(gaps)
    start = 1_700_000_000 + rng.integers(0, 30 * 86_400, c.num_users)[session_user] + elapsed - elapsed[first][
        np.repeat(np.arange(c.num_users), counts)]
    return session_user, drift, start.astype(np.int64)


def _expose(c: SimulatorConfig, rng, items, centroids, session_drift, lengths):
    """The logging policy: per slot, a uniform item (exploration) or an item of a category
    drawn by softmax affinity to the session's interest."""
    n = int(lengths.sum())
    session = np.repeat(np.arange(len(lengths)), lengths)
    affinity = c.policy_sharpness * session_drift @ centroids.T  # (sessions, C)
    probs = np.exp(affinity - affinity.max(1, keepdims=True))
    cdf = np.cumsum(probs / probs.sum(1, keepdims=True), axis=1)
    draw = rng.random(n)
    category = np.minimum((cdf[session] < draw[:, None]).sum(1), c.num_categories - 1)
    category_ids = items["category"].to_numpy() - 1
    start = np.searchsorted(category_ids, np.arange(c.num_categories))
    size = np.bincount(category_ids, minlength=c.num_categories)
    targeted = start[category] + (rng.random(n) * size[category]).astype(np.int64)
    explore = rng.random(n) < c.exploration
    return session, np.where(explore, rng.integers(0, c.num_items, n), targeted)


def simulate(config: SimulatorConfig | None = None, progress: bool = False) -> SimulatedData:
    """Generates a world and its exposure log (see the module docstring).

    Args:
        config: the :class:`SimulatorConfig` (default: 2,000 users, 1,000 items).
        progress: show a progress bar over the generation stages.

    Returns:
        A :class:`SimulatedData`.
    """
    c = config or SimulatorConfig()
    rng = np.random.default_rng(c.seed)
    bar = tqdm(total=5, desc="simulating", disable=not progress)
    centroids = _unit(rng.normal(size=(c.num_categories, c.latent_dim)))
    items, item_latent, item_content = _make_items(c, rng, centroids)
    users, interest = _make_users(c, rng, centroids)
    bar.update()
    edges = _make_social_graph(c, rng, interest)
    bar.update()
    session_user, drift, session_start = _make_sessions(c, rng, users, interest)
    lengths = 2 + rng.poisson(c.session_length - 2, len(session_user))
    session, item_index = _expose(c, rng, items, centroids, drift, lengths)
    bar.update()

    user_ids = session_user[session] + 1
    item_ids = item_index + 1
    position = np.arange(len(session)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    timestamp = session_start[session] + 30 * position + rng.integers(0, 25, len(session))
    data = SimulatedData(c, users, items, item_content, edges, pd.DataFrame(), interest, item_latent)
    p_click = data.true_click_probability(user_ids, item_ids)
    p_conversion = data.true_conversion_probability(user_ids, item_ids)
    bar.update()

    preference = data.true_preference(user_ids, item_ids)
    stage_bias = STAGE_BIAS[users["lifecycle_stage"].to_numpy()[user_ids - 1] - 1]
    click = rng.random(len(session)) < p_click
    watch_ratio = _sigmoid(2.0 * preference + stage_bias + 0.5 * rng.normal(size=len(session)))
    duration = items["duration"].to_numpy()[item_ids - 1]

    def engaged(bias):
        return click & (rng.random(len(session)) < _sigmoid(2.5 * preference + stage_bias + bias))

    data.interactions = pd.DataFrame({
        "user_id": user_ids.astype(np.int64),
        "item_id": item_ids.astype(np.int64),
        "session_id": session.astype(np.int64) + 1,
        "position": position.astype(np.int64),
        "timestamp": timestamp.astype(np.int64),
        "click": click.astype(np.int8),
        "watch_time": np.round(np.where(click, watch_ratio * duration, 0.0), 1),
        "like": engaged(-2.0).astype(np.int8),
        "follow": engaged(-3.5).astype(np.int8),
        "share": engaged(-3.0).astype(np.int8),
        "conversion": (click & (rng.random(len(session)) < p_conversion)).astype(np.int8),
        "p_click": p_click,
        "p_conversion": p_conversion,
    })
    bar.update()
    bar.close()
    return data

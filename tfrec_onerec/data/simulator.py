"""A seeded short-video recommendation simulator whose ground truth is known.

The world:

* **Items** belong to categories (of decreasing sizes). An item's latent vector lies near its
  category's centroid; its content embedding is a fixed random map of that latent vector
  plus noise (so items of a category have close content); it has a duration and a
  popularity (its true quality, a bias on every user's behaviour).
* **Users** have a latent interest (a mix of up to three category centroids, their
  *interest categories*, shifted a little by age bucket and gender), demographics, and a lifecycle stage (new, wander,
  stick, loyal) that sets how many and how long their sessions are and how engaged they
  are. Friendships are homophilous: each new friendship links a user to the most similar
  of ``friend_candidates`` random users. Beside friendship the social graph has more
  relation types (:data:`RELATIONS`: family, colleague, follow), each homophilous to a known
  degree: an edge of relation ``r`` links to the most similar candidate with probability
  ``relation_homophily[r]``, to a random one otherwise, so how much a relation's neighbours
  reveal of a user's interest is part of the ground truth.
* **Sessions**: each has an intent (the user's interest drifted by noise; with
  ``interest_period_sessions = P > 0``, the centroid of one interest category at a time,
  drifted by noise: the user's sessions ``0..P-1`` follow the first, ``P..2P-1`` the
  second, ``2P..3P-1`` the third, then the cycle repeats, so each interest recurs
  periodically and may lie far back in a long history) and a dominant
  category drawn by a softmax of the intent's affinity to the category centroids. A
  logging policy fills the slots: with probability ``exploration`` a uniformly random
  item, otherwise an item drawn by popularity from the dominant category (with
  probability ``session_focus``) or from a fresh draw of that softmax. Items may repeat.
* **Outcomes** of each exposure follow the funnel click -> (watch time, like, follow,
  share, conversion); nothing but the click is possible without a click.

With ``preference(u, i) = <interest_u, latent_i>`` (cosine: both are unit vectors),
``s_u`` the lifecycle stage's engagement bias (:data:`STAGE_BIAS`) and ``q_i`` the
item's popularity, the outcome probabilities are::

    p_click(u, i)      = sigmoid(click_scale * preference + popularity_scale * q_i
                                 + s_u + click_bias)
    p_conversion(u, i) = sigmoid(conversion_scale * preference
                                 + conversion_popularity_scale * q_i + s_u + conversion_bias)
                                                                       (given a click)
    p_like/follow/share = sigmoid(engagement_scale * preference + s_u + bias)  (given a click)
    watch_time = duration_i * max_watch_ratio
                 * sigmoid(watch_scale * preference + s_u + watch_bias + watch_noise * N(0, 1))

``p_click`` and ``p_conversion`` depend on (user, item) only, with no per-exposure noise:
:meth:`SimulatedData.true_click_probability` and
:meth:`SimulatedData.true_conversion_probability` recompute exactly the values the log was
drawn from. Everything is vectorized numpy (loops run over latent dimensions or
generation stages only) and determined by the seed; each generation stage draws from its
own random stream, so, e.g., changing the number of sessions leaves the users and items
unchanged.
"""
from __future__ import annotations

import contextlib
import dataclasses
import numbers

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

STAGES = ("new", "wander", "stick", "loyal")
"""Lifecycle stages; ``lifecycle_stage`` k (1-based) is ``STAGES[k - 1]``."""
STAGE_SHARES = np.array([0.3, 0.25, 0.25, 0.2])
"""(4,) share of users in each lifecycle stage."""
STAGE_ACTIVITY = np.array([0.5, 0.8, 1.2, 2.0]) / (STAGE_SHARES @ [0.5, 0.8, 1.2, 2.0])
"""(4,) multiplier of the expected number of sessions (averages 1 over users)."""
STAGE_SESSION_LENGTH = np.array([0.8, 0.95, 1.05, 1.25]) / (STAGE_SHARES @ [0.8, 0.95, 1.05, 1.25])
"""(4,) multiplier of the expected session length (averages 1 over users)."""
STAGE_BIAS = np.array([-0.3, -0.1, 0.1, 0.3])
"""(4,) engagement bias added to the click, conversion, like/follow/share and watch logits."""

RELATIONS = ("friend", "family", "colleague", "follow")
"""Relation types of the social graph; ``relation`` k (1-based) is ``RELATIONS[k - 1]``. Relation 1
is the friendship graph (``social_edges``)."""

EPOCH = 1_700_000_000
"""Unix time (seconds) before which no timestamp falls."""
_STREAMS = ("world", "social", "sessions", "exposures", "outcomes", "timing", "relations")
"""One random stream per generation stage (a stage added later goes last, leaving the others' draws unchanged)."""
ENGAGEMENT_BIAS = {"like": -2.0, "follow": -3.5, "share": -3.0}
"""Bias of the like, follow and share logits (given a click); see the module docstring."""


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
    """The simulated world's size and behaviour.

    Args:
        seed: determines everything (a non-negative integer).
        num_users, num_items, num_categories: sizes; ids are dense and 1-based.
        latent_dim: width of the true interest and item vectors.
        content_dim: width of the item content embeddings.
        sessions_per_user: mean number of sessions of a user (loyal users have more).
        session_length: mean exposures per session of a user (loyal users' are longer).
        friends_per_user: mean degree of the (undirected) social graph.
        friend_candidates: random users among whom each friendship picks the most similar.
        item_noise: size of an item's deviation from its category centroid.
        interest_noise: size of a user's deviation from their mix of centroids.
        demographic_strength: size of the interest shifts of age bucket and of gender.
        content_noise: size of the noise of the content embeddings.
        session_drift: size of a session intent's deviation from the user's interest.
            (Sizes are root-mean-square norms of Gaussian noise, relative to unit-norm
            vectors, so their meaning does not depend on the widths.)
        exploration: share of exposures the logging policy draws uniformly at random.
        policy_sharpness: how strongly the policy's category choice follows the intent.
        session_focus: share of non-random exposures from the session's dominant category.
        policy_popularity: how strongly the policy favours popular items in a category.
        click_scale, popularity_scale, click_bias: coefficients of the click logit.
        conversion_scale, conversion_popularity_scale, conversion_bias: coefficients of
            the conversion logit (given a click).
        engagement_scale: preference coefficient of the like, follow and share logits.
        watch_scale, watch_bias, watch_noise: the watch ratio's logit and its noise.
        max_watch_ratio: watch time is below this multiple of the duration (replays).
        mean_gap_hours: mean time between a session's end and the user's next session.
        relation_homophily: for relations 2.. of :data:`RELATIONS` (family, colleague,
            follow), the probability that an edge links to the most similar of
            ``friend_candidates`` random users rather than to a random one. Default (0.9, 0.5, 0.0).
        relation_degree: mean degree of each of those relations' (undirected) graphs, before
            duplicate links are dropped (a small world has fewer). Default 4.
        interest_period_sessions: 0 (default): every session's intent drifts around the
            user's interest. ``P > 0``: sessions follow one interest category at a time, for
            ``P`` sessions each, in a cycle over the user's three interest categories
            (module docstring); what users *like* (the outcome model) is unchanged.
    """

    seed: int = 0
    num_users: int = 2000
    num_items: int = 1000
    num_categories: int = 20
    latent_dim: int = 16
    content_dim: int = 32
    sessions_per_user: float = 8.0
    session_length: float = 6.0
    friends_per_user: int = 10
    friend_candidates: int = 30
    item_noise: float = 0.8
    interest_noise: float = 0.6
    demographic_strength: float = 0.2
    content_noise: float = 0.3
    session_drift: float = 0.6
    exploration: float = 0.3
    policy_sharpness: float = 4.0
    session_focus: float = 0.6
    policy_popularity: float = 0.5
    click_scale: float = 3.0
    popularity_scale: float = 0.5
    click_bias: float = -2.0
    conversion_scale: float = 2.0
    conversion_popularity_scale: float = 0.5
    conversion_bias: float = -2.5
    engagement_scale: float = 2.5
    watch_scale: float = 2.0
    watch_bias: float = -1.0
    watch_noise: float = 0.5
    max_watch_ratio: float = 2.0
    mean_gap_hours: float = 20.0
    interest_period_sessions: int = 0
    relation_homophily: tuple = (0.9, 0.5, 0.0)
    relation_degree: int = 4

    def __post_init__(self):
        for name, low in _INTEGER_MINIMUMS.items():
            value = getattr(self, name)
            _require(name, value, _is_integer(value) and value >= low, f"an integer >= {low}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type == "float":
                _require(field.name, value, _is_real(value) and np.isfinite(value), "a finite number")
        for name in ("sessions_per_user", "max_watch_ratio"):
            _require(name, getattr(self, name), getattr(self, name) > 0, "> 0")
        for name in _NON_NEGATIVE:
            _require(name, getattr(self, name), getattr(self, name) >= 0, ">= 0")
        for name in ("exploration", "session_focus"):
            _require(name, getattr(self, name), 0 <= getattr(self, name) <= 1, "in [0, 1]")
        _require("session_length", self.session_length, self.session_length >= 1, ">= 1")
        _require("num_categories", self.num_categories, self.num_categories <= self.num_items,
                 f"at most num_items ({self.num_items})")
        _require("friends_per_user", self.friends_per_user, self.friends_per_user < self.num_users,
                 f"below num_users ({self.num_users})")
        homophily = self.relation_homophily
        _require("relation_homophily", homophily, isinstance(homophily, tuple) and len(homophily) == len(RELATIONS) - 1
                 and all(_is_real(h) and 0 <= h <= 1 for h in homophily),
                 f"a tuple of {len(RELATIONS) - 1} numbers in [0, 1] (one per relation after friendship)")


_INTEGER_MINIMUMS = {"seed": 0, "num_users": 2, "num_items": 1, "num_categories": 1, "latent_dim": 1,
                     "content_dim": 1, "friends_per_user": 0, "friend_candidates": 1,
                     "interest_period_sessions": 0, "relation_degree": 0}
_NON_NEGATIVE = ("item_noise", "interest_noise", "demographic_strength", "content_noise", "session_drift",
                 "policy_sharpness", "policy_popularity", "watch_noise", "mean_gap_hours")


def session_world(num_users: int = 3000, num_items: int = 400, seed: int = 0) -> SimulatorConfig:
    """The world the session models (OneRec, its reward model, SASRec) train on from the CLI:
    `num_users` x `num_items` with at most 16 categories, every other setting default."""
    return SimulatorConfig(seed=seed, num_users=num_users, num_items=num_items,
                           num_categories=min(16, num_items))


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _require(name: str, value, ok: bool, requirement: str) -> None:
    """Raises ``ValueError("SimulatorConfig.<name> must be <requirement>, got <value>.")`` unless ok."""
    if not ok:
        raise ValueError(f"SimulatorConfig.{name} must be {requirement}, got {value!r}.")


@dataclasses.dataclass(frozen=True, eq=False)
class SimulatedData:
    """What :func:`simulate` returns: the log, the world, and its ground truth.

    ``U``, ``I``, ``C``, ``n``: numbers of users, items, categories and exposures. Row
    ``k - 1`` of a per-user (per-item) array belongs to user (item) id ``k``.

    Attributes:
        config: the configuration it was made with.
        users: U rows: ``user_id`` (int64, 1..U), ``age_bucket`` (1..7), ``gender`` (1..2),
            ``lifecycle_stage`` (1..4 = :data:`STAGES`), ``activity`` (float, relative
            session rate; averages about 1).
        items: I rows: ``item_id`` (int64, 1..I), ``category`` (1..C), ``duration``
            (seconds, float), ``popularity`` (float, the true quality).
        item_content: (I, content_dim) float32 content embeddings.
        social_edges: ``src``, ``dst`` user ids; each undirected friendship is stored once,
            with ``src < dst``, rows sorted.
        interactions: n rows, one per exposure, sorted by (``user_id``, ``timestamp``), with
            timestamps strictly increasing within a user: ``user_id``, ``item_id``,
            ``session_id`` (1-based, global, in log order), ``position`` (0-based slot in
            the session), ``timestamp`` (int64 Unix seconds), ``click``, ``watch_time``
            (seconds; 0 without a click, below ``max_watch_ratio * duration``), ``like``,
            ``follow``, ``share``, ``conversion`` (int8 0/1; only after a click), and the
            true ``p_click`` and ``p_conversion`` (given a click) they were drawn from.
        user_interest: (U, latent_dim) float64 unit-norm true interests.
        item_latent: (I, latent_dim) float64 unit-norm true item vectors.
        interest_categories: (U, 3) int64 the categories (1..C) whose centroids each user's
            interest mixes, in the order of their weights' draw (the order the periodic
            sessions cycle through); a category may repeat.
        social_relations: the multi-relation social graph: ``src < dst`` user ids and
            ``relation`` (1..4 = :data:`RELATIONS`; relation 1 holds exactly the friendships
            of ``social_edges``), sorted by relation; each relation's homophily is the
            config's (friendship: always the most similar candidate).
    """

    config: SimulatorConfig
    users: pd.DataFrame
    items: pd.DataFrame
    item_content: np.ndarray
    social_edges: pd.DataFrame
    interactions: pd.DataFrame
    user_interest: np.ndarray
    item_latent: np.ndarray
    interest_categories: np.ndarray | None = None
    social_relations: pd.DataFrame | None = None

    @property
    def num_interactions(self) -> int:
        """Number of logged exposures (rows of ``interactions``)."""
        return len(self.interactions)

    def true_preference(self, user_ids, item_ids) -> np.ndarray:
        """True affinities ``<interest_u, latent_i>`` (in [-1, 1]) that drive behaviour.

        Args:
            user_ids: (n,) user ids in 1..U (any array-like; broadcast against item_ids).
            item_ids: (n,) item ids in 1..I.

        Returns:
            (n,) float64 preferences.

        Raises:
            ValueError: an id is out of range (0 is padding, not a user or item).
        """
        return self._drivers(user_ids, item_ids)[0]

    def true_click_probability(self, user_ids, item_ids) -> np.ndarray:
        """(n,) probabilities of a click: exactly the log's ``p_click`` for its pairs.

        Args:
            user_ids: (n,) user ids in 1..U.
            item_ids: (n,) item ids in 1..I.
        """
        return _click_probability(self.config, *self._drivers(user_ids, item_ids))

    def true_conversion_probability(self, user_ids, item_ids) -> np.ndarray:
        """(n,) probabilities of a conversion given a click: exactly the log's ``p_conversion``.

        Args:
            user_ids: (n,) user ids in 1..U.
            item_ids: (n,) item ids in 1..I.
        """
        return _conversion_probability(self.config, *self._drivers(user_ids, item_ids))

    def respond(self, user_ids, item_ids, rng: np.random.Generator) -> dict:
        """Draws the funnel's outcomes of exposing each user to an item (the log's model).

        Args:
            user_ids: (n,) user ids in 1..U. item_ids: (n,) item ids in 1..I.
            rng: the random stream the outcomes are drawn from.

        Returns:
            ``{column: (n,) array}``: int8 ``click``, ``like``, ``follow``, ``share``,
            ``conversion``, float64 ``watch_time`` (0 without a click), and the true
            ``p_click`` and ``p_conversion`` (given a click) they were drawn from.
        """
        preference, popularity, stage_bias = self._drivers(user_ids, item_ids)
        p_click = _click_probability(self.config, preference, popularity, stage_bias)
        p_conversion = _conversion_probability(self.config, preference, popularity, stage_bias)
        duration = self.items["duration"].to_numpy()[_to_index(item_ids, len(self.items), "item_ids")]
        outcomes = _draw_outcomes(self.config, rng, preference, stage_bias, duration, p_click, p_conversion)
        return {**outcomes, "p_click": p_click, "p_conversion": p_conversion}

    def watch_logit(self, user_ids, item_ids) -> np.ndarray:
        """(n,) the watch ratio's logit before its noise: ``watch_time = duration *
        max_watch_ratio * sigmoid(watch_logit + watch_noise * N(0, 1))`` after a click."""
        preference, _, stage_bias = self._drivers(user_ids, item_ids)
        return self.config.watch_scale * preference + stage_bias + self.config.watch_bias

    def _drivers(self, user_ids, item_ids):
        """(preference, popularity, stage bias) of (user, item) pairs, each (n,)."""
        users = _to_index(user_ids, len(self.users), "user_ids")
        items = _to_index(item_ids, len(self.items), "item_ids")
        preference = _paired_dot(self.user_interest, users, self.item_latent, items)
        popularity = self.items["popularity"].to_numpy()[items]
        stage = self.users["lifecycle_stage"].to_numpy()[users]
        return preference, popularity, STAGE_BIAS[stage - 1]


def _to_index(ids, size: int, name: str) -> np.ndarray:
    """0-based row indices of 1-based ids; a ValueError if any id is outside 1..size."""
    ids = np.asarray(ids)
    if ids.size and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 1 or ids.max() > size):
        raise ValueError(f"{name} must be integers in 1..{size}, got values in [{ids.min()}, {ids.max()}] "
                         f"of dtype {ids.dtype}.")
    return ids.astype(np.int64) - 1


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Elementwise logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows of x (..., d) scaled to unit norm."""
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _noise(rng: np.random.Generator, norm: float, shape: tuple) -> np.ndarray:
    """Gaussian rows of the given shape (..., d) whose expected squared norm is ``norm ** 2``."""
    return norm / np.sqrt(shape[-1]) * rng.normal(size=shape)


def _paired_dot(a: np.ndarray, a_index: np.ndarray, b: np.ndarray, b_index: np.ndarray) -> np.ndarray:
    """``sum_k a[a_index, k] * b[b_index, k]`` for broadcastable index arrays.

    Loops over the d columns so that no (n, d) gather is materialized: memory stays
    O(n) for millions of pairs.

    Args:
        a: (A, d) rows; b: (B, d) rows.
        a_index, b_index: integer arrays of broadcastable shapes, 0-based rows of a and b.

    Returns:
        float64 array of the broadcast shape.
    """
    out = np.zeros(np.broadcast_shapes(np.shape(a_index), np.shape(b_index)))
    for a_column, b_column in zip(np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)):
        out += a_column[a_index] * b_column[b_index]
    return out


def _click_probability(c: SimulatorConfig, preference, popularity, stage_bias) -> np.ndarray:
    """(n,) p_click from (n,) preference, item popularity and stage bias."""
    return _sigmoid(c.click_scale * preference + c.popularity_scale * popularity + stage_bias + c.click_bias)


def _conversion_probability(c: SimulatorConfig, preference, popularity, stage_bias) -> np.ndarray:
    """(n,) p_conversion given a click from (n,) preference, item popularity and stage bias."""
    return _sigmoid(c.conversion_scale * preference + c.conversion_popularity_scale * popularity + stage_bias
                    + c.conversion_bias)


def _sample_in_groups(weights: np.ndarray, sizes: np.ndarray, group: np.ndarray,
                      uniform: np.ndarray) -> np.ndarray:
    """Draws, for each request, an element of one group with probability proportional to its weight.

    Inverse-CDF sampling for all groups at once: each group's normalized CDF is shifted by
    its group number so that one sorted array serves every request (no (n, group size)
    matrix is built).

    Args:
        weights: (N,) non-negative weights laid out group after group.
        sizes: (G,) group sizes (each >= 1, with a positive total weight), summing to N.
        group: (n,) 0-based group of each request.
        uniform: (n,) uniform [0, 1) draws.

    Returns:
        (n,) int64 indices into weights, each inside its request's group.
    """
    ends = np.cumsum(sizes)
    group_of = np.repeat(np.arange(len(sizes)), sizes)
    cumulative = np.cumsum(weights)
    before = np.concatenate([[0.0], cumulative])[ends - sizes]
    shifted = (cumulative - before[group_of]) / (cumulative[ends - 1] - before)[group_of] + group_of
    shifted[ends - 1] = np.arange(1, len(sizes) + 1)  # each group's CDF ends at exactly 1
    index = np.searchsorted(shifted, group + uniform, side="right")
    return np.minimum(index, ends[group] - 1)


def _make_items(c: SimulatorConfig, rng: np.random.Generator, centroids: np.ndarray):
    """Items: categories (sizes decreasing as 1/sqrt(rank)), latent vectors, content, duration.

    Args:
        centroids: (C, latent_dim) unit category centroids.

    Returns:
        (items frame, (I, latent_dim) latent vectors, (I, content_dim) float32 content).
    """
    weights = 1.0 / np.sqrt(np.arange(1, c.num_categories + 1))
    category = np.r_[rng.permutation(c.num_categories),  # every category has an item
                     rng.choice(c.num_categories, c.num_items - c.num_categories, p=weights / weights.sum())]
    category = rng.permutation(category)
    latent = _unit(centroids[category] + _noise(rng, c.item_noise, (c.num_items, c.latent_dim)))
    # A random near-isometry from latent to content space keeps the category structure.
    projection = rng.normal(size=(c.latent_dim, c.content_dim)) / np.sqrt(c.content_dim)
    content = latent @ projection + _noise(rng, c.content_noise, (c.num_items, c.content_dim))
    median_duration = np.exp(rng.normal(np.log(30.0), 0.5, c.num_categories))
    duration = np.clip(median_duration[category] * np.exp(rng.normal(0.0, 0.6, c.num_items)), 3.0, 600.0)
    items = pd.DataFrame({
        "item_id": np.arange(1, c.num_items + 1, dtype=np.int64),
        "category": category.astype(np.int64) + 1,
        "duration": np.round(duration, 1),
        "popularity": rng.normal(0.0, 1.0, c.num_items),
    })
    return items, latent, content.astype(np.float32)


def _make_users(c: SimulatorConfig, rng: np.random.Generator, centroids: np.ndarray):
    """Users: demographics, lifecycle stage, activity, and interests mixing up to three categories.

    Args:
        centroids: (C, latent_dim) unit category centroids.

    Returns:
        (users frame, (U, latent_dim) unit interests, (U, 3) 0-based interest categories).
    """
    age = rng.integers(1, 8, c.num_users)
    gender = rng.integers(1, 3, c.num_users)
    stage = rng.choice(len(STAGES), c.num_users, p=STAGE_SHARES) + 1
    picks = rng.integers(0, c.num_categories, (c.num_users, 3))
    mix = rng.dirichlet([2.0, 1.0, 0.5], c.num_users)
    age_shift = _noise(rng, 1.0, (7, c.latent_dim))
    gender_shift = _noise(rng, 1.0, (2, c.latent_dim))
    interest = _unit(np.einsum("uk,ukd->ud", mix, centroids[picks])
                     + c.demographic_strength * (age_shift[age - 1] + gender_shift[gender - 1])
                     + _noise(rng, c.interest_noise, (c.num_users, c.latent_dim)))
    users = pd.DataFrame({
        "user_id": np.arange(1, c.num_users + 1, dtype=np.int64),
        "age_bucket": age.astype(np.int64),
        "gender": gender.astype(np.int64),
        "lifecycle_stage": stage.astype(np.int64),
        "activity": STAGE_ACTIVITY[stage - 1] * rng.gamma(4.0, 0.25, c.num_users),
    })
    return users, interest, picks


def _make_social_graph(c: SimulatorConfig, rng: np.random.Generator, interest: np.ndarray) -> pd.DataFrame:
    """Homophilous friendships: ``U * friends_per_user / 2`` times, a random user befriends
    the most similar (plus a little noise) of ``friend_candidates`` random users.

    Args:
        interest: (U, latent_dim) unit interests.

    Returns:
        Frame of ``src < dst`` user ids, one row per friendship, sorted (duplicates and
        self-pairs are dropped, so the mean degree is slightly below ``friends_per_user``).
    """
    pairs = _homophilous_pairs(c, rng, interest, round(c.num_users * c.friends_per_user / 2))
    return pd.DataFrame({"src": pairs[:, 0], "dst": pairs[:, 1]})


def _homophilous_pairs(c: SimulatorConfig, rng: np.random.Generator, interest: np.ndarray, num_edges: int,
                       homophily: float | None = None) -> np.ndarray:
    """(E, 2) sorted unique ``src < dst`` 1-based user pairs: each of `num_edges` draws links a
    random user to the most similar (plus a little noise) of ``friend_candidates`` random users,
    or, with probability ``1 - homophily`` (None: never, and nothing more is drawn), to one of
    them at random."""
    src = rng.integers(0, c.num_users, num_edges)
    candidates = rng.integers(0, c.num_users, (num_edges, c.friend_candidates))
    similarity = _paired_dot(interest, src[:, None], interest, candidates)
    similarity += 0.1 * rng.normal(size=similarity.shape)
    similarity[candidates == src[:, None]] = -np.inf
    pick = similarity.argmax(axis=1)
    if homophily is not None:
        pick = np.where(rng.random(num_edges) < homophily, pick, rng.integers(0, c.friend_candidates, num_edges))
    dst = np.take_along_axis(candidates, pick[:, None], axis=1)[:, 0]
    pairs = np.unique(np.stack([np.minimum(src, dst), np.maximum(src, dst)], axis=1), axis=0)
    return pairs[pairs[:, 0] != pairs[:, 1]].astype(np.int64) + 1


def _make_relations(c: SimulatorConfig, rng: np.random.Generator, interest: np.ndarray,
                    friendships: pd.DataFrame) -> pd.DataFrame:
    """The multi-relation social graph: the friendships as relation 1, then for each further
    relation ``r`` of :data:`RELATIONS` ``U * relation_degree / 2`` edge draws of homophily
    ``relation_homophily[r - 2]``.

    Returns:
        Frame of ``src < dst`` user ids and ``relation`` (1..len(RELATIONS)), sorted by
        (relation, src, dst); a pair may be linked by several relations.
    """
    frames = [friendships.assign(relation=np.int64(1))]
    for relation, homophily in enumerate(c.relation_homophily, start=2):
        pairs = _homophilous_pairs(c, rng, interest, round(c.num_users * c.relation_degree / 2), homophily)
        frames.append(pd.DataFrame({"src": pairs[:, 0], "dst": pairs[:, 1], "relation": np.int64(relation)}))
    return pd.concat(frames, ignore_index=True)[["src", "dst", "relation"]]


def _make_sessions(c: SimulatorConfig, rng: np.random.Generator, users: pd.DataFrame, interest: np.ndarray,
                   centroids: np.ndarray, picks: np.ndarray):
    """Sessions: how many per user (by activity), their lengths (by stage) and intents.

    Args:
        users: the users frame.
        interest: (U, latent_dim) unit interests.
        centroids: (C, latent_dim) unit category centroids.
        picks: (U, 3) 0-based interest categories (periodic sessions cycle through them).

    Returns:
        (session_user (S,) 0-based users, sorted; lengths (S,) exposures per session;
        intent (S, latent_dim) unit drifted interests).
    """
    expected = c.sessions_per_user * users["activity"].to_numpy()
    counts = 1 + rng.poisson(np.maximum(expected - 1.0, 0.0))
    session_user = np.repeat(np.arange(c.num_users), counts)
    stage = users["lifecycle_stage"].to_numpy()[session_user]
    mean_length = c.session_length * STAGE_SESSION_LENGTH[stage - 1]
    lengths = 1 + rng.poisson(np.maximum(mean_length - 1.0, 0.0))
    focus = interest[session_user]
    if c.interest_period_sessions:
        rank = np.arange(len(session_user)) - np.repeat(np.cumsum(counts) - counts, counts)  # within the user
        focus = centroids[picks[session_user, (rank // c.interest_period_sessions) % picks.shape[1]]]
    intent = _unit(focus + _noise(rng, c.session_drift, (len(session_user), c.latent_dim)))
    return session_user, lengths, intent


def _expose(c: SimulatorConfig, rng: np.random.Generator, items: pd.DataFrame, centroids: np.ndarray,
            intent: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The logging policy: which item fills each slot of each session.

    A slot gets a uniformly random item with probability ``exploration``; otherwise an
    item of its category drawn with weight ``exp(policy_popularity * popularity)``, where
    the category is the session's dominant one (probability ``session_focus``) or a
    fresh draw; dominant and fresh categories follow
    ``softmax(policy_sharpness * <intent, centroid>)``.

    Args:
        items: the items frame.
        centroids: (C, latent_dim) unit category centroids.
        intent: (S, latent_dim) session intents.
        lengths: (S,) slots per session.

    Returns:
        (n,) 0-based items, session after session, n = lengths.sum().
    """
    n, num_sessions = int(lengths.sum()), len(lengths)
    session = np.repeat(np.arange(num_sessions), lengths)
    affinity = c.policy_sharpness * (intent @ centroids.T)  # (S, C)
    category_weights = np.exp(affinity - affinity.max(axis=1, keepdims=True))
    requests = np.r_[np.arange(num_sessions), session]  # one dominant draw per session, one per slot
    drawn = _sample_in_groups(category_weights.ravel(), np.full(num_sessions, c.num_categories), requests,
                              rng.random(num_sessions + n)) - requests * c.num_categories
    dominant, fresh = drawn[:num_sessions], drawn[num_sessions:]
    category = np.where(rng.random(n) < c.session_focus, dominant[session], fresh)

    item_category = items["category"].to_numpy() - 1
    by_category = np.argsort(item_category, kind="stable")  # items grouped by category
    sizes = np.bincount(item_category, minlength=c.num_categories)
    popularity = items["popularity"].to_numpy()[by_category]
    category_top = np.repeat(np.maximum.reduceat(popularity, np.cumsum(sizes) - sizes), sizes)
    item_weights = np.exp(c.policy_popularity * (popularity - category_top))  # each category's top weighs 1
    targeted = by_category[_sample_in_groups(item_weights, sizes, category, rng.random(n))]
    explore = rng.random(n) < c.exploration
    return np.where(explore, rng.integers(0, c.num_items, n), targeted)


def _draw_outcomes(c: SimulatorConfig, rng: np.random.Generator, preference: np.ndarray, stage_bias: np.ndarray,
                   duration: np.ndarray, p_click: np.ndarray, p_conversion: np.ndarray) -> dict:
    """The funnel of each exposure: click, then watch time, like, follow, share, conversion.

    Args:
        preference, stage_bias, duration, p_click, p_conversion: (n,) per exposure.

    Returns:
        ``{column: (n,) array}``: int8 ``click``, ``like``, ``follow``, ``share``,
        ``conversion`` and float64 ``watch_time`` (0 without a click).
    """
    n = len(preference)
    click = rng.random(n) < p_click
    ratio = c.max_watch_ratio * _sigmoid(c.watch_scale * preference + stage_bias + c.watch_bias
                                         + c.watch_noise * rng.normal(size=n))
    watch_time = np.where(click, ratio * duration, 0.0)
    outcomes = {"click": click.astype(np.int8), "watch_time": watch_time}
    for name, bias in ENGAGEMENT_BIAS.items():
        p = _sigmoid(c.engagement_scale * preference + stage_bias + bias)
        outcomes[name] = (click & (rng.random(n) < p)).astype(np.int8)
    outcomes["conversion"] = (click & (rng.random(n) < p_conversion)).astype(np.int8)
    return outcomes


def _timestamps(c: SimulatorConfig, rng: np.random.Generator, session_user: np.ndarray, lengths: np.ndarray,
                watch_time: np.ndarray) -> np.ndarray:
    """Exposure times: a session's exposures follow each other (a swipe of 1-5 s plus the
    watch time); a user's next session starts an exponential gap after the previous ends.

    Args:
        session_user: (S,) sorted 0-based users of the sessions.
        lengths: (S,) exposures per session.
        watch_time: (n,) seconds watched per exposure, session after session.

    Returns:
        (n,) int64 Unix seconds, strictly increasing within each user.
    """
    dwell = np.ceil(watch_time).astype(np.int64) + rng.integers(1, 6, len(watch_time))
    offset = _cumsum_in_groups(dwell, lengths, exclusive=True)  # since the session's start
    busy = np.add.reduceat(dwell, np.cumsum(lengths) - lengths)  # (S,) session durations
    gap = np.ceil(rng.exponential(3600.0 * c.mean_gap_hours, len(lengths))).astype(np.int64) + 1
    new_user = np.r_[True, session_user[1:] != session_user[:-1]]
    first_start = rng.integers(0, 30 * 86_400, c.num_users)[session_user]
    since_previous = np.where(new_user, first_start, np.r_[0, busy[:-1]] + gap)
    start = _cumsum_in_groups(since_previous, np.bincount(session_user, minlength=c.num_users))
    return EPOCH + np.repeat(start, lengths) + offset


def _cumsum_in_groups(values: np.ndarray, sizes: np.ndarray, exclusive: bool = False) -> np.ndarray:
    """Cumulative sums that restart at each group of consecutive elements.

    Args:
        values: (N,) integers laid out group after group.
        sizes: (G,) group sizes, summing to N.
        exclusive: sum the elements before each element only.

    Returns:
        (N,) sums since the start of each element's group.
    """
    inclusive = np.cumsum(values)
    before = inclusive - values
    since = before if exclusive else inclusive
    return since - np.repeat(before[np.cumsum(sizes) - sizes], sizes)


@contextlib.contextmanager
def _stage(bar: tqdm, name: str):
    """Names the running generation stage on the progress bar and counts it when done."""
    bar.set_postfix_str(name)
    yield
    bar.update()


def simulate(config: SimulatorConfig | None = None, progress: bool = False) -> SimulatedData:
    """Generates a world and its exposure log (see the module docstring).

    Args:
        config: the :class:`SimulatorConfig` (default: 2,000 users, 1,000 items, about
            100,000 exposures).
        progress: show a progress bar over the generation stages.

    Returns:
        A :class:`SimulatedData`; the same config gives identical data.
    """
    c = config or SimulatorConfig()
    rngs = dict(zip(_STREAMS, map(np.random.default_rng, np.random.SeedSequence(c.seed).spawn(len(_STREAMS)))))
    with tqdm(total=5, desc="simulator", disable=not progress) as bar:
        with _stage(bar, "users and items"):
            centroids = _unit(rngs["world"].normal(size=(c.num_categories, c.latent_dim)))
            items, item_latent, item_content = _make_items(c, rngs["world"], centroids)
            users, interest, picks = _make_users(c, rngs["world"], centroids)
        with _stage(bar, "social graph"):
            edges = _make_social_graph(c, rngs["social"], interest)
            relations = _make_relations(c, rngs["relations"], interest, edges)
        with _stage(bar, "exposures"):
            session_user, lengths, intent = _make_sessions(c, rngs["sessions"], users, interest, centroids, picks)
            item_index = _expose(c, rngs["exposures"], items, centroids, intent, lengths)
            user_index = np.repeat(session_user, lengths)
        with _stage(bar, "outcomes"):
            world = SimulatedData(c, users, items, item_content, edges, None, interest, item_latent, picks + 1,
                                  relations)
            outcomes = world.respond(user_index + 1, item_index + 1, rngs["outcomes"])
        with _stage(bar, "log"):
            interactions = _log_frame(c, rngs["timing"], session_user, lengths, item_index, outcomes)
    return dataclasses.replace(world, interactions=interactions)


def _log_frame(c: SimulatorConfig, rng: np.random.Generator, session_user: np.ndarray, lengths: np.ndarray,
               item_index: np.ndarray, outcomes: dict) -> pd.DataFrame:
    """The interactions frame (columns of :class:`SimulatedData`), already in (user, time) order.

    Args:
        session_user: (S,) sorted 0-based users of the sessions.
        lengths: (S,) exposures per session.
        item_index: (n,) 0-based exposed items, session after session.
        outcomes: ``{column: (n,) array}`` of :meth:`SimulatedData.respond` (outcomes and the
            true ``p_click``, ``p_conversion``).
    """
    session_first = np.cumsum(lengths) - lengths
    return pd.DataFrame({
        "user_id": np.repeat(session_user, lengths).astype(np.int64) + 1,
        "item_id": item_index.astype(np.int64) + 1,
        "session_id": np.repeat(np.arange(1, len(lengths) + 1, dtype=np.int64), lengths),
        "position": np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(session_first, lengths),
        "timestamp": _timestamps(c, rng, session_user, lengths, outcomes["watch_time"]),
        **{name: outcomes[name] for name in ("click", "watch_time", "like", "follow", "share", "conversion")},
        "p_click": outcomes["p_click"],
        "p_conversion": outcomes["p_conversion"],
    })

"""Ranking requests of the short-video simulator, as the ensemble-ranking stage sees them (EMER).

One row per request: a user and the ``N`` candidates that reached the last ranking stage,
each with the predictions of an upstream multi-task ranker ("pxtrs"), the ``K`` of them the
logging policy showed, and the feedback on those. Built from a
:class:`~tfrec_onerec.data.simulator.SimulatedData` world:

* **candidates**: ``N`` distinct items per request, drawn (without replacement) with
  probability ``retrieval_mix * softmax(retrieval_sharpness * preference(u, i)) + (1 -
  retrieval_mix) / I``: mostly items the user likes, as a retrieval stage returns, plus
  some from anywhere;
* **pxtrs**: for each objective ``x`` of :data:`OBJECTIVES` (the simulator's expected click,
  watch ratio, long view, follow and like of :func:`~tfrec_onerec.data.simulator_truth.
  true_item_outcomes`), an upstream model's estimate: ``sigmoid(logit(truth) + b_x +
  prediction_noise * e)``, ``e ~ N(0, 1)`` per candidate and objective, with a per-objective
  miscalibration ``b_x ~ N(0, 0.5)`` fixed for the data set (no ranker is handed the truth);
* **exposure**: the logging policy shows the ``K`` candidates of highest ``sum_x
  rank_x / P + Gumbel noise * exposure_temperature``, ``rank_x`` the candidate's normalised
  rank by pxtr ``x`` within the request (best 0);
* **feedback** on each shown candidate, drawn by the simulator
  (:meth:`~tfrec_onerec.data.simulator.SimulatedData.respond`): click, long view (watch
  time at least the duration), like and follow; the candidate's **grade** is how many of
  the four it got (0 to 4; 0 for candidates not shown).

Requests are per user in time order: the first ``train_requests`` of every user train, the
next one validates, the last one tests. The truth (each candidate's expected outcomes)
is not stored: evaluation re-simulates the world from the metadata and reads it, so no
model can train on it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tfrec_onerec.data.simulator import SimulatedData
from tfrec_onerec.data.simulator_truth import true_item_outcomes
from tfrec_onerec.features import Feature, FeatureSpec

USER_FEATURE = "user_id"
CANDIDATES = "candidate_ids"
EXPOSED = "exposed"
GRADE = "grade"
OBJECTIVES = ("ctr", "swt", "vtr", "wtr", "ltr")
"""The upstream model's objectives: click, watch ratio, long view, follow, like."""
FEEDBACK = ("click", "long_view", "like", "follow")
"""The positive feedbacks a shown candidate's grade counts."""


def pxtr_feature(objective: str) -> str:
    """The feature holding the upstream model's prediction of `objective` for each candidate."""
    return f"p_{objective}"


PXTR_FEATURES = tuple(pxtr_feature(x) for x in OBJECTIVES)


@dataclasses.dataclass(frozen=True)
class RequestConfig:
    """How requests are drawn from a simulated world (module docstring).

    Args:
        candidates: ``N``, candidates per request. Default 20.
        exposed: ``K``, candidates the logging policy shows. Default 6.
        requests_per_user: requests of every user; the last two validate and test. Default 6.
        retrieval_mix: the share of candidate draws that follow the user's preference. Default 0.7.
        retrieval_sharpness: the softmax's inverse temperature on the true preference. Default 2.
        prediction_noise: the upstream model's noise in logit space. Default 0.5.
        exposure_temperature: the logging policy's Gumbel noise scale on the mean rank. Default 0.1.
        seed: the random seed of requests, predictions and feedback.
    """

    candidates: int = 20
    exposed: int = 6
    requests_per_user: int = 6
    retrieval_mix: float = 0.7
    retrieval_sharpness: float = 2.0
    prediction_noise: float = 0.5
    exposure_temperature: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if not 2 <= self.exposed <= self.candidates:
            raise ValueError(f"RequestConfig: exposed must be in 2..candidates ({self.candidates}), "
                             f"got {self.exposed}.")
        if self.requests_per_user < 3:
            raise ValueError(f"RequestConfig: requests_per_user must be >= 3 (train, valid, test), "
                             f"got {self.requests_per_user}.")
        if not 0.0 <= self.retrieval_mix <= 1.0:
            raise ValueError(f"RequestConfig: retrieval_mix must be in [0, 1], got {self.retrieval_mix}.")


def request_spec(num_users: int, num_items: int, config: RequestConfig) -> FeatureSpec:
    """The spec of request rows (the module docstring)."""
    n = config.candidates
    return FeatureSpec([
        Feature(USER_FEATURE, "categorical", vocab_size=num_users, embedding_dim=16, group="user",
                description="the user"),
        Feature(CANDIDATES, "sequence", vocab_size=num_items, max_len=n, vocab="item", embedding_dim=16,
                group="item", description="the request's candidates (0: no candidate)"),
        *[Feature(pxtr_feature(x), "numeric", dim=n, group="item",
                  description=f"the upstream model's predicted {x} of each candidate") for x in OBJECTIVES],
        Feature(EXPOSED, "numeric", dim=n, group="target",
                description="1 where the logging policy showed the candidate"),
        Feature(GRADE, "numeric", dim=n, group="target",
                description="positive feedbacks (click, long view, like, follow) a shown candidate got"),
    ])


def normalized_ranks(values: np.ndarray) -> np.ndarray:
    """(..., N) each entry's rank within its row by value, best (highest) 0, divided by N;
    ties broken by position (numpy twin of :func:`tfrec_onerec.models.kuaishou.emer.normalized_ranks`)."""
    order = np.argsort(-values, axis=-1, kind="stable")
    return np.argsort(order, axis=-1, kind="stable") / values.shape[-1]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def draw_requests(world: SimulatedData, user_ids: np.ndarray, config: RequestConfig,
                  rng: np.random.Generator, bias: np.ndarray) -> dict:
    """Rows of one request per entry of `user_ids` (module docstring): ``{feature: array}``."""
    num_items = len(world.items)
    all_items = np.arange(1, num_items + 1)
    candidates = np.empty((len(user_ids), config.candidates), np.int64)
    for row, user in enumerate(user_ids):
        preference = world.true_preference(np.full(num_items, user), all_items)
        weights = np.exp(config.retrieval_sharpness * (preference - preference.max()))
        p = config.retrieval_mix * weights / weights.sum() + (1 - config.retrieval_mix) / num_items
        candidates[row] = rng.choice(all_items, config.candidates, replace=False, p=p / p.sum())
    users = np.repeat(user_ids[:, None], config.candidates, axis=1)
    truth = true_item_outcomes(world, users, candidates)
    noise = rng.standard_normal((len(OBJECTIVES),) + candidates.shape)
    pxtrs = {x: 1 / (1 + np.exp(-(_logit(truth[x]) + bias[k] + config.prediction_noise * noise[k])))
             for k, x in enumerate(OBJECTIVES)}
    mean_rank = np.mean([normalized_ranks(pxtrs[x]) for x in OBJECTIVES], axis=0)
    gumbel = -np.log(-np.log(rng.uniform(1e-12, 1.0, candidates.shape)))
    shown = np.argsort(mean_rank - config.exposure_temperature * gumbel, axis=1, kind="stable")[:, :config.exposed]
    exposed = np.zeros(candidates.shape, np.float32)
    np.put_along_axis(exposed, shown, 1.0, axis=1)
    rows, cols = np.nonzero(exposed)
    feedback = world.respond(users[rows, cols], candidates[rows, cols], rng)
    duration = world.items["duration"].to_numpy()[candidates[rows, cols] - 1]
    counts = (feedback["click"].astype(np.float32) + (feedback["watch_time"] >= duration)
              + feedback["like"] + feedback["follow"])
    grade = np.zeros(candidates.shape, np.float32)
    grade[rows, cols] = counts
    return {USER_FEATURE: user_ids.astype(np.int64), CANDIDATES: candidates,
            **{pxtr_feature(x): pxtrs[x].astype(np.float32) for x in OBJECTIVES},
            EXPOSED: exposed, GRADE: grade}


def build_requests(world: SimulatedData, config: RequestConfig | None = None):
    """``(spec, {split: rows}, metadata)`` of the requests of every user (module docstring)."""
    config = config or RequestConfig()
    rng = np.random.default_rng(config.seed)
    bias = rng.normal(0.0, 0.5, len(OBJECTIVES))
    users = np.arange(1, len(world.users) + 1)
    rounds = [draw_requests(world, users, config, rng, bias) for _ in range(config.requests_per_user)]
    train = rounds[:-2]
    splits = {"train": {name: np.concatenate([r[name] for r in train]) for name in train[0]},
              "valid": rounds[-2], "test": rounds[-1]}
    metadata = {"requests": {split: int(len(rows[USER_FEATURE])) for split, rows in splits.items()},
                "requests_config": dataclasses.asdict(config),
                "prediction_bias": {x: float(b) for x, b in zip(OBJECTIVES, bias)},
                "mean_grade_shown": float(splits["train"][GRADE].sum() / splits["train"][EXPOSED].sum())}
    return request_spec(len(world.users), len(world.items), config), splits, metadata

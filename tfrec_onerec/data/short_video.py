"""The simulator as a data set: its feature spec and samples (one per logged exposure).

Exposures that were not clicked are real negatives, so nothing is sampled
(``num_negatives=0``); histories hold the user's earlier *clicked* videos. Labels are the
logged outcomes plus the simulator's ground truth (``true_p_click``, ``true_p_conversion``)
so evaluations can compare a model with the oracle.

Two data sets are built here:

* ``simulator``: the default world (:class:`~tfrec_onerec.data.simulator.SimulatorConfig`),
  one sample per exposure, histories of the 50 most recent clicks.
* ``simulator-lifelong``: a world of lifelong behaviour for SIM (:func:`lifelong_world`):
  users return periodically to each of their interests, one at a time for many sessions,
  so an interest the recent clicks no longer show still fills much of a history of
  1,000+ clicks. Only the exposures of each user's last :data:`LIFELONG_SAMPLE_SESSIONS`
  sessions become samples (few samples, long histories); each history also carries the
  log-scale age of every click (``hist_time_bucket``,
  :func:`~tfrec_onerec.data.samples.time_interval_buckets`).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tfrec_onerec.data import samples, simulator
from tfrec_onerec.features import Feature, FeatureSpec

NAME = "simulator"
LIFELONG_NAME = "simulator-lifelong"
LIFELONG_MAX_LEN = 1000
"""History length of the lifelong data set (most users have more clicks than that)."""
LIFELONG_SAMPLE_SESSIONS = 8
"""Each user's last sessions whose exposures become samples of the lifelong data set."""
TIME_FEATURE = "hist_time_bucket"
LABELS = ("click", "like", "follow", "share", "conversion", "watch_time", "true_p_click", "true_p_conversion",
          "prior_click", "prior_conversion")
LABEL_DOCS = {
    "click": "1 when the exposed video was clicked",
    "like, follow, share": "1 when clicked and then liked / followed / shared",
    "conversion": "1 when clicked and converted (the click -> conversion funnel)",
    "watch_time": "seconds watched (0 without a click)",
    "true_p_click, true_p_conversion": "the simulator's ground-truth probabilities (not for training)",
    "prior_click, prior_conversion": "the user's click / conversion rate over earlier exposures (0 for the first)",
}


def lifelong_world(seed: int = 0, num_users: int = 400, num_items: int = 1000) -> simulator.SimulatorConfig:
    """The world of ``simulator-lifelong``: about 500 sessions of 8 exposures per user (most
    users click over 1,000 times), sessions following one of the user's three interest
    categories at a time for 40 sessions (``interest_period_sessions``; about 100 clicks, so
    the last 50 clicks show one interest), a policy that follows the session's interest
    closely (``policy_sharpness`` 8, ``session_drift`` 0.3) but explores often
    (``exploration`` 0.6: many candidates come from categories the recent clicks do not
    show), 20 categories."""
    return simulator.SimulatorConfig(seed=seed, num_users=num_users, num_items=num_items, num_categories=20,
                                     sessions_per_user=500.0, session_length=8.0, interest_period_sessions=40,
                                     policy_sharpness=8.0, session_drift=0.3, exploration=0.6)


def feature_spec(config: simulator.SimulatorConfig, max_len: int = 50, time_buckets: bool = False) -> FeatureSpec:
    """The simulator's feature specification; with `time_buckets`, histories also carry
    each click's age (``hist_time_bucket``)."""
    time = [Feature(TIME_FEATURE, "sequence", vocab_size=samples.NUM_TIME_BUCKETS, embedding_dim=4, max_len=max_len,
                    group="history", description="log-scale age of each clicked video at the sample's time")]
    return FeatureSpec([
        Feature("user_id", "categorical", vocab_size=config.num_users, embedding_dim=16, group="user"),
        Feature("age_bucket", "categorical", vocab_size=7, embedding_dim=4, group="user"),
        Feature("gender", "categorical", vocab_size=2, embedding_dim=4, group="user"),
        Feature("lifecycle_stage", "categorical", vocab_size=len(simulator.STAGES), embedding_dim=4, group="user"),
        Feature("item_id", "categorical", vocab_size=config.num_items, embedding_dim=16, vocab="item", group="item"),
        Feature("category", "categorical", vocab_size=config.num_categories, embedding_dim=8, vocab="category",
                group="item"),
        Feature("log_duration", "numeric", dim=1, group="item", description="log(1 + duration in seconds)"),
        Feature("hist_item_id", "sequence", vocab_size=config.num_items, embedding_dim=16, vocab="item",
                max_len=max_len, group="history", query="item_id", description="videos clicked before"),
        Feature("hist_category", "sequence", vocab_size=config.num_categories, embedding_dim=8, vocab="category",
                max_len=max_len, group="history", query="category"),
    ] + (time if time_buckets else []), labels=LABELS, user_key="user_id")


def build_samples(data: simulator.SimulatedData, config: samples.SampleConfig, sample_sessions: int = 0,
                  time_buckets: bool = False) -> dict:
    """``{split: columns}`` of :func:`feature_spec`, one row per exposure (with
    `sample_sessions`, per exposure of each user's last `sample_sessions` sessions only)."""
    if config.num_negatives or config.eval_negatives:
        raise ValueError("The simulator logs real negatives (unclicked exposures); use num_negatives=0 and "
                         "eval_negatives=0.")
    log = data.interactions  # already in (user, time) order
    users = {name: np.r_[0, data.users[name].to_numpy()] for name in ("age_bucket", "gender", "lifecycle_stage")}
    items = {"category": np.r_[0, data.items["category"].to_numpy()],
             "log_duration": np.r_[0.0, np.log1p(data.items["duration"].to_numpy())].astype(np.float32)[:, None]}
    labels = {name: log[name].to_numpy() for name in LABELS[:6]}
    labels.update(true_p_click=log["p_click"].to_numpy(), true_p_conversion=log["p_conversion"].to_numpy())
    splits = samples.build_samples(log, data.config.num_items, users, items,
                                   history_of={"hist_item_id": "item_id", "hist_category": "category"},
                                   labels=labels, config=config, behaviour=log["click"].to_numpy() == 1,
                                   prior_means_of=("click", "conversion"),
                                   time_bucket_feature=TIME_FEATURE if time_buckets else "",
                                   sampled=last_sessions(log, sample_sessions) if sample_sessions else None)
    return splits


def last_sessions(log, count: int) -> np.ndarray:
    """(n,) bool: the exposures of each user's last `count` sessions (a user's sessions have
    consecutive ids in the simulator's log)."""
    session = log["session_id"].to_numpy()
    return log.groupby("user_id")["session_id"].transform("max").to_numpy() - session < count


def build(config: samples.SampleConfig, simulator_config: simulator.SimulatorConfig | None = None):
    """``(spec, splits, metadata)`` of ``simulator`` for :func:`tfrec_onerec.data.prepare`."""
    return _build(NAME, config, simulator_config or simulator.SimulatorConfig(seed=config.seed))


def build_lifelong(config: samples.SampleConfig, simulator_config: simulator.SimulatorConfig | None = None):
    """``(spec, splits, metadata)`` of ``simulator-lifelong`` (module docstring)."""
    return _build(LIFELONG_NAME, config, simulator_config or lifelong_world(seed=config.seed),
                  sample_sessions=LIFELONG_SAMPLE_SESSIONS, time_buckets=True)


def _build(name: str, config: samples.SampleConfig, simulator_config: simulator.SimulatorConfig,
           sample_sessions: int = 0, time_buckets: bool = False):
    data = simulator.simulate(simulator_config, progress=True)
    metadata = {"dataset": name, "simulator": dataclasses.asdict(simulator_config),
                "samples": dataclasses.asdict(config), "labels": LABEL_DOCS,
                "interactions": data.num_interactions, "sample_sessions": sample_sessions}
    splits = build_samples(data, config, sample_sessions=sample_sessions, time_buckets=time_buckets)
    return feature_spec(simulator_config, config.max_len, time_buckets), splits, metadata

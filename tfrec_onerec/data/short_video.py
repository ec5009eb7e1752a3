"""The simulator as a data set: its feature spec and samples (one per logged exposure).

Exposures that were not clicked are real negatives, so nothing is sampled
(``num_negatives=0``); histories hold the user's earlier *clicked* videos. Labels are the
logged outcomes plus the simulator's ground truth (``true_p_click``, ``true_p_conversion``)
so evaluations can compare a model with the oracle.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tfrec_onerec.data import samples, simulator
from tfrec_onerec.features import Feature, FeatureSpec

NAME = "simulator"
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


def feature_spec(config: simulator.SimulatorConfig, max_len: int = 50) -> FeatureSpec:
    """The simulator's feature specification."""
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
    ], labels=LABELS, user_key="user_id")


def build_samples(data: simulator.SimulatedData, config: samples.SampleConfig) -> dict:
    """``{split: columns}`` of :func:`feature_spec`, one row per exposure."""
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
                                   prior_means_of=("click", "conversion"))
    return splits


def build(config: samples.SampleConfig, simulator_config: simulator.SimulatorConfig | None = None):
    """``(spec, splits, metadata)`` for :func:`tfrec_onerec.data.prepare`."""
    simulator_config = simulator_config or simulator.SimulatorConfig(seed=config.seed)
    data = simulator.simulate(simulator_config, progress=True)
    metadata = {"dataset": NAME, "simulator": dataclasses.asdict(simulator_config),
                "samples": dataclasses.asdict(config), "labels": LABEL_DOCS,
                "interactions": data.num_interactions}
    return feature_spec(simulator_config, config.max_len), build_samples(data, config), metadata

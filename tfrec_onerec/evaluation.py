"""Evaluating a trained model over a data set: per-task AUC, GAUC and LogLoss."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from tfrec_onerec import metrics
from tfrec_onerec.features.spec import Task


def collect_predictions(predict: Callable, dataset: tf.data.Dataset, user_key: str = "user_id") -> dict:
    """Runs ``predict(features) -> {task: scores}`` over ``(features, {label: y})`` batches.

    Returns:
        ``{"scores": {task: (n,)}, "labels": {label: (n,)}, "users": (n,)}`` numpy arrays.
    """
    scores, labels, users = {}, {}, []
    for features, targets in dataset:
        for name, value in predict(features).items():
            scores.setdefault(name, []).append(value.numpy().reshape(-1))
        for name, value in targets.items():
            labels.setdefault(name, []).append(value.numpy())
        users.append(features[user_key].numpy())
    return {"scores": concatenate_parts(scores), "labels": concatenate_parts(labels), "users": np.concatenate(users)}


def concatenate_parts(parts: dict) -> dict:
    """``{name: [array per batch]}`` -> ``{name: one array}``."""
    return {name: np.concatenate(arrays) for name, arrays in parts.items()}


def evaluate(model, dataset: tf.data.Dataset, tasks: Sequence[Task] | None = None,
             user_key: str = "user_id") -> dict:
    """AUC, GAUC (impression-weighted and per-user mean) and LogLoss of every binary task.

    GAUC skips users whose examples all have one label (see :func:`tfrec_onerec.metrics.gauc`).
    A task with a ``sample_space`` is scored on its sample space (e.g. CVR on clicked
    impressions) and, as ``entire_space_auc``, on every example (ESMM's second view).

    Returns:
        ``{task: {"auc", "gauc", "gauc_user_mean", "logloss", "examples", "users"}}`` (plus
        ``"entire_space_auc"`` for a task with a sample space).
    """
    tasks = list(tasks or model.tasks)
    out = collect_predictions(tf.function(lambda x: model(x, training=False)), dataset, user_key)
    return score_predictions(out, tasks)


def score_predictions(out: dict, tasks: Sequence[Task]) -> dict:
    """The metrics of :func:`evaluate` from :func:`collect_predictions`' output."""
    results = {}
    for task in tasks:
        if task.kind != "binary":
            continue
        y, p, users = out["labels"][task.label], out["scores"][task.name], out["users"]
        entire_space = {}
        if task.sample_space:
            entire_space = {"entire_space_auc": metrics.auc(y, p)}
            covered = out["labels"][task.sample_space] > 0
            y, p, users = y[covered], p[covered], users[covered]
        impression = metrics.gauc(y, p, users, weighting="impression")
        per_user = metrics.gauc(y, p, users, weighting="user")
        results[task.name] = {
            "auc": metrics.auc(y, p),
            "gauc": impression.value,
            "gauc_user_mean": per_user.value,
            "logloss": metrics.log_loss(y, p),
            "examples": int(len(y)),
            "users": int(impression.groups_used),
            **entire_space,
        }
    return results


def format_results(results: dict) -> str:
    """A small text table of :func:`evaluate`'s results (``AUC(all)``: a task with a sample
    space scored on every example)."""
    entire = any("entire_space_auc" in r for r in results.values())
    lines = [f"{'task':<12}{'AUC':>8}{'GAUC':>8}{'GAUC(u)':>9}{'LogLoss':>9}{'examples':>10}{'users':>7}"
             + (f"{'AUC(all)':>10}" if entire else "")]
    for task, r in results.items():
        line = (f"{task:<12}{r['auc']:>8.4f}{r['gauc']:>8.4f}{r['gauc_user_mean']:>9.4f}"
                f"{r['logloss']:>9.4f}{r['examples']:>10d}{r['users']:>7d}")
        if "entire_space_auc" in r:
            line += f"{r['entire_space_auc']:>10.4f}"
        lines.append(line)
    return "\n".join(lines)


def restrict(out: dict, keep) -> dict:
    """:func:`collect_predictions`' output on the examples where the (n,) bool `keep` is True."""
    keep = np.asarray(keep, bool)
    return {"scores": {name: values[keep] for name, values in out["scores"].items()},
            "labels": {name: values[keep] for name, values in out["labels"].items()},
            "users": out["users"][keep]}


def least_active_users(train_users, train_positive, candidates, fraction: float = 0.2) -> np.ndarray:
    """The long-tail users among `candidates`: those whose count of training positives is at most
    the `fraction` quantile of the candidates' counts (ties included, so a little more than
    `fraction` of them may be returned).

    Args:
        train_users: (n,) the user id of each training example.
        train_positive: (n,) 1 where the example is a positive (e.g. a click), else 0.
        candidates: user ids to choose from (e.g. the test split's users).
        fraction: the share of least active candidates, in (0, 1]. Default 0.2.

    Returns:
        The sorted unique ids of the long-tail users.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"least_active_users: fraction must be in (0, 1], got {fraction!r}.")
    candidates = np.unique(np.asarray(candidates, np.int64))
    users = np.asarray(train_users, np.int64)[np.asarray(train_positive) > 0]
    known, counts = np.unique(users, return_counts=True)
    activity = np.zeros(len(candidates), np.int64)
    found = np.isin(candidates, known)
    activity[found] = counts[np.searchsorted(known, candidates[found])]
    return candidates[activity <= np.quantile(activity, fraction)]

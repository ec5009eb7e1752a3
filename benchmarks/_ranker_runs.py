"""One point-wise ranker trained through its family and scored per test example, shared by the
results scripts that slice test users by their training activity."""
from __future__ import annotations

import time

import numpy as np

from tfrec_onerec import evaluation, families


def fit_and_collect(model_name: str, dataset: str, seed: int, epochs: int, hyperparameters: dict) -> dict:
    """Trains `model_name` (at most `epochs` epochs, early stopping on validation AUC) on
    `dataset` (``source`` or ``source:split``) and collects its test predictions.

    Returns:
        ``{"result": the family's fit result, "out": per-example test predictions
        (:func:`tfrec_onerec.evaluation.collect_predictions`), "tasks", "seconds",
        "activity_users": the training split's user of each example, "activity_positive":
        its first task's label}``.
    """
    family = families.for_model(model_name)
    source, _, split = dataset.partition(":")
    data = family.prepare(source, {"split": split} if split else {})
    config = family.train_config(family.model_class(model_name), {"epochs": epochs, "seed": seed, "verbose": 0})
    start = time.perf_counter()
    result = family.fit(model_name, data, config, hyperparameters)
    seconds = time.perf_counter() - start
    tasks = family.tasks(data, None, family.model_class(model_name))
    user_key = data.spec.user_key
    out = evaluation.collect_predictions(family.keras_scorer(result.model),
                                         data.records("test", data.spec, data.spec.labels, 4096), user_key)
    train = data.columns("train")
    return {"result": result, "out": out, "tasks": tasks, "seconds": seconds,
            "activity_users": np.asarray(train[user_key]), "activity_positive": np.asarray(train[tasks[0].label])}


def scored_slice(run: dict, users) -> tuple:
    """``(metrics, examples)`` of `run`'s test predictions restricted to the ids in `users`."""
    rows = np.isin(run["out"]["users"], users)
    return evaluation.score_predictions(evaluation.restrict(run["out"], rows), run["tasks"]), int(rows.sum())

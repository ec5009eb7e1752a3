"""The multi-task results table: every multi-task ranker on both data sets, several seeds.

Each model trains through its family (``family.fit``: the family's and the model's training
defaults, early stopping on the first task's validation AUC, at most ``--epochs`` epochs) on
the data set's funnel (simulator: click -> conversion; MovieLens-100K: click -> like) and is
scored on the test split by ``family.evaluate`` (AUC and GAUC per task). Beside them:

* ``naive_cvr``: the paper's baseline for ESMM, a single-task DIN base model trained on
  clicked impressions only (``Task("cvr", label=<conversion>, sample_space="click")``);
  compare its CVR AUC with ESMM's ``cvr`` on the clicked impressions and on all of them.
* ``aitm_no_calibrator``: AITM with the calibrator's weight 0; the table's last column, the
  share of test impressions whose later funnel step is scored above the earlier one, shows
  what the calibrator does.

Writes ``docs/results/multitask.md`` (mean and standard deviation over the seeds) and the raw
figures to ``benchmarks/results/multitask_results.json``.

Usage::

    python benchmarks/multitask_results.py [--datasets simulator,movielens-100k] [--models ...]
        [--seeds 0,1,2] [--epochs 3]
"""
from __future__ import annotations

import argparse
import time

import tfrec_onerec  # noqa: F401  (sets the process environment before TensorFlow is imported)
import numpy as np

from tfrec_onerec import data as datasets
from tfrec_onerec import families
from tfrec_onerec.features.spec import Task

from _results_grid import grid_arguments, mean_std, run_grid

MODELS = ("shared_bottom", "moe", "mmoe", "cgc", "ple", "esmm", "aitm", "lt4rec", "stan")
VARIANTS = {  # name -> (registered model, hyperparameters, tasks from the funnel (click, conversion))
    "naive_cvr": ("din_base", {}, lambda click, conversion: [Task("cvr", label=conversion, sample_space=click)]),
    "aitm_no_calibrator": ("aitm", {"calibrator_weight": 0.0}, None),
}


def funnel_inversions(model, data, funnel) -> float:
    """The share of test impressions whose later funnel step is scored above the earlier one."""
    scorer = families.get("pointwise").keras_scorer(model)
    above, total = 0, 0
    for features, _ in data.records("test", data.spec, data.spec.labels, 4096):
        scores = scorer(features)
        earlier, later = (scores[name].numpy().reshape(-1) for name in funnel)
        above += int(np.sum(later > earlier))
        total += len(earlier)
    return above / total


def run_one(name: str, dataset: str, seed: int, epochs: int) -> dict:
    model_name, hyperparameters, make_tasks = VARIANTS.get(name, (name, {}, None))
    family = families.for_model(model_name)
    data = family.prepare(dataset, {})
    funnel = datasets.get(dataset).funnel
    tasks = make_tasks(*funnel) if make_tasks else None
    config = family.train_config(family.model_class(model_name), {"epochs": epochs, "seed": seed, "verbose": 0})
    start = time.perf_counter()
    result = family.fit(model_name, data, config, hyperparameters, tasks)
    results = family.evaluate(result.model, data, "test")
    row = {"model": name, "dataset": dataset, "seed": seed, "epochs_run": len(result.history.history["loss"]),
           "seconds": time.perf_counter() - start, "tasks": results}
    if model_name == "aitm":
        row["inversions"] = funnel_inversions(result.model, data, funnel)
    return row


def markdown(rows: list, seeds: list, epochs: int) -> str:
    lines = ["# Multi-task rankers: test metrics", "",
             f"Written by `benchmarks/multitask_results.py` (seeds {', '.join(map(str, seeds))}; at most {epochs} "
             "epochs, early stopping on the first task's validation AUC; mean ± standard deviation over the "
             "seeds). Tasks are the data set's funnel: simulator click -> conversion, MovieLens-100K click -> like. "
             "`cvr` (ESMM, naive_cvr): the conversion label on clicked impressions (`AUC`) and on all of them "
             "(`AUC(all)`). `inverted`: share of test impressions scored more likely to convert than to click.", ""]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        lines += [f"## {dataset}", "", "| model | task | AUC | GAUC | AUC(all) | inverted |", "|---|---|---|---|---|---|"]
        subset = [r for r in rows if r["dataset"] == dataset]
        for name in dict.fromkeys(r["model"] for r in subset):
            runs = [r for r in subset if r["model"] == name]
            for task in runs[0]["tasks"]:
                cells = [mean_std([r["tasks"][task].get(metric) for r in runs])
                         for metric in ("auc", "gauc", "entire_space_auc")]
                inverted = mean_std([r.get("inversions") for r in runs]) if task == list(runs[0]["tasks"])[0] else ""
                lines.append(f"| {name} | {task} | " + " | ".join(cells) + f" | {inverted} |")
        lines.append("")
    return "\n".join(lines)


def describe(row: dict) -> str:
    first = next(iter(row["tasks"].values()))
    return f"{row['epochs_run']} epochs, {row['seconds']:.0f} s, first task AUC {first['auc']:.4f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    grid_arguments(parser, MODELS + tuple(VARIANTS), "simulator,movielens-100k", 3, "multitask.md")
    run_grid(parser.parse_args(argv), "multitask_results", run_one, markdown, describe)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

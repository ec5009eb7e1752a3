"""The Kuaishou ranking papers' results table: GPSVI against DIN, on tail and head users.

Every row trains its model through the point-wise family (``family.fit``: at most
``--epochs`` epochs, early stopping on validation AUC) and scores the test split's
``click`` AUC and GAUC on all test users, on the tail (the fifth of the test users with the
fewest training clicks, :func:`tfrec_onerec.evaluation.least_active_users`) and on the head
(the fifth with the most). GPSVI's paper claims gains concentrated on tail users and no loss
on head users. The rows:

* ``din``: DIN, the target attention GPSVI builds on;
* ``gpsvi``: GPSVI with its defaults (group prior from the user-profile features, Householder
  flow, KL weight 0.0003);
* ``gpsvi_kl_0.003``: GPSVI with a ten times larger KL weight;
* ``gpsvi_no_flow``: GPSVI without the flow (``flow_steps=0``);
* ``gpsvi_evidence``: GPSVI whose reading's variance depends on the number of behaviours only
  (``uncertainty="evidence"``).

Writes ``docs/results/kuaishou_ranking.md`` and the raw figures to
``benchmarks/results/kuaishou_ranking_results.json``.

Usage::

    python benchmarks/kuaishou_ranking_results.py [--datasets movielens-100k,simulator] [--models ...]
        [--seeds 0,1,2] [--epochs 2] [--merge]
"""
from __future__ import annotations

import argparse

import tfrec_onerec  # noqa: F401  (sets the process environment before TensorFlow is imported)
import numpy as np

from tfrec_onerec import evaluation

from _ranker_runs import fit_and_collect, scored_slice
from _results_grid import grid_arguments, mean_std, run_grid

SLICE_FRACTION = 0.2
VARIANTS = {"din": ("din", {}), "gpsvi": ("gpsvi", {}), "gpsvi_kl_0.003": ("gpsvi", {"kl_weight": 0.003}),
            "gpsvi_no_flow": ("gpsvi", {"flow_steps": 0}), "gpsvi_evidence": ("gpsvi", {"uncertainty": "evidence"})}
SLICES = ("all", "tail", "head")


def run_one(name: str, dataset: str, seed: int, epochs: int) -> dict:
    model_name, hyperparameters = VARIANTS[name]
    run = fit_and_collect(model_name, dataset, seed, epochs, hyperparameters)
    users, positive, test_users = run["activity_users"], run["activity_positive"], run["out"]["users"]
    tail = evaluation.least_active_users(users, positive, test_users, SLICE_FRACTION)
    not_head = evaluation.least_active_users(users, positive, test_users, 1.0 - SLICE_FRACTION)
    head = np.setdiff1d(np.unique(test_users), not_head)
    row = {"model": name, "model_class": model_name, "dataset": dataset, "seed": seed,
           "epochs_run": len(run["result"].history.history["loss"]), "seconds": run["seconds"],
           "valid_auc": max(run["result"].history.history["val_auc"]),
           "all": evaluation.score_predictions(run["out"], run["tasks"])}
    for part, members in (("tail", tail), ("head", head)):
        row[part], row[f"{part}_examples"] = scored_slice(run, members)
        row[f"{part}_users"] = int(len(members))
    return row


def markdown(rows: list, seeds: list, epochs: int) -> str:
    lines = ["# Kuaishou ranking papers: test metrics", "",
             f"Written by `benchmarks/kuaishou_ranking_results.py` (seeds {', '.join(map(str, seeds))}; at most "
             f"{epochs} epochs, early stopping on validation AUC; mean ± standard deviation over the seeds). "
             f"Columns: the best validation AUC of the run (what hyperparameters are chosen by), `click` AUC on all test users, on the tail (the {SLICE_FRACTION:.0%} of test users with the fewest "
             f"training clicks) and on the head (the {SLICE_FRACTION:.0%} with the most), and GAUC on all.", ""]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        subset = [r for r in rows if r["dataset"] == dataset]
        first = subset[0]
        lines += [f"## {dataset}", "", f"Tail: {first['tail_users']} users, {first['tail_examples']} test examples; "
                  f"head: {first['head_users']} users, {first['head_examples']} test examples.", "",
                  "| model | validation AUC | AUC | tail AUC | head AUC | GAUC | epochs | seconds |",
                  "|---|---|---|---|---|---|---|---|"]
        for name in dict.fromkeys(r["model"] for r in subset):
            runs = [r for r in subset if r["model"] == name]
            cells = [mean_std([r["valid_auc"] for r in runs])]
            cells += [mean_std([r[part]["click"]["auc"] for r in runs]) for part in SLICES]
            cells += [mean_std([r["all"]["click"]["gauc"] for r in runs]),
                      mean_std([r["epochs_run"] for r in runs], 1), mean_std([r["seconds"] for r in runs], 0)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def describe(row: dict) -> str:
    return (f"{row['epochs_run']} epochs, {row['seconds']:.0f} s, AUC {row['all']['click']['auc']:.4f}, "
            f"tail {row['tail']['click']['auc']:.4f}, head {row['head']['click']['auc']:.4f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    grid_arguments(parser, tuple(VARIANTS), "movielens-100k,simulator", 2, "kuaishou_ranking.md")
    run_grid(parser.parse_args(argv), "kuaishou_ranking_results", run_one, markdown, describe)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

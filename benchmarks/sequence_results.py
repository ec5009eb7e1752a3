"""The sequence-model results table: behaviour-sequence rankers and next-item models, several seeds.

Each model trains through its family (``family.fit``: the family's and the model's training
defaults, early stopping on validation) and is scored on the test split by ``family.evaluate``:

* point-wise rankers (din_base, din, dien), at most ``--epochs`` epochs: test AUC and GAUC of
  ``click``;
* next-item models (sasrec, stamp, ticoserec, kuaishou_ebr), the family's 30 epochs at most:
  full ranking of the held-out item among the items the user has not seen, Recall@10/20,
  NDCG@10, MRR, beside the popularity baseline on the same users. ``ticoserec-no-augmentation``
  is TiCoSeRec whose two views are the sequence itself (``augment=False``).

On ``simulator-lifelong`` (1,000-click histories) the rankers' rows are SIM (hard search),
``sim-soft`` (soft search), DIN over the full history, and ``din-last-50``: DIN given only the 50 most recent clicks
(the data prepared with ``max_len`` 50), the baseline SIM's paper improves on.

Writes ``docs/results/sequence.md`` (mean and standard deviation over the seeds) and the raw
figures to ``benchmarks/results/sequence_results.json``.

Usage::

    python benchmarks/sequence_results.py [--datasets movielens-100k,simulator] [--models ...]
        [--seeds 0,1,2] [--epochs 2] [--merge]
    python benchmarks/sequence_results.py --datasets simulator-lifelong --models din-last-50,din,sim,sim-soft --merge
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import tfrec_onerec  # noqa: F401  (sets the process environment before TensorFlow is imported)

from tfrec_onerec import families
from tfrec_onerec.models.sequence.sim import most_recent

from _results_grid import grid_arguments, mean_std, run_grid

MODELS = ("din_base", "din", "dien", "sasrec", "stamp", "ticoserec", "ticoserec-no-augmentation", "kuaishou_ebr")
VARIANTS = {"ticoserec-no-augmentation": ("ticoserec", {"augment": False}),
            "ticoserec-dot": ("ticoserec", {"similarity": "dot"}),  # the released code's similarity
            "sim-soft": ("sim", {"search": "soft"}),
            "din-last-50": ("din", {}, {"max_len": 50})}
"""Rows that train a registered model with other hyperparameters (and data options):
``{row name: (model, hyperparameters[, data options])}``."""
RANKING_METRICS = ("recall@10", "ndcg@10", "recall@20", "mrr")
SHORT_HISTORY = 10
"""Next-item models are also scored with each test user's input cut to its last 10 items
(the items seen before still excluded from the ranking): how they serve short histories."""


def keep_last(histories: np.ndarray, count: int) -> np.ndarray:
    """(batch, L) right-padded histories cut to their last `count` real items, still (batch, L)
    and right-padded (SIM's :func:`~tfrec_onerec.models.sequence.sim.most_recent`, padded back)."""
    histories = np.asarray(histories)
    kept, _ = most_recent({"ids": histories}, histories != 0, min(count, histories.shape[1]))
    kept = np.asarray(kept["ids"])
    return np.pad(kept, [(0, 0), (0, histories.shape[1] - kept.shape[1])])


def short_history_metrics(family, model, data) -> dict:
    """The family's test metrics of `model` when every input keeps only its last SHORT_HISTORY items."""
    scorer = family.keras_scorer(model)
    return family.evaluate_with(lambda history: scorer(keep_last(history.numpy(), SHORT_HISTORY)), data, "test",
                                family.model_info(model))["model"]


def run_one(name: str, dataset: str, seed: int, epochs: int) -> dict:
    model, hyperparameters, *data_options = VARIANTS.get(name, (name, {}))
    family = families.for_model(model)
    data = family.prepare(dataset, data_options[0] if data_options else {})
    overrides = {"seed": seed, "verbose": 0}
    if family.name == "pointwise":
        overrides["epochs"] = epochs
    config = family.train_config(family.model_class(model), overrides)
    start = time.perf_counter()
    result = family.fit(model, data, config, hyperparameters)
    row = {"model": name, "dataset": dataset, "seed": seed, "family": family.name,
           "epochs_run": len(result.history.history["loss"]), "seconds": time.perf_counter() - start,
           "results": family.evaluate(result.model, data, "test")}
    if family.name == "next_item":
        row["short_history"] = short_history_metrics(family, result.model, data)
    return row


def describe(row: dict) -> str:
    results = row["results"]
    headline = (f"recall@10 {results['model']['recall@10']:.4f}" if row["family"] == "next_item"
                else f"AUC {results['click']['auc']:.4f}")
    return f"{row['epochs_run']} epochs, {row['seconds']:.0f} s, {headline}"


def markdown(rows: list, seeds: list, epochs: int) -> str:
    lines = ["# Sequence models: test metrics", "",
             f"Written by `benchmarks/sequence_results.py` (seeds {', '.join(map(str, seeds))}; mean ± standard "
             "deviation over a row's seeds, counted in `seeds`). Point-wise rankers: at most "
             f"{epochs} epochs, early stopping on validation AUC, test AUC and GAUC of `click`. Next-item models: "
             "at most 30 epochs, early stopping on the validation loss, the held-out item ranked among all the "
             "items the user has not seen (no sampled metrics); `popularity` ranks by training counts. `seconds`: "
             "wall time of training and evaluation on 2 CPU cores, with other jobs running beside some runs.", ""]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        subset = [r for r in rows if r["dataset"] == dataset]
        lines += [f"## {dataset}", ""]
        rankers = [r for r in subset if r["family"] == "pointwise"]
        if rankers:
            lines += ["| ranker | AUC | GAUC | epochs | seconds | seeds |", "|---|---|---|---|---|---|"]
            for name in dict.fromkeys(r["model"] for r in rankers):
                runs = [r for r in rankers if r["model"] == name]
                cells = [mean_std([r["results"]["click"][m] for r in runs]) for m in ("auc", "gauc")]
                cells += [mean_std([r["epochs_run"] for r in runs], 1), mean_std([r["seconds"] for r in runs], 0),
                          str(len(runs))]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
        next_item = [r for r in subset if r["family"] == "next_item"]
        if next_item:
            lines += ["| next-item model | " + " | ".join(RANKING_METRICS) + " | epochs | seconds | seeds |",
                      "|---" * (len(RANKING_METRICS) + 4) + "|"]
            for name in dict.fromkeys(r["model"] for r in next_item):
                runs = [r for r in next_item if r["model"] == name]
                cells = [mean_std([r["results"]["model"][m] for r in runs]) for m in RANKING_METRICS]
                cells += [mean_std([r["epochs_run"] for r in runs], 1), mean_std([r["seconds"] for r in runs], 0),
                          str(len(runs))]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            popularity = next_item[0]["results"]["popularity"]
            lines += ["| popularity | " + " | ".join(f"{popularity[m]:.4f}" for m in RANKING_METRICS) + " | | | |", ""]
            short = [r for r in next_item if "short_history" in r]
            if short:
                lines += [f"Short histories: each test input cut to its last {SHORT_HISTORY} items (runs that measured "
                          "it):", "", "| next-item model | recall@10 | ndcg@10 | mrr | seeds |", "|---|---|---|---|---|"]
                for name in dict.fromkeys(r["model"] for r in short):
                    runs = [r for r in short if r["model"] == name]
                    lines.append(f"| {name} | " + " | ".join(mean_std([r["short_history"][m] for r in runs])
                                                              for m in ("recall@10", "ndcg@10", "mrr"))
                                 + f" | {len(runs)} |")
                lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    grid_arguments(parser, MODELS, "movielens-100k,simulator", 2, "sequence.md")
    run_grid(parser.parse_args(argv), "sequence_results", run_one, markdown, describe)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

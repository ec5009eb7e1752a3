"""Training levers of the one training path, each measured on its own: fit time and metrics.

For each model (through its family, on MovieLens-100K, seed 0, no early stopping) and each
setting of one :class:`~tfrec_onerec.training.TrainConfig` lever, it trains from the same
initial weights, prints the fit time (``family.fit``: training and per-epoch validation) and
the family's test headline, then the speed-up of each setting over the baseline and whether
the metrics are identical. Today's lever is ``steps_per_execution`` (baseline 1, the Keras
default): the same steps in the same order, so the metrics must match exactly.

Usage::

    python benchmarks/training_levers.py [--models din sasrec onerec] [--values 1 16]

Prints the table and writes it as JSON to ``benchmarks/results/training_levers.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import tfrec_onerec  # noqa: F401  (environment first)

import tensorflow as tf

from tfrec_onerec import families

RESULTS = Path(__file__).parent / "results" / "training_levers.json"
RUNS = {  # model: (data options, epochs)
    "din": ({}, 1),
    "sasrec": ({}, 3),
    "onerec": ({"session_len": 1}, 1),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--values", type=int, nargs="+", default=[1, 16],
                        help="steps_per_execution settings; the first is the baseline")
    args = parser.parse_args(argv)
    print(f"MovieLens-100K, {os.cpu_count()} CPU core(s), TensorFlow {tf.__version__}; lever: steps_per_execution")
    rows = []
    for model in args.models:
        options, epochs = RUNS[model]
        family = families.for_model(model)
        data = family.prepare("movielens-100k", options)
        for value in args.values:
            config = family.train_config(family.model_class(model), {
                "epochs": epochs, "early_stopping_patience": None, "verbose": 0, "seed": 0,
                "steps_per_execution": value})
            start = time.perf_counter()
            trained = family.fit(model, data, config)
            seconds = time.perf_counter() - start
            results = family.evaluate(trained.model, data, "test")
            row = {"model": model, "steps_per_execution": value, "epochs": epochs, "fit_seconds": seconds,
                   "headline": family.headline_name(results), "value": family.headline(results),
                   "results": results}
            rows.append(row)
            print(f"{model:<8} steps_per_execution {value:>3}: fit {seconds:7.1f} s  "
                  f"{row['headline']} {row['value']:.4f}", flush=True)
    print("\nSpeed-up over the baseline (same metrics: every test number identical)")
    for model in args.models:
        base, *others = [r for r in rows if r["model"] == model]
        for row in others:
            row["speedup"] = base["fit_seconds"] / row["fit_seconds"]
            row["same_metrics"] = row["results"] == base["results"]
            print(f"  {model:<8} {row['steps_per_execution']:>3} vs {base['steps_per_execution']}: "
                  f"x{row['speedup']:.2f}  same metrics: {row['same_metrics']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=2, default=float))
    print(f"Written to {RESULTS}")


if __name__ == "__main__":
    main()

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
import json
import platform
import time
from pathlib import Path

import tfrec_onerec  # noqa: F401  (sets the process environment before TensorFlow is imported)
import numpy as np

from tfrec_onerec import data as datasets
from tfrec_onerec import families
from tfrec_onerec.features.spec import Task

HERE = Path(__file__).resolve().parent
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


def mean_std(values) -> str:
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return ""
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="simulator,movielens-100k")
    parser.add_argument("--models", default=",".join(MODELS + tuple(VARIANTS)))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--output", default=str(HERE.parent / "docs" / "results" / "multitask.md"))
    parser.add_argument("--merge", action="store_true",
                        help="keep the earlier runs of the JSON file (other models, data sets or seeds) in the table")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    raw = HERE / "results" / "multitask_results.json"
    rows = json.loads(raw.read_text())["rows"] if args.merge and raw.is_file() else []
    done = {(r["model"], r["dataset"], r["seed"]) for r in rows}
    for dataset in args.datasets.split(","):
        for name in args.models.split(","):
            for seed in seeds:
                if (name, dataset, seed) in done:
                    continue
                row = run_one(name, dataset, seed, args.epochs)
                rows.append(row)
                first = next(iter(row["tasks"].values()))
                print(f"{dataset:<15} {name:<20} seed {seed}: {row['epochs_run']} epochs, {row['seconds']:.0f} s, "
                      f"first task AUC {first['auc']:.4f}", flush=True)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    order = {(d, m): i for i, (d, m) in enumerate((d, m) for d in args.datasets.split(",")
                                                   for m in args.models.split(","))}
    rows.sort(key=lambda r: (order.get((r["dataset"], r["model"]), len(order)), r["seed"]))
    output.write_text(markdown(rows, sorted({r["seed"] for r in rows}), args.epochs) + "\n")
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps({"machine": platform.platform(), "rows": rows}, indent=2, default=float))
    print(f"wrote {output} and {raw}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

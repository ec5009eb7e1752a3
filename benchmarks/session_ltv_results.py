"""SessionLTV's results: sessions played in the simulator environment, against a myopic ranker.

Each seed is a world and its log (the session-value family's data with that ``seed``:
:mod:`tfrec_onerec.data.session_steps`), one SessionLTV trained on the log
(``family.fit``, ``--epochs`` epochs), then played: every user of the world plays one new
session under each policy (:mod:`tfrec_onerec.families.session_value`). The long-term weight
of the model's score (``long_term_weight``: 0 is its myopic reward head) is chosen among
:data:`WEIGHTS` by the mean return on the ``valid`` plays, then every weight is reported on
the ``test`` plays (own environment seed), so the chosen row is leak-free.

The reward is the watch time (seconds), so a session's return is its cumulative watch time.

Writes ``docs/results/session_ltv.md`` and the raw figures to
``benchmarks/results/session_ltv_results.json``.

Usage::

    python benchmarks/session_ltv_results.py [--models session_ltv,return_estimate,without_user_id] [--seeds 0,1,2] [--epochs 5] [--merge]
"""
from __future__ import annotations

import argparse
import time

import tfrec_onerec  # noqa: F401  (sets the process environment before TensorFlow is imported)

from tfrec_onerec import families

from _results_grid import grid_arguments, mean_std, run_grid

MODEL = "session_ltv"
BASELINES = ("logging", "oracle_myopic", "oracle_long_term", "random")
WEIGHTS = (0.0, 1.0, 1.5, 2.0)
VARIANTS = {MODEL: {}, "return_estimate": {"value_estimate": "return"},
            "without_user_id": {"state_features": ["user_history", "session_items", "session_step"]}}
"""Rows: the model as configured by default (the decomposed value estimate, every state
signal); the long-term rest read off the action's return quantiles instead; and without the
user's own embedding (the user known only by their history: a signal switched off by
configuration)."""


def run_one(name: str, dataset: str, seed: int, epochs: int, weights=WEIGHTS) -> dict:
    family = families.get("session_value")
    data = family.prepare(dataset, {"seed": seed})
    config = family.train_config(family.model_class(MODEL), {"epochs": epochs, "seed": seed, "verbose": 0})
    start = time.perf_counter()
    model = family.fit(MODEL, data, config, VARIANTS[name]).model
    seconds = time.perf_counter() - start
    plays = {}
    for split in ("valid", "test"):
        for weight in weights:
            model.long_term_weight = weight
            plays.setdefault(split, {})[str(weight)] = family.evaluate(model, data, split)["policies"]
    chosen = max(weights, key=lambda w: plays["valid"][str(w)]["model"]["return"])
    test = plays["test"]
    return {"model": name, "dataset": dataset, "seed": seed, "seconds": seconds, "chosen_weight": chosen,
            "steps": data.metadata["steps"]["train"],
            "by_weight": {w: test[w]["model"] for w in test},
            "baselines": {b: test[str(chosen)][b] for b in BASELINES}}


def markdown(rows: list, seeds: list, epochs: int) -> str:
    lines = ["# SessionLTV: sessions played in the simulator", "",
             f"Written by `benchmarks/session_ltv_results.py` (seeds {', '.join(map(str, seeds))}: a world and its "
             f"log each; {epochs} epochs; mean ± standard deviation over the seeds). Every user of the world (3,000) "
             "plays one new session per policy in the environment with popular items costing sessions "
             "(`exit_popularity` 1); the return is the session's cumulative watch time (seconds). The model's "
             "long-term weight is chosen on the validation plays; the rows below are the test plays.", ""]
    for dataset, variant in dict.fromkeys((r["dataset"], r["model"]) for r in rows):
        runs = [r for r in rows if r["dataset"] == dataset and r["model"] == variant]
        chosen = ", ".join(str(r["chosen_weight"]) for r in runs)
        lines += [f"## {dataset}: {variant}", "", f"Logged training steps: {mean_std([r['steps'] for r in runs], 0)}; "
                  f"training {mean_std([r['seconds'] for r in runs], 0)} s; chosen long-term weight per seed: "
                  f"{chosen}.", "", "| policy | return (watch s) | length | clicks |", "|---|---|---|---|"]

        def row(label, results):
            cells = [mean_std([r[k] for r in results], 2) for k in ("return", "length", "clicks")]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")

        row("SessionLTV, chosen weight", [r["by_weight"][str(r["chosen_weight"])] for r in runs])
        for weight in runs[0]["by_weight"]:
            label = "SessionLTV, myopic head (weight 0)" if float(weight) == 0 else f"SessionLTV, weight {weight}"
            row(label, [r["by_weight"][weight] for r in runs])
        for baseline in BASELINES:
            row(baseline.replace("_", " "), [r["baselines"][baseline] for r in runs])
        gains = [r["by_weight"][str(r["chosen_weight"])]["return"] / r["by_weight"]["0.0"]["return"] for r in runs]
        lines += ["", f"Return of the chosen weight over the myopic head: x{mean_std(gains, 3)}.", ""]
    return "\n".join(lines)


def describe(row: dict) -> str:
    best = row["by_weight"][str(row["chosen_weight"])]
    return (f"{row['seconds']:.0f} s, weight {row['chosen_weight']}: return {best['return']:.1f} "
            f"(myopic head {row['by_weight']['0.0']['return']:.1f}, logging {row['baselines']['logging']['return']:.1f})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    grid_arguments(parser, tuple(VARIANTS), "simulator", 5, "session_ltv.md")
    run_grid(parser.parse_args(argv), "session_ltv_results", run_one, markdown, describe)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

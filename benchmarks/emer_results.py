"""EMER against the hand-tuned fusion formula on the simulator's truth, 3 seeds.

For each seed, the ensemble-ranking family's requests (:mod:`tfrec_onerec.data.ensemble_requests`:
1,000 users, 300 items; 4 training requests per user, 1 validation, 1 test; 20 candidates,
6 shown) are built from a world of that seed, EMER is trained with the family's defaults (up
to 10 epochs, early stopping on the validation posterior loss, best weights kept) and every
ranker shows its 6 best candidates of each test request. The table gives the mean true value
of a request's shown items (the simulator's expected watch ratio + long view + follow + like)
for the model, the formula (weights searched on the training log), the logging policy, random
and the oracle, the model's ratio to the formula and the oracle, and the pairwise accuracy on
the logged grades.
Rows: ``emer`` (defaults) and ``emer_fixed_weights`` (the Advantage Evaluator off: every
objective weighs 1).

Usage::

    python benchmarks/emer_results.py [--seeds 0,1,2] [--epochs 10] [--merge]

Writes ``docs/results/emer.md`` and the raw rows to ``benchmarks/results/emer_results.json``.
"""
from __future__ import annotations

import argparse
import tempfile

import tfrec_onerec  # noqa: F401  (sets the process environment before TensorFlow is imported)

from tfrec_onerec import families

from _results_grid import grid_arguments, mean_std, run_grid

VARIANTS = {"emer": {}, "emer_fixed_weights": {"weight_bounds": [1.0, 1.0]}}
WORLD = {"simulator_users": 1000, "simulator_items": 300}
RANKERS = ("model", "formula", "logging", "random", "oracle")


def run_one(name: str, dataset: str, seed: int, epochs: int) -> dict:
    family = families.get("ensemble_ranking")
    data = family.prepare(dataset, {**WORLD, "seed": seed}, directory=tempfile.mkdtemp(prefix="emer-results-"))
    config = family.train_config(family.model_class("emer"), {"epochs": epochs, "seed": seed, "verbose": 0})
    trained = family.fit("emer", data, config, hyperparameters=VARIANTS[name])
    results = family.evaluate(trained.model, data, "test")
    return {"model": name, "dataset": dataset, "seed": seed, "epochs_run": len(trained.history.history["loss"]),
            **{f"{ranker}_value": results["rankers"][ranker]["value"] for ranker in RANKERS},
            **{f"{ranker}_grade_pairs": results["rankers"][ranker]["grade_pair_accuracy"] for ranker in RANKERS},
            "value_vs_formula": results["value_vs_formula"], "value_vs_oracle": results["value_vs_oracle"]}


def markdown(rows: list, seeds: list, epochs: int) -> str:
    lines = ["# EMER vs the fusion formula (simulator truth)", "",
             f"`benchmarks/emer_results.py`: seeds {seeds}, up to {epochs} epochs (early stopping on the validation "
             f"posterior loss), {WORLD['simulator_users']:,} users x "
             f"{WORLD['simulator_items']} items; test requests show each ranker's 6 best of 20 candidates. "
             "Value: the shown items' true expected watch ratio + long view + follow + like, summed per request "
             "(mean ± std over seeds).", "",
             "| variant | model | formula | logging | random | oracle | model / formula | model / oracle "
             "| formula / oracle | grade pairs: model | formula |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        cells = [mean_std([r[f"{ranker}_value"] for r in mine], 3) for ranker in RANKERS]
        cells += [mean_std([r["value_vs_formula"] for r in mine]), mean_std([r["value_vs_oracle"] for r in mine]),
                  mean_std([r["formula_value"] / r["oracle_value"] for r in mine])]
        cells += [mean_std([r["model_grade_pairs"] for r in mine]), mean_std([r["formula_grade_pairs"] for r in mine])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe(row: dict) -> str:
    return (f"model {row['model_value']:.4f} formula {row['formula_value']:.4f} oracle {row['oracle_value']:.4f} "
            f"(x{row['value_vs_formula']:.4f} the formula, {row['epochs_run']} epochs)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    grid_arguments(parser, VARIANTS, "simulator", 10, "emer.md")
    run_grid(parser.parse_args(argv), "emer_results", run_one, markdown, describe)


if __name__ == "__main__":
    main()

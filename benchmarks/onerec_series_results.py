"""The OneRec-series results table: NeighbourEnhancedDNN on long-tail users, Social4Rec on cold users.

Every row trains its model through the point-wise family (``family.fit``: at most
``--epochs`` epochs, early stopping on validation AUC) with the row's hyperparameters, and
scores the test split's ``click``: AUC and GAUC over all test users, and over the least
active users (the fifth of the test users with the fewest training clicks,
:func:`tfrec_onerec.evaluation.least_active_users`: the long tail of NeighbourEnhancedDNN's
paper, the cold users of Social4Rec's). The rows:

* ``plain``: NeighbourEnhancedDNN without any neighbour set, the YouTube-DNN-style ranker its
  paper compares with;
* ``neighbour_enhanced_dnn``: all four neighbour sets, both attention levels;
* ``mean_pooling``: all four sets, the released code's mean pooling (``attention=False``);
* ``without_<type>``: all sets but one (profile, interest, collaborative, category): what
  each pluggable signal adds;
* ``with_knowledge``: the four and the knowledge-graph neighbours (MovieLens-100K only: the
  simulator has no knowledge graph);
* ``two_tower``: Social4Rec without its social interests (``social=False``), its paper's baseline;
* ``social4rec``: with them (MovieLens-100K's "social graph" is a stand-in of shared
  attributes: :mod:`tfrec_onerec.data.social`).

A data set may name its split after a colon: ``simulator:cold-users`` holds whole users out
(:mod:`tfrec_onerec.data.samples`), so every test user is cold (never trained on; its
least-active fifth is then every test user).

Writes ``docs/results/onerec_series.md`` and the raw figures to
``benchmarks/results/onerec_series_results.json``.

Usage::

    python benchmarks/onerec_series_results.py [--datasets movielens-100k,simulator] [--models ...]
        [--seeds 0,1,2] [--epochs 2] [--merge]
"""
from __future__ import annotations

import argparse

import tfrec_onerec  # noqa: F401  (sets the process environment before TensorFlow is imported)
from tfrec_onerec import evaluation
from tfrec_onerec.models.onerec_series.neighbours import ITEM_TYPES, OPTIONAL_ITEM_TYPES, USER_TYPES

from _ranker_runs import fit_and_collect, scored_slice
from _results_grid import grid_arguments, mean_std, run_grid

MODEL = "neighbour_enhanced_dnn"
SOCIAL = "social4rec"
TAIL_FRACTION = 0.2


def without(kind: str) -> dict:
    return {"user_neighbour_types": [t for t in USER_TYPES if t != kind],
            "item_neighbour_types": [t for t in ITEM_TYPES if t != kind]}


VARIANTS = {"plain": (MODEL, {"user_neighbour_types": [], "item_neighbour_types": []}), MODEL: (MODEL, {}),
            "mean_pooling": (MODEL, {"attention": False}),
            **{f"without_{kind}": (MODEL, without(kind)) for kind in USER_TYPES + ITEM_TYPES},
            "with_knowledge": (MODEL, {"item_neighbour_types": [*ITEM_TYPES, *OPTIONAL_ITEM_TYPES]}),
            "two_tower": (SOCIAL, {"social": False}), SOCIAL: (SOCIAL, {})}
SECTIONS = {MODEL: "NeighbourEnhancedDNN", SOCIAL: "Social4Rec"}


def run_one(name: str, dataset: str, seed: int, epochs: int) -> dict:
    model_name, hyperparameters = VARIANTS[name]
    run = fit_and_collect(model_name, dataset, seed, epochs, hyperparameters)
    tail = evaluation.least_active_users(run["activity_users"], run["activity_positive"], run["out"]["users"],
                                         TAIL_FRACTION)
    tail_metrics, tail_examples = scored_slice(run, tail)
    return {"model": name, "model_class": model_name, "dataset": dataset, "seed": seed,
            "epochs_run": len(run["result"].history.history["loss"]), "seconds": run["seconds"],
            "all": evaluation.score_predictions(run["out"], run["tasks"]), "tail": tail_metrics,
            "tail_users": int(len(tail)), "tail_examples": tail_examples}


def markdown(rows: list, seeds: list, epochs: int) -> str:
    lines = ["# The OneRec series: test metrics", "",
             f"Written by `benchmarks/onerec_series_results.py` (seeds {', '.join(map(str, seeds))}; at most "
             f"{epochs} epochs, early stopping on validation AUC; mean ± standard deviation over the seeds). "
             f"`click` AUC and GAUC on all test users and on the least active ones: the {TAIL_FRACTION:.0%} of test "
             "users with the fewest training clicks (the long tail, the cold users). Neighbour sets and social "
             "interests are built from the training split only.", ""]
    for model_name, title in SECTIONS.items():
        section = [r for r in rows if r.get("model_class", MODEL) == model_name]
        if not section:
            continue
        lines += [f"## {title}", ""]
        for dataset in dict.fromkeys(r["dataset"] for r in section):
            subset = [r for r in section if r["dataset"] == dataset]
            first = subset[0]
            lines += [f"### {dataset}", "", f"Least active: {first['tail_users']} users, {first['tail_examples']} "
                      "test examples.", "", "| variant | AUC | GAUC | least-active AUC | least-active GAUC | epochs "
                      "| seconds |", "|---|---|---|---|---|---|---|"]
            for name in dict.fromkeys(r["model"] for r in subset):
                runs = [r for r in subset if r["model"] == name]
                cells = [mean_std([r[part]["click"][metric] for r in runs])
                         for part in ("all", "tail") for metric in ("auc", "gauc")]
                cells += [mean_std([r["epochs_run"] for r in runs], 1), mean_std([r["seconds"] for r in runs], 0)]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def describe(row: dict) -> str:
    return (f"{row['epochs_run']} epochs, {row['seconds']:.0f} s, AUC {row['all']['click']['auc']:.4f}, "
            f"least-active AUC {row['tail']['click']['auc']:.4f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    grid_arguments(parser, tuple(VARIANTS), "movielens-100k,simulator", 2, "onerec_series.md")
    run_grid(parser.parse_args(argv), "onerec_series_results", run_one, markdown, describe)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""LSIR against the same encoder on the raw social graph, on inactive users, 3 seeds.

For each seed, the social-graph family's data (:mod:`tfrec_onerec.data.social_interactions`:
3,000 users, 400 items; 30% of the evaluated users cut to 3 training items; the observed
graph misses 30% of the true friendships and adds 0.3x as many random links) is built from a
world of that seed, each variant is trained with the family's defaults (up to 20 epochs,
early stopping on the validation hit rate, best weights kept) and every evaluated user's
test items are ranked among the items they have not seen. The table gives NDCG@10 and
Recall@10 of all, inactive and active users, popularity's on the same users, and for the
variants that learn their graph: the observed and the learned graph's precision against the
true friendships, the learned graph's recall, and the shares of noisy and true observed links
it removed.
Rows: ``lsir`` (defaults), ``lsir_no_mimic`` (``mimic_weight=0``), ``raw_graph`` (``learn_graph=False``:
the same encoder on the observed graph).

Usage::

    python benchmarks/lsir_results.py [--seeds 0,1,2] [--epochs 20] [--merge]

Writes ``docs/results/lsir.md`` and the raw rows to ``benchmarks/results/lsir_results.json``.
"""
from __future__ import annotations

import argparse
import tempfile

import tfrec_onerec  # noqa: F401  (sets the process environment before TensorFlow is imported)

from tfrec_onerec import families

from _results_grid import grid_arguments, mean_std, run_grid

VARIANTS = {"lsir": {}, "lsir_no_mimic": {"mimic_weight": 0.0}, "raw_graph": {"learn_graph": False}}
GROUPS = ("all", "inactive", "active")
_DATA: dict = {}


def family_data(seed: int):
    """The seed's prepared data, shared by the variants of one run."""
    family = families.get("social_graph")
    if seed not in _DATA:
        _DATA[seed] = family.prepare("simulator", {"seed": seed}, directory=tempfile.mkdtemp(prefix="lsir-results-"))
    return _DATA[seed]


def run_one(name: str, dataset: str, seed: int, epochs: int) -> dict:
    family = families.get("social_graph")
    data = family_data(seed)
    config = family.train_config(family.model_class("lsir"), {"epochs": epochs, "seed": seed, "verbose": 0})
    trained = family.fit("lsir", data, config, hyperparameters=VARIANTS[name])
    results = family.evaluate(trained.model, data, "test")
    row = {"model": name, "dataset": dataset, "seed": seed, "epochs_run": len(trained.history.history["loss"])}
    for group in GROUPS:
        for ranker in ("model", "popularity"):
            for metric in ("ndcg@10", "recall@10"):
                row[f"{group}_{ranker}_{metric}"] = results["groups"][group][ranker][metric]
    if "graph" in results:
        graph = results["graph"]
        row.update({"learned_precision": graph["learned"]["precision"], "learned_recall": graph["learned"]["recall"],
                    "observed_precision": graph["observed"]["precision"],
                    "noisy_removed": graph["noisy_removed"], "true_removed": graph["true_removed"]})
    return row


def markdown(rows: list, seeds: list, epochs: int) -> str:
    lines = ["# LSIR: a learned social graph for inactive users (simulator)", "",
             f"`benchmarks/lsir_results.py`: seeds {seeds}, up to {epochs} epochs (early stopping on the validation "
             "hit rate), 3,000 users x 400 items, 30% of the evaluated users inactive (3 training items); the observed "
             "graph misses 30% of the true friendships and 30% of its links are noise. Test items ranked among the "
             "unseen items (mean ± std over seeds).", "",
             "| variant | NDCG@10 inactive | NDCG@10 active | NDCG@10 all | Recall@10 inactive | Recall@10 all "
             "| popularity NDCG@10 inactive | observed graph precision | learned graph precision | recall "
             "| noisy links removed | true links removed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        keys = ("inactive_model_ndcg@10", "active_model_ndcg@10", "all_model_ndcg@10", "inactive_model_recall@10",
                "all_model_recall@10", "inactive_popularity_ndcg@10")
        cells = [mean_std([r[k] for r in mine]) for k in keys]
        cells += [mean_std([r.get(k) for r in mine], 3) for k in ("observed_precision", "learned_precision",
                                                                  "learned_recall", "noisy_removed", "true_removed")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe(row: dict) -> str:
    graph = (f", removed {row['noisy_removed']:.1%} noisy / {row['true_removed']:.1%} true links"
             if "noisy_removed" in row else "")
    return (f"inactive NDCG@10 {row['inactive_model_ndcg@10']:.4f} (popularity "
            f"{row['inactive_popularity_ndcg@10']:.4f}), all {row['all_model_ndcg@10']:.4f}, "
            f"{row['epochs_run']} epochs{graph}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    grid_arguments(parser, VARIANTS, "simulator", 20, "lsir.md")
    run_grid(parser.parse_args(argv), "lsir_results", run_one, markdown, describe)


if __name__ == "__main__":
    main()

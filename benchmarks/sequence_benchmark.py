"""Sequence rankers side by side with DeepCTR 0.9.4's DIN and BST: test AUC and training throughput.

The setting of ``din_benchmark.py`` (whose helpers this script imports) on the point-wise
family's data of ``--dataset`` (default: the simulator, whose histories are earlier clicks
and whose unclicked exposures are real negatives): our DIN, DIEN and SIM, each trained
through its family for ``--epochs`` epochs, and, in a legacy-Keras subprocess on the same
rows, DeepCTR's DIN and BST (Behavior Sequence Transformer: one transformer layer, 8 heads,
over the history; DIEN has no DeepCTR baseline that runs on this TensorFlow). Every model
gets the spec's embedding tables (N(0, 0.05)), the MLP (200, 80) with PReLU, no L2, no
dropout, Adam, binary cross-entropy, the same batch size, epochs and shuffling; DIN's
attention units are (80, 40) in both libraries.

Throughput is examples/s over the last epoch after its first ``--warmup-steps`` steps (our
models read their batches from the family's TFRecords, DeepCTR from arrays in memory); the
ratio column divides each row's throughput by DeepCTR DIN's. Test AUC and GAUC of all five
are computed by :mod:`tfrec_onerec.metrics` from their test scores.

Usage::

    python benchmarks/sequence_benchmark.py [--dataset simulator] [--epochs 1] [--batch-size 256] [--quick]

Prints the table and writes the figures to ``benchmarks/results/sequence_benchmark.json``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import tfrec_onerec  # noqa: F401  (sets the process environment before TensorFlow is imported)

from din_benchmark import (ATTENTION_UNITS, DEEPCTR_VERSION, HERE, LABEL, MLP_UNITS, add_common_arguments,
                           check_warmup, load_samples, train_deepctr, train_ours, write_results)

OURS = {
    "din": {"attention_units": ATTENTION_UNITS, "mlp_units": MLP_UNITS, "activation": "prelu",
            "attention_softmax": False},
    "dien": {"mlp_units": MLP_UNITS, "activation": "prelu"},
    "sim": {"mlp_units": MLP_UNITS, "activation": "prelu", "attention_units": ATTENTION_UNITS},
}
THEIRS = ("din", "bst")


def report(results: dict) -> str:
    cfg = results["config"]
    rows = [(f"tfrec_onerec {name}", r) for name, r in results["tfrec_onerec"].items()]
    rows += [(f"DeepCTR {DEEPCTR_VERSION} {name}", r) for name, r in results["deepctr"].items()]
    baseline = results["deepctr"].get("din", {}).get("examples_per_second")
    lines = [f"{cfg['dataset']}: {results['train_examples']:,} training / {results['test_examples']:,} test examples; "
             f"batch {cfg['batch_size']}, {cfg['epochs']} epoch(s), Adam {cfg['learning_rate']:g}; throughput: last "
             f"epoch after its first {cfg['warmup_steps']} steps; {os.cpu_count()} CPU cores", "",
             "| model | train ex/s | vs DeepCTR DIN | epoch s | test AUC | GAUC | params |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows:
        ratio = f"{r['examples_per_second'] / baseline:.2f}x" if baseline else "-"
        lines.append(f"| {name} | {r['examples_per_second']:,.0f} | {ratio} | {r['epoch_seconds'][-1]:.1f} "
                     f"| {r['test_auc']:.4f} | {r['test_gauc']:.4f} | {r['params']:,} |")
    for name, error in results.get("deepctr_errors", {}).items():
        lines.append(f"DeepCTR {name}: FAILED ({error.splitlines()[0]})")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="simulator", choices=("simulator", "movielens-100k"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    add_common_arguments(parser, HERE / "results" / "sequence_benchmark.json", "only our models")
    args = parser.parse_args(argv)
    args.activation = "prelu"  # read by train_deepctr

    workdir = tempfile.TemporaryDirectory(prefix="sequence-benchmark-data-")
    data, splits = load_samples(args.quick, Path(workdir.name), "din", args.dataset)
    n_train = len(splits["train"][LABEL])
    check_warmup(args, n_train)
    results = {"benchmark": "sequence",
               "config": {"dataset": args.dataset, "epochs": args.epochs, "batch_size": args.batch_size,
                          "learning_rate": args.learning_rate, "warmup_steps": args.warmup_steps,
                          "quick": args.quick, "seed": args.seed},
               "train_examples": n_train, "test_examples": int(len(splits["test"][LABEL])),
               "tfrec_onerec": {}, "deepctr": {}}
    for name, hyperparameters in OURS.items():
        print(f"training tfrec_onerec {name} ({n_train:,} examples, {args.epochs} epoch(s)) ...", flush=True)
        _, results["tfrec_onerec"][name] = train_ours(data, args, name, dict(hyperparameters))
    if not args.skip_deepctr:
        for name in THEIRS:
            print(f"training DeepCTR {DEEPCTR_VERSION} {name} (subprocess, TF_USE_LEGACY_KERAS=1) ...", flush=True)
            try:
                results["deepctr"][name] = train_deepctr(data.spec, splits, args, name)
            except Exception as error:  # noqa: BLE001  (any failure: still report the others)
                results.setdefault("deepctr_errors", {})[name] = f"{type(error).__name__}: {error}"
    workdir.cleanup()

    print()
    print(report(results))
    write_results(results, args.output)
    if results.get("deepctr_errors"):
        print("\n".join(results["deepctr_errors"].values()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

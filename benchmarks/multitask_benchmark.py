"""Multi-task benchmark: ESMM, MMoE and PLE training throughput and per-task test AUC against DeepCTR 0.9.4.

The setting of ``din_benchmark.py`` (whose helpers this script imports), for the point-wise
family's multi-task rankers on the data set's funnel (``--dataset simulator``: click ->
conversion; ``movielens-100k``: click -> like; for ESMM the CTR and CTCVR tasks, exactly
DeepCTR's ESMM, plus its pCVR output scored on clicked impressions), per model:

1. **tfrec_onerec** (Keras 3): ``families.for_model(model)``'s data, training batches and
   model with the explicit hyperparameters of :data:`HYPERPARAMETERS`, trained by
   :func:`tfrec_onerec.training.fit` without a validation split, test metrics by
   ``family.evaluate``.
2. **DeepCTR 0.9.4** (``ESMM``, ``MMOE``, ``PLE``; Keras 2) with the same configuration on the
   same rows read back as arrays, in a subprocess (``_deepctr_multitask.py``) with
   ``TF_USE_LEGACY_KERAS=1`` and only DeepCTR's ``--no-deps`` install on ``PYTHONPATH``.
   Its test scores are scored by the same function as ours
   (:func:`tfrec_onerec.evaluation.score_predictions`, i.e. :func:`tfrec_onerec.metrics.auc`).

Both: the spec's embedding tables (shared by vocabulary, ``vocab_size + 2`` rows, N(0, 0.05)),
histories mean-pooled over their real steps, every feature concatenated; relu experts and
towers of the same widths; no L2, no dropout; Adam, binary cross-entropy summed over the two
tasks, the same batch size and epochs, shuffled every epoch. Throughput: examples/s over the
last epoch after its first ``--warmup-steps`` steps, timed by the same callback logic.

Usage::

    python benchmarks/multitask_benchmark.py [--models esmm,mmoe,ple] [--dataset simulator|movielens-100k]
        [--epochs 1] [--batch-size 256] [--seed 0] [--quick] [--skip-deepctr]

Prints a table per model and writes the JSON to ``benchmarks/results/multitask_benchmark.json``.
Exits with status 1 when a DeepCTR run failed (our figures are still reported).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import tfrec_onerec  # noqa: F401  (sets the process environment before TensorFlow is imported)
from din_benchmark import (DEEPCTR_VERSION, EMBEDDING_STDDEV, QUICK_FRACTION, SEED, TAIL_CHARS, DeepCTRFailed,
                           Throughput, add_common_arguments, check_warmup, install_deepctr,
                           timed_figures, write_results)
import keras
import numpy as np
import tensorflow as tf

from tfrec_onerec import data as datasets
from tfrec_onerec import evaluation, families, training
from tfrec_onerec.families import FamilyData
from tfrec_onerec.features.tfrecord import write_tfrecords

HERE = Path(__file__).resolve().parent
DEEPCTR_SCRIPT = HERE / "_deepctr_multitask.py"
COMMON = {"activation": "relu", "dropout": 0.0, "l2": 0.0}
HYPERPARAMETERS = {  # our models' defaults, given explicitly so that both libraries get the same
    "esmm": {"tower_units": [360, 200, 80], **COMMON},
    "mmoe": {"shared_experts": 4, "expert_units": [64], "tower_units": [32], **COMMON},
    "ple": {"num_levels": 2, "task_experts": 1, "shared_experts": 4, "expert_units": [64], "tower_units": [32],
            **COMMON},
}
CVR_NAME = "cvr"  # ESMM's pCVR output (scored on clicked impressions and over the entire space)


def load_samples(dataset: str, tasks: list, quick: bool, workdir: Path) -> tuple:
    """``(data, {"train": columns, "test": columns})`` as ``din_benchmark.load_samples`` for the
    point-wise family's `dataset` with its default options and the funnel's label columns."""
    family = families.for_model("mmoe")
    data = family.prepare(dataset, {})
    spec = data.spec
    keep = list(dict.fromkeys(list(spec.names) + tasks + [spec.user_key]))
    columns = {name: data.columns(name) for name in ("train", "test")}
    if quick:
        n = len(columns["train"][tasks[0]])
        rows = np.sort(np.random.default_rng(SEED).choice(n, int(n * QUICK_FRACTION), replace=False))
        columns["train"] = {c: v[rows] for c, v in columns["train"].items()}
        path = str(workdir / "train.tfrecord")
        count = write_tfrecords(path, columns["train"], spec, spec.labels, progress=False)
        data = FamilyData(spec, {**data.metadata, "examples": {**data.metadata["examples"], "train": count}},
                          {**data.files, "train": path}, data.compression, data.side_dir)
    return data, {name: {c: columns[name][c] for c in keep} for name in columns}


def train_ours(name: str, data: FamilyData, tasks: list, args) -> tuple:
    family = families.for_model(name)
    model_class = family.model_class(name)
    config = family.train_config(model_class, {
        "epochs": args.epochs, "learning_rate": args.learning_rate, "batch_size": args.batch_size,
        "seed": args.seed, "early_stopping_patience": None, "verbose": 0})
    hyperparameters = {**HYPERPARAMETERS[name], **({"cvr_name": CVR_NAME} if name == "esmm" else {})}
    keras.utils.set_random_seed(config.seed)
    timer = Throughput(args.epochs, args.warmup_steps)
    model, _ = training.fit(lambda: family.build_model(model_class, data, hyperparameters, tasks),
                            family.dataset(data, "train", config, training=True), None, config, callbacks=[timer])
    figures = timed_figures(timer, data.examples("train"), args)
    figures.update(quality=family.evaluate(model, data, "test"), params=int(model.count_params()),
                   versions={"tensorflow": tf.__version__, "keras": keras.__version__})
    return model.tasks, figures


def train_deepctr(name: str, work: Path, model_tasks, splits, args) -> dict:
    """One model in the subprocess; `work` holds ``config.json`` and ``data.npz``."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONPATH=str(install_deepctr()))
    done = subprocess.run([sys.executable, str(DEEPCTR_SCRIPT), str(work), name], env=env, cwd=work,
                          capture_output=True, text=True)
    if done.returncode != 0 or not (work / f"{name}_result.json").is_file():
        raise DeepCTRFailed(f"the DeepCTR {name} subprocess failed (exit {done.returncode}); stderr tail:\n"
                            f"{done.stderr[-TAIL_CHARS:]}\nstdout tail:\n{done.stdout[-TAIL_CHARS:]}")
    result = json.loads((work / f"{name}_result.json").read_text())
    with np.load(work / f"{name}_scores.npz") as scores:
        out = {"scores": {t: scores[t] for t in scores.files}, "users": splits["test"]["user_id"],
               "labels": {t.label: splits["test"][t.label] for t in model_tasks}}
    result["quality"] = evaluation.score_predictions(out, model_tasks)
    return result


def write_inputs(work: Path, spec, tasks: list, splits, args) -> None:
    columns = list(spec.names) + tasks
    np.savez(work / "data.npz", **{f"{split}/{c}": splits[split][c] for split in ("train", "test") for c in columns})
    config = {"features": spec.get_config()["features"], "tasks": tasks, "cvr_name": CVR_NAME,
              "hyperparameters": HYPERPARAMETERS, "epochs": args.epochs, "batch_size": args.batch_size,
              "learning_rate": args.learning_rate, "warmup_steps": args.warmup_steps,
              "embedding_stddev": EMBEDDING_STDDEV, "seed": args.seed}
    (work / "config.json").write_text(json.dumps(config))


# -- report ---------------------------------------------------------------------------------
def report(name: str, r: dict, results: dict) -> str:
    ours, theirs, cfg = r["tfrec_onerec"], r.get("deepctr"), results["config"]
    columns = [(t, "auc") for t in ours["quality"]] + [(t, "entire_space_auc") for t, q in ours["quality"].items()
                                                      if "entire_space_auc" in q]
    heads = [t if key == "auc" else f"{t}(all)" for t, key in columns]
    lines = [
        f"{name.upper()} on {cfg['dataset']} ({' -> '.join(cfg['tasks'])}): {ours['examples']:,} training / "
        f"{results['test_examples']:,} test examples; batch {cfg['batch_size']}, {cfg['epochs']} epoch(s), "
        f"Adam {cfg['learning_rate']:g}; throughput over {ours['timed_examples']:,} examples "
        f"(last epoch after {cfg['warmup_steps']} steps), {results['environment']['cpus']} CPU cores",
        f"{'':<31}{'':>12}{'':>9}{'':>9}  test AUC",
        f"{'library':<31}{'train ex/s':>12}{'epoch s':>9}{'params':>9}  " + "".join(f"{h:>12}" for h in heads),
    ]

    def row(label, f):
        return (f"{label:<31}{f['examples_per_second']:>12,.0f}{f['epoch_seconds'][-1]:>9.1f}{f['params']:>9,}  "
                + "".join(f"{f['quality'][t][key]:>12.4f}" for t, key in columns))

    lines.append(row(f"tfrec_onerec (Keras {ours['versions']['keras']})", ours))
    if theirs:
        lines.append(row(f"DeepCTR {theirs['versions']['deepctr']} ({theirs['versions']['tf.keras']})", theirs))
        lines.append(f"throughput ratio tfrec_onerec / DeepCTR: {r['throughput_ratio']:.2f}x")
    elif "deepctr_error" in r:
        lines.append(f"DeepCTR {DEEPCTR_VERSION}: FAILED (see the error below)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="esmm,mmoe,ple", help="comma-separated, of esmm, mmoe, ple")
    parser.add_argument("--dataset", choices=("simulator", "movielens-100k"), default="simulator")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    add_common_arguments(parser, HERE / "results" / "multitask_benchmark.json", "only our models")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or set(models) - set(HYPERPARAMETERS):
        parser.error(f"--models: a comma-separated list of {', '.join(HYPERPARAMETERS)}; got {args.models!r}")
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be >= 1")

    tasks = list(datasets.get(args.dataset).funnel)
    workdir = tempfile.TemporaryDirectory(prefix="multitask-benchmark-")
    work = Path(workdir.name)
    data, splits = load_samples(args.dataset, tasks, args.quick, work)
    n_train = len(splits["train"][tasks[0]])
    check_warmup(args, n_train)
    results = {
        "benchmark": "multitask",
        "config": {"dataset": args.dataset, "tasks": tasks, "models": models, "hyperparameters": HYPERPARAMETERS,
                   "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                   "warmup_steps": args.warmup_steps, "embedding_stddev": EMBEDDING_STDDEV, "quick": args.quick,
                   "seed": args.seed},
        "test_examples": int(len(splits["test"][tasks[0]])),
        "environment": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "machine": platform.machine(), "platform": platform.platform()},
        "models": {},
    }
    if not args.skip_deepctr:
        write_inputs(work, data.spec, tasks, splits, args)
    failures = []
    for name in models:
        r = results["models"][name] = {}
        print(f"training tfrec_onerec {name} ({n_train:,} examples, {args.epochs} epoch(s)) ...", flush=True)
        model_tasks, r["tfrec_onerec"] = train_ours(name, data, tasks, args)
        if args.skip_deepctr:
            continue
        print(f"training DeepCTR {DEEPCTR_VERSION} {name} (subprocess, TF_USE_LEGACY_KERAS=1) ...", flush=True)
        try:
            r["deepctr"] = train_deepctr(name, work, model_tasks, splits, args)
            r["throughput_ratio"] = r["tfrec_onerec"]["examples_per_second"] / r["deepctr"]["examples_per_second"]
        except Exception as error:  # noqa: BLE001  (any failure: still report our figures)
            r["deepctr_error"] = f"{type(error).__name__}: {error}"
            failures.append(f"{name}: {r['deepctr_error']}")
    workdir.cleanup()

    for name, r in results["models"].items():
        print()
        print(report(name, r, results))
    write_results(results, args.output)
    for failure in failures:
        print(f"\nDeepCTR run failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

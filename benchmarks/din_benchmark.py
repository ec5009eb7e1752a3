"""DIN benchmark: training throughput and test AUC against DeepCTR 0.9.4, and SavedModel latency.

One run, one report, on the same MovieLens-100K CTR samples for both libraries: DIN's
family's data (``families.for_model("din").prepare("movielens-100k")``, the cached TFRecord
splits of the point-wise family with its default options: leave-one-out splits, label
``click``, one sampled negative per training positive, four per test positive):

1. **tfrec_onerec DIN** (Keras 3) built and trained through its family for ``--epochs``
   epochs: the family's training batches (``family.dataset``) and model
   (``family.build_model``), trained by :func:`tfrec_onerec.training.fit` without a
   validation split (``family.fit`` would validate every epoch, inside the timed epoch,
   which DeepCTR's run does not); test AUC (and GAUC, log loss) by ``family.evaluate``.
2. **SavedModel latency**: the model is exported with ``family.export``, loaded back with
   ``tf.saved_model.load``,
   and its ``predict`` (named raw tensors) and ``serving_default`` (serialized tf.Example)
   signatures are timed at batch 1 (200 calls) and 256 (50 calls) after 20 warm-up calls.
3. **DeepCTR 0.9.4 DIN** (Keras 2) with the same configuration on the same rows (the
   TFRecord splits read back as arrays), in a
   subprocess (``_deepctr_din.py``) with ``TF_USE_LEGACY_KERAS=1``. DeepCTR is installed by
   this script with ``pip install --no-deps`` into a cache directory that only the
   subprocess sees on ``PYTHONPATH``; it is never a dependency of the project.

Both models: the spec's embedding tables (item and genre tables shared between candidate
and history, ``vocab_size + 2`` rows, N(0, 0.05) initialisation), attention units (80, 40)
without softmax, MLP (200, 80), the same activation (``--activation``, default ``prelu``
as our DIN's default; PReLU slopes start at 0.25 in both), no L2, no dropout, Adam,
binary cross-entropy, the same batch size and epochs, shuffled every epoch.

Throughput: examples/s over the **last epoch after its first ``--warmup-steps`` steps**
(that excludes ``tf.function`` tracing and the input pipeline's start), measured by the
same Keras callback logic in both libraries. Our DIN reads its batches from the TFRecords as
every entry point trains (``family.dataset``: parsed per batch, shuffled with a 100,000-row
buffer, prefetched), so its throughput includes that input pipeline; DeepCTR trains on the
arrays in memory. The test AUC of both is computed by
:func:`tfrec_onerec.metrics.auc` from the test scores.

Usage::

    python benchmarks/din_benchmark.py [--epochs 1] [--batch-size 256] [--activation prelu|dice] [--quick]

Prints the report and writes it as JSON to ``benchmarks/results/din_benchmark.json``. Exits
with status 1 when the DeepCTR run failed (our figures are still reported).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tfrec_onerec  # noqa: F401  (sets the process environment before TensorFlow is imported)
import keras
import numpy as np
from _throughput import ThroughputTimer
import tensorflow as tf

from tfrec_onerec import families, metrics, training
from tfrec_onerec.data.download import default_cache_dir
from tfrec_onerec.export import model_inputs
from tfrec_onerec.families import FamilyData
from tfrec_onerec.features.tfrecord import serialize_rows, write_tfrecords

HERE = Path(__file__).resolve().parent
DEEPCTR_SCRIPT = HERE / "_deepctr_din.py"
DEEPCTR_VERSION = "0.9.4"
MODEL = "din"
DATASET = "movielens-100k"
LABEL = "click"
SEED = 0  # of the --quick subset (the samples themselves are the family's default data options)
EMBEDDING_STDDEV = 0.05  # our FeatureEmbedding's initialiser; DeepCTR's default would be 1e-4
ATTENTION_UNITS = (80, 40)
MLP_UNITS = (200, 80)
LATENCY_WARMUP_CALLS = 20
LATENCY_CALLS = {1: 200, 256: 50}
QUICK_FRACTION = 0.2
TAIL_CHARS = 4000


class Throughput(ThroughputTimer, keras.callbacks.Callback):
    """:class:`ThroughputTimer` on this process's Keras."""


def load_samples(quick: bool, workdir: Path, model: str = MODEL, dataset: str = DATASET) -> tuple:
    """``(data, {"train": columns, "test": columns})``: `model`'s family's data of `dataset` and
    the same rows as arrays (for DeepCTR and the latency inputs). `quick` keeps a seeded 20% of
    train, written to `workdir` as the data's train split."""
    family = families.for_model(model)
    data = family.prepare(dataset)
    spec = data.spec
    keep = list(dict.fromkeys(list(spec.names) + [LABEL, spec.user_key]))
    columns = {name: data.columns(name) for name in ("train", "test")}
    if quick:
        n = len(columns["train"][LABEL])
        rows = np.sort(np.random.default_rng(SEED).choice(n, int(n * QUICK_FRACTION), replace=False))
        columns["train"] = {c: v[rows] for c, v in columns["train"].items()}  # every label column, as prepared
        path = str(workdir / "train.tfrecord")
        count = write_tfrecords(path, columns["train"], spec, spec.labels, progress=False)
        data = FamilyData(spec, {**data.metadata, "examples": {**data.metadata["examples"], "train": count}},
                          {**data.files, "train": path}, data.compression, data.side_dir)
    return data, {name: {c: columns[name][c] for c in keep} for name in columns}


def check_warmup(args, n_train: int) -> None:
    steps = -(-n_train // args.batch_size)
    if not 0 <= args.warmup_steps < steps:
        raise SystemExit(f"--warmup-steps must be in [0, {steps}) (steps per epoch at batch size "
                         f"{args.batch_size}); got {args.warmup_steps}.")


def timed_figures(timer: Throughput, n_train: int, args) -> dict:
    timed_examples = n_train - args.warmup_steps * args.batch_size
    return {"examples": n_train, "epoch_seconds": timer.epoch_seconds, "timed_examples": timed_examples,
            "timed_seconds": timer.timed_seconds, "examples_per_second": timed_examples / timer.timed_seconds}


# -- tfrec_onerec ---------------------------------------------------------------------------
def train_ours(data: FamilyData, args, model_name: str = MODEL, hyperparameters: dict | None = None) -> tuple:
    """Trains one of our point-wise rankers through its family (default: DIN with the benchmark's
    hyperparameters); returns ``(model, figures)``."""
    family = families.for_model(model_name)
    model_class = family.model_class(model_name)
    config = family.train_config(model_class, {
        "epochs": args.epochs, "learning_rate": args.learning_rate, "batch_size": args.batch_size,
        "seed": args.seed, "early_stopping_patience": None, "verbose": 0})
    if hyperparameters is None:
        hyperparameters = {"attention_units": ATTENTION_UNITS, "mlp_units": MLP_UNITS, "activation": args.activation,
                           "attention_softmax": False, "dropout": 0.0, "l2": 0.0}
    keras.utils.set_random_seed(config.seed)
    n_train = data.examples("train")
    timer = Throughput(args.epochs, args.warmup_steps)
    model, _ = training.fit(
        lambda: family.build_model(model_class, data, hyperparameters, [LABEL]),
        family.dataset(data, "train", config, training=True), None, config, callbacks=[timer])
    quality = family.evaluate(model, data, "test")[LABEL]
    figures = timed_figures(timer, n_train, args)
    figures.update(test_auc=quality["auc"], test_gauc=quality["gauc"], test_logloss=quality["logloss"],
                   params=int(model.count_params()),
                   versions={"tensorflow": tf.__version__, "keras": keras.__version__})
    return model, figures


# -- SavedModel latency ---------------------------------------------------------------------
def time_calls(function, inputs: dict, batch: int, calls: int) -> dict:
    for _ in range(LATENCY_WARMUP_CALLS):
        function(**inputs)
    seconds = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        function(**inputs)
        seconds[i] = time.perf_counter() - start
    ms = seconds * 1e3
    return {"batch": batch, "calls": calls, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()),
            "examples_per_second": float(batch * calls / seconds.sum())}


def serving_latency(model, data: FamilyData, splits) -> dict:
    """p50/p99 latency and examples/s of both signatures of the exported model."""
    spec = model_inputs(model)
    test = splits["test"]
    results = {}
    with tempfile.TemporaryDirectory(prefix="din-benchmark-") as tmp:
        loaded = tf.saved_model.load(str(families.for_model(MODEL).export(model, Path(tmp) / "din", data)))
        for batch, calls in LATENCY_CALLS.items():
            rows = {name: test[name][:batch] for name in spec.names}
            raw = {f.name: tf.constant(rows[f.name].astype(f.dtype)) for f in spec}
            examples = {"examples": tf.constant(serialize_rows(rows, spec), dtype=tf.string)}
            results[f"predict@{batch}"] = time_calls(loaded.signatures["predict"], raw, batch, calls)
            results[f"serving_default@{batch}"] = time_calls(loaded.signatures["serving_default"], examples,
                                                             batch, calls)
    return results


# -- DeepCTR --------------------------------------------------------------------------------
class DeepCTRFailed(RuntimeError):
    pass


def deepctr_dir() -> Path:
    return default_cache_dir() / "bench-deps" / f"deepctr-{DEEPCTR_VERSION}"


def install_deepctr() -> Path:
    """``pip install --no-deps deepctr==0.9.4 --target <cache>`` once; returns the target."""
    target = deepctr_dir()
    if (target / "deepctr" / "__init__.py").is_file():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    print(f"installing deepctr=={DEEPCTR_VERSION} (--no-deps) into {target} ...", flush=True)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check",
                           "--no-input", "--target", str(partial), f"deepctr=={DEEPCTR_VERSION}"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise DeepCTRFailed(f"pip install deepctr=={DEEPCTR_VERSION} failed (exit {done.returncode}):\n"
                            f"{(done.stdout + done.stderr)[-TAIL_CHARS:]}")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def train_deepctr(spec, splits, args, deepctr_model: str = "din") -> dict:
    """Trains DeepCTR's `deepctr_model` (``"din"`` or ``"bst"``) in the legacy-Keras subprocess
    on the same rows; returns its figures with test AUC, GAUC and log loss computed here."""
    target = install_deepctr()
    with tempfile.TemporaryDirectory(prefix="din-benchmark-deepctr-") as tmp:
        work = Path(tmp)
        columns = list(spec.names) + [LABEL]
        np.savez(work / "data.npz", **{f"{split}/{c}": splits[split][c] for split in ("train", "test")
                                       for c in columns})
        config = {"model": deepctr_model, "features": spec.get_config()["features"],
                  "attention_units": list(ATTENTION_UNITS),
                  "mlp_units": list(MLP_UNITS), "activation": args.activation, "epochs": args.epochs,
                  "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                  "warmup_steps": args.warmup_steps, "embedding_stddev": EMBEDDING_STDDEV, "seed": args.seed}
        (work / "config.json").write_text(json.dumps(config))
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONPATH=str(target))
        done = subprocess.run([sys.executable, str(DEEPCTR_SCRIPT), str(work)], env=env, cwd=tmp,
                              capture_output=True, text=True)
        if done.returncode != 0 or not (work / "result.json").is_file():
            raise DeepCTRFailed(f"the DeepCTR subprocess failed (exit {done.returncode}); stderr tail:\n"
                                f"{done.stderr[-TAIL_CHARS:]}\nstdout tail:\n{done.stdout[-TAIL_CHARS:]}")
        result = json.loads((work / "result.json").read_text())
        scores = np.load(work / "test_scores.npy")
    labels, users = splits["test"][LABEL], splits["test"]["user_id"]
    result["subprocess_auc"] = result.pop("test_auc")
    result.update(test_auc=metrics.auc(labels, scores), test_gauc=metrics.gauc(labels, scores, users).value,
                  test_logloss=metrics.log_loss(labels, scores))
    return result


# -- report ---------------------------------------------------------------------------------
def report(results: dict) -> str:
    ours, theirs = results["tfrec_onerec"], results.get("deepctr")
    cfg = results["config"]
    lines = [
        f"DIN on MovieLens-100K CTR samples: {ours['examples']:,} training / {results['test_examples']:,} test "
        f"examples; batch {cfg['batch_size']}, {cfg['epochs']} epoch(s), activation {cfg['activation']}, "
        f"Adam {cfg['learning_rate']:g}",
        f"throughput: last epoch after its first {cfg['warmup_steps']} steps "
        f"({ours['timed_examples']:,} examples); {results['environment']['cpus']} CPU cores",
        "",
        f"{'library':<33}{'train ex/s':>12}{'epoch s':>10}{'test AUC':>10}{'GAUC':>8}{'logloss':>9}{'params':>9}",
    ]

    def row(name, r):
        epoch = r["epoch_seconds"][-1]
        return (f"{name:<33}{r['examples_per_second']:>12,.0f}{epoch:>10.1f}{r['test_auc']:>10.4f}"
                f"{r['test_gauc']:>8.4f}{r['test_logloss']:>9.4f}{r['params']:>9,}")

    lines.append(row(f"tfrec_onerec (Keras {ours['versions']['keras']})", ours))
    if theirs:
        lines.append(row(f"DeepCTR {theirs['versions']['deepctr']} ({theirs['versions']['tf.keras']})", theirs))
        lines.append("")
        lines.append(f"throughput ratio tfrec_onerec / DeepCTR: {results['throughput_ratio']:.2f}x")
    elif "deepctr_error" in results:
        lines += ["DeepCTR 0.9.4: FAILED (see the error below)"]
    lines += ["", f"{'SavedModel signature':<24}{'batch':>6}{'calls':>7}{'p50 ms':>9}{'p99 ms':>9}{'examples/s':>12}"]
    for name, r in results["serving"].items():
        lines.append(f"{name.split('@')[0]:<24}{r['batch']:>6}{r['calls']:>7}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                     f"{r['examples_per_second']:>12,.0f}")
    lines.append("(examples/s = batch x calls / total time of the timed calls)")
    return "\n".join(lines)


def write_results(results: dict, output: Path) -> None:
    """Writes the benchmark's figures as JSON to `output` and says where."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults written to {output}")


def add_common_arguments(parser, output: Path, skip_help: str) -> None:
    """The flags every side-by-side benchmark with DeepCTR takes (timing, smoke run, seed, output)."""
    parser.add_argument("--warmup-steps", type=int, default=50,
                        help="steps at the start of the last epoch left out of the throughput (default 50)")
    parser.add_argument("--quick", action="store_true",
                        help=f"train on a seeded {QUICK_FRACTION * 100:.0f}%% of the training samples (smoke run)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of weight initialisation and shuffling, in both libraries (default 0)")
    parser.add_argument("--skip-deepctr", action="store_true", help=skip_help)
    parser.add_argument("--output", type=Path, default=output)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--activation", choices=("prelu", "dice"), default="prelu",
                        help="activation of the attention unit and the MLP, in both libraries (default: prelu, "
                             "our DIN's default)")
    add_common_arguments(parser, HERE / "results" / "din_benchmark.json", "only our model and the SavedModel latency")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be >= 1")

    workdir = tempfile.TemporaryDirectory(prefix="din-benchmark-data-")
    data, splits = load_samples(args.quick, Path(workdir.name))
    spec = data.spec
    n_train = len(splits["train"][LABEL])
    check_warmup(args, n_train)
    results = {
        "benchmark": "din",
        "config": {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                   "activation": args.activation, "attention_units": list(ATTENTION_UNITS),
                   "mlp_units": list(MLP_UNITS), "attention_softmax": False, "warmup_steps": args.warmup_steps,
                   "embedding_stddev": EMBEDDING_STDDEV, "quick": args.quick, "seed": args.seed},
        "test_examples": int(len(splits["test"][LABEL])),
        "environment": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "machine": platform.machine(), "platform": platform.platform()},
    }

    print(f"training tfrec_onerec DIN ({n_train:,} examples, {args.epochs} epoch(s)) ...", flush=True)
    model, results["tfrec_onerec"] = train_ours(data, args)

    print("measuring SavedModel latency ...", flush=True)
    results["serving"] = serving_latency(model, data, splits)

    failure = None
    if not args.skip_deepctr:
        print(f"training DeepCTR {DEEPCTR_VERSION} DIN (subprocess, TF_USE_LEGACY_KERAS=1) ...", flush=True)
        try:
            results["deepctr"] = train_deepctr(spec, splits, args)
            results["throughput_ratio"] = (results["tfrec_onerec"]["examples_per_second"]
                                           / results["deepctr"]["examples_per_second"])
        except Exception as error:  # noqa: BLE001  (any failure: still report our figures)
            failure = f"{type(error).__name__}: {error}"
            results["deepctr_error"] = failure
    workdir.cleanup()

    print()
    print(report(results))
    write_results(results, args.output)
    if failure:
        print(f"\nDeepCTR run failed:\n{failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""DIN benchmark: training throughput and quality against DeepCTR, and SavedModel latency.

One run, on the same MovieLens-100K CTR samples (leave-one-out, label ``click``):

1. tfrec_onerec DIN: `model.fit`; examples/s of the last epoch (the first epoch includes
   tracing), and test AUC.
2. The same DIN configuration in DeepCTR 0.9.4 (Keras 2), in a subprocess with
   ``TF_USE_LEGACY_KERAS=1``; DeepCTR is installed by this script with ``--no-deps`` into a
   cache directory, never into the project's environment. Same embeddings, attention
   (80, 40), MLP (200, 80), Dice, no attention softmax, Adam, batch size and epochs.
3. The exported SavedModel's ``predict`` and ``serving_default`` (serialized tf.Example)
   signatures at batch 1 and 256: p50 / p99 latency and examples/s.

Prints a report with the throughput ratio (tfrec_onerec / DeepCTR) and writes it to
``benchmarks/results/din_benchmark.json``. Usage::

    python benchmarks/din_benchmark.py [--epochs 2] [--batch-size 256] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tfrec_onerec  # noqa: F401  (environment first)
import keras
import numpy as np
import tensorflow as tf

from tfrec_onerec import metrics, models, training
from tfrec_onerec.data import SampleConfig, movielens
from tfrec_onerec.data.download import default_cache_dir
from tfrec_onerec.export import export_saved_model
from tfrec_onerec.features.datasets import columns_dataset
from tfrec_onerec.features.tfrecord import serialize_rows

HERE = Path(__file__).parent
DEEPCTR = "deepctr==0.9.4"
CONFIG = {"attention_units": [80, 40], "mlp_units": [200, 80], "activation": "dice"}


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = getattr(self, "seconds", []) + [time.perf_counter() - self.start]


def load_samples(quick: bool):
    splits = movielens.build_samples(movielens.load_movielens_100k(), SampleConfig())
    if quick:
        keep = slice(0, 40_000)
        splits["train"] = {k: v[keep] for k, v in splits["train"].items()}
    return movielens.feature_spec(), splits


def train_ours(spec, splits, args):
    keras.utils.set_random_seed(0)
    timer = EpochTimer()
    model, _ = training.fit(
        lambda: models.get("din")(spec, ["click"], attention_units=CONFIG["attention_units"],
                                  mlp_units=CONFIG["mlp_units"], activation=CONFIG["activation"]),
        columns_dataset(splits["train"], spec, ["click"], batch_size=args.batch_size, shuffle=True),
        config=training.TrainConfig(epochs=args.epochs, learning_rate=args.learning_rate, verbose=0),
        callbacks=[timer])
    test = splits["test"]
    scores = model.predict({k: test[k] for k in spec.names}, batch_size=4096, verbose=0)["click"]
    n = len(splits["train"]["click"])
    return model, {"epoch_seconds": timer.seconds, "examples": n, "examples_per_second": n / timer.seconds[-1],
                   "test_auc": metrics.auc(test["click"], scores), "params": int(model.count_params())}


def install_deepctr() -> Path:
    target = default_cache_dir() / "bench-deps" / DEEPCTR.replace("==", "-")
    if not (target / "deepctr").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                        DEEPCTR, "--target", str(target)], check=True)
    return target


def train_deepctr(spec, splits, args):
    with tempfile.TemporaryDirectory() as tmp:
        arrays = {f"{split}/{k}": v for split in ("train", "test") for k, v in splits[split].items()}
        np.savez(Path(tmp) / "data.npz", **arrays)
        config = dict(CONFIG, features=spec.get_config()["features"], epochs=args.epochs,
                      batch_size=args.batch_size, learning_rate=args.learning_rate)
        (Path(tmp) / "config.json").write_text(json.dumps(config))
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1",
                   PYTHONPATH=os.pathsep.join([str(install_deepctr()), str(HERE.parent)]))
        result = subprocess.run([sys.executable, str(HERE / "_deepctr_din.py"), str(Path(tmp) / "data.npz"),
                                 str(Path(tmp) / "config.json")], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"DeepCTR run failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def latency(signature, inputs, calls: int) -> dict:
    """p50/p99 milliseconds of `calls` calls after 10 warm-up calls."""
    for _ in range(10):
        signature(**inputs)
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        signature(**inputs)
        seconds.append(time.perf_counter() - start)
    batch = len(next(iter(inputs.values())))
    ms = np.array(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "examples_per_second": float(batch / np.median(seconds))}


def serving_latency(model, spec, splits) -> dict:
    test = splits["test"]
    with tempfile.TemporaryDirectory() as tmp:
        path = export_saved_model(model, Path(tmp) / "din")
        loaded = tf.saved_model.load(str(path))
        results = {}
        for batch, calls in ((1, 300), (256, 60)):
            raw = {k: tf.constant(test[k][:batch]) for k in spec.names}
            examples = tf.constant(serialize_rows({k: test[k][:batch] for k in spec.names}, spec))
            results[f"predict@{batch}"] = latency(loaded.signatures["predict"], raw, calls)
            results[f"serving_default@{batch}"] = latency(loaded.signatures["serving_default"],
                                                          {"examples": examples}, calls)
    return results


def report(results: dict) -> str:
    ours, theirs = results["tfrec_onerec"], results.get("deepctr")
    lines = [f"DIN on MovieLens-100K ({ours['examples']:,} training examples, batch {results['batch_size']}, "
             f"{results['epochs']} epoch(s); throughput of the last epoch)", "",
             f"{'library':<22}{'train ex/s':>12}{'test AUC':>10}{'params':>10}",
             f"{'tfrec_onerec (Keras 3)':<22}{ours['examples_per_second']:>12,.0f}{ours['test_auc']:>10.4f}"
             f"{ours['params']:>10,}"]
    if theirs:
        lines.append(f"{'DeepCTR 0.9.4 (Keras 2)':<22}{theirs['examples_per_second']:>12,.0f}"
                     f"{theirs['test_auc']:>10.4f}{theirs['params']:>10,}")
        lines.append(f"\nthroughput ratio tfrec_onerec / DeepCTR: "
                     f"{ours['examples_per_second'] / theirs['examples_per_second']:.2f}x")
    lines += ["", f"{'SavedModel signature':<24}{'p50 ms':>9}{'p99 ms':>9}{'examples/s':>12}"]
    for name, r in results["serving"].items():
        lines.append(f"{name:<24}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['examples_per_second']:>12,.0f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--quick", action="store_true", help="40,000 training examples, for a smoke run")
    parser.add_argument("--skip-deepctr", action="store_true")
    args = parser.parse_args(argv)

    spec, splits = load_samples(args.quick)
    print("training tfrec_onerec DIN ...", flush=True)
    model, ours = train_ours(spec, splits, args)
    results = {"epochs": args.epochs, "batch_size": args.batch_size, "tfrec_onerec": ours}
    failure = None
    if not args.skip_deepctr:
        print("training DeepCTR DIN (subprocess, TF_USE_LEGACY_KERAS=1) ...", flush=True)
        try:
            results["deepctr"] = train_deepctr(spec, splits, args)
        except (RuntimeError, subprocess.CalledProcessError) as error:
            failure = str(error)
    print("measuring SavedModel latency ...", flush=True)
    results["serving"] = serving_latency(model, spec, splits)
    print()
    print(report(results))
    out = HERE / "results" / "din_benchmark.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {out}")
    if failure:
        print(failure, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

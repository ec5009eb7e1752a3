"""SIM vs DIN over the full history: training-step time and peak memory as the history grows.

DIN attends over every behaviour, so its cost grows linearly with the history; SIM's hard
search compares ids and keeps ``top_k`` behaviours, and its soft search embeds the history
once and keeps ``top_k``, so their exact attention sees a fixed number of behaviours. Each
(model, history length) runs in a fresh subprocess (so peak memory is its own): it builds
the model on the ``simulator-lifelong`` feature spec with the given history length, then
times ``--steps`` training steps (``train_on_batch``, forward and backward) on random
full-length histories after 2 warm-up steps, and reports the growth of the process's peak
resident memory from just before the first step (``ru_maxrss``: TensorFlow's own footprint
and the model's weights are left out; the step's tracing, activations and gradients are in).

Usage: ``python benchmarks/sim_vs_din.py [--lengths 1000 5000 20000] [--batch-size 32] [--steps 5]``
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

MODELS = {"din": {}, "sim (hard search)": {"search": "hard"}, "sim (soft search)": {"search": "soft"}}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def worker(model_name: str, length: int, batch_size: int, steps: int) -> dict:
    """Times `steps` training steps of one model at one history length (in this process)."""
    import keras
    import numpy as np

    from tfrec_onerec import models
    from tfrec_onerec.data import short_video
    from tfrec_onerec.features.datasets import example_batch

    spec = short_video.feature_spec(short_video.lifelong_world(), max_len=length, time_buckets=True)
    keras.utils.set_random_seed(0)
    name = model_name.split()[0]
    model = models.get(name)(spec, ["click"], **MODELS[model_name])
    model.compile(optimizer="adam", loss=None if name == "sim" else {"click": "binary_crossentropy"})
    rng = np.random.default_rng(0)
    batch = {k: np.asarray(v) for k, v in example_batch(spec.subset(model.input_names), size=batch_size).items()}
    for feature in ("hist_item_id", "hist_category", "hist_time_bucket"):
        if feature in batch:
            batch[feature] = rng.integers(1, spec[feature].vocab_size + 1, (batch_size, length))
    for feature in ("item_id", "category"):
        batch[feature] = rng.integers(1, spec[feature].vocab_size + 1, batch_size)
    labels = {"click": rng.integers(0, 2, (batch_size, 1)).astype("float32")}
    before = peak_rss_mb()
    for _ in range(2):
        model.train_on_batch(batch, labels)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(batch, labels)
    seconds = (time.perf_counter() - start) / steps
    return {"ms_per_step": 1000 * seconds, "peak_growth_mb": peak_rss_mb() - before, "peak_mb": peak_rss_mb(),
            "parameters": model.count_params()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.batch_size, args.steps)))
        return

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    results = {}
    for length in args.lengths:
        for model_name in MODELS:
            out = subprocess.run([sys.executable, __file__, "--worker", model_name, str(length),
                                  "--batch-size", str(args.batch_size), "--steps", str(args.steps)],
                                 capture_output=True, text=True, env=env)
            if out.returncode:
                sys.exit(f"{model_name} at {length} behaviours failed:\n{out.stderr[-3000:]}")
            results[model_name, length] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[model_name, length]
            print(f"  {model_name:<18} {length:>6,} behaviours: {r['ms_per_step']:8.1f} ms/step, "
                  f"peak memory +{r['peak_growth_mb']:7.1f} MB", flush=True)

    print(f"\nTraining step at batch {args.batch_size} (mean of {args.steps}); memory: growth of peak RSS from "
          "before the first step. Baseline: DIN over the full history.")
    print("| history | DIN ms | SIM hard ms | SIM soft ms | DIN / SIM hard | DIN / SIM soft "
          "| DIN +MB | SIM hard +MB | SIM soft +MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for length in args.lengths:
        din, hard, soft = (results[m, length] for m in MODELS)
        print(f"| {length:,} | {din['ms_per_step']:.0f} | {hard['ms_per_step']:.0f} | {soft['ms_per_step']:.0f} "
              f"| {din['ms_per_step'] / hard['ms_per_step']:.1f}x | {din['ms_per_step'] / soft['ms_per_step']:.1f}x "
              f"| {din['peak_growth_mb']:.0f} | {hard['peak_growth_mb']:.0f} | {soft['peak_growth_mb']:.0f} |")
    first, last = args.lengths[0], args.lengths[-1]
    for model_name in MODELS:
        growth = results[model_name, last]["ms_per_step"] / results[model_name, first]["ms_per_step"]
        print(f"{model_name}: {last:,} vs {first:,} behaviours ({last / first:.0f}x longer): {growth:.1f}x the time")


if __name__ == "__main__":
    main()

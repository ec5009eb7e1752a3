"""Generative OneRec speed, all in one run: tokenizer fit time, training target tokens/s, and the
latency of the exported ``recommend`` signature at beam 8, 32 and 128, batch 1 and 32, with
the decoder's key/value cache (as exported) and without it.

Data: the simulator (default 3,000 users x 400 items) or MovieLens-100K. The model is the
default OneRec (d=64, 2+2 layers, 4 heads, 4 experts top-2, sessions of m=3 items, semantic
IDs of 3 levels x 32 codes plus a collision digit). Each beam size is exported as its own
SavedModel (beam size is fixed in an export) and called through ``tf.saved_model.load``, as
TF Serving would; latency is the median (and p99) over ``--repeats`` calls after 3 warm-up
calls. Baselines in the same run: the same search without the cache (``recommend(...,
use_cache=False)``, which decodes the whole prefix again at every step), exported the same
way; and one decoder forward pass over a full session (teacher forcing) at the same batch,
i.e. what a single unconstrained greedy step costs.

Data and training go through the generative family (:mod:`tfrec_onerec.families.generative`:
``prepare``, ``fit`` with batches of 128 and no early stopping). Training speed is the family's
``target_tokens_per_second``: an epoch's target tokens (items x codes) over the median
training step times the steps, i.e. steady-state steps only (no validation, no tracing).

    python benchmarks/onerec_benchmark.py [--dataset simulator|movielens-100k] [--epochs 1] [--repeats 20]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import tfrec_onerec  # noqa: F401  (environment first)
from tfrec_onerec import families
from tfrec_onerec.data.sessions import SESSION_FEATURE
from tfrec_onerec.export import export_saved_model
from tfrec_onerec.families import generative
from tfrec_onerec.models.generative.onerec import OneRec


def model_inputs(model: OneRec, columns: dict) -> dict:
    """The columns `model` reads (user features and histories) plus the target session."""
    return {**{name: columns[name] for name in model.input_signature()}, SESSION_FEATURE: columns[SESSION_FEATURE]}


def timed(call, repeats: int) -> tuple:
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3, float(np.percentile(times, 99)) * 1e3


def export_uncached(model: OneRec, path: Path) -> Path:
    """The uncached baseline as a SavedModel with a ``recommend`` signature, written as
    :func:`tfrec_onerec.export.write_endpoints` writes the real one."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("recommend", lambda features: model.recommend(features, use_cache=False),
                         input_signature=[model.input_signature()])
    archive.write_out(str(path), verbose=False)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="simulator", choices=("simulator", "movielens-100k"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--beams", default="8,32,128")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)

    family = families.get("generative")
    data = family.prepare(args.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        tokenizer = generative.fit_tokenizer(data.load_side_arrays(generative.ITEM_VECTORS_FILE), args.dataset)
        fit_seconds = time.perf_counter() - start
        config = family.train_config(OneRec, {"epochs": args.epochs, "batch_size": 128, "verbose": 2,
                                              "early_stopping_patience": None})
        trained = family.fit("onerec", data, config=config, tokenizer=str(tokenizer.save(Path(tmp) / "tokenizer")))
        model, tokens_per_s = trained.model, trained.info["target_tokens_per_second"]
    test = data.columns("test")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for beam in [int(b) for b in args.beams.split(",")]:
            clone = OneRec.from_config({**model.get_config(), "beam_size": beam, "num_results": min(10, beam)})
            sample = model_inputs(clone, {k: v[:1] for k, v in test.items()})
            clone(sample)
            clone.set_weights(model.get_weights())
            cached = tf.saved_model.load(str(export_saved_model(clone, Path(tmp) / f"beam{beam}"))).signatures[
                "recommend"]
            uncached = tf.saved_model.load(str(export_uncached(clone, Path(tmp) / f"uncached{beam}"))).signatures[
                "recommend"]
            for batch in (1, 32):
                request = {name: tf.constant(test[name][:batch]) for name in clone.input_signature()}
                fast, slow = cached(**request), uncached(**request)
                same = bool(np.array_equal(fast["item_ids"], slow["item_ids"]))
                rows.append((beam, batch) + timed(lambda: cached(**request), args.repeats)
                            + timed(lambda: uncached(**request), args.repeats) + (same,))
        forward = {}
        for batch in (1, 32):
            inputs = {k: tf.constant(v) for k, v in model_inputs(model, {k: v[:batch] for k, v in test.items()}).items()}
            call = tf.function(lambda x: model(x, training=False))
            forward[batch] = timed(lambda: call(inputs), args.repeats)[0]

    print(f"\nOneRec on {args.dataset}: tokenizer fit {fit_seconds:.2f} s ({len(tokenizer.item_ids)} items, "
          f"vocab sizes {tokenizer.vocab_sizes}); training {tokens_per_s:,.0f} target tokens/s (steady steps, "
          f"{trained.info['seconds_per_step'] * 1e3:.1f} ms each; batch {config.batch_size}) "
          f"({sum(int(np.prod(w.shape)) for w in model.trainable_weights):,} parameters)")
    print("recommend latency (exported SavedModel), ms: with the key/value cache vs without (baseline)")
    print(f"{'beam':>5} {'batch':>6} {'cache p50':>10} {'cache p99':>10} {'no-cache p50':>13} {'no-cache p99':>13} "
          f"{'speed-up p50':>13} {'cache x one forward pass':>25} {'same items':>11}")
    for beam, batch, p50, p99, base50, base99, same in rows:
        print(f"{beam:>5} {batch:>6} {p50:10.2f} {p99:10.2f} {base50:13.2f} {base99:13.2f} {base50 / p50:12.2f}x "
              f"{p50 / forward[batch]:25.1f} {str(same):>11}")
    print(f"one teacher-forced forward pass (baseline): batch 1 {forward[1]:.2f} ms, batch 32 {forward[32]:.2f} ms")
    print(f"sessions of m={model.session_len} items x {model.num_levels} codes = "
          f"{model.session_len * model.num_levels} decoding steps per request")


if __name__ == "__main__":
    main()

"""Server-side batching: throughput and latency of concurrent batch-1 clients, with and without it.

One DIN on the MovieLens-100K feature spec (history 50, weights as initialised) is exported
and served by ``tfrec-onerec serve`` (its own process, so the clients' Python does not share
the server's interpreter lock) on loopback gRPC three times: without batching, with TF
Serving-style batching (``--max-batch-size``, ``--timeout-ms``, padded to powers of two), and
without batching on ``--grpc-transport threaded``. For 1, 8 and 32 concurrent clients, each
sending batch-1 ``serving_default`` requests (one serialized tf.Example) back to back for
``--seconds``, it prints requests/s and the p50/p99 latency of the calls, then the throughput
ratios batched/unbatched and threaded/unbatched per client count. The server and the clients share the machine's cores, as a local deployment does.

Usage::

    python benchmarks/batching_benchmark.py [--seconds 5] [--clients 1 8 32] [--max-batch-size 32]
        [--timeout-ms 1]

Prints the report and writes it as JSON to ``benchmarks/results/batching_benchmark.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import tfrec_onerec  # noqa: F401  (environment first)

import grpc
import keras
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from tfrec_onerec import export, models
from tfrec_onerec.data import movielens
from tfrec_onerec.features.datasets import example_batch
from tfrec_onerec.features.tfrecord import serialize_rows

from _server_process import server_process

RESULTS = Path(__file__).parent / "results" / "batching_benchmark.json"


def load(target: str, request, clients: int, seconds: float) -> dict:
    """Requests/s and p50/p99 latency (ms) of `clients` threads calling back to back."""
    stop, latencies = threading.Event(), [[] for _ in range(clients)]
    started = threading.Barrier(clients + 1)

    def worker(i):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
        for _ in range(3):
            stub.Predict(request, timeout=60)
        started.wait()
        while not stop.is_set():
            start = time.perf_counter()
            stub.Predict(request, timeout=60)
            latencies[i].append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    started.wait()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    every = np.concatenate([np.asarray(x) for x in latencies])
    return {"requests_per_s": len(every) / seconds, "p50_ms": 1e3 * float(np.percentile(every, 50)),
            "p99_ms": 1e3 * float(np.percentile(every, 99))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--timeout-ms", type=float, default=1.0)
    parser.add_argument("--batch-threads", type=int, default=2)
    args = parser.parse_args(argv)

    spec = movielens.feature_spec(max_len=50)
    keras.utils.set_random_seed(0)
    model = models.get("din")(spec, ["click"])
    one = example_batch(spec, 1)
    model(one)
    workdir = Path(tempfile.mkdtemp(prefix="batching-benchmark-"))
    export.export_saved_model(model, workdir / "models" / "din", model_name="din")
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="din"))
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto(np.array(serialize_rows(one, spec), dtype=object)))
    sizes = tuple(2 ** k for k in range(int(np.log2(args.max_batch_size)) + 1))
    parameters = workdir / "batching_parameters.txt"  # TF Serving's format, as deploy/ has it
    parameters.write_text(f"max_batch_size {{ value: {args.max_batch_size} }}\n"
                          f"batch_timeout_micros {{ value: {int(args.timeout_ms * 1000)} }}\n"
                          f"num_batch_threads {{ value: {args.batch_threads} }}\n"
                          + "".join(f"allowed_batch_sizes: {size}\n" for size in sizes))
    print(f"DIN (MovieLens spec, history 50), batch-1 serving_default over gRPC; {os.cpu_count()} CPU core(s); "
          f"batching: max {args.max_batch_size} rows, {args.timeout_ms} ms timeout, {args.batch_threads} threads, "
          f"padded to {list(sizes)}", flush=True)
    rows = []
    workers = max(8, max(args.clients))
    # (label, batching parameters, gRPC transport): batching on the default transport, and the
    # threaded transport unbatched for what the asynchronous one costs at each concurrency
    for label, batching, transport in (("unbatched", None, "async"), ("batched", parameters, "async"),
                                       ("threaded", None, "threaded")):
        options = ["--no-rest", "--max-workers", str(workers), "--max-concurrent-rpcs", str(4 * workers),
                   "--grpc-transport", transport]
        if batching is not None:
            options += ["--enable-batching", "--batching-parameters-file", str(batching)]
        with server_process(workdir / "models", *options) as (target, _):
            for clients in args.clients:
                row = {"server": label, "clients": clients, **load(target, request, clients, args.seconds)}
                rows.append(row)
                print(f"{label:<10} {clients:>3} clients: {row['requests_per_s']:8.1f} req/s  "
                      f"p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms", flush=True)
    ratios = {}
    for clients in args.clients:
        by_server = {r["server"]: r["requests_per_s"] for r in rows if r["clients"] == clients}
        ratios[clients] = {"batched": by_server["batched"] / by_server["unbatched"],
                           "threaded": by_server["threaded"] / by_server["unbatched"]}
    print("\nThroughput / unbatched: batched " + ", ".join(f"{c} clients x{r['batched']:.2f}" for c, r in ratios.items())
          + "; threaded transport " + ", ".join(f"{c} clients x{r['threaded']:.2f}" for c, r in ratios.items()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows, "ratios": ratios, "settings": vars(args)},
                                  indent=2))
    print(f"Written to {RESULTS}")


if __name__ == "__main__":
    main()

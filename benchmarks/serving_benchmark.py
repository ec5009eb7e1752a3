"""Serving benchmark: latency and throughput over loopback gRPC/REST next to the in-process SavedModel.

One DIN on the MovieLens-100K feature spec (history length 50; weights as initialised:
speed does not depend on training) is exported with
:func:`tfrec_onerec.export.export_saved_model` and measured four ways on the same
requests of serialized tf.Example (the ``serving_default`` signature):

1. **in-process**: ``tf.saved_model.load(...).signatures["serving_default"](examples=...)``;
2. **gRPC**: the serving CLI's server process (as deployed) on a loopback port, a prebuilt
   ``PredictRequest`` sent with a plain PredictionService stub (response decoded to numpy);
   once on the default asynchronous transport and once on ``grpc_transport="threaded"``
   (:mod:`tfrec_onerec.serving.grpc_transport`);
3. **REST**: the same server's ``/v1/models/din:predict`` with ``{"inputs": {"examples": [b64...]}}``.

For batch 1 and 256 it reports p50/p99 latency of sequential calls (after warm-up calls)
and throughput (requests/s and examples/s) of ``--clients`` concurrent callers for
``--seconds``, then the overhead ratios gRPC/in-process and REST/in-process. The serving
process and the callers share the machine's cores, as a local deployment does.

Usage::

    python benchmarks/serving_benchmark.py [--calls 300] [--seconds 5] [--clients 4] [--quick]

Prints the report and writes it as JSON to ``benchmarks/results/serving_benchmark.json``.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import tfrec_onerec  # noqa: F401  (environment first)

import keras
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from tfrec_onerec import export, models
from tfrec_onerec.data import movielens
from tfrec_onerec.features.datasets import example_batch
from tfrec_onerec.features.tfrecord import serialize_rows

from _server_process import server_process

RESULTS = Path(__file__).parent / "results" / "serving_benchmark.json"


def latencies(call, calls: int, warmup: int) -> np.ndarray:
    """Seconds per call of `calls` sequential calls, after `warmup` calls."""
    for _ in range(warmup):
        call()
    out = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        call()
        out[i] = time.perf_counter() - start
    return out


def throughput(make_call, clients: int, seconds: float) -> float:
    """Calls per second of `clients` threads calling for `seconds` (each thread gets its own call)."""
    stop, counts = threading.Event(), [0] * clients

    def worker(i):
        call = make_call()
        call()
        while not stop.is_set():
            call()
            counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds * 0.1)  # let every client make its first call
    start_counts, start = sum(counts), time.perf_counter()
    time.sleep(seconds)
    done, elapsed = sum(counts) - start_counts, time.perf_counter() - start
    stop.set()
    for t in threads:
        t.join()
    return done / elapsed


def measure(name: str, make_call, batch: int, args) -> dict:
    lat = latencies(make_call(), args.calls, args.warmup)
    qps = throughput(make_call, args.clients, args.seconds)
    row = {"path": name, "batch": batch, "p50_ms": 1e3 * float(np.percentile(lat, 50)),
           "p99_ms": 1e3 * float(np.percentile(lat, 99)), "requests_per_s": qps, "examples_per_s": qps * batch}
    print(f"{name:<13} batch {batch:>3}: p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
          f"{qps:8.1f} req/s  {qps * batch:9.0f} ex/s", flush=True)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="sequential calls timed per case")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    parser.add_argument("--clients", type=int, default=4, help="concurrent callers in throughput runs")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--quick", action="store_true", help="100 calls, 2 s runs (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.seconds = 100, 2.0

    spec = movielens.feature_spec(max_len=50)
    keras.utils.set_random_seed(0)
    model = models.get("din")(spec, ["click"])
    largest = example_batch(spec, max(args.batches))
    model(largest)
    workdir = Path(tempfile.mkdtemp(prefix="serving-benchmark-"))
    path = export.export_saved_model(model, workdir / "din", model_name="din")
    loaded = tf.saved_model.load(str(path)).signatures["serving_default"]
    rows = []
    print(f"DIN (MovieLens spec, history 50), serving_default over tf.Example; {os.cpu_count()} CPU core(s), "
          f"{args.clients} concurrent clients in throughput runs; TensorFlow {tf.__version__}, "
          f"devices {[d.device_type for d in tf.config.list_physical_devices()]}")
    requests = {}
    for batch in args.batches:
        records = serialize_rows({k: v[:batch] for k, v in largest.items()}, spec)
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="din"))
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto(np.array(records, dtype=object)))
        body = json.dumps({"inputs": {"examples": [{"b64": base64.b64encode(r).decode()} for r in records]}})
        requests[batch] = np.array(records, dtype=object), request, body.encode()

    def in_process(batch):
        tensor = tf.constant(requests[batch][0])
        return lambda: loaded(examples=tensor)["click"].numpy()

    def grpc_call(target, batch):
        import grpc

        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
        return lambda: tf.make_ndarray(stub.Predict(requests[batch][1], timeout=60).outputs["click"])

    def rest_call(rest_port, batch):
        url = f"http://127.0.0.1:{rest_port}/v1/models/din:predict"

        def call():
            with urllib.request.urlopen(urllib.request.Request(url, requests[batch][2]), timeout=60) as r:
                return json.loads(r.read())
        return call

    # One server process at a time, so an idle one takes no share of the cores.
    for batch in args.batches:
        rows.append(measure("in-process", lambda: in_process(batch), batch, args))
    with server_process(workdir, "--rest-port", "0") as (target, rest_port):
        for batch in args.batches:
            rows.append(measure("gRPC", lambda: grpc_call(target, batch), batch, args))
            rows.append(measure("REST", lambda: rest_call(rest_port, batch), batch, args))
    with server_process(workdir, "--no-rest", "--grpc-transport", "threaded") as (target, _):
        for batch in args.batches:
            rows.append(measure("gRPC threaded", lambda: grpc_call(target, batch), batch, args))
    ratios = {}
    for batch in args.batches:
        by_path = {r["path"]: r for r in rows if r["batch"] == batch}
        base = by_path["in-process"]
        for name in ("gRPC", "gRPC threaded", "REST"):
            ratios[f"{name}/in-process batch {batch}"] = {
                "p50": by_path[name]["p50_ms"] / base["p50_ms"], "p99": by_path[name]["p99_ms"] / base["p99_ms"],
                "throughput": base["requests_per_s"] / by_path[name]["requests_per_s"]}
    print("\nOverhead ratio (served / in-process; throughput: in-process / served, >1 = slower):")
    for key, value in ratios.items():
        print(f"  {key:<37} p50 x{value['p50']:.2f}  p99 x{value['p99']:.2f}  throughput x{value['throughput']:.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                               "tensorflow": tf.__version__}, "rows": rows, "ratios": ratios,
                                   "settings": vars(args)}, indent=2))
    print(f"\nWritten to {RESULTS}")


if __name__ == "__main__":
    main()

"""Fuzzing a server process: 10,000 malformed or random requests (8,000 gRPC: malformed or random
PredictRequests, some sent cut short, with bytes overwritten or as random bytes; 2,000 REST: random
or truncated bodies, random JSON and paths); it neither crashes nor leaks, and answers each with a
status that names what was wrong.

The server runs as ``python -m tfrec_onerec.serving serve`` (the CLI path) in its own
process, so a crash shows as a dead process and its memory can be read from /proc.
"""
import base64
import json
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from serving_helpers import assert_same

GRPC_REQUESTS, REST_REQUESTS, WARMUP_REQUESTS = 8000, 2000, 300
# Any answer but these would mean a bug (INTERNAL, UNKNOWN) or a server in trouble (UNAVAILABLE).
ALLOWED_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                 grpc.StatusCode.RESOURCE_EXHAUSTED}
ALLOWED_HTTP = {200, 400, 404, 413}
RSS_GROWTH_LIMIT_MIB = 64
# Every refusal is one of these, recognised from the server's answer alone (code, message); the group
# ``named`` is what the message names, and it must be something the request sent or lacked.
GRPC_REFUSALS = {
    "wrong shape": ("INVALID_ARGUMENT", r"Input (?P<named>\S+): expected shape \["),
    "malformed tf.Example": ("INVALID_ARGUMENT", r"Input (?P<named>examples): \S"),
    "undecodable tensor": ("INVALID_ARGUMENT", r"tensor parsing error: (?P<named>\S+) \("),
    "wrong dtype": ("INVALID_ARGUMENT", r"Expected input (?P<named>\S+) to be \w+ but got \w+\.$"),
    "wrong input names": ("INVALID_ARGUMENT",
                          r"input size does not match signature: \d+!=\d+ len\(\{(?P<named>[^}]*)\}\)"),
    "unknown model or version": ("NOT_FOUND", r"Servable not found for request: \w+\((?P<named>[^,)]*)"),
    "unknown version label": ("INVALID_ARGUMENT", r"Unrecognized servable version label: (?P<named>\S+)$"),
    "unknown signature": ("FAILED_PRECONDITION", r'Serving signature key "(?P<named>[^"]*)" not found\.$'),
    "unknown output": ("INVALID_ARGUMENT", r"output tensor alias not found in signature: (?P<named>\S+) "),
    "no model name": ("INVALID_ARGUMENT", r"ModelSpec has no name specified\.$"),
    "not a request message": ("INVALID_ARGUMENT", r"The request is not a valid (?P<named>Predict) request message \("),
}
REST_REFUSALS = {  # HTTP status, message; ``named`` as above (an input, the model, the path)
    "not JSON": (400, r"JSON Parse error: "),
    "malformed body": (400, r"(Request body must have|'instances' must be a list|'inputs' must be an object|"
                            r"Each instance must be an object|An example must be an object)"),
    "bad input value": (400, r"Input (?P<named>\S+): (expected|invalid base64|lists of different|dtype)"),
    "malformed tf.Example": (400, r"Input (?P<named>examples): \S"),
    "wrong input names": (400, r"input size does not match signature: \d+!=\d+ len\(\{(?P<named>[^}]*)\}\)"),
    "unknown model or version": (404, r"Servable not found for request: \w+\((?P<named>[^,)]*)"),
    "unknown version label": (400, r"Unrecognized servable version label: (?P<named>\S+)$"),
    "unknown path": (400, r"Malformed request: POST (?P<named>\S+)$"),
}
DTYPES = [tf.float32, tf.float64, tf.int32, tf.int64, tf.uint8, tf.bool, tf.string, tf.float16, tf.int8]


@pytest.fixture(scope="module")
def server_process(exported):
    process = subprocess.Popen(
        [sys.executable, "-m", "tfrec_onerec.serving", "serve", "--model-base", str(exported.base), "--port", "0",
         "--rest-port", "0", "--poll-interval", "0", "--max-request-bytes", str(4 << 20)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    match = re.search(r"gRPC on ([\d.]+:\d+), REST on [\d.]+:(\d+)", line)
    assert match, f"the server did not start: {line!r} (exit code {process.poll()})"
    yield process, match.group(1), int(match.group(2))
    if process.poll() is None:
        process.kill()
        process.wait()


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+) kB", status.read()).group(1)) / 1024


def pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _random_tensor(rng, max_dims=3):
    shape = [int(rng.integers(0, 6)) for _ in range(rng.integers(0, max_dims + 1))]
    dtype = DTYPES[rng.integers(len(DTYPES))]
    if dtype == tf.string:
        values = np.array([rng.bytes(int(rng.integers(0, 40))) for _ in range(int(np.prod(shape)))],
                          dtype=object).reshape(shape)
    else:
        values = rng.integers(-1000, 1000, shape).astype(dtype.as_numpy_dtype)
    return tf.make_tensor_proto(values)


def fuzz_request(rng, exported) -> predict_pb2.PredictRequest:
    """One malformed or random PredictRequest (a few are valid, on purpose)."""
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="din"))
    kind = int(rng.integers(10))
    rows = slice(0, int(rng.integers(0, 17)))
    examples = np.array(exported.examples[rows], dtype=object)
    if kind == 0:  # random bytes as serialized tf.Example
        examples = np.array([rng.bytes(int(rng.integers(0, 300))) for _ in range(rng.integers(0, 40))], dtype=object)
    elif kind == 1:  # valid examples with random bytes overwritten
        spoiled = []
        for record in exported.examples[rows]:
            data = bytearray(record)
            for _ in range(rng.integers(1, 6)):
                data[rng.integers(len(data))] = int(rng.integers(256))
            spoiled.append(bytes(data))
        examples = np.array(spoiled, dtype=object)
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto(examples))
    if kind == 2:  # raw tensors of random dtypes and shapes for the predict signature's inputs
        request.model_spec.signature_name = "predict"
        request.inputs.pop("examples")
        for name in exported.spec.names:
            if rng.random() < 0.9:
                request.inputs[name].CopyFrom(_random_tensor(rng))
    elif kind == 3:  # random bytes as tensor content, any dtype enum, any shape
        proto = request.inputs["examples"]
        proto.Clear()
        proto.dtype = int(rng.integers(0, 30))
        proto.tensor_shape.dim.add().size = int(rng.integers(0, 1 << 20))
        proto.tensor_content = rng.bytes(int(rng.integers(0, 5000)))
    elif kind == 4:  # huge, negative or unknown shapes
        proto = request.inputs["examples"]
        dims = [int(d) for d in rng.integers(-3, 1 << 40, rng.integers(1, 4))]
        del proto.tensor_shape.dim[:]
        for d in dims:
            proto.tensor_shape.dim.add().size = d
        proto.tensor_shape.unknown_rank = bool(rng.random() < 0.2)
    elif kind == 5:  # empty batches on both signatures (valid: empty answers)
        if rng.random() < 0.5:
            request.model_spec.signature_name = "predict"
            request.inputs.pop("examples")
            for name, value in exported.batch.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value[:0]))
        else:
            request.inputs["examples"].CopyFrom(tf.make_tensor_proto(np.array([], dtype=object)))
    elif kind == 6:  # unknown models, versions, labels, signatures, outputs
        choice = int(rng.integers(5))
        if choice == 0:
            request.model_spec.name = rng.bytes(8).hex()
        elif choice == 1:
            request.model_spec.version.value = int(rng.integers(-5, 1 << 40))
        elif choice == 2:
            request.model_spec.version_label = rng.bytes(4).hex()
        elif choice == 3:
            request.model_spec.signature_name = rng.bytes(6).hex()
        else:
            request.output_filter.append(rng.bytes(3).hex())
    elif kind == 7:  # extra and misnamed inputs
        request.inputs[rng.bytes(5).hex()].CopyFrom(_random_tensor(rng))
        if rng.random() < 0.5:
            request.inputs.pop("examples")
    elif kind == 8:  # a wrong dtype for examples
        request.inputs["examples"].CopyFrom(_random_tensor(rng))
    return request


def fuzz_message(rng, exported) -> tuple:
    """``(bytes sent, the PredictRequest they parse to or None)``: mostly a fuzzed request,
    sometimes one cut short or with bytes overwritten, or random bytes."""
    data = fuzz_request(rng, exported).SerializeToString()
    kind = int(rng.integers(12))
    if kind == 0:  # cut short
        data = data[:int(rng.integers(0, len(data) + 1))]
    elif kind == 1 and data:  # bytes overwritten
        data = bytearray(data)
        for _ in range(rng.integers(1, 4)):
            data[rng.integers(len(data))] = int(rng.integers(256))
        data = bytes(data)
    elif kind == 2:
        data = rng.bytes(int(rng.integers(0, 200)))
    try:
        return data, predict_pb2.PredictRequest.FromString(data)
    except Exception:
        return data, None


def fuzz_body(rng, exported):
    """``(path, raw body)`` of one malformed or random REST request."""
    kind = int(rng.integers(6))
    path = "/v1/models/din:predict"
    if kind == 0:  # random bytes, or a valid body cut short
        if rng.random() < 0.5:
            return path, rng.bytes(int(rng.integers(0, 500)))
        body = json.dumps({"instances": [{"b64": base64.b64encode(e).decode()} for e in exported.examples[:3]]})
        return path, body[:int(rng.integers(0, len(body)))].encode()
    if kind == 1:
        return pick(rng, ["/v1/models/din:predict", "/v1/models/x:predict", "/v1/models/din/versions/9:predict",
                           "/v1/models/din:regress", "/v1/models/din/labels/a:classify", "/v1/nope",
                           "/v1/models/din:predict/extra"]), b'{"instances": []}'
    if kind == 2:
        value = {"instances": [{"b64": base64.b64encode(rng.bytes(int(rng.integers(0, 100)))).decode()}
                               for _ in range(rng.integers(0, 10))]}
    elif kind == 3:
        value = {"signature_name": "predict", "inputs": {
            name: pick(rng, [[1, 2], "text", [[1.5]], None, [], {"b64": "AA=="}, [[1] * 6] * 2, True])
            for name in exported.spec.names if rng.random() < 0.9}}
    elif kind == 4:
        value = pick(rng, [[], 1, "x", None, {"instances": 5}, {"inputs": [[[[]]]]}, {"instances": [[1, [2]]]},
                            {"instances": [{"examples": {"b64": "!"}}]}])
    else:
        value = {"signature_name": "predict", "instances": [
            {k: v[i].tolist() for k, v in exported.batch.items()} for i in range(rng.integers(0, 4))]}
    return path, json.dumps(value).encode()


def post(port, path, data) -> tuple:
    """``(HTTP status, decoded JSON answer)``."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def request_rows(request) -> int:
    """The batch size a well-formed request carries (the first dimension of its inputs)."""
    return next(iter(request.inputs.values())).tensor_shape.dim[0].size


def refusal(refusals: dict, code, message: str, named_ok) -> str:
    """The category of a refusal; fails unless it is a known one naming what was wrong."""
    for category, (wanted_code, pattern) in refusals.items():
        match = re.match(pattern, message)
        if match and code == wanted_code:
            named = match.groupdict().get("named")
            assert named is None or named_ok(named), f"{category}: {message!r} names {named!r}"
            return category
    raise AssertionError(f"an unexpected refusal: {code} {message[:300]!r}")


def grpc_answer(predict, data: bytes, request, exported) -> str:
    """Sends one message (`data`, which parses to `request` or to nothing) with `predict`, a
    bytes-in, PredictResponse-out callable; returns the category of the answer, after checking it."""
    if request is None:
        with pytest.raises(grpc.RpcError) as error:
            predict(data, timeout=60)
        return refusal(GRPC_REFUSALS, error.value.code().name, error.value.details(), lambda named: named == "Predict")
    spec = request.model_spec
    signature = spec.signature_name or "serving_default"
    wanted = {"examples"} if signature == "serving_default" else set(exported.spec.names)
    try:
        response = predict(data, timeout=60)
    except grpc.RpcError as error:
        assert error.code() in ALLOWED_CODES, f"{error.code()}: {error.details()}"
        sent = set(request.inputs)
        return refusal(GRPC_REFUSALS, error.code().name, error.details(), lambda named: (
            named in sent | wanted  # an input sent or required
            or named in (spec.name, spec.version_label, signature, *request.output_filter)
            or set(named.split(",")) == sent))  # the set of inputs sent
    rows = request_rows(request)
    outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    assert set(outputs) == (set(request.output_filter) or {"click"}), outputs
    for value in outputs.values():
        assert value.dtype == np.float32 and value.shape == (rows, 1) and np.all((value >= 0) & (value <= 1))
    return "OK, empty" if rows == 0 else "OK"


def rest_answer(rest_port, path, body, exported) -> str:
    status, answer = post(rest_port, path, body)
    assert status in ALLOWED_HTTP, (status, answer)
    if status != 200:
        names = set(exported.spec.names) | {"examples"}
        return refusal(REST_REFUSALS, status, answer["error"], lambda named: (
            named in names or named == path or named in path or set(named.split(",")) <= names))
    sent = json.loads(body)
    if "inputs" in sent:  # columnar: {"outputs": (rows, 1)}
        rows = len(np.asarray(next(iter(sent["inputs"].values()))))
        predictions = np.array(answer["outputs"], np.float32)
    else:  # one prediction per instance
        rows = len(sent["instances"])
        predictions = np.array(answer["predictions"], np.float32)
    assert predictions.shape == ((rows, 1) if rows else (0,)), answer
    assert np.all((predictions >= 0) & (predictions <= 1)), answer
    return "HTTP OK"


def run_fuzz(predict, rest_port, exported, seed: int, grpc_count: int, rest_count: int) -> dict:
    """Sends the requests; returns ``{answer category: count}``; fails on any answer outside the allowed ones."""
    rng = np.random.default_rng(seed)
    counts = {}
    for _ in range(grpc_count):
        category = "gRPC " + grpc_answer(predict, *fuzz_message(rng, exported), exported)
        counts[category] = counts.get(category, 0) + 1
    for _ in range(rest_count):
        category = "REST " + rest_answer(rest_port, *fuzz_body(rng, exported), exported)
        counts[category] = counts.get(category, 0) + 1
    return counts


def test_fuzzed_requests_neither_crash_nor_leak(server_process, exported):
    process, target, rest_port = server_process
    with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 16 << 20)]) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                      response_deserializer=predict_pb2.PredictResponse.FromString)
        run_fuzz(predict, rest_port, exported, seed=0, grpc_count=WARMUP_REQUESTS, rest_count=WARMUP_REQUESTS // 4)
        before = rss_mib(process.pid)
        counts = run_fuzz(predict, rest_port, exported, seed=1, grpc_count=GRPC_REQUESTS, rest_count=REST_REQUESTS)
        after = rss_mib(process.pid)
        assert process.poll() is None, "the server died"
        # Each kind of answer, counted from what the server said, came up at least once.
        wanted = ({"gRPC OK", "gRPC OK, empty"} | {f"gRPC {c}" for c in GRPC_REFUSALS}
                  | {"REST HTTP OK"} | {f"REST {c}" for c in REST_REFUSALS})
        assert wanted <= set(counts), (sorted(wanted - set(counts)), counts)
        assert after - before < RSS_GROWTH_LIMIT_MIB, f"RSS grew from {before:.0f} to {after:.0f} MiB; {counts}"
        # Still correct afterwards.
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="din"))
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto(np.array(exported.examples, dtype=object)))
        response = stub.Predict(request, timeout=60)
        assert_same({k: tf.make_ndarray(v) for k, v in response.outputs.items()}, exported.expected(1))
    print(f"fuzz: {counts}; RSS {before:.0f} -> {after:.0f} MiB")
    process.send_signal(signal.SIGTERM)  # graceful shutdown on SIGTERM, exit code 0
    assert process.wait(timeout=120) == 0

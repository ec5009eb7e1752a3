"""TF Serving's REST API over the same ModelManager, on an asyncio HTTP/1.1 transport.

Endpoints (as in TF Serving; ``/versions/<v>`` or ``/labels/<l>`` may follow the model name):

* ``GET  /v1/models/<name>``: the model's version status (GetModelStatusResponse as JSON).
* ``GET  /v1/models/<name>/metadata``: ``{"model_spec": ..., "metadata": {"signature_def": ...}}``.
* ``POST /v1/models/<name>:predict``: ``{"signature_name": ..., "instances": [...]}`` (row
  format; answer ``{"predictions": [...]}``) or ``{"inputs": ...}`` (columnar; answer
  ``{"outputs": ...}``). Binary strings are ``{"b64": "..."}``.
* ``POST /v1/models/<name>:classify`` and ``:regress``: ``{"examples": [{feature: value}],
  "context": {...}}``; answer ``{"results": ...}``.

Errors are ``{"error": "<message>"}`` with the HTTP status TF Serving maps the gRPC code
to. Requests are read whole by the transport (:mod:`~tfrec_onerec.serving.http_transport`:
deadlines, keep-alive, 413/429/503 limits) and served by a bounded pool of threads.
"""
from __future__ import annotations

import json
import logging
import re
import time
from urllib.parse import unquote

from tfrec_onerec.serving import inference, tensors
from tfrec_onerec.serving.http_transport import JSON_TYPE, HttpServer
from tfrec_onerec.serving.status import ServingError, internal_error, invalid_argument

log = logging.getLogger(__name__)

_VERSION = r"(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
PREDICT_PATH = re.compile(rf"/v1/models/([^/:]+){_VERSION}:(classify|regress|predict)", re.IGNORECASE)
STATUS_PATH = re.compile(rf"/v1/models(?:/([^/:]+))?{_VERSION}(?:/(metadata))?", re.IGNORECASE)


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def model_spec(name: str, version: str | None, label: str | None):
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec(name=unquote(name))
    if version is not None:
        if int(version) > INT64_MAX:
            raise invalid_argument(f"Model version {version} is out of the int64 range.")
        spec.version.value = int(version)
    if label is not None:
        spec.version_label = unquote(label)
    return spec


def _message_json(message) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True,
                                     preserving_proto_field_name=True)


# -- predict ----------------------------------------------------------------------------------------
def _is_named(value, names) -> bool:
    """A JSON object naming inputs (not a ``{"b64": ...}`` value)."""
    return isinstance(value, dict) and not (set(value) == {"b64"} and "b64" not in names)


def _columns_from_body(body: dict, names: list) -> tuple:
    """``({input: JSON value}, "row" | "columnar")`` from a predict body."""
    if ("instances" in body) == ("inputs" in body):
        raise invalid_argument("Request body must have exactly one of 'instances' (row format) or 'inputs' "
                               "(columnar format).")
    if "inputs" in body:
        value = body["inputs"]
        if _is_named(value, names):
            return value, "columnar"
        if len(names) != 1:
            raise invalid_argument(f"'inputs' must be an object naming the signature's inputs {names}.")
        return {names[0]: value}, "columnar"
    instances = body["instances"]
    if not isinstance(instances, list):
        raise invalid_argument("'instances' must be a list (one entry per example).")
    named = [_is_named(i, names) for i in instances]
    if instances and all(named):
        keys = set(instances[0])
        if any(set(i) != keys for i in instances):
            raise invalid_argument("Every instance must name the same inputs; found instances with inputs "
                                   f"{sorted(keys)} and others.")
        return {k: [i[k] for i in instances] for k in keys}, "row"
    if any(named):
        raise invalid_argument("Instances mix objects naming inputs with bare values.")
    if len(names) != 1:
        raise invalid_argument(f"Each instance must be an object naming the signature's inputs {names}.")
    return {names[0]: instances}, "row"


def predict_json(servable, body: dict) -> dict:
    """A REST predict body in, its JSON answer out (see the module docstring)."""
    name = body.get("signature_name") or inference.DEFAULT_SIGNATURE
    if not isinstance(name, str):
        raise invalid_argument("'signature_name' must be a string.")
    signature = servable.signature_defs.get(name)
    if signature is None or not servable.has_function(name):
        raise invalid_argument(f'Serving signature name: "{name}" not found in signature def')
    columns, layout = _columns_from_body(body, sorted(signature.inputs))
    inference.check_input_names(columns, signature)
    feeds = {}
    for input_name, value in columns.items():
        info = signature.inputs[input_name]
        feeds[input_name] = tensors.from_json(input_name, value, info)
        tensors.check_input(input_name, feeds[input_name], info.dtype, info)
    if layout == "row":
        sizes = {k: v.shape[0] if v.ndim else None for k, v in feeds.items()}
        if len(set(sizes.values())) > 1 or None in sizes.values():
            raise invalid_argument(f"Expecting tensors in all instances to have the same batch size; got {sizes}.")
    outputs = inference.run_signature(servable, name, feeds)
    if layout == "columnar":
        if len(outputs) == 1:
            ((key, value),) = outputs.items()
            return {"outputs": tensors.to_json(key, value)}
        return {"outputs": {k: tensors.to_json(k, v) for k, v in outputs.items()}}
    if len(outputs) == 1:
        ((key, value),) = outputs.items()
        return {"predictions": tensors.to_json(key, value)}
    batch = {k: v.shape[0] if v.ndim else None for k, v in outputs.items()}
    if len(set(batch.values())) != 1 or None in batch.values():
        raise invalid_argument(f"Outputs have different batch sizes {batch}; use the columnar format ('inputs').")
    size = next(iter(batch.values()))
    return {"predictions": [{k: tensors.to_json(k, v[i]) for k, v in outputs.items()} for i in range(size)]}


# -- classify / regress -----------------------------------------------------------------------------
def _feature(name: str, value):
    import base64

    import tensorflow as tf

    values = value if isinstance(value, list) else [value]
    if all(isinstance(v, bool) or isinstance(v, int) for v in values):
        if any(not INT64_MIN <= v <= INT64_MAX for v in values):
            raise invalid_argument(f"Feature {name}: an integer is out of the int64 range.")
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    if all(isinstance(v, str) or (isinstance(v, dict) and set(v) == {"b64"}) for v in values):
        try:
            raw = [v.encode("utf-8") if isinstance(v, str) else base64.b64decode(v["b64"], validate=True)
                   for v in values]
        except ValueError:
            raise invalid_argument(f"Feature {name}: invalid base64.") from None
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=raw))
    raise invalid_argument(f"Feature {name}: values must be all numbers or all strings, got {value!r:.80}.")


def _example(features) -> "tf.train.Example":
    import tensorflow as tf

    if not isinstance(features, dict):
        raise invalid_argument(f"An example must be an object of features, got {type(features).__name__}.")
    return tf.train.Example(features=tf.train.Features(feature={k: _feature(k, v) for k, v in features.items()}))


def examples_input(body: dict):
    """A REST classify/regress body as a ``tensorflow.serving.Input``."""
    from tensorflow_serving.apis import input_pb2

    examples = body.get("examples")
    if not isinstance(examples, list):
        raise invalid_argument("Request body must have 'examples': a list of objects of features.")
    proto = input_pb2.Input()
    if "context" in body:
        target = proto.example_list_with_context
        target.context.CopyFrom(_example(body["context"]))
    else:
        target = proto.example_list
    for features in examples:
        target.examples.add().CopyFrom(_example(features))
    return proto


def classify_json(servable, spec, body: dict) -> dict:
    from tensorflow_serving.apis import classification_pb2

    request = classification_pb2.ClassificationRequest(model_spec=spec, input=examples_input(body))
    request.model_spec.signature_name = body.get("signature_name") or ""
    result = inference.classify(servable, request).result
    return {"results": [[[c.label, c.score] for c in row.classes] for row in result.classifications]}


def regress_json(servable, spec, body: dict) -> dict:
    from tensorflow_serving.apis import regression_pb2

    request = regression_pb2.RegressionRequest(model_spec=spec, input=examples_input(body))
    request.model_spec.signature_name = body.get("signature_name") or ""
    result = inference.regress(servable, request).result
    return {"results": [r.value for r in result.regressions]}


# -- the HTTP server --------------------------------------------------------------------------------
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RestApi:
    """TF Serving's REST API for one complete request (runs on a worker thread).

    Args:
        manager: the :class:`~tfrec_onerec.serving.model_manager.ModelManager`.
        metrics_path: where GET answers the Prometheus metrics (None: nowhere).
    """

    def __init__(self, manager, metrics_path: str | None = None):
        self.manager = manager
        self.metrics_path = metrics_path

    def __call__(self, method: str, target: str, body: bytes | None) -> tuple:
        """``(HTTP status, content type, bytes)`` of one request."""
        path = target.split("?", 1)[0]
        if method == "GET" and self.metrics_path and path == self.metrics_path:
            return 200, PROMETHEUS_TYPE, self.manager.metrics.render().encode("utf-8")
        counted = []  # (model name, API) once a predict/classify/regress request is routed
        start, status = time.perf_counter(), "OK"
        try:
            if method == "GET":
                payload = self._get(path)
            elif method == "POST":
                payload = self._post(path, body, counted)
            else:
                raise ServingError("UNIMPLEMENTED", f"Unsupported method {method}.")
            http_status = 200
        except ServingError as error:
            status, http_status, payload = error.code, error.http_status, {"error": error.message}
        except Exception:  # a bug must not end the server
            error = internal_error(log, f"{method} {path}")
            status, http_status, payload = error.code, error.http_status, {"error": error.message}
        if counted:
            self.manager.metrics.record_request(*counted[0], "REST", status, time.perf_counter() - start)
        return http_status, JSON_TYPE, json.dumps(payload).encode("utf-8")

    @staticmethod
    def _route(method: str, path: str, pattern) -> re.Match:
        """The path's match; NOT_FOUND outside /v1/, INVALID_ARGUMENT for a malformed /v1/ path (as TF Serving)."""
        if not path.lower().startswith("/v1/"):
            raise ServingError("NOT_FOUND", f"No such endpoint: {method} {path}")
        match = pattern.fullmatch(path)
        if match is None:
            raise invalid_argument(f"Malformed request: {method} {path}")
        return match

    def _get(self, path: str) -> dict:
        from tfrec_onerec.serving.prediction_service import model_status_response

        name, version, label, metadata = self._route("GET", path, STATUS_PATH).groups()
        if not name:
            raise invalid_argument("Missing model name in request.")
        spec = model_spec(name, version, label)
        if version and label:
            raise invalid_argument("Both a model version and a version label cannot be supplied.")
        if metadata:
            from tensorflow_serving.apis import get_model_metadata_pb2

            request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec,
                                                                     metadata_field=[inference.SIGNATURE_DEF_FIELD])
            with self.manager.handle(spec) as servable:
                response = inference.model_metadata(servable, request)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata[inference.SIGNATURE_DEF_FIELD].Unpack(signature_map)
            return {"model_spec": _message_json(response.model_spec),
                    "metadata": {inference.SIGNATURE_DEF_FIELD: _message_json(signature_map)}}
        return _message_json(model_status_response(self.manager, spec))

    @staticmethod
    def _json_body(raw: bytes | None) -> dict:
        try:
            body = json.loads(raw or b"")
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise invalid_argument(f"JSON Parse error: {error}") from None
        if not isinstance(body, dict):
            raise invalid_argument("JSON Parse error: the request body must be a JSON object.")
        return body

    def _post(self, path: str, raw: bytes | None, counted: list) -> dict:
        name, version, label, method = self._route("POST", path, PREDICT_PATH).groups()
        counted.append((unquote(name), method.lower()))
        if version and label:
            raise invalid_argument("Both a model version and a version label cannot be supplied.")
        body = self._json_body(raw)
        spec = model_spec(name, version, label)
        with self.manager.handle(spec) as servable:
            if method.lower() == "predict":
                return predict_json(servable, body)
            if method.lower() == "classify":
                return classify_json(servable, spec, body)
            return regress_json(servable, spec, body)


class RestServer(HttpServer):
    """The REST endpoint: :class:`RestApi` behind the asyncio transport
    (:mod:`~tfrec_onerec.serving.http_transport`: whole requests only reach the workers).

    Args:
        manager: the :class:`~tfrec_onerec.serving.model_manager.ModelManager`.
        host, port: where to listen (port 0: any free port; see :attr:`port`).
        max_bytes: the largest request body accepted (413 beyond).
        workers: threads serving requests.
        max_pending: requests running or queued at most (503 beyond).
        metrics_path: where GET answers the Prometheus metrics (None: nowhere).
        **limits: the transport's ``max_inflight_bytes``, ``request_timeout_s``, ``idle_timeout_s``.
    """

    def __init__(self, manager, host: str, port: int, max_bytes: int, workers: int, max_pending: int,
                 metrics_path: str | None = None, **limits):
        super().__init__(RestApi(manager, metrics_path), host, port, workers, max_pending, max_bytes, **limits)
        self.manager = manager

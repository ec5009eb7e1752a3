"""Prometheus metrics under TF Serving's names, served at ``/monitoring/prometheus/metrics``.

TF Serving's monitoring (enabled by a ``MonitoringConfig`` with ``prometheus_config``) exports
its ``/tensorflow/...`` metrics in Prometheus' text format, with ``/`` written as ``:``. This
module keeps the ones a deployment's dashboards read, with the same names and labels:

* ``:tensorflow:serving:request_count{model_name, status}``: requests answered, by status
  code name (``OK``, ``NOT_FOUND``...);
* ``:tensorflow:serving:request_latency{model_name, API, entrypoint}``: a histogram of each
  request's wall time in microseconds (``API``: ``predict``, ``classify``...; ``entrypoint``:
  ``GRPC`` or ``REST``), with TF Serving's buckets (10 us x 1.8^k);
* ``:tensorflow:cc:saved_model:load_attempt_count{model_path, status}``: version loads,
  ``success`` or ``fail``;
* ``:tensorflow:cc:saved_model:load_latency{model_path}``: microseconds spent loading
  (a counter, as TF Serving's);
* ``:tensorflow:serving:batching_session:input_batch_size{model_name}`` and ``...:padding_size``:
  histograms of the rows of each merged batch and of its padding, when batching is on;

and one of its own where TF Serving has none:

* ``:tfrec_onerec:serving:available_versions{model_name}``: versions serving now (0: the
  model answers nothing, the readiness signal).
"""
from __future__ import annotations

import re
import threading
from typing import Sequence

METRICS_PATH = "/monitoring/prometheus/metrics"
LATENCY_BUCKETS = tuple(10.0 * 1.8 ** k for k in range(33))  # TF Serving's request_latency buckets (us)
BATCH_BUCKETS = tuple(float(2 ** k) for k in range(14))  # rows: 1, 2, 4, ... 8192


def _labels(names: Sequence[str], values: Sequence) -> str:
    pairs = []
    for name, value in zip(names, values):
        text = str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        pairs.append(f'{name}="{text}"')
    return "{" + ",".join(pairs) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


class Metric:
    """A named metric with labelled series (thread-safe).

    Args:
        name: the exported name (``:tensorflow:serving:request_count``).
        kind: ``"counter"``, ``"gauge"`` or ``"histogram"``.
        label_names: the names of its labels.
        help: one line of description.
        buckets: a histogram's upper bounds, increasing.
    """

    def __init__(self, name: str, kind: str, label_names: Sequence[str], help: str, buckets: Sequence[float] = ()):
        self.name, self.kind, self.label_names, self.help = name, kind, tuple(label_names), help
        self.buckets = tuple(buckets)
        self._series: dict = {}
        self._lock = threading.Lock()

    def add(self, labels: Sequence, amount: float = 1.0):
        """Adds `amount` to a counter's (or gauge's) series of `labels`."""
        with self._lock:
            key = tuple(str(v) for v in labels)
            self._series[key] = self._series.get(key, 0.0) + amount

    def set(self, labels: Sequence, value: float):
        """Sets a gauge's series of `labels`."""
        with self._lock:
            self._series[tuple(str(v) for v in labels)] = float(value)

    def observe(self, labels: Sequence, value: float):
        """Records one observation in a histogram's series of `labels`."""
        with self._lock:
            key = tuple(str(v) for v in labels)
            counts, total, n = self._series.get(key, ((0,) * len(self.buckets), 0.0, 0))
            counts = tuple(c + (value <= bound) for c, bound in zip(counts, self.buckets))
            self._series[key] = (counts, total + value, n + 1)

    def value(self, labels: Sequence):
        """The series' current value (a histogram: ``(cumulative bucket counts, sum, count)``);
        None if the series does not exist."""
        with self._lock:
            return self._series.get(tuple(str(v) for v in labels))

    def render(self) -> list:
        """The metric's lines in Prometheus' text exposition format."""
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        with self._lock:
            series = sorted(self._series.items())
        for key, value in series:
            if self.kind != "histogram":
                lines.append(f"{self.name}{_labels(self.label_names, key)} {_number(value)}")
                continue
            counts, total, n = value
            names = self.label_names + ("le",)
            for bound, count in zip(self.buckets, counts):
                lines.append(f"{self.name}_bucket{_labels(names, key + (_number(round(bound, 3)),))} {count}")
            lines.append(f"{self.name}_bucket{_labels(names, key + ('+Inf',))} {n}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(self.label_names, key)} {n}")
        return lines


class ServingMetrics:
    """The server's metrics (:mod:`this module's <tfrec_onerec.serving.metrics>` list)."""

    def __init__(self):
        self.request_count = Metric(":tensorflow:serving:request_count", "counter", ("model_name", "status"),
                                    "The total number of requests.")
        self.request_latency = Metric(":tensorflow:serving:request_latency", "histogram",
                                      ("model_name", "API", "entrypoint"),
                                      "Distribution of wall time (in microseconds) for requests.", LATENCY_BUCKETS)
        self.load_attempt_count = Metric(":tensorflow:cc:saved_model:load_attempt_count", "counter",
                                         ("model_path", "status"), "The number of times a SavedModel was loaded.")
        self.load_latency = Metric(":tensorflow:cc:saved_model:load_latency", "counter", ("model_path",),
                                   "Latency in microseconds for SavedModels that were successfully loaded.")
        self.input_batch_size = Metric(":tensorflow:serving:batching_session:input_batch_size", "histogram",
                                       ("model_name",), "Rows of the requests merged into one batch.", BATCH_BUCKETS)
        self.padding_size = Metric(":tensorflow:serving:batching_session:padding_size", "histogram", ("model_name",),
                                   "Rows added to a merged batch to reach an allowed size.", BATCH_BUCKETS)
        self.available_versions = Metric(":tfrec_onerec:serving:available_versions", "gauge", ("model_name",),
                                         "Versions of the model serving requests now.")

    def record_request(self, model_name: str, api: str, entrypoint: str, status: str, seconds: float):
        """Counts one answered request and its latency."""
        self.request_count.add((model_name, status))
        self.request_latency.observe((model_name, api, entrypoint), seconds * 1e6)

    def record_load(self, model_path: str, ok: bool, seconds: float):
        """Counts one version load (and its latency, when it succeeded)."""
        self.load_attempt_count.add((model_path, "success" if ok else "fail"))
        if ok:
            self.load_latency.add((model_path,), seconds * 1e6)

    def record_batch(self, model_name: str, rows: int, padded: int):
        """Counts one merged batch of `rows` real rows padded to `padded`."""
        self.input_batch_size.observe((model_name,), rows)
        self.padding_size.observe((model_name,), padded - rows)

    def render(self) -> str:
        """Every metric in Prometheus' text exposition format."""
        metrics = (self.request_count, self.request_latency, self.load_attempt_count, self.load_latency,
                   self.input_batch_size, self.padding_size, self.available_versions)
        return "\n".join(line for metric in metrics for line in metric.render()) + "\n"


def prometheus_path(monitoring_config_file) -> str | None:
    """The metrics path a TF Serving ``MonitoringConfig`` text protobuf enables (its
    ``prometheus_config {enable: true path: "..."}``; the path defaults to TF Serving's);
    None if it leaves Prometheus off. (tensorflow-serving-api ships no Python class for
    this message, so its two fields are read here.) A file that cannot be read or holds
    anything else raises a ValueError naming the file."""
    try:
        with open(monitoring_config_file) as handle:
            text = re.sub(r"#[^\n]*", "", handle.read())
    except OSError as error:
        raise ValueError(f"Monitoring config {monitoring_config_file}: {error}") from None
    match = re.fullmatch(r"\s*(?:prometheus_config\s*:?\s*\{(?P<body>[^{}]*)\}\s*)?", text)
    fields = re.findall(r"(\w+)\s*:\s*(\"[^\"]*\"|\w+)", match.group("body") or "") if match else None
    body = re.sub(r"(\w+)\s*:\s*(\"[^\"]*\"|\w+)", "", match.group("body") or "") if match else ""
    if match is None or body.strip() or any(name not in ("enable", "path") for name, _ in fields):
        raise ValueError(f"Monitoring config {monitoring_config_file}: expected a MonitoringConfig text protobuf "
                         f"with only prometheus_config {{ enable: ... path: ... }}.")
    values = dict(fields)
    if values.get("enable", "false") not in ("true", "1"):
        return None
    return values.get("path", '""').strip('"') or METRICS_PATH

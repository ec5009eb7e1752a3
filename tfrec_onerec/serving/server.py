"""The serving process: a ModelManager behind TF Serving's gRPC and REST APIs.

``Server(model_base="saved_models").start()`` serves every model under ``saved_models/``
on gRPC port 8500 and REST port 8501 (TF Serving's defaults) until :meth:`Server.stop`,
which stops taking new requests and lets the ones in flight finish (up to a grace period).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Sequence

from tfrec_onerec.serving import config as model_config

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 64 << 20
GRPC_TRANSPORTS = ("async", "threaded")


def default_workers() -> int:
    """Threads serving requests: 4 per core (TF Serving's gRPC default), at least 8, at most 64."""
    return max(8, min(64, 4 * (os.cpu_count() or 1)))


class Server:
    """TF Serving's gRPC (and REST) API over the SavedModels of a model base or a models.config.

    Args:
        model_base: a folder of models in TF Serving's layout (``<base>/<model>/<version>/``),
            or one model's folder. Exactly one of `model_base`, `model_config_file`, `models`.
        model_config_file: a TF Serving ``models.config`` (ModelServerConfig text protobuf).
        models: :class:`~tfrec_onerec.serving.config.ModelConfig` s.
        host: the address to listen on.
        port: the gRPC port (0: any free one; :attr:`port` tells which).
        rest_port: the REST port (0: any free one; None: no REST endpoint).
        poll_interval_s: seconds between looks for new versions (0: never).
        max_workers: gRPC threads (default :func:`default_workers`); REST gets as many.
        max_concurrent_rpcs: requests served or waiting for a thread at most; beyond,
            RESOURCE_EXHAUSTED (default 4 x max_workers). The REST endpoint queues as many.
            Both transports receive requests whole before a thread serves them
            (:mod:`~tfrec_onerec.serving.grpc_transport`,
            :mod:`~tfrec_onerec.serving.http_transport`), within 30 s.
        max_request_bytes: the largest request message (gRPC) or body (REST) accepted, and
            the largest decoded tensor; each transport serves twice as many bytes at once
            at most (RESOURCE_EXHAUSTED or 429 beyond).
        warmup: replay each version's TF Serving warmup records before serving it.
        allow_reload_config: answer ModelService.HandleReloadConfigRequest (default off:
            PERMISSION_DENIED). When on, every base path of a new config must lie under one
            of `model_roots`.
        model_roots: the directories reloaded configs may serve from; None: `model_base`, or
            the folders holding the startup config's model directories.
        monitoring_config_file: a TF Serving ``monitoring.config``; when it enables
            Prometheus, the REST port answers the metrics at its path
            (:mod:`~tfrec_onerec.serving.metrics`).
        config_poll_interval_s: seconds between re-reads of `model_config_file` (0: read once;
            TF Serving's ``--model_config_file_poll_wait_seconds``); a changed file is applied
            as HandleReloadConfigRequest would, a file that no longer parses is logged and
            the served set kept.
        fail_on_load_error: :meth:`start` raises if a model has no version available after
            the first load (rather than serving what it could).
        max_load_retries, load_retry_interval_s: retries of a failed version load
            (:class:`~tfrec_onerec.serving.model_manager.ModelManager`).
        batching: server-side batching (:mod:`~tfrec_onerec.serving.batching`): None (off),
            True (TF Serving's default parameters), the path of a ``batching_parameters.txt``
            or a :class:`~tfrec_onerec.serving.batching.BatchingParameters`.
        grpc_transport: ``"async"`` (default: :class:`~tfrec_onerec.serving.grpc_transport.GrpcServer`,
            requests received whole on an event loop, with a receive deadline and a byte
            budget) or ``"threaded"`` (:class:`~tfrec_onerec.serving.grpc_transport.ThreadedGrpcServer`:
            lower latency, for ports only trusted clients or a buffering proxy reach).
    """

    def __init__(self, model_base=None, model_config_file=None, models: Sequence | None = None, *,
                 host: str = "127.0.0.1", port: int = 8500, rest_port: int | None = 8501,
                 poll_interval_s: float = 1.0, max_workers: int | None = None,
                 max_concurrent_rpcs: int | None = None, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 warmup: bool = True, allow_reload_config: bool = False, model_roots: Sequence | None = None,
                 monitoring_config_file=None, config_poll_interval_s: float = 0.0,
                 fail_on_load_error: bool = False, max_load_retries: int = 5, load_retry_interval_s: float = 60.0,
                 batching=None, grpc_transport: str = "async"):
        from tfrec_onerec.serving.batching import BatchingParameters, load_batching_parameters
        from tfrec_onerec.serving.metrics import ServingMetrics, prometheus_path
        from tfrec_onerec.serving.model_manager import ModelManager

        if sum(x is not None for x in (model_base, model_config_file, models)) != 1:
            raise ValueError("Server: give exactly one of model_base, model_config_file or models.")
        if grpc_transport not in GRPC_TRANSPORTS:
            raise ValueError(f"Server: grpc_transport must be one of {', '.join(GRPC_TRANSPORTS)}, "
                             f"not {grpc_transport!r}.")
        self.grpc_transport = grpc_transport
        self.metrics_path = prometheus_path(monitoring_config_file) if monitoring_config_file else None
        options = dict(poll_interval_s=poll_interval_s, warmup=warmup, max_bytes=max_request_bytes,
                       metrics=ServingMetrics(), max_load_retries=max_load_retries,
                       load_retry_interval_s=load_retry_interval_s,
                       batching=(BatchingParameters() if batching is True else batching
                                 if batching is None or isinstance(batching, BatchingParameters)
                                 else load_batching_parameters(batching)))
        if model_base is not None:
            self.manager = ModelManager.from_base(model_base, **options)
            roots = [model_base]
        else:
            configs = models if models is not None else model_config.load_model_config(model_config_file)
            self.manager = ModelManager(configs, **options)
            roots = sorted({os.path.dirname(os.path.abspath(c.base_path)) for c in configs})
        self.allow_reload_config = allow_reload_config
        self.fail_on_load_error = fail_on_load_error
        self.model_config_file = model_config_file
        self.config_poll_interval_s = config_poll_interval_s if model_config_file is not None else 0.0
        self._config_thread = None
        self.model_roots = [str(root) for root in (roots if model_roots is None else model_roots)]
        self.host = host
        self.max_workers = max_workers or default_workers()
        self.max_concurrent_rpcs = max_concurrent_rpcs or 4 * self.max_workers
        self.max_request_bytes = max_request_bytes
        self._requested_ports = (port, rest_port)
        self.port: int | None = None
        self.rest_port: int | None = None
        self._grpc = None
        self._rest = None
        self._stopped = threading.Event()
        self._closing = threading.Event()  # set first thing in stop(): background work ends

    def start(self) -> "Server":
        """Loads the models (returns once the versions on disk are served) and opens the ports.

        Raises:
            OSError: a port could not be bound.
        """
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        from tfrec_onerec.serving.grpc_transport import GrpcServer, ThreadedGrpcServer
        from tfrec_onerec.serving.prediction_service import ModelService, PredictionService
        from tfrec_onerec.serving.rest import RestServer

        self.manager.start()
        missing = self.manager.unavailable_models()
        if self.fail_on_load_error and missing:
            self.manager.stop()
            raise RuntimeError(f"No version of model(s) {', '.join(missing)} could be loaded "
                               f"(--fail-on-load-error); the log says why.")
        port, rest_port = self._requested_ports
        try:
            transport = GrpcServer if self.grpc_transport == "async" else ThreadedGrpcServer
            self._grpc = transport(
                [(prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server,
                  PredictionService(self.manager, self.max_request_bytes)),
                 (model_service_pb2_grpc.add_ModelServiceServicer_to_server,
                  ModelService(self.manager, self.allow_reload_config, self.model_roots))],
                self.host, port, workers=self.max_workers, max_pending=self.max_concurrent_rpcs,
                max_message_bytes=self.max_request_bytes).start()
            self.port = self._grpc.port
            if rest_port is not None:
                self._rest = RestServer(self.manager, self.host, rest_port, self.max_request_bytes,
                                        workers=self.max_workers, max_pending=self.max_concurrent_rpcs,
                                        metrics_path=self.metrics_path).start()
                self.rest_port = self._rest.port
        except BaseException:
            self.stop(grace_s=0)
            raise
        if self.config_poll_interval_s > 0:
            self._config_thread = threading.Thread(target=self._poll_config, name="model-config-poll", daemon=True)
            self._config_thread.start()
        log.info("Serving %s: gRPC on %s:%d%s", ", ".join(self.manager.model_names) or "no models yet",
                 self.host, self.port, f", REST on {self.host}:{self.rest_port}" if self._rest else "")
        return self

    def _poll_config(self):
        while not self._closing.wait(self.config_poll_interval_s):
            try:
                configs = model_config.load_model_config(self.model_config_file)
            except Exception as error:  # a half-written or broken file: keep serving what is served
                log.error("Re-reading %s failed, the served models are kept: %s", self.model_config_file, error)
                continue
            if sorted(configs, key=lambda c: c.name) != self.manager.configs:
                log.info("%s changed: now serving %s", self.model_config_file, ", ".join(c.name for c in configs))
                self.manager.reconfigure(configs)

    def stop(self, grace_s: float = 10.0):
        """Stops taking requests, waits up to `grace_s` for those in flight, unloads the models."""
        if self._stopped.is_set():
            return
        self._closing.set()
        if self._config_thread is not None:
            self._config_thread.join()
        if self._grpc is not None:
            stopping = self._grpc.begin_stop(grace_s)
            if self._rest is not None:
                self._rest.stop(grace_s)
            self._grpc.close(stopping)
        elif self._rest is not None:
            self._rest.stop(grace_s)
        self.manager.stop()
        self._stopped.set()
        log.info("Server stopped")

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until the server has stopped (or `timeout` passed); True if stopped."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def target(self) -> str:
        """``host:port`` of the gRPC endpoint, for :class:`~tfrec_onerec.serving.client.Client`."""
        return f"{self.host}:{self.port}"


def serve(model_base=None, model_config_file=None, grace_s: float = 10.0, on_start=None, **options) -> None:
    """Runs a :class:`Server` until SIGINT or SIGTERM, then shuts it down gracefully.

    Args:
        on_start: called with the started server (e.g. to print its ports).
        **options: :class:`Server` arguments.
    """
    server = Server(model_base, model_config_file, **options).start()
    stop = threading.Event()

    def request_stop(signum, frame):
        log.info("Signal %d: shutting down (grace %.0f s)", signum, grace_s)
        stop.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if on_start is not None:
            on_start(server)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop(grace_s)
        for s, handler in previous.items():
            signal.signal(s, handler)

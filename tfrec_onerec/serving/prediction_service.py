"""gRPC servicers of tensorflow-serving-api's PredictionService and ModelService.

Each RPC checks the client's deadline before any work (a request that waited in the queue
past its deadline is answered DEADLINE_EXCEEDED without running the model), holds the
requested model version for as long as it runs, and turns a
:class:`~tfrec_onerec.serving.status.ServingError` into the gRPC status of the same name.
"""
from __future__ import annotations

import logging
import os
import time

import grpc
from tensorflow_serving.apis import (get_model_status_pb2, model_management_pb2, model_service_pb2_grpc,
                                     prediction_service_pb2_grpc)

from tfrec_onerec.serving import config as model_config
from tfrec_onerec.serving import inference
from tfrec_onerec.serving.status import CODES, ServingError, internal_error, invalid_argument

log = logging.getLogger(__name__)


def _check_deadline(context):
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise ServingError("DEADLINE_EXCEEDED", "The request's deadline passed before it could be served.")


def _answer(context, work, what: str = "a gRPC request", metrics=None, model_name: str = "", api: str = ""):
    """Runs ``work()``; a ServingError or an unexpected exception becomes a gRPC status (an
    unexpected one: INTERNAL with a request id, the details in the log). With `metrics`, the
    request is counted under `model_name` and `api` with its status and latency."""
    start, status = time.perf_counter(), "OK"
    try:
        _check_deadline(context)
        return work()
    except ServingError as error:
        status = error.code
        context.abort(grpc.StatusCode[error.code], error.message)
    except Exception:  # a bug must not end the server
        error = internal_error(log, what)
        status = error.code
        context.abort(grpc.StatusCode.INTERNAL, error.message)
    finally:
        if metrics is not None:
            metrics.record_request(model_name, api, "GRPC", status, time.perf_counter() - start)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict, Classify, Regress, MultiInference and GetModelMetadata over a ModelManager.

    Args:
        manager: the :class:`~tfrec_onerec.serving.model_manager.ModelManager`.
        max_bytes: the decoded-size limit of one request tensor.
    """

    def __init__(self, manager, max_bytes: int):
        self.manager = manager
        self.max_bytes = max_bytes

    def _on_version(self, context, model_spec, run, api: str):
        def work():
            with self.manager.handle(model_spec) as servable:
                return run(servable)
        return _answer(context, work, f"gRPC {api}", self.manager.metrics, model_spec.name, api)

    def Predict(self, request, context):
        return self._on_version(context, request.model_spec,
                                lambda servable: inference.predict(servable, request, self.max_bytes), "predict")

    def Classify(self, request, context):
        return self._on_version(context, request.model_spec, lambda servable: inference.classify(servable, request),
                                "classify")

    def Regress(self, request, context):
        return self._on_version(context, request.model_spec, lambda servable: inference.regress(servable, request),
                                "regress")

    def MultiInference(self, request, context):
        def work():
            inference.check_multi_inference(request)
            with self.manager.handle(request.tasks[0].model_spec) as servable:
                return inference.multi_inference(servable, request)
        model_name = request.tasks[0].model_spec.name if request.tasks else ""
        return _answer(context, work, "gRPC multi_inference", self.manager.metrics, model_name, "multi_inference")

    def GetModelMetadata(self, request, context):
        def work():
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            inference.check_metadata_request(request)
            with self.manager.handle(request.model_spec) as servable:
                return inference.model_metadata(servable, request)
        return _answer(context, work)


def under(path: str, root: str) -> bool:
    """True if `path` (symbolic links resolved) is `root` or lies below the resolved `root`."""
    path = os.path.realpath(path)
    return os.path.commonpath([path, root]) == root


def model_status_response(manager, model_spec):
    """The GetModelStatusResponse of a ModelSpec (shared by gRPC and REST)."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for version, state in manager.status(model_spec):
        entry = response.model_version_status.add()
        entry.version = version
        entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state.state)
        entry.status.error_code = CODES.index(state.error_code)
        entry.status.error_message = state.error_message
    return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus, and HandleReloadConfigRequest (a new ModelServerConfig, applied now).

    Args:
        manager: the :class:`~tfrec_onerec.serving.model_manager.ModelManager`.
        allow_reload_config: answer HandleReloadConfigRequest (off: PERMISSION_DENIED, since
            anyone who reaches the port could otherwise point the server at any directory).
        model_roots: the directories a reloaded config's base paths must lie under.
    """

    def __init__(self, manager, allow_reload_config: bool = False, model_roots=()):
        self.manager = manager
        self.allow_reload_config = allow_reload_config
        self.model_roots = [os.path.realpath(root) for root in model_roots]

    def GetModelStatus(self, request, context):
        def work():
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            return model_status_response(self.manager, request.model_spec)
        return _answer(context, work)

    def HandleReloadConfigRequest(self, request, context):
        def work():
            if not self.allow_reload_config:
                raise ServingError("PERMISSION_DENIED", "HandleReloadConfigRequest is turned off on this server "
                                                        "(start it with --allow-reload-config).")
            try:
                configs = model_config.configs_from_proto(request.config)
            except ValueError as error:
                raise invalid_argument(str(error)) from None
            for config in configs:
                if not any(under(config.base_path, root) for root in self.model_roots):
                    raise ServingError("PERMISSION_DENIED", f"Model {config.name!r}: its base_path lies outside "
                                                            "the server's model roots (--model-root).")
            self.manager.reconfigure(configs)
            return model_management_pb2.ReloadConfigResponse()
        return _answer(context, work)

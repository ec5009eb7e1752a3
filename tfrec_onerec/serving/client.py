"""A gRPC client for TF Serving's API that builds requests from the feature specification.

Works against our server and against the real TF Serving alike::

    spec = FeatureSpec.from_json(open("saved_models/din/1/assets.extra/feature_spec.json").read())
    with Client("localhost:8500", "din", spec=spec) as client:
        scores = client.predict(columns)["click"]          # (batch, 1) float32

`columns` is the package's in-memory layout (``{feature: (batch, ...) array}``, sequences
padded, see :mod:`tfrec_onerec.features.spec`). For a signature that takes serialized
tf.Example (our ``serving_default``) the client serializes the rows with the spec; for a
signature of named tensors (our ``predict``) it sends each column cast to the dtype the
server's metadata gives for that input.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from tfrec_onerec.features.spec import FeatureSpec
from tfrec_onerec.features.tfrecord import serialize_rows

SPEC_PATH = Path("assets.extra") / "feature_spec.json"


def spec_of_export(export_dir: str | os.PathLike) -> FeatureSpec:
    """The feature spec an export wrote (``<version>/assets.extra/feature_spec.json``).

    Args:
        export_dir: a model's folder (its latest version is read) or one version's folder.
    """
    import tensorflow as tf

    from tfrec_onerec.export import join, latest_version

    path = str(join(latest_version(export_dir), *SPEC_PATH.parts))  # local paths and remote URIs alike
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} is missing: was the model exported with tfrec_onerec.export?")
    with tf.io.gfile.GFile(path) as handle:
        return FeatureSpec.from_json(handle.read())


class Client:
    """Calls one model over TF Serving's gRPC API.

    Args:
        target: ``host:port`` of the gRPC endpoint.
        model: the model name.
        spec: the model's :class:`FeatureSpec` (needed for tf.Example signatures).
        timeout_s: the deadline of each call, in seconds.
        max_message_bytes: the largest response accepted.
    """

    def __init__(self, target: str, model: str, spec: FeatureSpec | None = None, timeout_s: float = 30.0,
                 max_message_bytes: int = 64 << 20):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.target, self.model, self.spec, self.timeout_s = target, model, spec, timeout_s
        self._channel = grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes)])
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._signatures: dict = {}

    @classmethod
    def for_export(cls, target: str, export_dir: str | os.PathLike, model: str | None = None, **kwargs) -> "Client":
        """A client whose spec is read from a local export (model name: the folder's name)."""
        return cls(target, model or Path(export_dir).resolve().name, spec=spec_of_export(export_dir), **kwargs)

    # -- requests -------------------------------------------------------------------------------------
    def _model_spec(self, target, signature: str | None = None, version: int | None = None):
        target.name = self.model
        if signature is not None:
            target.signature_name = signature
        if version is not None:
            target.version.value = version
        return target

    def signature_def(self, signature: str = "serving_default", version: int | None = None):
        """The SignatureDef the server reports (cached per version)."""
        key = (signature, version)
        if key not in self._signatures:
            signatures = self.metadata(version).signature_def
            if signature not in signatures:
                raise KeyError(f"Model {self.model!r} has no signature {signature!r}; it has {sorted(signatures)}.")
            self._signatures[key] = signatures[signature]
        return self._signatures[key]

    def examples(self, columns: Mapping[str, np.ndarray]) -> list:
        """The rows of `columns` as serialized tf.Example, per the spec."""
        if self.spec is None:
            raise ValueError("A FeatureSpec is needed to build tf.Example requests: pass spec= (or use "
                             "Client.for_export), or call a signature of named tensors such as 'predict'.")
        return serialize_rows(columns, self.spec)

    def predict_request(self, columns: Mapping[str, np.ndarray], signature: str = "serving_default",
                        version: int | None = None, output_filter: Sequence[str] = ()):
        """The PredictRequest for `columns` (see the module docstring)."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest(output_filter=list(output_filter))
        self._model_spec(request.model_spec, signature, version)
        inputs = self.signature_def(signature, version).inputs
        if len(inputs) == 1 and tf.as_dtype(next(iter(inputs.values())).dtype) == tf.string:
            (name,) = inputs
            request.inputs[name].CopyFrom(tf.make_tensor_proto(np.array(self.examples(columns), dtype=object)))
            return request
        for name, info in inputs.items():
            if name not in columns:
                raise ValueError(f"Column {name!r} missing: signature {signature!r} takes {sorted(inputs)}.")
            value = np.asarray(columns[name]).astype(tf.as_dtype(info.dtype).as_numpy_dtype)
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        return request

    def predict(self, columns: Mapping[str, np.ndarray], signature: str = "serving_default",
                version: int | None = None, output_filter: Sequence[str] = ()) -> dict:
        """Scores the rows of `columns`.

        Returns:
            ``{output: array}``, e.g. ``{"click": (batch, 1) float32}``.

        Raises:
            grpc.RpcError: with the server's status code and message.
        """
        import tensorflow as tf

        response = self.prediction.Predict(self.predict_request(columns, signature, version, output_filter),
                                           timeout=self.timeout_s)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def _input(self, examples, context):
        from tensorflow_serving.apis import input_pb2

        proto = input_pb2.Input()
        target = proto.example_list_with_context if context is not None else proto.example_list
        if context is not None:
            target.context.CopyFrom(context)
        for example in examples:
            target.examples.add().CopyFrom(example)
        return proto

    def classify(self, examples: Sequence, signature: str = "serving_default", context=None,
                 version: int | None = None) -> list:
        """Classify on tf.train.Example protos; returns ``[[(label, score), ...] per example]``."""
        from tensorflow_serving.apis import classification_pb2

        request = classification_pb2.ClassificationRequest(input=self._input(examples, context))
        self._model_spec(request.model_spec, signature, version)
        result = self.prediction.Classify(request, timeout=self.timeout_s).result
        return [[(c.label, c.score) for c in row.classes] for row in result.classifications]

    def regress(self, examples: Sequence, signature: str = "serving_default", context=None,
                version: int | None = None) -> np.ndarray:
        """Regress on tf.train.Example protos; returns float32 (batch,)."""
        from tensorflow_serving.apis import regression_pb2

        request = regression_pb2.RegressionRequest(input=self._input(examples, context))
        self._model_spec(request.model_spec, signature, version)
        result = self.prediction.Regress(request, timeout=self.timeout_s).result
        return np.array([r.value for r in result.regressions], dtype=np.float32)

    def metadata(self, version: int | None = None):
        """The model's SignatureDefMap (GetModelMetadata)."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._model_spec(request.model_spec, version=version)
        response = self.prediction.GetModelMetadata(request, timeout=self.timeout_s)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return signature_map

    def status(self, version: int | None = None) -> list:
        """``[(version, state name)]`` from GetModelStatus, e.g. ``[(1, "AVAILABLE")]``."""
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._model_spec(request.model_spec, version=version)
        response = self.models.GetModelStatus(request, timeout=self.timeout_s)
        names = get_model_status_pb2.ModelVersionStatus.State.Name
        return [(s.version, names(s.state)) for s in response.model_version_status]

    def close(self):
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc):
        self.close()

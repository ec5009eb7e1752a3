"""The PredictionService methods on one loaded model version, independent of the transport.

Each function takes a :class:`~tfrec_onerec.serving.model_manager.Servable` and a
tensorflow-serving-api request proto and returns the response proto, or raises
:class:`~tfrec_onerec.serving.status.ServingError` with the status code and message TF
Serving gives for the same request (its ``predict_util.cc``, ``classifier.cc``,
``regressor.cc``, ``multi_inference.cc``, ``get_model_metadata_impl.cc``). Messages are
ours where TF Serving's would not name the offending input.

TF Serving's default is followed for signature method names: the check is off
(``--enable_signature_method_name_check=false``), so Classify and Regress accept any
signature whose inputs and outputs have the classification/regression names (one string
input ``inputs``; outputs ``classes``/``scores`` or ``outputs``). Our exported
``serving_default`` takes ``examples``, so Classify/Regress on it is INVALID_ARGUMENT, as
in TF Serving.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfrec_onerec.serving import tensors
from tfrec_onerec.serving.status import ServingError, code_name, first_line, invalid_argument

DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
SIGNATURE_DEF_FIELD = "signature_def"
MAX_MESSAGE_CHARS = 2000


def signature_key(model_spec) -> str:
    return model_spec.signature_name or DEFAULT_SIGNATURE


def _fill_model_spec(target, servable, signature_name: str | None):
    target.name = servable.name
    target.version.value = servable.version
    if signature_name is not None:
        target.signature_name = signature_name


def _run(servable, signature: str, feeds: dict) -> dict:
    """Calls a signature's function, through the version's batcher when batching is on
    (:mod:`~tfrec_onerec.serving.batching`); TensorFlow errors keep their canonical code.

    Args:
        feeds: ``{input name: numpy array}``.

    Returns:
        ``{output name: numpy array}``.
    """
    batcher = getattr(servable, "batcher", None)
    if batcher is not None:
        return batcher.run(signature, feeds)
    return call_signature(servable, signature, feeds)


def call_signature(servable, signature: str, feeds: dict) -> dict:
    """:func:`_run` without batching: one call of the signature's function."""
    try:
        outputs = servable.call(signature, {k: tf.constant(v) for k, v in feeds.items()})
        return {k: v.numpy() for k, v in outputs.items()}
    except tf.errors.OpError as error:
        code, message = code_name(error.error_code), first_line(error.message)
    except UnicodeDecodeError as error:
        # TensorFlow's message quoted the input's bytes (e.g. "Could not parse example input, value: '...'")
        # and could not be decoded; its code is lost on the way, the bytes of the message are not.
        text = error.object.decode("utf-8", "replace") if isinstance(error.object, bytes) else str(error)
        code, message = "INVALID_ARGUMENT", first_line(text)
    except (TypeError, ValueError) as error:
        code, message = "INVALID_ARGUMENT", first_line(str(error))
    if len(feeds) == 1:  # the error can only come from this input (e.g. a malformed tf.Example)
        message = f"Input {next(iter(feeds))}: {message}"
    raise ServingError(code, message[:MAX_MESSAGE_CHARS])


# -- Predict ----------------------------------------------------------------------------------------
def predict(servable, request, max_bytes: int):
    """PredictionService.Predict.

    Args:
        servable: the model version.
        request: a ``PredictRequest``; inputs are TensorProtos keyed by the signature's input
            names, e.g. ``examples``: string (batch,) for our ``serving_default``.
        max_bytes: the decoded size limit of one input tensor.

    Returns:
        A ``PredictResponse`` with one TensorProto per output (all, or those in
        ``output_filter``), e.g. ``click``: float32 (batch, 1).
    """
    from tensorflow_serving.apis import predict_pb2

    name = signature_key(request.model_spec)
    signature = servable.signature_defs.get(name)
    if signature is None or not servable.has_function(name):
        # TF Serving's gRPC Predict answers FAILED_PRECONDITION here (Classify/Regress and REST: INVALID_ARGUMENT).
        raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
    check_input_names(request.inputs, signature)
    feeds = {}
    for input_name, proto in request.inputs.items():
        feeds[input_name] = tensors.decode(input_name, proto, max_bytes)
        tensors.check_input(input_name, feeds[input_name], proto.dtype, signature.inputs[input_name])
    results = run_signature(servable, name, feeds, request.output_filter)
    response = predict_pb2.PredictResponse()
    _fill_model_spec(response.model_spec, servable, name)
    for alias, value in results.items():
        response.outputs[alias].CopyFrom(tensors.encode(value))
    return response


def check_input_names(sent, signature) -> None:
    """The request must feed exactly the signature's inputs (TF Serving's message)."""
    sent, wanted = set(sent), set(signature.inputs)
    if sent != wanted:
        raise invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(wanted)} len({{{','.join(sorted(sent))}}}) != "
            f"len({{{','.join(sorted(wanted))}}}). Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
            f"Missing but required: {{{','.join(sorted(wanted - sent))}}}.")


def run_signature(servable, name: str, feeds: dict, output_filter=()) -> dict:
    """Runs a predict-style signature on checked inputs.

    Args:
        name: the signature key (it exists).
        feeds: ``{input name: numpy array}`` matching the signature's inputs.
        output_filter: the outputs wanted (default: all).

    Returns:
        ``{output name: numpy array}``.
    """
    signature = servable.signature_defs[name]
    outputs = list(output_filter)
    for alias in outputs:
        if alias not in signature.outputs:
            raise invalid_argument(f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                                   f"the set {{{','.join(sorted(signature.outputs))}}}.")
    if len(set(outputs)) != len(outputs):
        raise invalid_argument(f"duplicate output tensor alias in output_filter: {outputs}")
    results = _run(servable, name, feeds)
    return {alias: results[alias] for alias in outputs} if outputs else results


# -- Classify / Regress / MultiInference ------------------------------------------------------------
def serialized_examples(input_proto) -> np.ndarray:
    """A ``tensorflow.serving.Input`` as the string tensor its signature is fed.

    Returns:
        object array (batch,) of serialized tf.Example; with ``example_list_with_context``
        each is the context's bytes followed by the example's, so the example's features
        override the context's when parsed (TF Serving's InputToSerializedExampleTensor).

    Raises:
        ServingError: INVALID_ARGUMENT ``Input is empty.`` for no examples.
    """
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        records = [e.SerializeToString() for e in input_proto.example_list.examples]
    elif kind == "example_list_with_context":
        context = input_proto.example_list_with_context.context.SerializeToString()
        records = [context + e.SerializeToString() for e in input_proto.example_list_with_context.examples]
    else:
        records = []
    if not records:
        raise invalid_argument("Input is empty.")
    return np.array(records, dtype=object)


def _classify_signature(signature) -> None:
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if "inputs" not in signature.inputs:
        raise invalid_argument(f"No classification inputs found in SignatureDef: the signature's input is "
                               f"{list(signature.inputs)}, expected 'inputs' (serialized tf.Example).")
    if "classes" not in signature.outputs and "scores" not in signature.outputs:
        raise invalid_argument('Expected classification signature outputs to contain at least one of "classes" or '
                               f'"scores". Signature outputs were: {sorted(signature.outputs)}')


def _regress_signature(signature) -> None:
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if "inputs" not in signature.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: the signature's input is "
                               f"{list(signature.inputs)}, expected 'inputs' (serialized tf.Example).")
    if "outputs" not in signature.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: the signature's output is "
                               f"{list(signature.outputs)}, expected 'outputs'.")


_CHECKS = {CLASSIFY_METHOD: _classify_signature, REGRESS_METHOD: _regress_signature}


def _example_signature(servable, name: str, method: str):
    signature = servable.signature_defs.get(name)
    if signature is None or not servable.has_function(name):
        raise invalid_argument(f"No signature was found with the name: {name}")
    _CHECKS[method](signature)
    return signature


def _classification_result(outputs: dict, num_examples: int, result) -> None:
    classes, scores = outputs.get("classes"), outputs.get("scores")
    for label, array, dtype in (("classes", classes, object), ("scores", scores, np.float32)):
        if array is None:
            continue
        if array.ndim != 2:
            raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got {list(array.shape)}")
        if array.dtype != dtype:
            raise invalid_argument(f"Expected {label} Tensor of {'DT_STRING' if dtype is object else 'DT_FLOAT'}. "
                                   f"Got: {array.dtype}")
        if array.shape[0] != num_examples:
            raise invalid_argument(f"Expected {label} output batch size of {num_examples}. Got: {array.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. "
                               f"{scores.shape[1]}")
    num_classes = (classes if classes is not None else scores).shape[1]
    for i in range(num_examples):
        row = result.classifications.add()
        for c in range(num_classes):
            entry = row.classes.add()
            if classes is not None:
                entry.label = classes[i, c].decode("utf-8", errors="replace")
            if scores is not None:
                entry.score = float(scores[i, c])


def _regression_result(outputs: dict, num_examples: int, result) -> None:
    values = outputs["outputs"]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise invalid_argument("Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                               f"{list(values.shape)}")
    if values.shape[0] != num_examples:
        raise invalid_argument(f"Input batch size did not match output batch size: {num_examples} vs. "
                               f"{values.shape[0]}")
    if values.dtype != np.float32:
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {values.dtype}")
    for value in values.reshape(-1):
        result.regressions.add().value = float(value)


def _examples_input(servable, name: str, examples: np.ndarray, signature) -> dict:
    info = signature.inputs["inputs"]
    if info.dtype != tf.string.as_datatype_enum:
        raise invalid_argument(f"Signature {name}: input 'inputs' must be a string tensor of serialized "
                               f"tf.Example, but it is {tensors.dtype_name(info.dtype)}.")
    return _run(servable, name, {"inputs": examples})


def _run_example_method(servable, request, method: str, response, fill_result):
    """Classify and Regress: check the signature's method, run it on the tf.Examples, fill `response`."""
    name = signature_key(request.model_spec)
    signature = _example_signature(servable, name, method)
    examples = serialized_examples(request.input)
    outputs = _examples_input(servable, name, examples, signature)
    _fill_model_spec(response.model_spec, servable, name)
    fill_result(outputs, len(examples), response.result)
    return response


def classify(servable, request):
    """PredictionService.Classify: tf.Examples in, ``[(label, score)]`` per example out."""
    from tensorflow_serving.apis import classification_pb2

    return _run_example_method(servable, request, CLASSIFY_METHOD, classification_pb2.ClassificationResponse(),
                               _classification_result)


def regress(servable, request):
    """PredictionService.Regress: tf.Examples in, one float per example out."""
    from tensorflow_serving.apis import regression_pb2

    return _run_example_method(servable, request, REGRESS_METHOD, regression_pb2.RegressionResponse(),
                               _regression_result)


def check_multi_inference(request) -> str:
    """Validates a MultiInferenceRequest's tasks; returns the one model name they share."""
    if not request.tasks:
        raise invalid_argument("MultiInferenceRequest has no tasks; expected at least one.")
    model_name, seen = "", set()
    for task in request.tasks:
        if not task.model_spec.name:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if model_name and task.model_spec.name != model_name:
            raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        model_name = task.model_spec.name
        name = signature_key(task.model_spec)
        if name in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {name}")
        seen.add(name)
    return model_name


def multi_inference(servable, request):
    """PredictionService.MultiInference: several classify/regress signatures over one Input."""
    from tensorflow_serving.apis import inference_pb2

    check_multi_inference(request)
    signatures = []
    for task in request.tasks:
        name = signature_key(task.model_spec)
        if task.method_name not in _CHECKS:
            raise ServingError("UNIMPLEMENTED", f"Unsupported signature method_name: {task.method_name}")
        if name not in servable.signature_defs or not servable.has_function(name):
            raise invalid_argument(f"Requested signature not found in model graph: {name}")
        _CHECKS[task.method_name](servable.signature_defs[name])
        signatures.append(name)
    examples = serialized_examples(request.input)
    response = inference_pb2.MultiInferenceResponse()
    for task, name in zip(request.tasks, signatures):
        outputs = _examples_input(servable, name, examples, servable.signature_defs[name])
        result = response.results.add()
        _fill_model_spec(result.model_spec, servable, task.model_spec.signature_name)
        if task.method_name == CLASSIFY_METHOD:
            _classification_result(outputs, len(examples), result.classification_result)
        else:
            _regression_result(outputs, len(examples), result.regression_result)
    return response


# -- GetModelMetadata -------------------------------------------------------------------------------
def check_metadata_request(request) -> None:
    if not request.metadata_field:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
        if field != SIGNATURE_DEF_FIELD:
            raise invalid_argument(f"Metadata field {field} is not supported")


def model_metadata(servable, request):
    """PredictionService.GetModelMetadata: the version's SignatureDefMap, packed in an Any."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    check_metadata_request(request)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    _fill_model_spec(response.model_spec, servable, None)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in servable.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(signature)
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
    return response

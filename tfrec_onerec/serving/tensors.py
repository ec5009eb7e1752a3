"""Tensors in and out of requests: TensorProto and JSON, checked against a signature's TensorInfo.

Everything a client sends is untrusted. A TensorProto is decoded only after its shape and
dtype are checked and its decoded size is bounded (the proto's "repeat the last value"
shorthand could otherwise ask for any amount of memory with a few bytes), and every
failure is an INVALID_ARGUMENT that names the input.
"""
from __future__ import annotations

import base64
import binascii

import numpy as np
import tensorflow as tf

from tfrec_onerec.serving.status import invalid_argument

# Dtypes a request may carry; resource, variant and quantized types are never fed.
_FEEDABLE = {tf.float16, tf.bfloat16, tf.float32, tf.float64, tf.int8, tf.int16, tf.int32, tf.int64, tf.uint8,
             tf.uint16, tf.uint32, tf.uint64, tf.bool, tf.string, tf.complex64, tf.complex128}


def dtype_name(enum_value: int) -> str:
    """``int64`` for ``DT_INT64`` (the name of a DataType enum value; ``DT_<n>`` if unknown)."""
    try:
        return tf.as_dtype(enum_value).name
    except TypeError:
        return f"DT_{enum_value}"


def shape_of(shape_proto) -> list | None:
    """A TensorShapeProto as a list of dims (-1 for unknown), or None for an unknown rank."""
    return None if shape_proto.unknown_rank else [d.size for d in shape_proto.dim]


def decode(name: str, proto, max_bytes: int) -> np.ndarray:
    """A request's TensorProto as a numpy array.

    Args:
        name: the input's name, for error messages.
        proto: a ``tensorflow.TensorProto``.
        max_bytes: the most memory the decoded array may take (strings count 8 bytes each).

    Returns:
        The array (``object`` dtype of ``bytes`` for strings).

    Raises:
        ServingError: INVALID_ARGUMENT ``tensor parsing error: <name>`` (TF Serving's
            message) with the reason, for a bad shape or dtype, too many elements, or
            content that does not match the shape.
    """
    def fail(reason):
        return invalid_argument(f"tensor parsing error: {name} ({reason})")

    if proto.tensor_shape.unknown_rank:
        raise fail("the tensor has an unknown rank")
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise fail(f"negative dimension in shape {dims}")
    try:
        dtype = tf.as_dtype(proto.dtype)
    except TypeError:
        raise fail(f"unknown dtype enum {proto.dtype}") from None
    if dtype not in _FEEDABLE:
        raise fail(f"dtype {dtype.name} cannot be sent in a request")
    itemsize = 8 if dtype == tf.string else dtype.size
    elements = 1
    for d in dims:
        elements *= d
        if elements * itemsize > max_bytes:
            raise fail(f"shape {dims} needs more than the request limit of {max_bytes} bytes")
    try:
        array = tf.make_ndarray(proto)
    except Exception as error:  # numpy/TensorFlow reject malformed content in many ways
        raise fail(f"{type(error).__name__}: {error}") from None
    if list(array.shape) != dims:
        raise fail(f"content does not match shape {dims}")
    return array


def check_input(name: str, array: np.ndarray, proto_dtype: int, info) -> None:
    """Checks a decoded input against the signature's TensorInfo.

    Raises:
        ServingError: INVALID_ARGUMENT naming the input and the expected dtype or shape.
    """
    if proto_dtype != info.dtype:
        raise invalid_argument(f"Expected input {name} to be {dtype_name(info.dtype)} but got "
                               f"{dtype_name(proto_dtype)}.")
    expected = shape_of(info.tensor_shape)
    if expected is None:
        return
    got = list(array.shape)
    if len(got) != len(expected) or any(e not in (-1, g) for e, g in zip(expected, got)):
        raise invalid_argument(f"Input {name}: expected shape {expected} (-1: any size) but got {got}.")


_CONTENT_DTYPES = {np.dtype(t): tf.as_dtype(t).as_datatype_enum
                   for t in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
                             "uint32", "uint64", "bool")}


def encode(array) -> "tf.TensorProto":
    """A numpy array (or tensor) as a TensorProto; numbers as ``tensor_content``.

    Numeric arrays are written directly (``tf.make_tensor_proto`` costs about 0.15 ms per
    output of a batch-1 request, a tenth of the whole request); strings go through it."""
    array = np.asarray(array)
    enum = _CONTENT_DTYPES.get(array.dtype.newbyteorder("=")) if array.dtype.byteorder in "=<|" else None
    if enum is None:
        return tf.make_tensor_proto(array)
    proto = _empty_proto(enum, array.shape)
    proto.tensor_content = np.ascontiguousarray(array).tobytes()
    return proto


def _empty_proto(enum: int, shape) -> "tf.TensorProto":
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

    return tensor_pb2.TensorProto(dtype=enum, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(size)) for size in shape]))


# -- JSON (TF Serving's REST formats) ---------------------------------------------------------------
def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def from_json(name: str, value, info) -> np.ndarray:
    """A JSON value (nested lists) as an array of the TensorInfo's dtype.

    Strings are UTF-8 text or ``{"b64": "<base64>"}`` objects, as in TF Serving's REST API.

    Raises:
        ServingError: INVALID_ARGUMENT naming the input: ragged lists, values of the
            wrong type (text for a number, a fraction for an integer), bad base64.
    """
    dtype = tf.as_dtype(info.dtype)
    if dtype == tf.string:
        def convert(v):
            if isinstance(v, list):
                return [convert(x) for x in v]
            if _is_b64(v):
                try:
                    return base64.b64decode(v["b64"], validate=True)
                except (binascii.Error, TypeError, ValueError):
                    raise invalid_argument(f"Input {name}: invalid base64 in {{\"b64\": ...}}.") from None
            if isinstance(v, str):
                return v.encode("utf-8")
            raise invalid_argument(f"Input {name}: expected a string or {{\"b64\": ...}} for dtype string, "
                                   f"got {type(v).__name__} {v!r:.80}.")
        return _regular_array(name, convert(value), object)
    if dtype not in _FEEDABLE:
        raise invalid_argument(f"Input {name}: dtype {dtype.name} cannot be sent as JSON.")
    array = _regular_array(name, value, None)
    kind = array.dtype.kind
    allowed = "b" if dtype == tf.bool else ("iub" if dtype.is_integer else "iubf")
    if kind == "O" and dtype.is_integer and all(isinstance(v, int) for v in array.flat):
        raise invalid_argument(f"Input {name}: values out of range for {dtype.name}.")  # beyond 64 bits
    if array.size and kind not in allowed:
        what = {"U": "text", "O": "mixed values", "f": "fractional numbers"}.get(kind, array.dtype.name)
        raise invalid_argument(f"Input {name}: expected {dtype.name} values, got {what}.")
    if dtype.is_integer and array.size and kind in "iu":
        if array.min() < dtype.min or array.max() > dtype.max:
            raise invalid_argument(f"Input {name}: values out of range for {dtype.name}.")
    return array.astype(dtype.as_numpy_dtype)


def _regular_array(name: str, value, dtype) -> np.ndarray:
    try:
        if dtype is object:
            array = np.empty(_nested_shape(name, value), dtype=object)
            _fill(array, value)
            return array
        _nested_shape(name, value)
        return np.asarray(value)
    except (ValueError, OverflowError) as error:
        raise invalid_argument(f"Input {name}: {error}") from None


def _nested_shape(name: str, value) -> tuple:
    """The shape of nested lists; every row must have the same length."""
    if not isinstance(value, list):
        return ()
    shapes = {_nested_shape(name, v) for v in value}
    if len(shapes) > 1:
        raise invalid_argument(f"Input {name}: lists of different lengths or depths; a tensor must be "
                               "rectangular.")
    return (len(value),) + (shapes.pop() if shapes else ())


def _fill(array: np.ndarray, value):
    if array.ndim == 0:
        array[()] = value
        return
    for i, v in enumerate(value):
        if array.ndim == 1:
            array[i] = v
        else:
            _fill(array[i], v)


def to_json(name: str, array: np.ndarray):
    """An output array as JSON-ready nested lists.

    Strings are UTF-8 text, or ``{"b64": ...}`` when the output's name ends in
    ``_bytes`` (TF Serving's convention) or the bytes are not valid UTF-8.
    """
    if array.dtype != object:
        return array.tolist()
    binary = name.endswith("_bytes")

    def convert(v):
        if isinstance(v, np.ndarray):
            return [convert(x) for x in v]
        if isinstance(v, bytes):
            if not binary:
                try:
                    return v.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            return {"b64": base64.b64encode(v).decode("ascii")}
        return v
    return convert(array)


"""From tf.Example to model-ready tensors, and checks on feature dicts; all derived from a spec.

Everything here uses core TensorFlow ops only, so it can sit inside an exported serving
signature and run where tfrec_onerec is not installed (TF Serving).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from tfrec_onerec.features.spec import Feature, FeatureSpec


def example_parsing_spec(spec: FeatureSpec, labels: Sequence[str] = ()) -> dict:
    """The `tf.io.parse_example` spec of `spec`'s features plus the given label columns.

    Categorical and numeric features are required (parsing a tf.Example without them fails
    with TensorFlow's message naming the feature); sequences are variable-length lists and
    may be absent (an empty history).
    """
    parsing = {}
    for f in spec:
        if f.kind == "categorical":
            parsing[f.name] = tf.io.FixedLenFeature([], tf.int64)
        elif f.kind == "numeric":
            parsing[f.name] = tf.io.FixedLenFeature([f.dim], tf.float32)
        else:
            parsing[f.name] = tf.io.RaggedFeature(tf.int64)
    for label in labels:
        if label not in spec.labels:
            raise KeyError(f"Label {label!r} is not a label of the spec; labels are {list(spec.labels)}.")
        parsing[label] = tf.io.FixedLenFeature([], tf.float32)
    return parsing


def pad_sequence(ids: tf.RaggedTensor, max_len: int) -> tf.Tensor:
    """Applies the package's sequence convention to a ragged batch of id lists.

    Keeps the ``max_len`` most recent (last) ids of each row and pads with 0 on the right.

    Args:
        ids: int64 RaggedTensor of shape (batch, None), oldest id first.
        max_len: length of the output rows.

    Returns:
        int64 Tensor of shape (batch, max_len).
    """
    lengths = ids.row_lengths()
    dropped = tf.maximum(lengths - max_len, 0)
    # Keep positions [row_start + dropped, row_limit) of the flat values: the newest ids.
    positions = tf.ragged.range(ids.row_starts() + dropped, ids.row_limits()).values
    kept = tf.RaggedTensor.from_row_lengths(tf.gather(ids.values, positions), lengths - dropped)
    return kept.to_tensor(default_value=0, shape=[None, max_len])


def parse_examples(serialized: tf.Tensor, spec: FeatureSpec, labels: Sequence[str] = ()) -> dict:
    """Parses a batch of serialized tf.Example into dense tensors of the spec's shapes.

    Args:
        serialized: string Tensor of shape (batch,).
        spec: the feature specification.
        labels: label columns to parse as well (float32, shape (batch,)).

    Returns:
        ``{name: tensor}``: categorical (batch,) int64, numeric (batch, dim) float32,
        sequence (batch, max_len) int64 padded by :func:`pad_sequence`, labels (batch,).
    """
    parsed = tf.io.parse_example(serialized, example_parsing_spec(spec, labels))
    for f in spec:
        if f.kind == "sequence":
            parsed[f.name] = pad_sequence(parsed[f.name], f.max_len)
    return parsed


def pad_sequences_numpy(rows: Sequence[Sequence[int]], max_len: int) -> np.ndarray:
    """The numpy twin of :func:`pad_sequence` for in-memory data: (n,) lists -> (n, max_len)."""
    out = np.zeros((len(rows), max_len), dtype=np.int64)
    for i, row in enumerate(rows):
        kept = list(row)[-max_len:] if max_len else []
        out[i, :len(kept)] = kept
    return out


def _rank(x) -> int | None:
    shape = getattr(x, "shape", None)
    return None if shape is None else len(shape)


def check_features(inputs: Mapping, spec: FeatureSpec, names: Sequence[str] | None = None) -> dict:
    """Checks a feature dict against the spec and returns it with canonical dtypes.

    Args:
        inputs: ``{name: tensor or array}``; extra keys are ignored.
        spec: the feature specification.
        names: the features required (default: all of the spec's features).

    Returns:
        ``{name: tensor}`` with id features cast to int64 and numeric ones to float32.

    Raises:
        ValueError: a feature is missing, or has a wrong dtype (e.g. floats or strings
            for an id feature) or a wrong rank; the message names the feature and what
            was expected.
    """
    if not isinstance(inputs, Mapping):
        raise ValueError(f"Expected a dict of features {list(names or spec.names)}, got {type(inputs).__name__}.")
    out = {}
    for name in names or spec.names:
        f = spec[name]
        if name not in inputs:
            raise ValueError(f"Missing feature {name!r}: expected {f.describe()}. Got features {sorted(inputs)}.")
        x = inputs[name]
        if not tf.is_tensor(x) and not hasattr(x, "dtype"):
            x = np.asarray(x)
        out[name] = _coerce(f, x)
    return out


def _coerce(f: Feature, x):
    dtype = tf.as_dtype(x.dtype) if not hasattr(x.dtype, "is_integer") else x.dtype
    rank = _rank(x)
    expected_rank = 1 + len(f.shape)
    if rank is not None and rank != expected_rank:
        raise ValueError(
            f"Feature {f.name!r}: expected {f.describe()} (rank {expected_rank}), got shape {tuple(x.shape)}.")
    if f.kind == "sequence" and x.shape[-1] is not None and x.shape[-1] != f.max_len:
        raise ValueError(f"Feature {f.name!r}: expected {f.describe()}, got shape {tuple(x.shape)}; "
                         f"pad or truncate sequences to max_len={f.max_len} (see features.spec).")
    if f.kind == "numeric" and x.shape[-1] is not None and x.shape[-1] != f.dim:
        raise ValueError(f"Feature {f.name!r}: expected {f.describe()}, got shape {tuple(x.shape)}.")
    if f.is_id:
        if not dtype.is_integer:
            raise ValueError(f"Feature {f.name!r}: expected integer ids ({f.describe()}), got dtype {dtype.name}.")
        return tf.cast(x, tf.int64)
    if not (dtype.is_floating or dtype.is_integer):
        raise ValueError(f"Feature {f.name!r}: expected numbers ({f.describe()}), got dtype {dtype.name}.")
    return tf.cast(x, tf.float32)

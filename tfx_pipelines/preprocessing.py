"""The Transform component's `preprocessing_fn`, derived from the feature spec.

Raw columns come in as the schema of :mod:`tfx_pipelines.schema` parses them (fixed-size
columns as (batch, size) dense tensors, sequences as SparseTensors); the model's features go
out, exactly as :func:`tfrec_onerec.features.parsing.parse_examples` makes them from the
same rows when no feature asks for preprocessing:

* categorical ids: (batch,) int64, unchanged, or with ``preprocessing="vocabulary"`` mapped
  through a vocabulary counted over the training split (one per shared ``vocab``; ids
  ``1..vocab_size`` by descending frequency, others to the OOV id ``vocab_size + 1``), or
  with ``preprocessing="quantiles"`` bucketized into ``vocab_size`` quantile buckets
  (ids ``1..vocab_size``);
* numeric: (batch, dim) float32, unchanged;
* sequences: (batch, max_len) int64, newest ``max_len`` ids kept, right-padded with 0
  (:func:`~tfrec_onerec.features.parsing.pad_sequence`), vocabulary applied first if asked;
  a sequence of ``group="target"`` (training targets and evaluation-only columns such as a
  user's seen items, never a serving input) stays a var-len list (a SparseTensor): the
  Trainer's parsing pads it, and rows that leave it empty cost nothing;
* labels: (batch,) float32.

TFX calls ``preprocessing_fn(inputs, custom_config)``; ``custom_config`` carries the feature
spec as JSON (``feature_spec``) and the label columns (``labels``), so the function needs no
module file: the Transform component names it by its import path.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import tensorflow as tf

from tfrec_onerec.features import FeatureSpec
from tfrec_onerec.features.parsing import pad_sequence

PREPROCESSING_FN = "tfx_pipelines.preprocessing.preprocessing_fn"


def _as_ragged(x) -> tf.RaggedTensor:
    if isinstance(x, tf.SparseTensor):
        return tf.RaggedTensor.from_sparse(x)
    if isinstance(x, tf.RaggedTensor):
        return x
    return tf.RaggedTensor.from_tensor(x)


def _vocabularies(raw: Mapping, spec: FeatureSpec) -> dict:
    """``{vocab name: deferred vocabulary}`` for every vocabulary some feature asks to compute."""
    import tensorflow_transform as tft

    values = {}
    for f in spec:
        if f.preprocessing == "vocabulary":
            values.setdefault(f.vocab, []).append(tf.reshape(_as_ragged(raw[f.name]).flat_values, [-1]))
    return {vocab: (tft.vocabulary(tf.concat(parts, axis=0), top_k=spec[_first(spec, vocab)].vocab_size,
                                   vocab_filename=f"vocabulary_{vocab}"))
            for vocab, parts in values.items()}


def _first(spec: FeatureSpec, vocab: str) -> str:
    return spec.vocabularies()[vocab].name


def _apply_vocabulary(ids: tf.Tensor, vocabulary, vocab_size: int) -> tf.Tensor:
    """Raw ids -> ``1..vocab_size`` by vocabulary rank, unknown -> ``vocab_size + 1``."""
    import tensorflow_transform as tft

    index = tft.apply_vocabulary(ids, vocabulary, default_value=-1)
    return tf.where(index >= 0, index + 1, tf.constant(vocab_size + 1, tf.int64))


def transform_features(raw: Mapping, spec: FeatureSpec, labels: Sequence[str] = ()) -> dict:
    """The body of :func:`preprocessing_fn` (see the module docstring for shapes)."""
    import tensorflow_transform as tft

    vocabularies = _vocabularies(raw, spec)
    out = {}
    for f in spec:
        if f.name not in raw:
            raise KeyError(f"Transform: raw feature {f.name!r} is missing; the raw columns are {sorted(raw)}.")
        x = raw[f.name]
        if f.kind == "sequence":
            ids = _as_ragged(x)
            ids = tf.RaggedTensor.from_row_splits(tf.reshape(ids.flat_values, [-1]), ids.row_splits)
            if f.preprocessing == "vocabulary":
                ids = ids.with_flat_values(_apply_vocabulary(ids.flat_values, vocabularies[f.vocab], f.vocab_size))
            ids = tf.cast(ids, tf.int64)
            out[f.name] = ids.to_sparse() if f.group == "target" else pad_sequence(ids, f.max_len)
        elif f.kind == "numeric":
            out[f.name] = tf.reshape(tf.cast(x, tf.float32), [-1, f.dim])
        else:
            x = tf.reshape(x, [-1])
            if f.preprocessing == "vocabulary":
                x = _apply_vocabulary(x, vocabularies[f.vocab], f.vocab_size)
            elif f.preprocessing == "quantiles":
                x = tft.bucketize(x, num_buckets=f.vocab_size) + 1
            out[f.name] = tf.cast(x, tf.int64)
    for label in labels:
        out[label] = tf.reshape(tf.cast(raw[label], tf.float32), [-1])
    return out


def preprocessing_fn(inputs: Mapping, custom_config: Mapping) -> dict:
    """TFX Transform entry point: ``custom_config = {"feature_spec": json, "labels": [...]}``."""
    spec = FeatureSpec.from_json(custom_config["feature_spec"])
    return transform_features(inputs, spec, custom_config.get("labels", ()))

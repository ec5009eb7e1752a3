"""Embedding tables derived from a feature specification."""
from __future__ import annotations

from typing import Mapping, Sequence

import keras
from keras import ops

from tfrec_onerec.features.spec import PAD_ID, FeatureSpec
from tfrec_onerec.serialization import register_serializable


def as_feature_spec(spec) -> FeatureSpec:
    """Accepts a FeatureSpec or its config dict (as stored in a model's config)."""
    return spec if isinstance(spec, FeatureSpec) else FeatureSpec.from_config(spec)


@register_serializable
class FeatureEmbedding(keras.layers.Layer):
    """Looks up the id features of a spec, one table per vocabulary.

    Features naming the same ``vocab`` share one table (e.g. a candidate item and the item
    history). A table has ``vocab_size + 2`` rows: row 0 is padding and always embeds to
    zeros, rows ``1..vocab_size`` are the known ids, and the last row is the shared
    out-of-vocabulary bucket that every other id (negative or too large) maps to.

    Args:
        feature_spec: the :class:`FeatureSpec` (or its config).
        features: names of the id features to embed (default: all id features).
        l2: L2 penalty on looked-up rows (applied to the tables). Default 0.

    Call:
        inputs: ``{name: int tensor}``: categorical (batch,), sequence (batch, max_len).

    Returns:
        ``{name: float tensor}``: (batch, dim) for categorical, (batch, max_len, dim) for
        sequences, with padding positions all zero.
    """

    def __init__(self, feature_spec, features: Sequence[str] | None = None, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.feature_spec = as_feature_spec(feature_spec)
        names = list(features) if features is not None else [f.name for f in self.feature_spec if f.is_id]
        for name in names:
            if not self.feature_spec[name].is_id:
                raise ValueError(f"FeatureEmbedding: feature {name!r} is {self.feature_spec[name].kind}, "
                                 "not an id feature.")
        self.features = names
        self.l2 = l2
        self._tables = {}

    def build(self, input_shape=None):
        regularizer = keras.regularizers.L2(self.l2) if self.l2 else None
        for name in self.features:
            f = self.feature_spec[name]
            if f.vocab not in self._tables:
                self._tables[f.vocab] = self.add_weight(
                    name=f"{f.vocab}_embeddings", shape=(f.num_rows, f.embedding_dim),
                    initializer=keras.initializers.RandomNormal(stddev=0.05), regularizer=regularizer)

    def table(self, vocab: str):
        """The (rows, dim) weight of one vocabulary."""
        return self._tables[vocab]

    def lookup_ids(self, name: str, ids):
        """Maps raw ids to table rows: out-of-vocabulary ids -> the OOV row; 0 stays 0."""
        f = self.feature_spec[name]
        ids = ops.cast(ids, "int64")
        return ops.where((ids < 0) | (ids > f.vocab_size), f.oov_id, ids)

    def embed(self, name: str, ids):
        """(..., dim) embeddings of an id tensor (...,) of feature `name` (any shape, e.g. a
        subsequence gathered from a history); padding embeds to zeros."""
        if not self.built:  # called directly rather than through __call__
            self.build()
            self.built = True
        rows = self.lookup_ids(name, ids)
        vectors = ops.take(self._tables[self.feature_spec[name].vocab], rows, axis=0)
        return vectors * ops.expand_dims(ops.cast(ops.not_equal(rows, PAD_ID), vectors.dtype), -1)

    def call(self, inputs: Mapping):
        return {name: self.embed(name, inputs[name]) for name in self.features}

    def get_config(self):
        return {**super().get_config(), "feature_spec": self.feature_spec.get_config(),
                "features": self.features, "l2": self.l2}

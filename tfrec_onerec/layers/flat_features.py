"""Every input feature as one flat vector (the Embedding&MLP input of the multi-task models)."""
from __future__ import annotations

from typing import Mapping, Sequence

import keras
from keras import ops

from tfrec_onerec.features.spec import PAD_ID
from tfrec_onerec.layers.embedding import FeatureEmbedding, as_feature_spec
from tfrec_onerec.layers.pooling import SequencePooling
from tfrec_onerec.serialization import register_serializable


@register_serializable
class FlatFeatures(keras.layers.Layer):
    """Embeds the id features, pools each sequence over its real steps, keeps numeric
    features as they are, and concatenates everything in the spec's order.

    Args:
        feature_spec: the :class:`~tfrec_onerec.features.FeatureSpec` (or its config).
        features: the features to read (default: all of the spec's).
        pooling: ``"mean"`` (default) or ``"sum"`` over a sequence's non-padding steps.
        l2: L2 penalty on the embedding tables. Default 0.
        field_dim: for :meth:`stacked`: the common width each field is mapped to (a
            linear map without bias for a field of another width); None: no such maps.

    Call:
        inputs: ``{name: tensor}`` as parsed from the spec.
        Returns (batch, width): the concatenation; ``width`` is :attr:`width`.
    """

    def __init__(self, feature_spec, features: Sequence[str] | None = None, pooling: str = "mean",
                 l2: float = 0.0, field_dim: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.feature_spec = as_feature_spec(feature_spec)
        self.features = list(features) if features is not None else list(self.feature_spec.names)
        self.pooling = pooling
        self.l2 = l2
        specs = [self.feature_spec[name] for name in self.features]
        self.embedding = FeatureEmbedding(self.feature_spec, [f.name for f in specs if f.is_id], l2=l2,
                                          name="embedding")
        self.pool = SequencePooling(pooling, name=f"{pooling}_pooling")
        self.field_widths = [f.embedding_dim if f.is_id else f.dim for f in specs]
        self.width = sum(self.field_widths)
        self.field_dim = int(field_dim) if field_dim else None
        self.projections = {name: keras.layers.Dense(self.field_dim, use_bias=False, name=f"{name}_projection")
                            for name, width in zip(self.features, self.field_widths)
                            if self.field_dim and width != self.field_dim}

    def build(self, input_shape=None):
        self.embedding.build()
        for name, width in zip(self.features, self.field_widths):
            if name in self.projections:
                self.projections[name].build((None, width))

    def fields(self, inputs: Mapping) -> list:
        """One (batch, width_i) vector per feature, in order (``width_i``: :attr:`field_widths`)."""
        embedded = self.embedding(inputs)
        parts = []
        for name in self.features:
            f = self.feature_spec[name]
            if f.kind == "sequence":
                parts.append(self.pool(embedded[name], ops.not_equal(inputs[name], PAD_ID)))
            elif f.is_id:
                parts.append(embedded[name])
            else:
                parts.append(ops.cast(inputs[name], "float32"))
        return parts

    def stacked(self, inputs: Mapping):
        """(batch, fields, field_dim): every field at the common width ``field_dim``."""
        if not self.field_dim:
            raise ValueError("FlatFeatures.stacked needs field_dim.")
        return ops.stack([self.projections[name](v) if name in self.projections else v
                          for name, v in zip(self.features, self.fields(inputs))], axis=1)

    def call(self, inputs: Mapping):
        return ops.concatenate(self.fields(inputs), axis=-1)

    def compute_output_shape(self, input_shape=None):
        return (None, self.width)

    def get_config(self):
        return {**super().get_config(), "feature_spec": self.feature_spec.get_config(),
                "features": self.features, "pooling": self.pooling, "l2": self.l2, "field_dim": self.field_dim}

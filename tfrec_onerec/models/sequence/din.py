"""Deep Interest Network (Zhou et al., KDD 2018) and its base model.

Both models embed the user profile, the candidate item and the user's behaviour sequence
(:class:`~tfrec_onerec.layers.FeatureEmbedding`), pool the behaviours into one user-interest
vector, and feed ``[user profile, candidate, pooled interest, context]`` to an MLP with one
sigmoid head per task. They differ only in the pooling:

* :class:`DINBase` ("Base Model" of the paper, an Embedding&MLP model) sum-pools the
  behaviours, ignoring the candidate;
* :class:`DIN` weights each behaviour by the activation unit of
  :class:`~tfrec_onerec.layers.TargetAttention` before summing, so the interest vector
  depends on the candidate.

Feature roles come from the spec's groups: ``user`` and ``context`` features describe the
user and request, ``item`` features the candidate, ``history`` features the behaviours;
each history feature names (``query``) the candidate feature it is compared with.
"""
from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from tfrec_onerec.layers import MLP, FeatureEmbedding, SequencePooling, TargetAttention
from tfrec_onerec.models.base import RecommenderModel
from tfrec_onerec.models.registry import register


@register("din_base", family="pointwise")
class DINBase(RecommenderModel):
    """DIN's base model: embeddings, sum-pooled behaviours, MLP.

    Args:
        feature_spec: the :class:`~tfrec_onerec.features.FeatureSpec` (or its config); it
            needs at least one ``history`` feature with a ``query``.
        tasks: output tasks (names or :class:`~tfrec_onerec.features.Task`); one sigmoid
            head each on the shared MLP. Default ``("click",)``.
        mlp_units: widths of the MLP. Default ``(200, 80)`` as in the paper.
        activation: MLP activation, ``"dice"``, ``"prelu"`` (default) or a Keras name.
        dropout: dropout after each MLP layer. Default 0.
        l2: L2 penalty on looked-up embeddings and MLP kernels. Default 0.

    Call:
        inputs: ``{feature: tensor}`` as parsed from the spec (extra keys are ignored).
        Returns ``{task: (batch, 1) probability}``.
    """

    def __init__(self, feature_spec, tasks: Sequence = ("click",), mlp_units: Sequence[int] = (200, 80),
                 activation: str = "prelu", dropout: float = 0.0, l2: float = 0.0, **kwargs):
        super().__init__(feature_spec, tasks, **kwargs)
        self.mlp_units = list(mlp_units)
        self.activation = activation
        self.dropout = dropout
        self.l2 = l2

        spec = self.feature_spec
        self.history_features = [f for f in spec.group("history") if f.query]
        if not self.history_features:
            raise ValueError(f"{type(self).__name__} needs a 'history' feature with a 'query' in the spec; "
                             f"features are {list(spec.names)}.")
        self.query_features = [spec[f.query] for f in self.history_features]
        self.profile_features = [f for f in spec if f.group in ("user", "item", "context")]
        self.input_names = [f.name for f in self.profile_features + self.history_features] + self.extra_inputs()

        self.embedding = FeatureEmbedding(spec, [f.name for f in spec if f.is_id and f.name in self.input_names],
                                          l2=l2, name="embedding")
        self.pooling = self._make_pooling()
        self.mlp = MLP(self.mlp_units, activation=activation, dropout=dropout, l2=l2, name="mlp")
        self.heads = {t.name: keras.layers.Dense(1, name=f"{t.name}_logit") for t in self.tasks}

    def extra_inputs(self) -> list:
        """Names of the features a subclass reads besides the profile and the histories with
        a query (called in ``__init__`` once ``feature_spec`` is set). Default none."""
        return []

    def _make_pooling(self):
        return SequencePooling("sum", name="sum_pooling")

    def _pool(self, query, keys, key_mask, training=None):
        """(batch, d) the user's interest from (batch, d) candidate `query`, (batch, T, d)
        behaviour `keys` and their (batch, T) `key_mask`."""
        return self.pooling(keys, key_mask)

    def candidate(self, features) -> tuple:
        """``(profile, query)``: the list of (batch, width) user, candidate and context vectors
        (embedded ids, numeric features as they are), and the (batch, d) candidate query, the
        concatenated embeddings of the history features' queries."""
        embed = self.embedding.embed
        profile = [embed(f.name, features[f.name]) if f.is_id else features[f.name] for f in self.profile_features]
        query = ops.concatenate([embed(f.name, features[f.name]) for f in self.query_features], axis=-1)
        return profile, query

    def behaviours(self, histories) -> tuple:
        """``(keys, mask)``: (batch, T, d) concatenated embeddings of the history features
        and their (batch, T) bool mask, from ``{history feature: (batch, T) ids}`` (any T)."""
        keys = ops.concatenate([self.embedding.embed(f.name, histories[f.name]) for f in self.history_features],
                               axis=-1)
        return keys, ops.not_equal(histories[self.history_features[0].name], 0)

    def predict_tasks(self, profile, interests, training=None) -> dict:
        """``{task: (batch, 1) probability}`` of the MLP over the profile and interest vectors."""
        hidden = self.mlp(ops.concatenate(list(profile) + list(interests), axis=-1), training=training)
        return {name: ops.sigmoid(head(hidden)) for name, head in self.heads.items()}

    def call(self, inputs, training=None):
        features = self.checked_inputs(inputs)
        profile, query = self.candidate(features)
        keys, key_mask = self.behaviours(features)
        return self.predict_tasks(profile, [self._pool(query, keys, key_mask, training=training)], training)

    def get_config(self):
        return {**super().get_config(), "mlp_units": self.mlp_units,
                "activation": self.activation, "dropout": self.dropout, "l2": self.l2}


@register("din", family="pointwise")
class DIN(DINBase):
    """Deep Interest Network: target attention over the behaviours instead of sum pooling.

    Args:
        attention_units: widths of the activation unit's MLP. Default ``(80, 40)``.
        attention_activation: its activation; default: the model's ``activation``.
        attention_softmax: normalise the attention weights (the paper does not). Default False.
        **kwargs: as :class:`DINBase` (``feature_spec``, ``tasks``, ``mlp_units``,
            ``activation``, ``dropout``, ``l2``).
    """

    def __init__(self, feature_spec, tasks: Sequence = ("click",), attention_units: Sequence[int] = (80, 40),
                 attention_activation: str | None = None, attention_softmax: bool = False, **kwargs):
        self.attention_units = list(attention_units)
        self.attention_activation = attention_activation
        self.attention_softmax = attention_softmax
        super().__init__(feature_spec, tasks, **kwargs)

    def _make_pooling(self):
        return TargetAttention(self.attention_units, self.attention_activation or self.activation,
                               softmax=self.attention_softmax, name="target_attention")

    def _pool(self, query, keys, key_mask, training=None):
        return self.pooling(query, keys, key_mask, training=training)

    def get_config(self):
        return {**super().get_config(), "attention_units": self.attention_units,
                "attention_activation": self.attention_activation, "attention_softmax": self.attention_softmax}

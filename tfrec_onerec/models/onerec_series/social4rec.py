"""Social4Rec: a two-tower recommender whose users also carry the interests of their social circles.

Xiao et al., "Social4Rec: Distilling User Preference from Social Graph for Video
Recommendation in Tencent" (WISE 2023, arXiv 2302.09971). A cold user has too little
behaviour for its own tower to learn from; the people it is linked to have more. Offline
(:mod:`.social_interest`, from the training split and the data set's social graph,
:mod:`tfrec_onerec.data.social`), every user gets one interest vector per relation: the mean
interest of the users of its self-organising-map group nearest to it in that relation. In
the model::

    p_r   = W_r s_r                                   the relation-r interest, projected   (h,)
    e_r   = tanh(<p_r, W_u x_u>)                      scored against the user's features
    alpha = softmax over the relations with an interest vector of e_r
    s     = sum_r alpha_r p_r                         the social interest                 (h,)
    user  = MLP_u([x_u, mean history, s]),   item = MLP_i(x_i)
    p     = sigmoid(scale * cos(user, item) + bias)

Loss (the released code's): a binary cross-entropy whose negatives weigh ``negative_weight``
(0.5), times ``1 + auc_weight * A``, where ``A`` is a pairwise squared-hinge AUC surrogate over
the batch's (positive, negative) pairs of cosines: ``mean max(0, margin - (c_pos - c_neg))^2``,
margin 0 (only pairs in the wrong order count).

``social=False`` is the same two-tower model without the social interest, the paper's
baseline. The relation-interest table lives in the model as a variable (an export needs only
the request's features).

Choices where the sources available here are silent (also in the README):

* Interests are each user's distribution of clicked categories (the released code averages
  learned user embeddings of another model); the relation features the map groups by are the
  mean interest of a user's neighbours in each relation.
* The map is sized to the users (10 x 10, 5 epochs), k-means merges its nodes into
  ``num_groups`` (20) groups, ``k`` = 20 nearest users per relation, as in the released code.
* The relation attention scores each projected relation interest by its dot product with the
  projected user features (the released code multiplies two scalar projections), and the
  fused vector is the weighted sum of the projected interests (the code sums the raw ones).
* The score has a learned scale and bias on the cosine; the released code's ``sigmoid(cos)``
  can only output probabilities in [0.27, 0.73].
"""
from __future__ import annotations

from typing import Mapping, Sequence

import keras
import numpy as np
from keras import ops

from tfrec_onerec.layers import MLP, FeatureEmbedding, SequencePooling
from tfrec_onerec.layers.neighbour_attention import masked_softmax
from tfrec_onerec.models.base import RecommenderModel, example_losses, per_replica
from tfrec_onerec.models.onerec_series.social_interest import (category_interests, relation_features,
                                                               relation_interests, social_groups)
from tfrec_onerec.models.registry import register


def squared_hinge_auc(labels, scores, margin: float):
    """``mean over (positive i, negative j) of max(0, margin - (scores_i - scores_j))^2``; 0 without pairs.

    Args:
        labels: (batch,) 1 for positives, 0 for negatives. scores: (batch,).
    """
    positive = ops.cast(labels > 0.5, scores.dtype)
    pairs = ops.expand_dims(positive, 1) * ops.expand_dims(1.0 - positive, 0)  # (i positive, j negative)
    gaps = ops.expand_dims(scores, 1) - ops.expand_dims(scores, 0)
    hinge = ops.square(ops.relu(margin - gaps))
    return ops.sum(hinge * pairs) / ops.maximum(ops.sum(pairs), 1.0)


@register("social4rec", family="pointwise")
class Social4Rec(RecommenderModel):
    """Two-tower recommender with relation-attentive social interests.

    Args:
        feature_spec: the spec: ``user`` features (with ``user_key``), ``item`` features and
            ``history`` features (mean-pooled into the user tower).
        tasks: one binary task. Default ``("click",)``.
        relation_interests: float array (vocab_size + 1, R, d), each user's interest per
            relation (:meth:`derived_hyperparameters` builds it); None (from a config): zeros,
            filled when the weights are loaded.
        num_relations, interest_dim: R and d (needed only without `relation_interests`).
        social: use the social interest. Default True; False: the plain two-tower model.
        tower_units: widths of both towers' MLPs (leaky ReLU, slope 0.2, as the released
            code's towers). Default (64, 32).
        attention_units: h, the projected relation interests. Default 32.
        negative_weight: loss weight of a negative example. Default 0.5.
        auc_weight: weight of the AUC surrogate in the loss's factor. Default 1.
        auc_margin: margin of the squared hinge on cosines. Default 0 (the released code's).
        l2: L2 penalty on looked-up embeddings and MLP kernels. Default 0.

    Call:
        inputs: ``{feature: tensor}`` as parsed from the spec.
        Returns ``{task: (batch, 1) probability}``.
    """

    def __init__(self, feature_spec, tasks: Sequence = ("click",), relation_interests=None,
                 num_relations: int | None = None, interest_dim: int | None = None, social: bool = True,
                 tower_units: Sequence[int] = (64, 32), attention_units: int = 32, negative_weight: float = 0.5,
                 auc_weight: float = 1.0, auc_margin: float = 0.0, l2: float = 0.0, **kwargs):
        super().__init__(feature_spec, tasks, **kwargs)
        if len(self.tasks) != 1 or self.tasks[0].kind != "binary":
            raise ValueError(f"Social4Rec scores one binary task; got {[t.name for t in self.tasks]}.")
        spec = self.feature_spec
        self.user_features = spec.group("user") + spec.group("context")
        self.item_features = spec.group("item")
        self.history_features = spec.group("history")
        if not self.user_features or not self.item_features:
            raise ValueError(f"Social4Rec needs 'user' and 'item' features; the spec has {list(spec.names)}.")
        self.input_names = [f.name for f in self.user_features + self.item_features + self.history_features]
        self.social = bool(social)
        self.tower_units, self.attention_units = list(tower_units), int(attention_units)
        self.negative_weight, self.auc_weight, self.auc_margin = float(negative_weight), float(auc_weight), float(
            auc_margin)
        self.l2 = l2
        if relation_interests is not None:
            relation_interests = np.asarray(relation_interests, np.float32)
            num_relations, interest_dim = relation_interests.shape[1:]
        rows = spec[spec.user_key].vocab_size + 1
        if self.social:
            if num_relations is None or interest_dim is None:
                raise ValueError("Social4Rec(social=True) needs `relation_interests` (or, from a config, "
                                 "num_relations and interest_dim).")
            if relation_interests is not None and len(relation_interests) != rows:
                raise ValueError(f"Social4Rec: relation_interests must have vocab_size + 1 = {rows} rows (one per "
                                 f"{spec.user_key}); got {len(relation_interests)}.")
        self.num_relations, self.interest_dim = num_relations, interest_dim
        self.embedding = FeatureEmbedding(spec, [f.name for f in spec if f.is_id and f.name in self.input_names],
                                          l2=l2, name="embedding")
        self.history_pooling = SequencePooling("mean", name="history_pooling")
        self.user_tower = MLP(self.tower_units, activation="leaky_relu", l2=l2, name="user_tower")
        self.item_tower = MLP(self.tower_units, activation="leaky_relu", l2=l2, name="item_tower")
        self.scale = self.add_weight(name="scale", shape=(), initializer=keras.initializers.Constant(5.0))
        self.bias = self.add_weight(name="bias", shape=(), initializer="zeros")
        if self.social:
            self.interest_table = self.add_weight(name="relation_interests", shape=(rows, num_relations, interest_dim),
                                                  trainable=False, initializer="zeros")
            if relation_interests is not None:
                self.interest_table.assign(relation_interests)
            self.relation_projection = self.add_weight(name="relation_projection",
                                                       shape=(num_relations, interest_dim, self.attention_units),
                                                       initializer="glorot_uniform")
            self.user_projection = keras.layers.Dense(self.attention_units, use_bias=False, name="user_projection")

    def _vectors(self, features, group):
        embed = self.embedding.embed
        return [embed(f.name, features[f.name]) if f.is_id else ops.reshape(ops.cast(features[f.name], "float32"),
                                                                               (-1, 1)) for f in group]

    def relation_weights(self, features):
        """``(alpha (batch, R), projected interests (batch, R, h))`` of the users in `features`."""
        if not self.social:
            raise ValueError("Social4Rec.relation_weights: the model has no social input (social=False).")
        user_ids = ops.convert_to_tensor(features[self.feature_spec.user_key], "int64")
        rows = ops.where((user_ids > 0) & (user_ids < ops.shape(self.interest_table)[0]), user_ids, 0)
        interests = ops.take(self.interest_table, rows, axis=0)  # (batch, R, d)
        projected = ops.einsum("brd,rdh->brh", interests, self.relation_projection)
        user = self.user_projection(ops.concatenate(self._vectors(features, self.user_features), axis=-1))
        scores = ops.tanh(ops.einsum("brh,bh->br", projected, user))
        return masked_softmax(scores, ops.any(interests != 0, axis=-1)), projected

    def call(self, inputs, training=None):
        features = self.checked_inputs(inputs)
        user = self._vectors(features, self.user_features)
        if self.history_features:
            steps = ops.concatenate([self.embedding.embed(f.name, features[f.name]) for f in self.history_features],
                                    axis=-1)
            user.append(self.history_pooling(steps, ops.not_equal(features[self.history_features[0].name], 0)))
        if self.social:
            alpha, projected = self.relation_weights(features)
            user.append(ops.sum(ops.expand_dims(alpha, -1) * projected, axis=1))
        user = self.user_tower(ops.concatenate(user, axis=-1), training=training)
        item = self.item_tower(ops.concatenate(self._vectors(features, self.item_features), axis=-1),
                               training=training)
        cosine = ops.sum(user * item, axis=-1, keepdims=True) / ops.maximum(
            ops.norm(user, axis=-1, keepdims=True) * ops.norm(item, axis=-1, keepdims=True), 1e-12)
        return {self.tasks[0].name: ops.sigmoid(self.scale * cosine + self.bias)}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Negative-weighted cross-entropy times ``1 + auc_weight * AUC surrogate`` (module docstring)."""
        task = self.tasks[0]
        labels = ops.reshape(ops.cast(y[task.name], "float32"), (-1,))
        probabilities = ops.clip(ops.reshape(y_pred[task.name], (-1,)), 1e-7, 1.0 - 1e-7)
        weights = ops.where(labels > 0.5, 1.0, self.negative_weight)
        if sample_weight is not None:  # a task's sample space
            weights = weights * ops.reshape(ops.cast(sample_weight[task.name], "float32"), (-1,))
        cross_entropy = (ops.sum(weights * example_losses(task, labels, probabilities))
                         / ops.maximum(ops.sum(weights), 1e-12))
        cosines = (ops.log(probabilities) - ops.log(1.0 - probabilities) - self.bias) / self.scale
        loss = cross_entropy * (1.0 + self.auc_weight * squared_hinge_auc(labels, cosines, self.auc_margin))
        if self.losses:
            loss = loss + ops.sum(ops.stack(self.losses))
        return per_replica(loss)

    def get_config(self):
        return {**super().get_config(), "num_relations": self.num_relations, "interest_dim": self.interest_dim,
                "social": self.social, "tower_units": self.tower_units, "attention_units": self.attention_units,
                "negative_weight": self.negative_weight, "auc_weight": self.auc_weight,
                "auc_margin": self.auc_margin, "l2": self.l2}

    # -- family hook -------------------------------------------------------------------------
    @classmethod
    def derived_hyperparameters(cls, data, hyperparameters: Mapping) -> dict:
        """``relation_interests`` (module docstring) when not given: interests from the training
        split's clicks, the social graph of the data set (:func:`tfrec_onerec.data.social.social_graph`),
        a self-organising map's groups (``num_groups``, default 20; ``som_seed``, default 0),
        and the ``neighbours_per_relation`` (default 20) nearest users of the group per relation."""
        from tfrec_onerec.data.social import social_graph

        hyperparameters = dict(hyperparameters)
        num_groups = int(hyperparameters.pop("num_groups", 20))
        seed = int(hyperparameters.pop("som_seed", 0))
        k = int(hyperparameters.pop("neighbours_per_relation", 20))
        if "relation_interests" in hyperparameters or not hyperparameters.get("social", True):
            return hyperparameters
        spec = data.spec
        category = next((f.query for f in spec.group("history")[1:] if f.query), None)
        if category is None:
            raise ValueError("Social4Rec: the interests need the candidate's category (a second history feature "
                             "with a query); the spec has none.")
        train = data.columns("train")
        clicked = train["click"] > 0 if "click" in train else np.ones(len(train[spec.user_key]), bool)
        num_users = spec[spec.user_key].vocab_size
        interests = category_interests(train[spec.user_key][clicked], train[category][clicked], num_users,
                                       spec[category].vocab_size)
        graph = social_graph(data.dataset_name, data.metadata)
        keep = (graph.src <= num_users) & (graph.dst <= num_users)
        features = relation_features(graph.src[keep], graph.dst[keep], graph.relation[keep], interests,
                                     graph.num_relations)
        groups = social_groups(features[1:].reshape(num_users, -1), num_groups, seed=seed)
        table = np.zeros((num_users + 1, graph.num_relations, interests.shape[1]), np.float32)
        table[1:] = relation_interests(features[1:], interests[1:], groups, k)
        hyperparameters["relation_interests"] = table
        return hyperparameters

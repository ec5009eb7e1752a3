"""OneRec's session reward model (arXiv 2502.18965, section "reward model"; registry: ``onerec_reward``).

The reward model scores a whole session ``S = (v_1..v_m)`` for a user ``u``; preference
alignment (DPO) uses it to pick the chosen and rejected sessions among generated ones.
As in the paper it has three stages:

1. **Target-aware user representation** ``e_i = v_i (*) u`` per session item: the user is
   read *towards each item*. Here ``u`` has a static part (the user's categorical/numeric
   features -> ``Dense(LeakyReLU(Dense))``, OneRec's static pathway) and one target
   attention per behaviour history (the item's vector attends over the history's items,
   multi-head scaled dot-product, padded behaviours hidden; an empty history gives 0).
   The item-user product features ``[v_i, u_s, v_i * u_s, a_i^h, v_i * a_i^h (each
   history h)]`` go through ``Dense(model_dim, relu)``.
2. **Self-attention across the session's items** (``num_layers`` non-causal
   :class:`~tfrec_onerec.layers.transformer.TransformerBlock` s over the m items, padded
   items hidden), so each item's representation depends on the rest of the session
   (redundancy, complementarity); then a masked mean over the real items (the paper
   sums; the session labels are means over items, and for full sessions the two differ
   by the constant m).
3. **Towers**: one MLP + sigmoid per task, by default the four of Table 1: ``swt``
   (session watch time, normalised to [0, 1)), ``vtr`` (view), ``wtr`` (follow) and
   ``ltr`` (like) rates, all trained with binary cross-entropy as in the paper (soft
   targets in [0, 1]: :mod:`tfrec_onerec.data.sessions` defines them).

:meth:`OneRecRewardModel.reward` combines the towers into one scalar per session,
``r = sum_t w_t * p_t`` with ``reward_weights`` (default: 1 per tower).

Inputs follow the spec's groups (see :func:`tfrec_onerec.data.sessions.session_spec`):
``user``/``context`` features describe the user, ``history`` sequences are behaviours,
and ``session_feature`` (a sequence of ``m`` item ids, right-padded with 0) is the session.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import keras
from keras import ops

from tfrec_onerec.data.sessions import SESSION_FEATURE, SESSION_TASKS
from tfrec_onerec.layers import MLP, FeatureEmbedding
from tfrec_onerec.layers.transformer import TransformerBlock
from tfrec_onerec.models.base import RecommenderModel
from tfrec_onerec.models.registry import register


@register("onerec_reward", family="session_outcome")
class OneRecRewardModel(RecommenderModel):
    """Scores sessions: target-aware user features, self-attention over items, four towers.

    Args:
        feature_spec: the :class:`~tfrec_onerec.features.FeatureSpec` (or its config) with
            ``session_feature`` (a sequence) and optional ``user``/``context`` features and
            ``history`` sequences.
        tasks: the towers (names or :class:`~tfrec_onerec.features.Task`), each a sigmoid
            trained with BCE. Default ``("swt", "vtr", "wtr", "ltr")``.
        session_feature: the name of the session's item sequence. Default ``"session_item_ids"``.
        user_features: the categorical/numeric features describing the user; default: the
            spec's ``user`` and ``context`` features except the user identifier
            (``spec.user_key``). Name it explicitly to embed it: on logs with a few sessions
            per user its embedding memorises them (simulator, 1,500 users, about 6 training
            sessions each: test like-AUC 0.59 with ``user_id``, 0.67 without; oracle 0.71).
        model_dim: width of the item, user and attention representations. Default 64.
        num_heads: attention heads (target attention and self-attention). Default 4.
        num_layers: self-attention blocks across the session. Default 1.
        tower_units: hidden widths of each tower's MLP. Default ``(64, 32)``.
        dropout: dropout in the attention blocks and towers. Default 0.
        l2: L2 penalty on the embedding tables. Default 0.
        reward_weights: ``{task: weight}`` of :meth:`reward`; default 1 for every task.

    Call:
        inputs: ``{feature: tensor}``: categorical (batch,), sequences (batch, max_len),
            numeric (batch, dim); extra keys are ignored.
        Returns ``{task: (batch, 1) probability}``.

    Example:
        >>> from tfrec_onerec.data import sessions, simulator
        >>> data = sessions.build_sessions(simulator.simulate(simulator.SimulatorConfig(num_users=50)))
        >>> model = OneRecRewardModel(data.spec, model_dim=16)
        >>> model(data.features("train"))["ltr"].shape[1]
        1
    """

    def __init__(self, feature_spec, tasks: Sequence = SESSION_TASKS, session_feature: str = SESSION_FEATURE,
                 user_features: Sequence[str] | None = None, model_dim: int = 64, num_heads: int = 4,
                 num_layers: int = 1, tower_units: Sequence[int] = (64, 32), dropout: float = 0.0, l2: float = 0.0,
                 reward_weights: Mapping[str, float] | None = None, **kwargs):
        super().__init__(feature_spec, tasks, **kwargs)
        for name, value in (("model_dim", model_dim), ("num_heads", num_heads), ("num_layers", num_layers)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"OneRecRewardModel: {name} must be a positive int, got {value!r}.")
        if model_dim % num_heads:
            raise ValueError(f"OneRecRewardModel: model_dim ({model_dim}) must be a multiple of num_heads "
                             f"({num_heads}).")
        spec = self.feature_spec
        if session_feature not in spec or spec[session_feature].kind != "sequence":
            raise ValueError(f"OneRecRewardModel: session_feature {session_feature!r} must be a sequence feature "
                             f"of the spec; features are {list(spec.names)}.")
        task_names = [t.name for t in self.tasks]
        weights = {name: 1.0 for name in task_names} if reward_weights is None else dict(reward_weights)
        unknown = sorted(set(weights) - set(task_names))
        if unknown:
            raise ValueError(f"OneRecRewardModel: reward_weights names {unknown}, which are not tasks {task_names}.")
        self.session_feature = session_feature
        self.user_feature_names = None if user_features is None else list(user_features)
        self.model_dim = int(model_dim)
        self.num_heads = int(num_heads)
        self.num_layers = int(num_layers)
        self.tower_units = [int(u) for u in tower_units]
        self.dropout = float(dropout)
        self.l2 = float(l2)
        self.reward_weights = {name: float(w) for name, w in weights.items()}

        if user_features is None:
            self.user_features = [f for f in spec if f.group in ("user", "context") and f.name != spec.user_key]
        else:
            self.user_features = [spec[name] for name in user_features]  # a KeyError names a bad one
            bad = [f.name for f in self.user_features if f.kind == "sequence"]
            if bad:
                raise ValueError(f"OneRecRewardModel: user_features must be categorical or numeric, got sequences "
                                 f"{bad}.")
        self.history_features = [f for f in spec.group("history") if f.kind == "sequence"]
        self.input_names = [f.name for f in self.user_features + self.history_features] + [session_feature]
        self.embedding = FeatureEmbedding(spec, [n for n in self.input_names if spec[n].is_id], l2=self.l2,
                                          name="embedding")
        d = self.model_dim
        self.static_pathway = (MLP([d], activation="leaky_relu", name="static_mlp")
                               if self.user_features else None)
        self.static_output = keras.layers.Dense(d, name="static_output") if self.user_features else None
        self.item_projection = keras.layers.Dense(d, name="item_projection")
        self.history_projections = {f.name: keras.layers.Dense(d, name=f"{f.name}_projection")
                                    for f in self.history_features}
        self.target_attentions = {f.name: keras.layers.MultiHeadAttention(num_heads, d // num_heads,
                                                                          name=f"{f.name}_target_attention")
                                  for f in self.history_features}
        self.fusion = keras.layers.Dense(d, activation="relu", name="item_user_fusion")
        self.blocks = [TransformerBlock(num_heads, ffn_dim=2 * d, activation="relu", dropout=self.dropout,
                                        name=f"session_attention_{i}") for i in range(self.num_layers)]
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="session_norm")
        self.towers = {t.name: MLP(self.tower_units, activation="relu", dropout=self.dropout, name=f"{t.name}_tower")
                       for t in self.tasks}
        self.heads = {t.name: keras.layers.Dense(1, name=f"{t.name}_logit") for t in self.tasks}

    # -- the three stages ---------------------------------------------------------------------
    def item_user_features(self, features: Mapping, training=None):
        """Stage 1: the target-aware item-user features of each session item.

        Args:
            features: checked inputs (see :meth:`checked_inputs`).

        Returns:
            ``(x, mask)``: (batch, m, model_dim) floats and the (batch, m) bool mask of real items.
        """
        embedded = self.embedding(features)
        session_ids = features[self.session_feature]
        mask = ops.not_equal(session_ids, 0)
        items = self.item_projection(embedded[self.session_feature])  # (B, m, d)
        parts = [items]
        if self.user_features:
            static = ops.concatenate([embedded[f.name] if f.is_id else ops.cast(features[f.name], "float32")
                                      for f in self.user_features], axis=-1)
            user = self.static_output(self.static_pathway(static, training=training))  # (B, d)
            user = ops.broadcast_to(ops.expand_dims(user, 1), ops.shape(items))
            parts += [user, items * user]
        length = ops.shape(session_ids)[1]
        for f in self.history_features:
            history_mask = ops.not_equal(features[f.name], 0)  # (B, L)
            keys = self.history_projections[f.name](embedded[f.name])  # (B, L, d)
            attention_mask = ops.repeat(ops.expand_dims(history_mask, 1), length, axis=1)  # (B, m, L)
            attended = self.target_attentions[f.name](items, keys, attention_mask=attention_mask, training=training)
            has_history = ops.cast(ops.any(history_mask, axis=1), attended.dtype)[:, None, None]
            attended = attended * has_history  # an empty history contributes 0
            parts += [attended, items * attended]
        return self.fusion(ops.concatenate(parts, axis=-1)), mask

    def item_representations(self, inputs, training=None):
        """Stages 1-2: each session item's representation after self-attention across the session.

        Args:
            inputs: ``{feature: tensor}`` as for ``call``.

        Returns:
            (batch, m, model_dim) floats, zero at padded items: the towers read their masked mean.
        """
        x, mask = self.item_user_features(self.checked_inputs(inputs), training=training)
        return self._attend(x, mask, training)

    def _attend(self, x, mask, training):
        for block in self.blocks:
            x = block(x, padding_mask=mask, training=training)
        return self.final_norm(x) * ops.expand_dims(ops.cast(mask, x.dtype), -1)

    def call(self, inputs, training=None):
        x, mask = self.item_user_features(self.checked_inputs(inputs), training=training)
        h = self._attend(x, mask, training)
        weights = ops.cast(mask, h.dtype)
        pooled = ops.sum(h, axis=1) / ops.maximum(ops.sum(weights, axis=1, keepdims=True), 1.0)
        return {name: ops.sigmoid(self.heads[name](tower(pooled, training=training)))
                for name, tower in self.towers.items()}

    def reward(self, inputs, weights: Mapping[str, float] | None = None, training=None):
        """One scalar per session: ``sum_t weights[t] * p_t`` over the towers.

        Args:
            inputs: ``{feature: tensor}`` as for ``call``.
            weights: ``{task: weight}``; default: the model's ``reward_weights``.

        Returns:
            (batch,) float tensor.
        """
        weights = self.reward_weights if weights is None else weights
        unknown = sorted(set(weights) - set(self.towers))
        if unknown or not weights:
            raise ValueError(f"OneRecRewardModel.reward: weights must name some of the tasks {sorted(self.towers)}, "
                             f"got {dict(weights)}.")
        outputs = self(inputs, training=training)
        return sum(float(w) * outputs[name][:, 0] for name, w in weights.items())

    def get_config(self):
        return {**super().get_config(), "session_feature": self.session_feature,
                "user_features": self.user_feature_names, "model_dim": self.model_dim,
                "num_heads": self.num_heads, "num_layers": self.num_layers, "tower_units": self.tower_units,
                "dropout": self.dropout, "l2": self.l2, "reward_weights": self.reward_weights}

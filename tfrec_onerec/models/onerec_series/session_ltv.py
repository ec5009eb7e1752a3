"""SessionLTV: the long-term value of showing an item, learned from logged sessions only.

"On Modeling Long-Term User Engagement from Stochastic Feedback" (Zhang, Yao, Xiao; WWW 2023
companion, arXiv 2302.06101; no released code). A session is a Markov decision process: the
state is the user (profile and long-term history) and what the session has shown so far, the
action the item shown, the reward the user's feedback (watch time), and the session ends
when the user leaves, at random. Two things are random and modelled as such: the feedback
(the same item earns a different watch time each time) and the exit. Learning needs no
candidate sets: the target bootstraps on the item the log showed next (SARSA), never on a
maximum over candidates, so only what was shown is stored.

Network (the paper gives no sizes; the choices below are ours)::

    state   s = MLP_s([e_user, mean(e_user_history), mean(e_session_items), e_step])   (B, h)
    pair    z = MLP_a([s, e_item])                                                    (B, k)
    heads   r_hat(s, a)      = Dense_1(z) * reward_scale        immediate reward (seconds)
            p_exit(s, a)     = sigmoid(Dense_1(z))              the user leaves after it
            Z_1..N(s, a)     = Dense_N(z) * reward_scale        return quantiles, levels (2i-1)/2N

Loss (a mean over the batch; weights ``loss_weights``)::

    MSE(r_hat, r) / reward_scale^2  +  BCE(p_exit, exit)
      + quantile Huber(Z(s, a), r + discount * (1 - exit) * stop_gradient(Z(s', a')))

with ``s'`` the state after the step (the item appended to the session's items, the step
plus one) and ``a'`` the logged next item. The return's distribution absorbs both kinds of
randomness: the reward's spread and the exit's (a step that may be the last has a target
mass at ``r``). No target network: the bootstrap is the same network's, gradient stopped
(the log's policy is fixed, so this is policy evaluation, which is stable without one);
``discount`` < 1 bounds it. Quantile Huber as QR-DQN (Dabney et al., 2018), kappa 1 on the
scaled returns.

Ranking score (``value``): ``r_hat + long_term_weight * (mean(Z) - r_hat)``: the immediate
reward plus the weighted long-term rest. ``long_term_weight`` 0 is the myopic ranker, 1 the
expected return under the logging policy's continuation (one step of policy improvement),
more than 1 leans further toward keeping the user. The reward and exit heads are trained
alongside (the "feedback" and "termination" models) and served, so a caller can blend
differently.

Inputs: ``user_id`` (B,), ``user_history`` (B, H_u), ``session_items`` (B, H_s),
``session_step`` (B,), ``item_id`` (B,) (:mod:`tfrec_onerec.data.session_steps`); for
training also ``next_item_id`` (B,). Outputs: ``{"reward", "exit", "value": (B, 1),
"quantiles": (B, N)}`` (and ``"next_quantiles"`` when ``next_item_id`` is given).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfrec_onerec.data.session_steps import (ITEM_FEATURE, NEXT_ITEM, SESSION_ITEMS, STATE_FEATURES, STEP_FEATURE,
                                             USER_FEATURE, USER_HISTORY)
from tfrec_onerec.features.parsing import check_features, parse_examples
from tfrec_onerec.features.tfrecord import serialize_rows
from tfrec_onerec.layers import FeatureEmbedding, as_feature_spec
from tfrec_onerec.layers.mlp import MLP
from tfrec_onerec.layers.pooling import SequencePooling
from tfrec_onerec.models.base import SpecBuiltModel
from tfrec_onerec.models.registry import register

PREDICT_SIGNATURE, SCORE_SIGNATURE, RECOMMEND_SIGNATURE = "predict", "score_items", "recommend"
SERVING_SIGNATURE, EXAMPLES_INPUT = "serving_default", "examples"
HEADS = ("reward", "exit", "return")
DEFAULT_LOSS_WEIGHTS = {"reward": 1.0, "exit": 10.0, "return": 1.0}
"""The exit's cross-entropy is small next to the scaled reward's squared error and the return's
loss; at weight 1 its head learns nothing of the exit (on the simulator log, correlation -0.02
with the true exit probability), at 10 it does (0.70)."""


def quantile_levels(n: int) -> np.ndarray:
    """(n,) the midpoints ``(2i - 1) / 2n`` of n equal probability bins (QR-DQN's levels)."""
    return (2 * np.arange(1, n + 1) - 1) / (2.0 * n)


def quantile_huber_loss(quantiles, targets, kappa: float = 1.0):
    """(B,) QR-DQN's loss of predicted quantiles against samples of the target distribution.

    Args:
        quantiles: (B, N) predicted quantiles at :func:`quantile_levels` ``(N)``.
        targets: (B, M) samples of the target return (e.g. its quantiles).
        kappa: the Huber threshold (> 0).

    Returns:
        ``mean_j sum_i |tau_i - 1{u_ij < 0}| * huber_kappa(u_ij) / kappa`` with
        ``u_ij = targets_j - quantiles_i``: the quantile regression loss, smoothed near 0.
    """
    quantiles = ops.convert_to_tensor(quantiles)
    tau = ops.cast(quantile_levels(quantiles.shape[-1]), quantiles.dtype)[None, :, None]  # (1, N, 1)
    u = ops.expand_dims(targets, 1) - ops.expand_dims(quantiles, 2)  # (B, N, M)
    magnitude = ops.abs(u)
    huber = ops.where(magnitude <= kappa, 0.5 * ops.square(u), kappa * (magnitude - 0.5 * kappa))
    weight = ops.abs(tau - ops.cast(u < 0, u.dtype))
    return ops.mean(ops.sum(weight * huber / kappa, axis=1), axis=1)


def next_session_items(items, item_ids):
    """(B, H) the session's items after showing `item_ids`: (B,) appended to (B, H) items
    (oldest first, right-padded with 0), the oldest dropped when all H slots are full."""
    items = ops.convert_to_tensor(items)
    width = items.shape[-1]
    count = ops.sum(ops.cast(items != 0, "int32"), axis=1, keepdims=True)  # (B, 1)
    extended = ops.concatenate([items, ops.zeros_like(items[:, :1])], axis=1)  # (B, H + 1)
    slot = ops.arange(width + 1, dtype="int32")[None, :] == count
    extended = ops.where(slot, ops.cast(item_ids, items.dtype)[:, None], extended)
    return ops.where(count >= width, extended[:, 1:], extended[:, :width])


@register("session_ltv", family="session_value")
class SessionLTV(SpecBuiltModel, keras.Model):
    """The session value model (module docstring).

    Args:
        feature_spec: the :class:`~tfrec_onerec.features.FeatureSpec` of logged steps
            (:func:`~tfrec_onerec.data.session_steps.session_step_spec`) or its config.
        state_units: MLP_s widths. Default (64, 64).
        pair_units: MLP_a widths. Default (64, 32).
        num_quantiles: N return quantiles. Default 16.
        discount: the bootstrap's discount in [0, 1). Default 0.9.
        long_term_weight: the weight of the long-term rest in ``value`` (>= 0). Default 1.
        reward_scale: rewards are learned divided by it (seconds of watch time -> order 1);
            the family sets the training log's mean reward. Default 1.
        loss_weights: ``{"reward", "exit", "return": weight}``. Default
            :data:`DEFAULT_LOSS_WEIGHTS` (1, 10, 1).
        top_n: items ``recommend`` returns. Default 10 (fewer items: all).
    """

    def __init__(self, feature_spec, state_units: Sequence[int] = (64, 64), pair_units: Sequence[int] = (64, 32),
                 num_quantiles: int = 16, discount: float = 0.9, long_term_weight: float = 1.0,
                 reward_scale: float = 1.0, loss_weights: Mapping | None = None, top_n: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.feature_spec = as_feature_spec(feature_spec)
        missing = [name for name in (*STATE_FEATURES, ITEM_FEATURE) if name not in self.feature_spec]
        if missing:
            raise ValueError(f"SessionLTV: the feature spec lacks {missing}; it needs {[*STATE_FEATURES, ITEM_FEATURE]} "
                             "(see tfrec_onerec.data.session_steps).")
        self.num_items = self.feature_spec[ITEM_FEATURE].vocab_size
        if not 0.0 <= discount < 1.0:
            raise ValueError(f"SessionLTV: discount must be in [0, 1), got {discount!r}.")
        if long_term_weight < 0 or reward_scale <= 0 or int(num_quantiles) < 1:
            raise ValueError(f"SessionLTV: long_term_weight must be >= 0, reward_scale > 0 and num_quantiles >= 1; "
                             f"got {long_term_weight!r}, {reward_scale!r}, {num_quantiles!r}.")
        weights = {**DEFAULT_LOSS_WEIGHTS, **dict(loss_weights or {})}
        if set(weights) != set(HEADS):
            raise ValueError(f"SessionLTV: loss_weights takes {list(HEADS)}, got {sorted(loss_weights)}.")
        top_n = min(10, self.num_items) if top_n is None else top_n
        if not 1 <= int(top_n) <= self.num_items:
            raise ValueError(f"SessionLTV: top_n must be in 1..{self.num_items} (the number of items), got {top_n!r}.")
        self.state_units, self.pair_units = [int(u) for u in state_units], [int(u) for u in pair_units]
        self.num_quantiles, self.discount = int(num_quantiles), float(discount)
        self.long_term_weight, self.reward_scale = float(long_term_weight), float(reward_scale)
        self.loss_weights = {name: float(w) for name, w in weights.items()}
        self.top_n = int(top_n)
        self.input_names = [*STATE_FEATURES, ITEM_FEATURE]
        self.embedding = FeatureEmbedding(self.feature_spec, self.input_names, name="embedding")
        self.pooling = SequencePooling("mean")
        self.state_mlp = MLP(self.state_units, name="state_mlp")
        self.pair_mlp = MLP(self.pair_units, name="pair_mlp")
        self.reward_head = keras.layers.Dense(1, name="reward_head")
        self.exit_head = keras.layers.Dense(1, name="exit_head")
        self.return_head = keras.layers.Dense(self.num_quantiles, name="return_head")

    # -- network ------------------------------------------------------------------------------
    def state(self, features):
        """(B, h) the state encoding of checked state features."""
        pooled = [self.pooling(self.embedding.embed(name, features[name]), features[name] != 0)
                  for name in (USER_HISTORY, SESSION_ITEMS)]
        parts = [self.embedding.embed(USER_FEATURE, features[USER_FEATURE]), *pooled,
                 self.embedding.embed(STEP_FEATURE, features[STEP_FEATURE])]
        return self.state_mlp(ops.concatenate(parts, axis=-1))

    def heads(self, state, item_vectors):
        """``{reward, exit, value: (...,), quantiles: (..., N)}`` of (..., h) states and
        (..., d) item embeddings (any matching leading shape)."""
        z = self.pair_mlp(ops.concatenate([state, item_vectors], axis=-1))
        reward = self.reward_head(z)[..., 0] * self.reward_scale
        quantiles = self.return_head(z) * self.reward_scale
        value = reward + self.long_term_weight * (ops.mean(quantiles, axis=-1) - reward)
        return {"reward": reward, "exit": ops.sigmoid(self.exit_head(z)[..., 0]), "value": value,
                "quantiles": quantiles}

    def call(self, inputs, training=None):
        features = check_features(inputs, self.feature_spec, self.input_names)
        state = self.state(features)
        out = self.heads(state, self.embedding.embed(ITEM_FEATURE, features[ITEM_FEATURE]))
        out = {name: (value[:, None] if name != "quantiles" else value) for name, value in out.items()}
        if NEXT_ITEM in inputs:  # training: the bootstrap's next state and logged next item
            following = {**features, SESSION_ITEMS: next_session_items(features[SESSION_ITEMS], features[ITEM_FEATURE]),
                         STEP_FEATURE: ops.minimum(features[STEP_FEATURE] + 1, self.feature_spec[STEP_FEATURE].vocab_size)}
            next_ids = ops.cast(inputs[NEXT_ITEM], "int64")
            out["next_quantiles"] = self.heads(self.state(following),
                                               self.embedding.embed(ITEM_FEATURE, next_ids))["quantiles"]
        return out

    # -- training -----------------------------------------------------------------------------
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The weighted sum of the three losses (module docstring), a mean over the batch.

        Args:
            y: ``{"reward": (B,), "exit": (B,)}`` (float; other labels ignored).
            y_pred: :meth:`call`'s outputs with ``next_quantiles`` (training batches carry
                ``next_item_id``).
        """
        if "next_quantiles" not in y_pred:
            raise ValueError("SessionLTV: training batches need the next_item_id feature (the logged next item) "
                             "for the return's bootstrap.")
        scale = self.reward_scale
        reward = ops.reshape(ops.cast(y["reward"], "float32"), (-1,)) / scale
        leaves = ops.reshape(ops.cast(y["exit"], "float32"), (-1,))
        reward_loss = ops.square(y_pred["reward"][:, 0] / scale - reward)
        exit_loss = keras.losses.binary_crossentropy(leaves[:, None], y_pred["exit"])
        target = reward[:, None] + self.discount * (1.0 - leaves[:, None]) * ops.stop_gradient(
            y_pred["next_quantiles"] / scale)
        return_loss = quantile_huber_loss(y_pred["quantiles"] / scale, target)
        w = self.loss_weights
        total = w["reward"] * reward_loss + w["exit"] * exit_loss + w["return"] * return_loss
        return ops.mean(total) + ops.sum(self.losses) if self.losses else ops.mean(total)

    # -- inference ----------------------------------------------------------------------------
    def item_scores(self, features):
        """``{"value", "reward", "exit": (B, num_items)}``: every item's heads for each state
        (column j is item j + 1)."""
        features = check_features(features, self.feature_spec, list(STATE_FEATURES))
        state = self.state(features)  # (B, h)
        items = self.embedding.embed(ITEM_FEATURE, ops.arange(1, self.num_items + 1, dtype="int64"))  # (I, d)
        batch = ops.shape(state)[0]
        out = self.heads(ops.broadcast_to(state[:, None, :], (batch, self.num_items, state.shape[-1])),
                         ops.broadcast_to(items[None], (batch, self.num_items, items.shape[-1])))
        return {name: out[name] for name in ("value", "reward", "exit")}

    def recommend(self, features, top_n=None):
        """``(item_ids, values)`` (B, top_n): the items of highest ``value`` not among the
        session's items (the newest H_s shown)."""
        values = self.item_scores(features)["value"]
        shown = tf.cast(features[SESSION_ITEMS], tf.int64)
        hit = tf.reduce_any(tf.range(1, self.num_items + 1, dtype=tf.int64)[None, :, None] == shown[:, None, :], axis=-1)
        values = tf.where(hit, tf.constant(-np.inf, values.dtype), values)
        top = tf.math.top_k(values, k=self.top_n if top_n is None else top_n)
        return tf.cast(top.indices, tf.int64) + 1, top.values

    # -- export -------------------------------------------------------------------------------
    def input_signature(self, names=None) -> dict:
        spec = self.feature_spec
        return {name: tf.TensorSpec((None,) + spec[name].shape, spec[name].dtype, name=name)
                for name in (names or self.input_names)}

    def serving_endpoints(self) -> dict:
        """``{signature: (function, input signature)}`` for :func:`tfrec_onerec.export.export_saved_model`.

        * ``predict``: the state features and ``item_id`` (B,) -> ``reward``, ``exit``,
          ``value`` (B, 1) and ``quantiles`` (B, N): candidates a caller already has.
        * ``serving_default``: ``examples`` (B,) serialized tf.Example of the same -> the same.
        * ``score_items``: the state features -> ``value``, ``reward``, ``exit`` (B, num_items),
          column j for item j + 1 (what the family's rollouts read).
        * ``recommend``: the state features -> ``item_ids``, ``values`` (B, top_n), best first,
          never an item of ``session_items``.
        """
        self.build()
        state_spec = self.input_signature(list(STATE_FEATURES))
        pair_spec = self.feature_spec.subset(self.input_names)

        def predict(features):
            return self(features, training=False)

        def serve_examples(examples):
            return predict(parse_examples(examples, pair_spec))

        def recommend(features):
            item_ids, values = self.recommend(features)
            return {"item_ids": item_ids, "values": values}

        return {PREDICT_SIGNATURE: (predict, [self.input_signature()]),
                SERVING_SIGNATURE: (serve_examples, [tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)]),
                SCORE_SIGNATURE: (self.item_scores, [state_spec]),
                RECOMMEND_SIGNATURE: (recommend, [state_spec])}

    def warmup_inputs(self) -> dict:
        """One TF Serving warmup request per signature: user 1 at a session's first step."""
        spec = self.feature_spec
        row = {name: np.zeros((1,) + spec[name].shape, np.int64) for name in self.input_names}
        row[USER_FEATURE][:], row[STEP_FEATURE][:], row[ITEM_FEATURE][:] = 1, 1, 1
        state = {name: row[name] for name in STATE_FEATURES}
        examples = serialize_rows(row, spec.subset(self.input_names))
        return {PREDICT_SIGNATURE: row, SERVING_SIGNATURE: {EXAMPLES_INPUT: np.array(examples, dtype=object)},
                SCORE_SIGNATURE: state, RECOMMEND_SIGNATURE: state}

    def get_config(self):
        return {**super().get_config(), "feature_spec": self.feature_spec.get_config(),
                "state_units": self.state_units, "pair_units": self.pair_units, "num_quantiles": self.num_quantiles,
                "discount": self.discount, "long_term_weight": self.long_term_weight,
                "reward_scale": self.reward_scale, "loss_weights": self.loss_weights, "top_n": self.top_n}

    @classmethod
    def derived_hyperparameters(cls, data, hyperparameters: Mapping) -> dict:
        """``reward_scale`` from the training log's mean reward unless given."""
        return {"reward_scale": float(data.metadata.get("mean_reward") or 1.0), **dict(hyperparameters)}

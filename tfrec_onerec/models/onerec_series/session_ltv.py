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
            (each part a pluggable signal: ``state_features``)
    pair    z = MLP_a([s, e_item, (W s) * e_item])                                     (B, k)
    heads   r_hat(s, a)      = Dense_1(z) * reward_scale        immediate reward (seconds)
            p_exit(s, a)     = sigmoid(Dense_1(z))              the user leaves after it
            Z_1..N(s, a)     = Dense_N(z) * reward_scale        return quantiles, levels (2i-1)/2N
            V_1..N(s)        = Dense_N(s) * reward_scale        the state's value quantiles

Loss (a mean over the batch; weights ``loss_weights``)::

    MSE(r_hat, r) / reward_scale^2  +  10 BCE(p_exit, exit)
      + quantile Huber(Z(s, a), T)  +  quantile Huber(V(s), T)
    T = r + discount * (1 - exit) * stop_gradient(Z(s', a'))

with ``s'`` the state after the step (the item appended to the session's items, the step
plus one) and ``a'`` the logged next item. The return's distribution absorbs both kinds of
randomness: the reward's spread and the exit's (a step that may be the last has a target
mass at ``r``). No target network: the bootstrap is the same network's, gradient stopped
(the log's policy is fixed, so this is policy evaluation, which is stable without one);
``discount`` < 1 bounds it. Quantile Huber as QR-DQN (Dabney et al., 2018), kappa 1 on the
scaled returns.

``V(s)`` regresses the same targets without the action: the return from ``s`` when the
logging policy acts, a mixture over its actions.

Ranking score (``value``): the immediate reward plus the weighted long-term rest,
``r_hat + long_term_weight * rest``, with ``rest`` by ``value_estimate``:

* ``"decomposed"`` (default): ``discount * (1 - p_exit(s, a)) * mean V(s_a')``, the two random
  parts modelled apart: the termination model says whether the session goes on, the state
  value what it is worth then (``s_a'``: the state after showing candidate ``a``);
* ``"return"``: ``mean Z(s, a) - r_hat``, read off the action's return distribution.

``long_term_weight`` 0 is the myopic ranker, 1 the expected return when the logging policy
continues (one step of policy improvement over it), more leans further toward keeping the
user. The paper says only that short- and long-term value are combined; the weight is a
hyperparameter, chosen on validation plays (``benchmarks/session_ltv_results.py``). The
reward and exit heads are served too, so a caller can blend differently.

Inputs: ``user_id`` (B,), ``user_history`` (B, H_u), ``session_items`` (B, H_s),
``session_step`` (B,), ``item_id`` (B,) (:mod:`tfrec_onerec.data.session_steps`); for
training also ``next_item_id`` (B,). Outputs: ``{"reward", "exit", "value": (B, 1),
"quantiles", "state_quantiles": (B, N)}`` (and ``"next_quantiles"`` when ``next_item_id`` is given).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import keras
import numpy as np
from keras import ops

from tfrec_onerec.data.session_steps import (ITEM_FEATURE, NEXT_ITEM, SESSION_ITEMS, STATE_FEATURES, STEP_FEATURE,
                                             USER_HISTORY)
from tfrec_onerec.features.parsing import check_features
from tfrec_onerec.layers import FeatureEmbedding, as_feature_spec
from tfrec_onerec.layers.mlp import MLP
from tfrec_onerec.layers.pooling import SequencePooling
from tfrec_onerec.models.registry import register
from tfrec_onerec.models.session_policy import SessionPolicyModel

HEADS = ("reward", "exit", "return", "state_value")
DEFAULT_LOSS_WEIGHTS = {"reward": 1.0, "exit": 10.0, "return": 1.0, "state_value": 1.0}
VALUE_ESTIMATES = ("decomposed", "return")
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


@register("session_ltv", family="session_value")
class SessionLTV(SessionPolicyModel):
    """SessionLTV: reward, exit and return quantiles of showing an item; ranks by long-term session value.

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
        loss_weights: ``{"reward", "exit", "return", "state_value": weight}``. Default
            :data:`DEFAULT_LOSS_WEIGHTS` (1, 10, 1, 1).
        value_estimate: how ``value`` reads the long-term rest, one of :data:`VALUE_ESTIMATES`
            (module docstring). Default ``"decomposed"``.
        top_n: items ``recommend`` returns. Default 10 (fewer items: all).
        l2: L2 penalty on the embedding tables. Default 0.
        dropout: dropout after each layer of MLP_a. Default 0.
        state_features: the signals the state encoder reads, a subset of ``user_id`` (the
            user's own embedding), ``user_history`` (long-term interests), ``session_items``
            (the session so far) and ``session_step``; default all. Serving inputs stay the
            four (unread ones are ignored), so exports of any choice take the same requests.
    """

    def __init__(self, feature_spec, state_units: Sequence[int] = (64, 64), pair_units: Sequence[int] = (64, 32),
                 num_quantiles: int = 16, discount: float = 0.9, long_term_weight: float = 1.0,
                 reward_scale: float = 1.0, loss_weights: Mapping | None = None, top_n: int | None = None, l2: float = 0.0,
                 dropout: float = 0.0, state_features: Sequence[str] = STATE_FEATURES,
                 value_estimate: str = "decomposed", **kwargs):
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
        self.l2, self.dropout = float(l2), float(dropout)
        if value_estimate not in VALUE_ESTIMATES:
            raise ValueError(f"SessionLTV: value_estimate must be one of {VALUE_ESTIMATES}, got {value_estimate!r}.")
        self.value_estimate = value_estimate
        self.state_features = [name for name in STATE_FEATURES if name in state_features]
        if not self.state_features or len(self.state_features) != len(set(state_features)):
            raise ValueError(f"SessionLTV: state_features must be a non-empty subset of {list(STATE_FEATURES)}, got "
                             f"{list(state_features)!r}.")
        self.embedding = FeatureEmbedding(self.feature_spec, [*self.state_features, ITEM_FEATURE], l2=self.l2,
                                          name="embedding")  # no table for an unread signal
        self.pooling = SequencePooling("mean")
        self.state_mlp = MLP(self.state_units, name="state_mlp")
        self.match = keras.layers.Dense(self.feature_spec[ITEM_FEATURE].embedding_dim, use_bias=False, name="match")
        self.pair_mlp = MLP(self.pair_units, dropout=self.dropout, name="pair_mlp")
        self.reward_head = keras.layers.Dense(1, name="reward_head")
        self.exit_head = keras.layers.Dense(1, name="exit_head")
        self.return_head = keras.layers.Dense(self.num_quantiles, name="return_head")
        self.state_value_head = keras.layers.Dense(self.num_quantiles, name="state_value_head")

    # -- network ------------------------------------------------------------------------------
    def state_parts(self, features) -> dict:
        """``{state feature: (B, d)}``: each read signal embedded (sequences mean-pooled)."""
        return {name: (self.pooling(self.embedding.embed(name, features[name]), features[name] != 0)
                       if name in (USER_HISTORY, SESSION_ITEMS) else self.embedding.embed(name, features[name]))
                for name in self.state_features}

    def encode(self, parts: dict):
        """(..., h) the state encoding of :meth:`state_parts` (each (..., d), one shape)."""
        return self.state_mlp(ops.concatenate([parts[name] for name in self.state_features], axis=-1))

    def parts_after(self, features, parts: dict, item_vectors) -> dict:
        """:meth:`state_parts` after showing each of (..., d) `item_vectors` (e.g. (B, I, d),
        every candidate), without embedding a session per candidate: the pooled session
        gains the item and, when its H slots are full, loses its oldest one."""
        following = dict(parts)
        if SESSION_ITEMS in parts:
            items = features[SESSION_ITEMS]
            width = items.shape[-1]
            count = ops.sum(ops.cast(items != 0, "float32"), axis=1, keepdims=True)  # (B, 1)
            total = parts[SESSION_ITEMS] * ops.maximum(count, 1.0)
            oldest = self.embedding.embed(SESSION_ITEMS, items[:, 0]) * ops.cast(count >= width, "float32")
            extra = len(item_vectors.shape) - 2  # candidate axes between the batch and the width
            expand = (lambda t: ops.reshape(t, (-1,) + (1,) * extra + (t.shape[-1],)))
            following[SESSION_ITEMS] = ((expand(total - oldest) + item_vectors)
                                        / expand(ops.minimum(count + 1.0, float(width))))
        if STEP_FEATURE in parts:
            step = ops.minimum(features[STEP_FEATURE] + 1, self.feature_spec[STEP_FEATURE].vocab_size)
            following[STEP_FEATURE] = self.embedding.embed(STEP_FEATURE, step)
        return following

    def pair_heads(self, state, item_vectors, training=None) -> dict:
        """``{reward, exit: (...,), quantiles: (..., N)}`` of (..., h) states and (..., d)
        item embeddings (matching leading shapes), in reward units."""
        z = self.pair_mlp(ops.concatenate([state, item_vectors, self.match(state) * item_vectors], axis=-1),
                          training=training)
        return {"reward": self.reward_head(z)[..., 0] * self.reward_scale,
                "exit": ops.sigmoid(self.exit_head(z)[..., 0]),
                "quantiles": self.return_head(z) * self.reward_scale}

    def state_values(self, state):
        """(..., N) quantiles of the state's value V(s) (the return from s under the logging
        policy), in reward units."""
        return self.state_value_head(state) * self.reward_scale

    def value(self, heads: dict, next_values):
        """(...,) the ranking score of :meth:`pair_heads` outputs and the (..., N) value
        quantiles of the state after the item (see ``value_estimate``)."""
        reward = heads["reward"]
        if self.value_estimate == "return":
            rest = ops.mean(heads["quantiles"], axis=-1) - reward
        else:
            rest = self.discount * (1.0 - heads["exit"]) * ops.mean(next_values, axis=-1)
        return reward + self.long_term_weight * rest

    def call(self, inputs, training=None):
        features = check_features(inputs, self.feature_spec, self.input_names)
        items = features[ITEM_FEATURE]
        state = self.encode(self.state_parts(features))
        heads = self.pair_heads(state, self.embedding.embed(ITEM_FEATURE, items), training=training)
        next_state = self.encode(self.state_parts(self.after(features, items)))
        next_values = self.state_values(next_state)
        out = {"reward": heads["reward"][:, None], "exit": heads["exit"][:, None],
               "value": self.value(heads, next_values)[:, None], "quantiles": heads["quantiles"],
               "state_quantiles": self.state_values(state)}
        if NEXT_ITEM in inputs:  # training: the bootstrap on the logged next item
            next_ids = ops.cast(inputs[NEXT_ITEM], "int64")
            out["next_quantiles"] = self.pair_heads(next_state, self.embedding.embed(ITEM_FEATURE, next_ids),
                                                    training=False)["quantiles"]
        return out

    # -- training -----------------------------------------------------------------------------
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The weighted sum of the four losses (module docstring), a mean over the batch.

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
        state_value_loss = quantile_huber_loss(y_pred["state_quantiles"] / scale, target)
        w = self.loss_weights
        total = (w["reward"] * reward_loss + w["exit"] * exit_loss + w["return"] * return_loss
                 + w["state_value"] * state_value_loss)
        return ops.mean(total) + ops.sum(self.losses) if self.losses else ops.mean(total)

    # -- inference ----------------------------------------------------------------------------
    def item_scores(self, features):
        """``{"value", "reward", "exit": (B, num_items)}``: every item's heads for each state
        (column j is item j + 1)."""
        features = check_features(features, self.feature_spec, list(STATE_FEATURES))
        parts = self.state_parts(features)  # {name: (B, d)}
        state = self.encode(parts)  # (B, h)
        batch = ops.shape(state)[0]

        def wide(t):  # (B, x) -> (B, I, x)
            return ops.broadcast_to(t[:, None, :], (batch, self.num_items, t.shape[-1]))

        items = self.embedding.embed(ITEM_FEATURE, ops.arange(1, self.num_items + 1, dtype="int64"))  # (I, d)
        candidates = ops.broadcast_to(items[None], (batch, self.num_items, items.shape[-1]))
        heads = self.pair_heads(wide(state), candidates)
        following = self.parts_after(features, parts, candidates)  # the session part (B, I, d), the rest (B, d)
        next_state = self.encode({name: t if len(t.shape) == 3 else wide(t) for name, t in following.items()})
        return {"value": self.value(heads, self.state_values(next_state)), "reward": heads["reward"],
                "exit": heads["exit"]}

    def get_config(self):
        return {**super().get_config(), "feature_spec": self.feature_spec.get_config(),
                "state_units": self.state_units, "pair_units": self.pair_units, "num_quantiles": self.num_quantiles,
                "discount": self.discount, "long_term_weight": self.long_term_weight,
                "reward_scale": self.reward_scale, "loss_weights": self.loss_weights, "top_n": self.top_n,
                "l2": self.l2, "dropout": self.dropout, "state_features": self.state_features,
                "value_estimate": self.value_estimate}


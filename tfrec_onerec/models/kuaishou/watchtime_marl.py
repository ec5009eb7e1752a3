"""WatchTimeMARL: collaborative multi-agent actor-critics that rank short videos for a session's
watch time, with a learned user model that answers for the items the log never showed.

"A Model-based Multi-Agent Personalized Short-Video Recommender System" (MMRF; Zhou, Xu, Hu,
Li, Jiang, Kuaishou; arXiv 2405.01847; no released code). Only the abstract and second-hand
summaries of the method could be read; every choice below that they leave open is marked
*(ours)*.

The setting is the session-value family's (:mod:`tfrec_onerec.families.session_value`): a
session is a Markov decision process whose state is the user and what the session has shown,
whose action is the item shown, and which ends when the user leaves. The paper's points:

* **One agent per aspect of the user's preference.** The main agent maximises the session's
  discounted watch time (the environment's ``reward``); auxiliary agents maximise the other
  feedback the user gives (``click``, ``like``, ``follow`` here: ``aspects``). Each agent is
  an actor-critic (DDPG-style): an actor that acts from the state and a critic of that
  aspect's return.
* **Attentive collaboration.** Every agent has its own embedding of the shared state; the
  agents exchange them by attention with shared query, key and value maps, so the main
  agent's decision reads what the auxiliary agents learned of the user, and vice versa.
  Auxiliary actors are also pushed by the main critic (``main_gradient_weight``), so they
  plan for watch time too.
* **Model-based learning against sample selection bias.** A log holds only what the logging
  policy showed. A user model (multi-head: one head per feedback, and the exit) is fitted on
  the log; for every logged state, items the log did *not* show are sampled
  (``imagined_samples`` of them, without replacement among the unshown) and answered by the
  user model, so the critics learn about actions outside the log's support. The user model
  is "Siamese": two dropout passes of one network; their disagreement estimates its
  uncertainty, added to imagined rewards with ``uncertainty_weight`` (the paper's sign is a
  bonus that guides exploration; a negative weight is the pessimism offline RL usually
  prefers).

Network (sizes ours)::

    inputs   e_user, mean(e_user_history), e_step; the session's items mean-pooled
             (agents, critics) or run through a GRU (the user model: "RNN"); each part
             has its own embedding tables (actors, critics and user model train apart)
    agents   s = MLP_s(state)                                               (B, h)
             h_k = relu(W_k s + b_k), k = 1..K                              (B, K, a)
             h'_k = LayerNorm(h_k + MultiHeadAttention(h_k, [h_1..h_K]))   shared W_q, W_k, W_v
             a_k = U_k h'_k + c_k       the action: a query in item space   (B, K, d)
             pi_k(i | s) = softmax_i(a_k . e_i) over the items not yet shown (*ours*: the
                           paper's continuous action read as a soft choice over the catalogue)
    critics  Q_k(s, i) = (V_k MLP_c(state)) . e'_i + b_{k,i}                (B, K, I)
    user     u = MLP_u(state); z = MLP_p([u, e''_i, (M u) * e''_i]) with dropout
    model    heads: reward (scaled), each auxiliary aspect (sigmoid), exit (sigmoid)

Loss (a mean over the batch; rewards divided by ``reward_scale``; ``sg``: stop-gradient)::

    user model   for both dropout passes: MSE(reward) + sum_aux BCE(aspect)
                                            + exit_weight * BCE(exit)
    critics      (Q_k(s, a) - [r_k + discount * (1 - exit) * sg V_k(s')])^2      logged rows
               + imagined_weight * mean_j (Q_k(s, j) - [r~_k(s, j)
                       + discount * (1 - p~_exit(s, j)) * sg V_k(s'_j)])^2       M unshown j
    actors       - sum_k sum_i aim_k(i | s) * log pi_k(i | s)
                 aim_k = softmax_i(sg(Q_k(s, i) + main_gradient_weight * 1{k aux} Q_main(s, i)) / temperature)

with ``V_k(s) = sum_i pi_k(i | s) Q_k(s, i)``, the value of the state when agent k acts (the
DDPG target ``Q(s', mu(s'))`` over the soft choice), read off target networks, copies of the
agents and critics that follow them slowly (``target_update_rate``, Polyak averaging after
every step; without them the critics' loss grew epoch after epoch on the simulator's log);
``s'`` the state after the shown item (the item appended to the session's items, the step
plus one); ``r~`` and ``p~_exit`` the user model's answers (the mean of both passes, plus
``uncertainty_weight`` times their absolute difference for the rewards), gradient stopped.

The actors' step *(ours)*: each actor is fitted to the Boltzmann distribution of its critic
(a forward KL, as MPO and AWR do), the soft form of DDPG's ascent on ``Q(s, mu(s))``.
Ascending ``sum_i pi_k Q_k`` directly collapses the softmax on an early favourite, where its
gradient vanishes and learning stops (seen on the hand-made test of
``tests/models/test_watchtime_marl.py``, with or without an entropy bonus).

The three parts train their own weights together in every step *(ours: the paper alternates
the user model and the agents; the stop-gradients make one summed step equivalent to updating
each from the others' current state)*.

Ranking (``value``): the main agent's action scores ``a_main . e_i`` (what it would choose).
Also served: ``reward`` (the user model's immediate watch time: the myopic ranker inside the
model), ``exit`` and ``q_value`` (the main critic).

Inputs: ``user_id`` (B,), ``user_history`` (B, H_u), ``session_items`` (B, H_s),
``session_step`` (B,), ``item_id`` (B,) (:mod:`tfrec_onerec.data.session_steps`); training
batches' labels: ``reward``, ``exit`` and each auxiliary aspect. Outputs of a call: ``{"value",
"q_value", "reward", "exit": (B, 1), "aspect_values": (B, K)}`` (each agent's score of the item).
"""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf
from keras import ops

from tfrec_onerec.data.session_steps import (ITEM_FEATURE, SESSION_ITEMS, STATE_FEATURES, STEP_FEATURE,
                                             USER_FEATURE, USER_HISTORY)
from tfrec_onerec.features.parsing import check_features
from tfrec_onerec.layers import FeatureEmbedding, as_feature_spec
from tfrec_onerec.layers.mlp import MLP
from tfrec_onerec.layers.pooling import SequencePooling
from tfrec_onerec.models.registry import register
from tfrec_onerec.models.session_policy import SessionPolicyModel, shown_items_mask

MAIN_ASPECT = "reward"
"""The main agent's aspect: the environment's reward (watch seconds in the family's world)."""
AUXILIARY_ASPECTS = ("click", "like", "follow")
"""The feedback the auxiliary agents may take (binary labels of the logged steps)."""
MASKED_LOGIT = -1e9


def sample_unshown(scores, shown, count: int):
    """(B, count) int64 items: the `count` highest of (B, I) `scores` among the items where
    (B, I) bool `shown` is False (uniform noise as `scores`: a draw without replacement)."""
    _, top = tf.math.top_k(tf.where(shown, tf.constant(-1.0, scores.dtype), scores), k=count)
    return tf.cast(top, tf.int64) + 1


def binary_cross_entropy(labels, probabilities):
    """Element-wise ``-(y log p + (1 - y) log(1 - p))``, p clipped to [1e-7, 1 - 1e-7]."""
    p = ops.clip(probabilities, 1e-7, 1.0 - 1e-7)
    return -(labels * ops.log(p) + (1.0 - labels) * ops.log(1.0 - p))


def expected_under_policy(logits, values):
    """(..., K) ``sum_i softmax(logits)_i * values_i`` of (..., K, I) logits and values."""
    return ops.sum(ops.softmax(logits, axis=-1) * values, axis=-1)


def embed_state(embedding, pooling, features, session_encoder=None):
    """(B, 4d) the state features embedded by `embedding`: the user, the user history pooled by
    `pooling`, the session's items (pooled, or `session_encoder` of their (B, H_s, d)
    embeddings and mask), the step."""
    session, mask = embedding.embed(SESSION_ITEMS, features[SESSION_ITEMS]), features[SESSION_ITEMS] != 0
    return ops.concatenate([
        embedding.embed(USER_FEATURE, features[USER_FEATURE]),
        pooling(embedding.embed(USER_HISTORY, features[USER_HISTORY]), features[USER_HISTORY] != 0),
        pooling(session, mask) if session_encoder is None else session_encoder(session, mask=mask),
        embedding.embed(STEP_FEATURE, features[STEP_FEATURE])], axis=-1)


class Agents(keras.layers.Layer):
    """The K actors: each agent's embedding of the state, the attentive collaboration (shared
    query, key and value maps over the agents) and each agent's action (module docstring).

    Args:
        feature_spec: the logged steps' spec; agents: K; state_units, agent_units, num_heads:
            as :class:`WatchTimeMARL`'s.
    """

    def __init__(self, feature_spec, agents: int, state_units, agent_units: int, num_heads: int, **kwargs):
        super().__init__(**kwargs)
        self.num_items = feature_spec[ITEM_FEATURE].vocab_size
        d = feature_spec[ITEM_FEATURE].embedding_dim
        self.embedding = FeatureEmbedding(feature_spec, [*STATE_FEATURES, ITEM_FEATURE], name="embedding")
        self.pooling = SequencePooling("mean")
        self.state = MLP(state_units, name="state")
        self.split = keras.layers.EinsumDense("bh,hka->bka", output_shape=(agents, agent_units), bias_axes="ka",
                                              activation="relu", name="split")
        self.collaboration = keras.layers.MultiHeadAttention(num_heads, agent_units // num_heads, name="collaboration")
        self.collaboration_norm = keras.layers.LayerNormalization(name="collaboration_norm")
        self.head = keras.layers.EinsumDense("bka,kad->bkd", output_shape=(agents, d), bias_axes="kd", name="head")

    def actions(self, features):
        """(B, K, d) each agent's action: a query in item-embedding space."""
        own = self.split(self.state(embed_state(self.embedding, self.pooling, features)))  # (B, K, a)
        return self.head(self.collaboration_norm(own + self.collaboration(own, own)))

    def scores(self, features, item_ids):
        """(B, K) each agent's score of (B,) `item_ids`."""
        return ops.sum(self.actions(features) * self.embedding.embed(ITEM_FEATURE, item_ids)[:, None, :], axis=-1)

    def logits(self, features, shown=None):
        """(B, K, I) each agent's scores of every item; items of (B, I) bool `shown` (default:
        the session's items) get :data:`MASKED_LOGIT`."""
        items = self.embedding.embed(ITEM_FEATURE, ops.arange(1, self.num_items + 1, dtype="int64"))
        logits = ops.einsum("bkd,id->bki", self.actions(features), items)
        if shown is None:
            shown = shown_items_mask(features[SESSION_ITEMS], self.num_items)
        return ops.where(shown[:, None, :], MASKED_LOGIT, logits)


class Critics(keras.layers.Layer):
    """The K critics ``Q_k(s, i) = (V_k MLP_c(state)) . e'_i + b_{k,i}``, in reward-scale units.

    Args:
        feature_spec: the logged steps' spec; agents: K; state_units: MLP_c's widths.
    """

    def __init__(self, feature_spec, agents: int, state_units, **kwargs):
        super().__init__(**kwargs)
        self.num_items = feature_spec[ITEM_FEATURE].vocab_size
        d = feature_spec[ITEM_FEATURE].embedding_dim
        self.embedding = FeatureEmbedding(feature_spec, [*STATE_FEATURES, ITEM_FEATURE], name="embedding")
        self.pooling = SequencePooling("mean")
        self.state = MLP(state_units, name="state")
        self.head = keras.layers.EinsumDense("bh,hkd->bkd", output_shape=(agents, d), bias_axes="kd", name="head")
        self.item_bias = keras.layers.Embedding(self.num_items + 1, agents, embeddings_initializer="zeros",
                                                name="item_bias")

    def queries(self, features):
        """(B, K, d) each critic's query of the state."""
        return self.head(self.state(embed_state(self.embedding, self.pooling, features)))  # (B, K, d)

    def pair(self, features, item_ids):
        """(B, K) every critic's Q of (B,) `item_ids`."""
        return (ops.sum(self.queries(features) * self.embedding.embed(ITEM_FEATURE, item_ids)[:, None, :], axis=-1)
                + self.item_bias(item_ids))

    def values(self, features):
        """(B, K, I) every critic's Q of every item."""
        ids = ops.arange(1, self.num_items + 1, dtype="int64")
        return (ops.einsum("bkd,id->bki", self.queries(features), self.embedding.embed(ITEM_FEATURE, ids))
                + ops.transpose(self.item_bias(ids))[None])


@register("watchtime_marl", family="session_value")
class WatchTimeMARL(SessionPolicyModel):
    """MMRF: multi-agent actor-critics over feedback aspects, with a Siamese user model.

    Args:
        feature_spec: the :class:`~tfrec_onerec.features.FeatureSpec` of logged steps
            (:func:`~tfrec_onerec.data.session_steps.session_step_spec`) or its config.
        aspects: the auxiliary agents' aspects, a subset of :data:`AUXILIARY_ASPECTS` (empty:
            the main agent alone, no collaboration). Default all three.
        state_units: MLP_s and MLP_c widths. Default (64,).
        agent_units: a, each agent's state embedding. Default 32.
        num_heads: the collaboration's attention heads (dividing ``agent_units``). Default 2.
        user_units: MLP_u widths; the GRU has ``user_units[0]`` units. Default (64,).
        pair_units: MLP_p widths (the user model's item part). Default (64, 32).
        dropout: the user model's dropout (its two passes differ by it; > 0). Default 0.1.
        discount: the critics' discount in [0, 1). Default 0.9.
        imagined_samples: unshown items answered by the user model per logged row (0: no
            model-based rows). Default 4.
        imagined_weight: the imagined rows' weight in the critic loss. Default 1.
        uncertainty_weight: the Siamese disagreement added to imagined rewards. Default 0.
        main_gradient_weight: how much the main critic also drives the auxiliary actors.
            Default 0.5.
        temperature: the Boltzmann temperature of the actors' aims (reward-scale units):
            near 0, each actor aims at its critic's best item. Default 1, chosen on validation
            plays (``benchmarks/watchtime_marl_results.py``'s docstring).
        exit_weight: the user model's exit cross-entropy weight (the exit is rare per step).
            Default 10.
        target_update_rate: how far the target networks move toward the online ones after
            each step (DDPG's tau). Default 0.01.
        reward_scale: rewards are learned divided by it; the family sets the training log's
            mean reward. Default 1.
        top_n: items ``recommend`` returns. Default 10 (fewer items: all).
        seed: the imagined items' draws. Default 0.
    """

    def __init__(self, feature_spec, aspects: Sequence[str] = AUXILIARY_ASPECTS, state_units: Sequence[int] = (64,),
                 agent_units: int = 32, num_heads: int = 2, user_units: Sequence[int] = (64,),
                 pair_units: Sequence[int] = (64, 32), dropout: float = 0.1, discount: float = 0.9,
                 imagined_samples: int = 4, imagined_weight: float = 1.0, uncertainty_weight: float = 0.0,
                 main_gradient_weight: float = 0.5, temperature: float = 1.0, exit_weight: float = 10.0,
                 target_update_rate: float = 0.01,
                 reward_scale: float = 1.0, top_n: int | None = None, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.feature_spec = as_feature_spec(feature_spec)
        missing = [name for name in (*STATE_FEATURES, ITEM_FEATURE) if name not in self.feature_spec]
        if missing:
            raise ValueError(f"WatchTimeMARL: the feature spec lacks {missing}; it needs "
                             f"{[*STATE_FEATURES, ITEM_FEATURE]} (see tfrec_onerec.data.session_steps).")
        self.num_items = self.feature_spec[ITEM_FEATURE].vocab_size
        unknown = [a for a in aspects if a not in AUXILIARY_ASPECTS]
        if unknown or len(set(aspects)) != len(aspects):
            raise ValueError(f"WatchTimeMARL: aspects must be distinct names among {list(AUXILIARY_ASPECTS)}, "
                             f"got {list(aspects)!r}.")
        self.aspects = [a for a in AUXILIARY_ASPECTS if a in aspects]
        self.agents = [MAIN_ASPECT, *self.aspects]
        if not 0.0 <= discount < 1.0:
            raise ValueError(f"WatchTimeMARL: discount must be in [0, 1), got {discount!r}.")
        if not 0.0 < dropout < 1.0:
            raise ValueError(f"WatchTimeMARL: dropout must be in (0, 1) (the user model's two passes differ by it), "
                             f"got {dropout!r}.")
        if int(agent_units) < 1 or int(num_heads) < 1 or int(agent_units) % int(num_heads):
            raise ValueError(f"WatchTimeMARL: agent_units ({agent_units!r}) must be a positive multiple of num_heads "
                             f"({num_heads!r}).")
        if reward_scale <= 0 or imagined_weight < 0 or main_gradient_weight < 0 or exit_weight < 0:
            raise ValueError("WatchTimeMARL: reward_scale must be > 0 and imagined_weight, main_gradient_weight, "
                             f"exit_weight >= 0; got {reward_scale!r}, {imagined_weight!r}, {main_gradient_weight!r}, "
                             f"{exit_weight!r}.")
        if not 0 <= int(imagined_samples) < self.num_items - self.feature_spec[SESSION_ITEMS].shape[0]:
            raise ValueError(f"WatchTimeMARL: imagined_samples must be in 0..{self.num_items - 1 - self.feature_spec[SESSION_ITEMS].shape[0]} "
                             f"(items never shown in a state), got {imagined_samples!r}.")
        if temperature <= 0:
            raise ValueError(f"WatchTimeMARL: temperature must be > 0, got {temperature!r}.")
        self.temperature = float(temperature)
        if not 0.0 < target_update_rate <= 1.0:
            raise ValueError(f"WatchTimeMARL: target_update_rate must be in (0, 1], got {target_update_rate!r}.")
        self.target_update_rate = float(target_update_rate)
        top_n = min(10, self.num_items) if top_n is None else top_n
        if not 1 <= int(top_n) <= self.num_items:
            raise ValueError(f"WatchTimeMARL: top_n must be in 1..{self.num_items} (the number of items), got "
                             f"{top_n!r}.")
        self.state_units, self.user_units = [int(u) for u in state_units], [int(u) for u in user_units]
        self.pair_units = [int(u) for u in pair_units]
        self.agent_units, self.num_heads = int(agent_units), int(num_heads)
        self.dropout, self.discount = float(dropout), float(discount)
        self.imagined_samples, self.imagined_weight = int(imagined_samples), float(imagined_weight)
        self.uncertainty_weight, self.main_gradient_weight = float(uncertainty_weight), float(main_gradient_weight)
        self.exit_weight, self.reward_scale = float(exit_weight), float(reward_scale)
        self.top_n, self.seed = int(top_n), int(seed)
        self.input_names = [*STATE_FEATURES, ITEM_FEATURE]
        agents, d = len(self.agents), self.feature_spec[ITEM_FEATURE].embedding_dim
        embedded = [*STATE_FEATURES, ITEM_FEATURE]
        self.agent_network = Agents(self.feature_spec, agents, self.state_units, self.agent_units, self.num_heads,
                                    name="agents")
        self.critic_network = Critics(self.feature_spec, agents, self.state_units, name="critics")
        # DDPG's slowly following copies, for the bootstrap targets
        self.target_agent_network = Agents(self.feature_spec, agents, self.state_units, self.agent_units,
                                           self.num_heads, name="target_agents")
        self.target_critic_network = Critics(self.feature_spec, agents, self.state_units, name="target_critics")
        # user model
        self.pooling = SequencePooling("mean")
        self.user_embedding = FeatureEmbedding(self.feature_spec, embedded, name="user_model_embedding")
        self.user_gru = keras.layers.GRU(self.user_units[0], name="user_model_gru")
        self.user_state_mlp = MLP(self.user_units, name="user_model_state")
        self.user_match = keras.layers.Dense(d, use_bias=False, name="user_model_match")
        self.user_pair = MLP(self.pair_units, dropout=self.dropout, name="user_model_pair")
        self.user_heads = keras.layers.Dense(agents + 1, name="user_model_heads")  # the aspects, then the exit
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.user_model_loss_tracker = keras.metrics.Mean(name="user_model_loss")
        self.critic_loss_tracker = keras.metrics.Mean(name="critic_loss")
        self.imagined_loss_tracker = keras.metrics.Mean(name="imagined_loss")
        self.main_policy_value_tracker = keras.metrics.Mean(name="main_policy_value")

    # -- network ------------------------------------------------------------------------------
    def build(self, input_shape=None):
        """Creates the weights (one call) and starts the target networks equal to the online ones."""
        if not self.built:
            super().build(input_shape)
            for network in (self.target_agent_network, self.target_critic_network):
                network.trainable = False  # after the build: attention creates its sublayers in its own build
            self.update_targets(1.0)

    def target_pairs(self):
        """``[(target variable, online variable)]`` of the agents and the critics."""
        return [*zip(self.target_agent_network.weights, self.agent_network.weights),
                *zip(self.target_critic_network.weights, self.critic_network.weights)]

    def update_targets(self, rate: float):
        """Moves every target weight `rate` of the way to its online weight (Polyak averaging)."""
        for target, online in self.target_pairs():
            target.assign(rate * online + (1.0 - rate) * target)

    def train_step(self, data):
        logs = super().train_step(data)
        self.update_targets(self.target_update_rate)
        return logs

    def state_values(self, features, online: bool = False):
        """(B, K) V_k(s): each agent's Q averaged under its own policy (unshown items only), of
        the target networks (the bootstrap's) or, when `online`, of the trained ones."""
        agents, critics = ((self.agent_network, self.critic_network) if online
                           else (self.target_agent_network, self.target_critic_network))
        return expected_under_policy(agents.logits(features), critics.values(features))

    def user_state(self, features):
        """(B, h) the user model's encoding of the state (the session through the GRU)."""
        return self.user_state_mlp(embed_state(self.user_embedding, self.pooling, features, self.user_gru))

    def user_model(self, state, item_ids, training=None):
        """The user model's answers to (B, M) `item_ids` in (B, h) states (:meth:`user_state`):
        ``{"aspects": (B, M, K) (the reward scaled, the auxiliary aspects' probabilities),
        "exit": (B, M)}``. Dropout (``training``) makes each call one of the Siamese passes."""
        items = self.user_embedding.embed(ITEM_FEATURE, item_ids)  # (B, M, d)
        state = ops.broadcast_to(state[:, None, :], (ops.shape(items)[0], ops.shape(items)[1], state.shape[-1]))
        z = self.user_pair(ops.concatenate([state, items, self.user_match(state) * items], axis=-1),
                           training=training)
        heads = self.user_heads(z)  # (B, M, K + 1)
        aspects = ops.concatenate([heads[..., :1], ops.sigmoid(heads[..., 1:-1])], axis=-1)
        return {"aspects": aspects, "exit": ops.sigmoid(heads[..., -1])}

    def call(self, inputs, training=None):
        features = check_features(inputs, self.feature_spec, self.input_names)
        items = ops.cast(features[ITEM_FEATURE], "int64")
        scores = self.agent_network.scores(features, items)  # (B, K)
        q = self.critic_network.pair(features, items)
        for network in (self.target_agent_network, self.target_critic_network):  # built with the online ones
            network.logits(features) if network is self.target_agent_network else network.values(features)
        answer = self.user_model(self.user_state(features), items[:, None], training=training)
        return {"value": scores[:, :1], "aspect_values": scores, "q_value": q[:, :1] * self.reward_scale,
                "reward": answer["aspects"][:, :, 0] * self.reward_scale, "exit": answer["exit"]}

    # -- training -----------------------------------------------------------------------------
    def aspect_labels(self, y):
        """(B, K) the aspects' rewards of logged rows: the reward scaled, then each auxiliary label."""
        labels = [ops.reshape(ops.cast(y[MAIN_ASPECT], "float32"), (-1,)) / self.reward_scale]
        labels += [ops.reshape(ops.cast(y[name], "float32"), (-1,)) for name in self.aspects]
        return ops.stack(labels, axis=-1)

    def user_model_loss(self, answer, rewards, leaves):
        """(B,) the user model's loss of one pass on logged rows (module docstring)."""
        predicted = answer["aspects"][:, 0]  # (B, K)
        aspects = ops.sum(binary_cross_entropy(rewards[:, 1:], predicted[:, 1:]), axis=-1)  # 0 without any
        return (ops.square(predicted[:, 0] - rewards[:, 0]) + aspects
                + self.exit_weight * binary_cross_entropy(leaves, answer["exit"][:, 0]))

    def imagined_loss(self, features, user_state, q_all, shown):
        """(B,) the critics' loss on :attr:`imagined_samples` unshown items per row, answered by
        the user model (both passes, gradient stopped)."""
        m = self.imagined_samples
        items = sample_unshown(keras.random.uniform(ops.shape(shown), seed=self.seed_generator), shown, m)  # (B, M)
        first, second = (self.user_model(user_state, items, training=True) for _ in range(2))
        rewards = ops.stop_gradient(0.5 * (first["aspects"] + second["aspects"]) + self.uncertainty_weight
                                    * ops.abs(first["aspects"] - second["aspects"]))  # (B, M, K)
        stays = ops.stop_gradient(1.0 - 0.5 * (first["exit"] + second["exit"]))  # (B, M)
        tiled = {name: ops.repeat(value, m, axis=0) for name, value in features.items()}  # row b's M copies
        following = ops.stop_gradient(self.state_values(self.after(tiled, ops.reshape(items, (-1,)))))
        target = rewards + self.discount * stays[..., None] * ops.reshape(following, (-1, m, len(self.agents)))
        chosen = tf.gather(ops.transpose(q_all, (0, 2, 1)), items - 1, batch_dims=1)  # (B, M, K)
        return ops.mean(ops.sum(ops.square(chosen - target), axis=-1), axis=-1)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The user model's, the critics' and the actors' losses summed (module docstring).

        Args:
            x: the batch's features (the state and the shown ``item_id``).
            y: ``{"reward", "exit", and each of aspects: (B,)}``.
        """
        missing = [name for name in (MAIN_ASPECT, "exit", *self.aspects) if name not in (y or {})]
        if missing:
            raise ValueError(f"WatchTimeMARL: training batches need the labels {missing} (the session-value "
                             "family's data has them).")
        features = check_features(x, self.feature_spec, self.input_names)
        items = ops.cast(features[ITEM_FEATURE], "int64")
        rewards, leaves = self.aspect_labels(y), ops.reshape(ops.cast(y["exit"], "float32"), (-1,))
        user_state = self.user_state(features)
        user_loss = 0.5 * sum(self.user_model_loss(self.user_model(user_state, items[:, None], training=True),
                                                   rewards, leaves) for _ in range(2))
        q_all = self.critic_network.values(features)  # (B, K, I)
        logged_q = ops.sum(q_all * ops.one_hot(items - 1, self.num_items)[:, None, :], axis=-1)  # (B, K)
        following = ops.stop_gradient(self.state_values(self.after(features, items)))  # (B, K)
        target = rewards + self.discount * (1.0 - leaves[:, None]) * following
        critic_loss = ops.sum(ops.square(logged_q - target), axis=-1)
        shown = ops.logical_or(shown_items_mask(features[SESSION_ITEMS], self.num_items),
                               ops.one_hot(items - 1, self.num_items) > 0)
        imagined = (self.imagined_loss(features, user_state, q_all, shown) if self.imagined_samples
                    else ops.zeros_like(critic_loss))
        logits = self.agent_network.logits(features)  # (B, K, I), the session's items masked
        log_pi = ops.log_softmax(logits, axis=-1)
        q = ops.stop_gradient(q_all)
        guide = ops.concatenate([ops.zeros_like(q[:, :1]), ops.repeat(q[:, :1], len(self.agents) - 1, axis=1)], axis=1)
        aims = (q + self.main_gradient_weight * guide) / self.temperature
        aims = ops.softmax(ops.where(logits <= MASKED_LOGIT, MASKED_LOGIT, aims), axis=-1)  # Boltzmann of the critics
        actor_loss = -ops.sum(ops.sum(aims * log_pi, axis=-1), axis=-1)
        pi = ops.exp(log_pi)
        self.user_model_loss_tracker.update_state(user_loss)
        self.critic_loss_tracker.update_state(critic_loss)
        self.imagined_loss_tracker.update_state(imagined)
        self.main_policy_value_tracker.update_state(ops.sum(pi[:, 0] * q[:, 0], axis=-1))
        total = user_loss + critic_loss + self.imagined_weight * imagined + actor_loss
        return ops.mean(total) + ops.sum(self.losses) if self.losses else ops.mean(total)

    # -- inference ----------------------------------------------------------------------------
    def item_scores(self, features):
        """``{"value", "reward", "exit", "q_value": (B, num_items)}`` for each state (column j
        is item j + 1): the main agent's action scores, the user model's immediate reward and
        exit, and the main critic."""
        features = check_features(features, self.feature_spec, list(STATE_FEATURES))
        scores = self.agent_network.logits(features, shown=ops.zeros((1, self.num_items), "bool"))
        batch = ops.shape(scores)[0]
        items = ops.broadcast_to(ops.arange(1, self.num_items + 1, dtype="int64")[None], (batch, self.num_items))
        answer = self.user_model(self.user_state(features), items)
        return {"value": scores[:, 0], "reward": answer["aspects"][..., 0] * self.reward_scale,
                "exit": answer["exit"], "q_value": self.critic_network.values(features)[:, 0] * self.reward_scale}

    def get_config(self):
        return {**super().get_config(), "feature_spec": self.feature_spec.get_config(), "aspects": self.aspects,
                "state_units": self.state_units, "agent_units": self.agent_units, "num_heads": self.num_heads,
                "user_units": self.user_units, "pair_units": self.pair_units, "dropout": self.dropout,
                "discount": self.discount, "imagined_samples": self.imagined_samples,
                "imagined_weight": self.imagined_weight, "uncertainty_weight": self.uncertainty_weight,
                "main_gradient_weight": self.main_gradient_weight, "exit_weight": self.exit_weight,
                "target_update_rate": self.target_update_rate, "temperature": self.temperature,
                "reward_scale": self.reward_scale, "top_n": self.top_n, "seed": self.seed}

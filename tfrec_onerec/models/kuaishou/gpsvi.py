"""GPSVI: target attention as a Gaussian interest, pulled toward a group prior where it is uncertain.

Xu, Pan, Liu, Xu & Hu (Kuaishou), "Incorporating Group Prior into Variational Inference for
Tail-User Behavior Modeling in CTR Prediction" (arXiv 2410.15098). Target attention (DIN)
reads a user's interest in a candidate from the user's behaviours; a tail user has few, so
that reading is noisy. GPSVI treats the interest as a latent Gaussian whose mean is the
attention output and whose variance a network estimates, and refines it with the preference
of the user's group (coarse profile features such as demographics) as a prior: the more
uncertain the individual reading, the further it moves toward the group's. With certain
readings (head users) the model is target attention again.

Model (per example; d = the width of the behaviour embeddings, n = the behaviours present)::

    v        = TargetAttention(candidate, behaviours)                 attention reading  (d,)
    h        = MLP_s(v);  log s^2 = W_s h - log n                      its uncertainty    (d,)
    g        = W_g MLP_g([group features, candidate])                 group preference   (d,)
    prior    = N(g, t^2)                                              t^2: learned, per dimension
    w        = t^2 / (s^2 + t^2)                                      trust in the reading
    q_0      = N(mu, r^2),  mu = g + w (v - g),  r^2 = w s^2          posterior of z given v ~ N(z, s^2)
    z        = mu + HouseholderFlow_h(r * eps),  eps ~ N(0, I)        in training; z = mu in serving
    p(task)  = sigmoid(head_task(MLP([user profile, candidate, context, z])))
    loss     = cross-entropy + kl_weight * mean over the batch of (log q_0(z_0) - log N(z; g, t^2))

The posterior of q_0 is the product of the reading's likelihood and the group prior (a
conjugate Gaussian update), so the adjustment grows with the estimated uncertainty: as
``s^2 -> 0`` the weight ``w -> 1`` and z is the attention output (the paper's "reverts to
traditional attention for head users"); as ``s^2`` grows, z moves to g. The flow reflects the
noise around the mean (so the serving path, which takes the mean, is deterministic) and
makes the posterior's covariance full; it is volume-preserving, so the Monte Carlo KL needs
no log-determinant.

Choices where the text available here (the abstract and a summary of the method's start) is
silent, written down as this implementation makes them:

* The uncertainty is that of a mean of n equally noisy readings, ``s^2 = s_0^2 / n``, with
  ``s_0^2`` from a network on the attention output (the paper says only "a network with an
  exponential output"; it claims the model reverts to attention for users with rich
  behaviour, which this form guarantees as n grows). With no behaviour the reading is
  ignored (``s^2`` at its bound) and the interest is the group's preference.
* The group prior enters as the prior of the variational posterior and through the conjugate
  update above; the prior's variance is learned (empirical Bayes), one value per dimension.
* Householder flow (Tomczak & Welling 2016), 2 steps, conditioned on h, applied to the
  centred sample; the KL is a one-sample Monte Carlo estimate with weight ``kl_weight``.
* Groups are the user-profile features other than the user id (``group_features``).
"""
from __future__ import annotations

import math
from typing import Sequence

import keras
from keras import ops

from tfrec_onerec.layers import MLP, as_feature_spec
from tfrec_onerec.layers.householder_flow import HouseholderFlow
from tfrec_onerec.models.base import per_replica
from tfrec_onerec.models.registry import register
from tfrec_onerec.models.sequence.din import DIN

LOG_VARIANCE_BOUND = 10.0  # log-variances are kept in (-10, 10) by a scaled tanh
EVIDENCE_FLOOR = 1e-12  # no behaviour at all: s^2 at its bound, the interest is the prior (w < 1e-4)
UNCERTAINTIES = ("network", "evidence")
INITIAL_LOG_VARIANCE = -6.0  # readings start trusted (s^2 = 0.0025 against t^2 = 1): the model starts as DIN


def gaussian_log_density(x, mean, log_variance):
    """(batch,) log N(x; mean, diag(exp(log_variance))) of (batch, d) `x`, summed over d;
    `log_variance` broadcasts against `x`."""
    return -0.5 * ops.sum(log_variance + ops.square(x - mean) * ops.exp(-log_variance) + math.log(2.0 * math.pi),
                          axis=-1)


def default_group_features(spec) -> list:
    """The user-profile features that form groups: the ``user`` group's categorical features
    other than the user id (demographics on MovieLens-100K and the simulator)."""
    return [f.name for f in spec.group("user") if f.kind == "categorical" and f.name != spec.user_key]


@register("gpsvi", family="pointwise")
class GPSVI(DIN):
    """DIN whose attention output is a Gaussian interest refined by a group prior.

    Args:
        feature_spec: the :class:`~tfrec_onerec.features.FeatureSpec`: as DIN's, plus at least
            one categorical feature that groups users (``group_features``).
        tasks: output tasks; one sigmoid head each. Default ``("click",)``.
        group_features: the features whose values form the groups; None: the user-profile
            features other than the user id (:func:`default_group_features`).
        group_units: widths of the group-preference MLP. Default ``(64,)``.
        uncertainty_units: widths of the uncertainty MLP. Default ``(32,)``.
        flow_steps: Householder reflections of the posterior sample (0: none). Default 2.
        uncertainty: how s_0^2, the variance of one behaviour's reading, is estimated:
            ``"network"`` (default: the paper's network, from the attention output) or
            ``"evidence"`` (one learned value per dimension, the same for every user, so the
            prior's share can only fall as behaviours grow).
        kl_weight: weight of the KL term next to the task losses (0: no KL). Default 0.0003: larger weights
            pull the posterior onto the prior (on the known-answer world 0.01 collapsed it: test
            AUC 0.51; on MovieLens-100K 0.003 lost AUC, see ``docs/results/kuaishou_ranking.md``).
        seed: seed of the posterior's noise. Default 0.
        **kwargs: as :class:`~tfrec_onerec.models.sequence.din.DIN` (``attention_units``,
            ``mlp_units``, ``activation``, ``dropout``, ``l2``...).

    Call:
        inputs: ``{feature: tensor}`` as parsed from the spec.
        Returns ``{task: (batch, 1) probability}``; in training the interest is a sample of
        the posterior and the KL term is added to the model's losses, in inference it is the
        posterior mean.
    """

    def __init__(self, feature_spec, tasks: Sequence = ("click",), group_features: Sequence[str] | None = None,
                 group_units: Sequence[int] = (64,), uncertainty_units: Sequence[int] = (32,), flow_steps: int = 2,
                 kl_weight: float = 0.0003, uncertainty: str = "network", seed: int = 0, **kwargs):
        spec = as_feature_spec(feature_spec)
        self.group_features = list(default_group_features(spec) if group_features is None else group_features)
        unknown = [name for name in self.group_features if name not in spec.names]
        if unknown:
            raise ValueError(f"GPSVI: group feature(s) {unknown} are not in the spec; features are {list(spec.names)}.")
        if not self.group_features or any(spec[name].kind != "categorical" for name in self.group_features):
            raise ValueError(f"GPSVI needs categorical group features (user profile features besides the user id "
                             f"{spec.user_key!r}); got {self.group_features}.")
        if uncertainty not in UNCERTAINTIES:
            raise ValueError(f"GPSVI: uncertainty must be one of {UNCERTAINTIES}, got {uncertainty!r}.")
        self.uncertainty = uncertainty
        if kl_weight < 0:
            raise ValueError(f"GPSVI: kl_weight must be >= 0, got {kl_weight!r}.")
        self.group_units = [int(u) for u in group_units]
        self.uncertainty_units = [int(u) for u in uncertainty_units]
        self.flow_steps = int(flow_steps)
        self.kl_weight = float(kl_weight)
        self.seed = int(seed)
        super().__init__(spec, tasks, **kwargs)

        self.interest_dim = sum(spec[f.name].embedding_dim for f in self.history_features)
        self.group_mlp = MLP(self.group_units, activation=self.activation, name="group_mlp")
        self.group_mean = keras.layers.Dense(self.interest_dim, name="group_mean")
        self.uncertainty_mlp = MLP(self.uncertainty_units, activation=self.activation, name="uncertainty_mlp")
        self.log_variance = keras.layers.Dense(self.interest_dim, bias_initializer=keras.initializers.Constant(INITIAL_LOG_VARIANCE), name="log_variance")
        self.flow = HouseholderFlow(self.flow_steps, name="householder_flow")
        self.flow.build((None, self.interest_dim), (None, self.uncertainty_units[-1]))  # serving never calls it
        self.prior_log_variance = self.add_weight(name="prior_log_variance", shape=(self.interest_dim,),
                                                  initializer="zeros")
        if self.uncertainty == "evidence":  # one s_0^2 per dimension, for every user
            self.behaviour_log_variance = self.add_weight(
                name="behaviour_log_variance", shape=(self.interest_dim,),
                initializer=keras.initializers.Constant(INITIAL_LOG_VARIANCE))
        self.noise = keras.random.SeedGenerator(self.seed, name="posterior_noise")

    def extra_inputs(self) -> list:
        return [name for name in self.group_features if name not in {f.name for f in self.profile_features}]

    def posterior(self, features, query, keys, key_mask, training=None) -> dict:
        """The interest's distributions for one batch, each (batch, d) unless said:

        * ``attention``: v, the target-attention reading; ``log_variance``: log s^2;
        * ``group``: g, the group preference; ``prior_log_variance``: log t^2 (d,);
        * ``weight``: w = t^2 / (s^2 + t^2), the trust in the reading (1 - w: the prior's share);
        * ``mean``, ``posterior_log_variance``: mu and log r^2 of q_0;
        * ``condition``: (batch, units) h, what the flow is conditioned on.
        """
        attention = self._pool(query, keys, key_mask, training=training)
        evidence = ops.sum(ops.cast(key_mask, attention.dtype), axis=1, keepdims=True)  # n, (batch, 1)
        condition = self.uncertainty_mlp(attention, training=training)
        per_behaviour = self.log_variance(condition) if self.uncertainty == "network" else self.behaviour_log_variance
        log_variance = per_behaviour - ops.log(evidence + EVIDENCE_FLOOR)
        log_variance = LOG_VARIANCE_BOUND * ops.tanh(log_variance / LOG_VARIANCE_BOUND)
        groups = [self.embedding.embed(name, features[name]) for name in self.group_features]
        group = self.group_mean(self.group_mlp(ops.concatenate(groups + [query], axis=-1), training=training))
        prior_log_variance = LOG_VARIANCE_BOUND * ops.tanh(self.prior_log_variance / LOG_VARIANCE_BOUND)
        logit = prior_log_variance - log_variance
        weight = ops.sigmoid(logit)
        return {"attention": attention, "log_variance": log_variance, "group": group,
                "prior_log_variance": prior_log_variance, "weight": weight,
                "mean": group + weight * (attention - group),
                "posterior_log_variance": log_variance + ops.log_sigmoid(logit), "condition": condition}

    def sample(self, posterior):
        """``(z, kl)``: a (batch, d) sample of the flowed posterior and the (batch,) one-sample
        estimate of KL(q || prior), ``log q_0(z_0) - log N(z; g, t^2)`` (the flow keeps volume)."""
        mean, log_variance = posterior["mean"], posterior["posterior_log_variance"]
        noise = ops.exp(0.5 * log_variance) * keras.random.normal(ops.shape(mean), seed=self.noise)
        z = mean + self.flow(noise, posterior["condition"])
        kl = (gaussian_log_density(mean + noise, mean, log_variance)
              - gaussian_log_density(z, posterior["group"], posterior["prior_log_variance"]))
        return z, kl

    def prior_share(self, inputs):
        """(batch,) how much of each example's interest comes from its group: 1 - w, averaged
        over the d dimensions (0: the attention reading alone; 1: the group's preference)."""
        features = self.checked_inputs(inputs)
        _, query = self.candidate(features)
        keys, key_mask = self.behaviours(features)
        return 1.0 - ops.mean(self.posterior(features, query, keys, key_mask)["weight"], axis=-1)

    def call(self, inputs, training=None):
        features = self.checked_inputs(inputs)
        profile, query = self.candidate(features)
        keys, key_mask = self.behaviours(features)
        posterior = self.posterior(features, query, keys, key_mask, training=training)
        interest = posterior["mean"]
        if training:
            interest, kl = self.sample(posterior)
            if self.kl_weight:
                self.add_loss(per_replica(self.kl_weight * ops.mean(kl)))
        return self.predict_tasks(profile, [interest], training)

    def get_config(self):
        return {**super().get_config(), "group_features": self.group_features, "group_units": self.group_units,
                "uncertainty_units": self.uncertainty_units, "flow_steps": self.flow_steps,
                "kl_weight": self.kl_weight, "uncertainty": self.uncertainty, "seed": self.seed}

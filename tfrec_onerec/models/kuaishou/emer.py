"""EMER: end-to-end multi-objective ensemble ranking over a request's candidates (arXiv 2508.05093).

The last ranking stage of a short-video feed fuses the upstream multi-task model's
predictions ("pxtrs": click, watch time, long view, follow, like...) into one order. A
hand-tuned formula scores each candidate alone; EMER (Kuaishou, 2025) learns the fusion
end to end, from whole requests:

* **a sample is a request**: all ``N`` candidates of one user request together (shown or
  not); each candidate becomes one token made of its pxtrs' **normalised ranks** within the
  request (rank by that pxtr, best 0, divided by the number of candidates), here next to the
  pxtr values themselves and the item's and the user's embeddings (the user's broadcast to
  every candidate);
* **a transformer over the candidates** (self-attention across the request, no positions: a
  set; padded candidates masked), then an MLP per token: one score per candidate, so each
  score depends on the other candidates (the paper's comparison modelling);
* **the loss**, ``L_posterior + L_prior``:

  - ``L_posterior`` (relative advantage satisfaction): a pairwise logistic loss
    ``-log sigmoid(s_i - s_j)`` over the shown candidates of a request where ``i`` got more
    positive feedbacks than ``j`` (graded satisfaction: many > one > none);
  - ``L_prior`` (multi-dimensional satisfaction proxies): for every pxtr ``x``, the same
    pairwise loss over all candidate pairs that pxtr orders (``x_i > x_j``), weighted by
    ``w_x`` and averaged over the pxtrs: a dense teacher on unshown candidates too;

* **self-adjusting objective weights** (the Advantage Evaluator): ``w_x = DCG@K(reference) /
  DCG@K(model)``, the DCG of the top ``K`` candidates by each model's scores with pxtr ``x``
  as the relevance, so an objective on which the model is behind its reference gains
  weight and one it leads loses weight.

Choices the paper leaves open, made here: two pre-LayerNorm transformer blocks of width 32
(:class:`~tfrec_onerec.layers.transformer.TransformerBlock`, 2 heads); the pxtr values are
fed next to their ranks (the paper's figure shows ranks; values tell how far apart
candidates are); the reference of the Advantage Evaluator, the previous day's model in the
paper's daily training, is a copy of the scoring network refreshed every
``reference_sync_steps`` training steps; the weights use batch means of DCG@``dcg_k``
(``dcg_k`` default 6, the number a feed shows), are clipped to ``weight_bounds`` and carry
no gradient; ``L_posterior`` and ``L_prior`` are summed with weight 1 each, as reported; the
"interaction per unit time" relabelling of interaction pxtrs is not applied (the evaluation
values interactions in total, not per second watched). The paper's model sizes, optimiser
and training schedule are not public.

Features (:mod:`tfrec_onerec.data.ensemble_requests`): ``user_id`` (B,), ``candidate_ids``
(B, N) (0: no candidate), one pxtr feature (B, N) per objective; training batches also
carry ``grade`` and ``exposed`` (B, N) as targets.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfrec_onerec.data.ensemble_requests import CANDIDATES, EXPOSED, GRADE, USER_FEATURE
from tfrec_onerec.features.datasets import example_batch
from tfrec_onerec.features.parsing import check_features, parse_examples
from tfrec_onerec.features.tfrecord import serialize_rows
from tfrec_onerec.layers import FeatureEmbedding, as_feature_spec
from tfrec_onerec.layers.mlp import MLP
from tfrec_onerec.layers.transformer import TransformerBlock
from tfrec_onerec.models.base import SpecBuiltModel
from tfrec_onerec.models.registry import register

PREDICT_SIGNATURE, RANK_SIGNATURE = "predict", "rank"
SERVING_SIGNATURE, EXAMPLES_INPUT = "serving_default", "examples"
TARGETS = (GRADE, EXPOSED)


def normalized_ranks(values, mask):
    """(B, N) each candidate's rank by `values` among the valid candidates of its row (best,
    i.e. highest, 0; ties by position), divided by the row's number of valid candidates;
    1 at invalid candidates.

    Args:
        values: (B, N) float. mask: (B, N) bool, True at real candidates.
    """
    n = ops.shape(values)[1]
    position = ops.arange(n)
    ahead = (values[:, None, :] > values[:, :, None]) | (
        (values[:, None, :] == values[:, :, None]) & (position[None, None, :] < position[None, :, None]))
    rank = ops.sum(ops.cast(ahead & mask[:, None, :], "float32"), axis=-1)
    count = ops.maximum(ops.sum(ops.cast(mask, "float32"), axis=-1, keepdims=True), 1.0)
    return ops.where(mask, rank / count, 1.0)


def pairwise_logistic(scores, prefer):
    """The mean of ``-log sigmoid(s_i - s_j)`` over the pairs with ``prefer[b, i, j]`` (0 if none).

    Args:
        scores: (B, N) float. prefer: (B, N, N) bool, True where ``i`` should rank above ``j``.
    """
    weight = ops.cast(prefer, scores.dtype)
    loss = ops.softplus(scores[:, None, :] - scores[:, :, None])  # [b, i, j]: -log sigmoid(s_i - s_j)
    return ops.sum(loss * weight) / ops.maximum(ops.sum(weight), 1.0)


def dcg_at_k(scores, relevance, mask, k: int):
    """(B,) DCG@k of each row's top `k` valid candidates by `scores`, gains `relevance`:
    ``sum_r relevance(r-th) / log2(r + 2)``.

    Args:
        scores, relevance: (B, N) float. mask: (B, N) bool.
    """
    k = min(int(k), int(scores.shape[1]))
    masked = ops.where(mask, scores, -np.inf)
    _, top = tf.math.top_k(masked, k=k)
    gains = ops.take_along_axis(ops.where(mask, relevance, 0.0), top, axis=1)
    discount = 1.0 / ops.log2(ops.arange(k, dtype="float32") + 2.0)
    return ops.sum(gains * discount[None, :], axis=-1)


class CandidateScorer(keras.layers.Layer):
    """Candidate tokens -> transformer over the request -> one score per candidate.

    Args:
        feature_spec: the request spec. objectives: the pxtr feature names.
        model_dim, num_heads, num_layers, ffn_dim, head_units, dropout: the network.
        use_pxtr_values: feed the pxtr values next to their ranks.

    Call: ``features`` (the model's inputs), ``training`` -> (B, N) scores (any value at
    invalid candidates).
    """

    def __init__(self, feature_spec, objectives: Sequence[str], model_dim: int, num_heads: int, num_layers: int,
                 ffn_dim: int, head_units: Sequence[int], dropout: float, use_pxtr_values: bool, **kwargs):
        super().__init__(**kwargs)
        self.objectives = list(objectives)
        self.use_pxtr_values = use_pxtr_values
        self.embedding = FeatureEmbedding(feature_spec, [USER_FEATURE, CANDIDATES], name="embedding")
        self.project = keras.layers.Dense(model_dim, name="project")
        self.blocks = [TransformerBlock(num_heads, ffn_dim=ffn_dim, dropout=dropout, name=f"block_{i}")
                       for i in range(num_layers)]
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")
        self.head = MLP(list(head_units), dropout=dropout, name="head")
        self.out = keras.layers.Dense(1, name="score")

    def call(self, features, training=None):
        candidates = features[CANDIDATES]
        mask = candidates > 0
        pxtrs = [ops.cast(features[name], "float32") for name in self.objectives]
        parts = [ops.stack([normalized_ranks(p, mask) for p in pxtrs], axis=-1)]  # (B, N, P)
        if self.use_pxtr_values:
            parts.append(ops.stack(pxtrs, axis=-1))
        items = self.embedding.embed(CANDIDATES, candidates)  # (B, N, d)
        user = self.embedding.embed(USER_FEATURE, features[USER_FEATURE])  # (B, d)
        parts += [items, ops.broadcast_to(user[:, None, :], ops.shape(items))]
        x = self.project(ops.concatenate(parts, axis=-1))
        for block in self.blocks:
            x = block(x, padding_mask=mask, training=training)
        x = self.head(self.final_norm(x), training=training)
        return self.out(x)[..., 0]


@register("emer", family="ensemble_ranking")
class EMER(SpecBuiltModel, keras.Model):
    """EMER: one score per candidate of a request, trained on graded feedback and the pxtrs' orders.

    Args:
        feature_spec: the request spec (:func:`~tfrec_onerec.data.ensemble_requests.request_spec`)
            or its config.
        objectives: the pxtr features fused; default every ``p_*`` feature of the spec.
        model_dim: token width. Default 32.
        num_heads: attention heads. Default 2.
        num_layers: transformer blocks over the candidates. Default 2.
        ffn_dim: the blocks' feed-forward width. Default 64.
        head_units: the per-candidate MLP before the score. Default (32,).
        dropout: dropout in the blocks and the head. Default 0.
        use_pxtr_values: feed the pxtr values next to their normalised ranks. Default True.
        dcg_k: K of the Advantage Evaluator's DCG@K. Default 6.
        weight_bounds: ``(low, high)`` clip of each objective's weight. Default (0.5, 2).
        reference_sync_steps: training steps between refreshes of the reference scorer. Default 100.

    Call: the features -> ``{"score": (B, N)}``.
    """

    def __init__(self, feature_spec, objectives: Sequence[str] | None = None, model_dim: int = 32,
                 num_heads: int = 2, num_layers: int = 2, ffn_dim: int = 64, head_units: Sequence[int] = (32,),
                 dropout: float = 0.0, use_pxtr_values: bool = True, dcg_k: int = 6,
                 weight_bounds: Sequence[float] = (0.5, 2.0), reference_sync_steps: int = 100, **kwargs):
        super().__init__(**kwargs)
        self.feature_spec = as_feature_spec(feature_spec)
        spec = self.feature_spec
        missing = [name for name in (USER_FEATURE, CANDIDATES) if name not in spec]
        if missing:
            raise ValueError(f"EMER: the feature spec lacks {missing} (see tfrec_onerec.data.ensemble_requests).")
        self.objectives = list(objectives) if objectives is not None else [
            f.name for f in spec if f.name.startswith("p_") and f.kind == "numeric"]
        width = spec[CANDIDATES].max_len
        wrong = [name for name in self.objectives if name not in spec or spec[name].kind != "numeric"
                 or spec[name].dim != width]
        if not self.objectives or wrong:
            raise ValueError(f"EMER: objectives must be numeric features of {width} values (one per candidate); "
                             f"got {self.objectives} ({wrong or 'none'} unusable).")
        low, high = (float(b) for b in weight_bounds)
        if not 0 < low <= 1 <= high:
            raise ValueError(f"EMER: weight_bounds must satisfy 0 < low <= 1 <= high, got {tuple(weight_bounds)}.")
        if int(dcg_k) < 1 or int(reference_sync_steps) < 1:
            raise ValueError(f"EMER: dcg_k and reference_sync_steps must be >= 1, got {dcg_k!r}, "
                             f"{reference_sync_steps!r}.")
        self.network = dict(model_dim=int(model_dim), num_heads=int(num_heads), num_layers=int(num_layers),
                            ffn_dim=int(ffn_dim), head_units=[int(u) for u in head_units], dropout=float(dropout),
                            use_pxtr_values=bool(use_pxtr_values))
        self.dcg_k, self.weight_bounds = int(dcg_k), (low, high)
        self.reference_sync_steps = int(reference_sync_steps)
        self.input_names = [USER_FEATURE, CANDIDATES, *self.objectives]
        self.scorer = CandidateScorer(spec, self.objectives, **self.network, name="scorer")
        self.reference = CandidateScorer(spec, self.objectives, **self.network, name="reference")
        # logged apart (``posterior_loss``, ``prior_loss``; ``val_`` on validation): the posterior
        # part orders real feedback with fixed weight, a stopping signal the prior's moving weights are not
        self.posterior_tracker = keras.metrics.Mean(name="posterior_loss")
        self.prior_tracker = keras.metrics.Mean(name="prior_loss")

    def build(self, input_shape=None):
        """Creates both scorers' weights and starts the reference equal to the model."""
        if not self.built:
            batch = example_batch(self.feature_spec.subset(self.input_names), size=1)
            self.call(batch)
            self.reference(batch)
            self.reference.trainable = False  # after its blocks created their attention weights
            self.sync_reference()
        self.built = True

    def sync_reference(self):
        """Copies the scorer's weights into the reference (the Advantage Evaluator's previous model)."""
        for target, source in zip(self.reference.weights, self.scorer.weights):
            target.assign(source)
        return tf.constant(True)

    def call(self, inputs, training=None):
        features = check_features(inputs, self.feature_spec, self.input_names)
        return {"score": self.scorer(features, training=training)}

    # -- training -----------------------------------------------------------------------------
    def objective_weights(self, features, scores):
        """(P,) ``w_x = mean DCG@K(reference) / mean DCG@K(model)`` per pxtr, clipped, no gradient."""
        mask = features[CANDIDATES] > 0
        reference = ops.stop_gradient(self.reference(features, training=False))
        scores = ops.stop_gradient(scores)
        weights = []
        for name in self.objectives:
            relevance = ops.cast(features[name], "float32")
            ours = ops.mean(dcg_at_k(scores, relevance, mask, self.dcg_k))
            theirs = ops.mean(dcg_at_k(reference, relevance, mask, self.dcg_k))
            weights.append(theirs / ops.maximum(ours, 1e-9))
        return ops.clip(ops.stack(weights), *self.weight_bounds)

    def losses_of(self, features, targets, scores) -> dict:
        """``{"posterior", "prior", "total"}`` scalars and ``"weights"`` (P,) (module docstring).

        Args:
            features: the model's inputs. targets: ``{"grade", "exposed"}`` (B, N).
            scores: (B, N) the model's scores.
        """
        mask = features[CANDIDATES] > 0
        grade = ops.cast(targets[GRADE], "float32")
        shown = ops.cast(targets[EXPOSED], "float32") > 0
        both_shown = shown[:, :, None] & shown[:, None, :]
        posterior = pairwise_logistic(scores, both_shown & (grade[:, :, None] > grade[:, None, :]))
        both = mask[:, :, None] & mask[:, None, :]
        weights = self.objective_weights(features, scores)
        prior = 0.0
        for k, name in enumerate(self.objectives):
            value = ops.cast(features[name], "float32")
            prior = prior + weights[k] * pairwise_logistic(scores, both & (value[:, :, None] > value[:, None, :]))
        prior = prior / len(self.objectives)
        return {"posterior": posterior, "prior": prior, "total": posterior + prior, "weights": weights}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """``L_posterior + L_prior`` (each part also logged as a metric); in training, first
        refreshes the reference every ``reference_sync_steps`` steps.

        Args:
            x: the features. y: ``{"grade", "exposed"}`` (B, N). y_pred: :meth:`call`'s outputs.
        """
        missing = [name for name in TARGETS if y is None or name not in y]
        if missing:
            raise ValueError(f"EMER: training batches need the targets {list(TARGETS)} (missing {missing}); "
                             "the ensemble_ranking family's dataset provides them.")
        if training and self.optimizer is not None:
            step = self.optimizer.iterations
            tf.cond(step % self.reference_sync_steps == 0, self.sync_reference, lambda: tf.constant(False))
        features = {name: x[name] for name in self.input_names}
        parts = self.losses_of(features, y, y_pred["score"])
        self.posterior_tracker.update_state(parts["posterior"])
        self.prior_tracker.update_state(parts["prior"])
        total = parts["total"]
        return total + ops.sum(self.losses) if self.losses else total

    # -- inference ----------------------------------------------------------------------------
    def rank(self, features):
        """``(positions, item_ids, scores)`` (B, N): the candidates best first (their positions
        in the request, their ids, their scores); no-candidate slots last (id 0, score -inf)."""
        features = check_features(features, self.feature_spec, self.input_names)
        candidates = tf.cast(features[CANDIDATES], tf.int64)
        scores = tf.where(candidates > 0, self.scorer(features, training=False), -np.inf)
        top = tf.math.top_k(scores, k=candidates.shape[1])
        return tf.cast(top.indices, tf.int64), tf.gather(candidates, top.indices, batch_dims=1), top.values

    # -- export -------------------------------------------------------------------------------
    def input_signature(self) -> dict:
        spec = self.feature_spec
        return {name: tf.TensorSpec((None,) + spec[name].shape, spec[name].dtype, name=name)
                for name in self.input_names}

    def serving_endpoints(self) -> dict:
        """``{signature: (function, input signature)}`` for :func:`tfrec_onerec.export.export_saved_model`.

        * ``predict``: the request features -> ``score`` (B, N).
        * ``serving_default``: ``examples`` (B,) serialized tf.Example of the same -> the same.
        * ``rank``: the request features -> ``positions``, ``item_ids``, ``scores`` (B, N),
          the candidates best first (empty slots last).
        """
        self.build()
        spec = self.feature_spec.subset(self.input_names)

        def predict(features):
            return self(features, training=False)

        def serve_examples(examples):
            return predict(parse_examples(examples, spec))

        def rank(features):
            positions, item_ids, scores = self.rank(features)
            return {"positions": positions, "item_ids": item_ids, "scores": scores}

        return {PREDICT_SIGNATURE: (predict, [self.input_signature()]),
                SERVING_SIGNATURE: (serve_examples, [tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)]),
                RANK_SIGNATURE: (rank, [self.input_signature()])}

    def warmup_inputs(self) -> dict:
        """One TF Serving warmup request per signature: user 1, candidates 1..N, equal pxtrs."""
        spec = self.feature_spec
        width = spec[CANDIDATES].max_len
        row = {USER_FEATURE: np.ones(1, np.int64),
               CANDIDATES: np.minimum(np.arange(1, width + 1), spec[CANDIDATES].vocab_size)[None].astype(np.int64),
               **{name: np.full((1, width), 0.5, np.float32) for name in self.objectives}}
        examples = serialize_rows(row, spec.subset(self.input_names))
        return {PREDICT_SIGNATURE: row, SERVING_SIGNATURE: {EXAMPLES_INPUT: np.array(examples, dtype=object)},
                RANK_SIGNATURE: row}

    def get_config(self):
        return {**super().get_config(), "feature_spec": self.feature_spec.get_config(),
                "objectives": self.objectives, **self.network, "dcg_k": self.dcg_k,
                "weight_bounds": list(self.weight_bounds), "reference_sync_steps": self.reference_sync_steps}

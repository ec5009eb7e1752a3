"""Listwise ranking losses for list-shaped outputs, as Keras 3 losses (TF backend).

Each loss compares a list of items per example: ``y_true`` and ``y_pred`` of shape
(batch, list_size) hold graded relevance labels (>= 0) and model scores (logits). The math
is TF-Ranking's (``tfr.keras.losses``, loaded through :mod:`tfrec_onerec.compat.tf_ranking`);
these classes make it a serializable Keras 3 ``keras.losses.Loss`` usable in
``model.compile(loss=...)``. Because TF-Ranking's losses are tf-keras objects, they run here
on tensors only (never as layers of a Keras 3 model) with TF-Ranking's own reduction off;
Keras 3 reduces the per-list values (default: mean over the lists of the batch).

Conventions, as in TF-Ranking:

* **Padding**: an item whose label is negative (e.g. -1) is padding: it is dropped from the
  softmax, ranked last, and carries no gain, whatever its score. Lists of different lengths
  can share one padded array.
* **Lists with no relevant item** (all labels 0 or padding): the softmax and ApproxNDCG
  losses give them 0 (they still count in the batch mean); ListMLE gives them the
  likelihood of a random order.
* ``sample_weight`` is per list: shape (batch,) or (batch, 1).
* ``temperature`` divides the scores before the loss.

Two corrections to TF-Ranking 0.5.5 make padding exact (values are otherwise TF-Ranking's):

* Scores are shifted per list so that the best real item scores 0 (every loss here is
  invariant to that). TF-Ranking gives padded items a fixed score ``log(1e-10)``, so with
  padding its softmax loss was wrong for real scores far below -23 and its ListMLE returned
  -inf for scores above ~100.
* ListMLE: TF-Ranking adds ``log(m!)`` for m padded items (a constant without gradient); it
  is subtracted, so a padded list has the loss of the same list without its padding.

Models must use the TensorFlow backend of Keras 3. Loading a saved model that uses these
losses needs ``tfrec_onerec.losses`` imported (it registers them as ``tfrec_onerec>Name``).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from tfrec_onerec.compat import tf_ranking
from tfrec_onerec.serialization import register_serializable

__all__ = ["ApproxNDCGLoss", "ListMLELoss", "SoftmaxListwiseLoss"]


class _TFRankingLoss(keras.losses.Loss):
    """A Keras 3 loss that delegates to one TF-Ranking Keras loss; one value per list."""

    tfr_class = ""  # the name in tfr.keras.losses
    default_temperature = 1.0

    def __init__(self, temperature: float | None = None, name: str | None = None,
                 reduction: str = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)  # default: snake_case class name
        self.temperature = float(self.default_temperature if temperature is None else temperature)
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self._tfr_loss = None

    def _tfr(self):
        if self._tfr_loss is None:
            tfr = tf_ranking.load()
            # Reduction NONE: per-list values, reduced by Keras 3 (tf-keras' AUTO reduction
            # would also refuse to run inside a tf.distribute replica context).
            self._tfr_loss = getattr(tfr.keras.losses, self.tfr_class)(
                reduction=tf.keras.losses.Reduction.NONE, temperature=self.temperature)
        return self._tfr_loss

    def call(self, y_true, y_pred):
        y_pred = tf.cast(y_pred, tf.float32)
        y_true = tf.cast(y_true, tf.float32)
        if y_pred.shape.rank != 2:
            raise ValueError(f"{type(self).__name__} expects y_pred of shape (batch, list_size), got {y_pred.shape}; "
                             "reshape list scores of shape (batch, list_size, 1) with keras.layers.Reshape.")
        y_true = tf.reshape(y_true, tf.shape(y_pred))
        valid = y_true >= 0.0
        per_list = tf.reshape(self._tfr()(y_true, _shift_best_to_zero(y_pred, valid)), [-1])
        return self._correct(per_list, valid)

    def _correct(self, per_list, valid):
        """Adjusts TF-Ranking's per-list values (hook for subclasses)."""
        return per_list

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def _shift_best_to_zero(scores, valid):
    """Subtracts from each list the score of its best real (non-padding) item.

    The three losses are invariant to adding a constant to all scores of a list, but
    TF-Ranking replaces padded scores with fixed values (``log(1e-10)`` for the softmax and
    ListMLE), which are only negligible while real scores stay near 0: with real scores around
    -50 its softmax loss lets padding take most of the probability, and with scores around
    +100 its ListMLE returns -inf. After the shift the best real score is 0 in every list.
    The shift is a constant for the gradient (stop_gradient), which is exact by invariance.
    """
    best = tf.reduce_max(tf.where(valid, scores, tf.fill(tf.shape(scores), -float("inf"))), axis=1, keepdims=True)
    best = tf.where(tf.math.is_finite(best), best, tf.zeros_like(best))  # lists that are all padding
    return scores - tf.stop_gradient(best)


@register_serializable
class SoftmaxListwiseLoss(_TFRankingLoss):
    """Softmax cross-entropy over each list (TF-Ranking ``SoftmaxLoss``).

    Per list, with padding removed: ``loss = -sum_i y_i * log softmax(s / T)_i``, which is
    ``sum(y)`` times the cross-entropy between the normalized labels ``y / sum(y)`` and the
    softmax of the scores. With one relevant item of label 1 this is the sampled-softmax /
    "listwise" loss ``-log softmax(s / T)_pos``. A list with ``sum(y) = 0`` contributes 0.

    Args:
        temperature: T, divides the scores. Default 1.
        name, reduction, dtype: as for ``keras.losses.Loss``.
    """

    tfr_class = "SoftmaxLoss"


@register_serializable
class ApproxNDCGLoss(_TFRankingLoss):
    """Negative approximate NDCG (Qin et al. 2010; TF-Ranking ``ApproxNDCGLoss``).

    Per list: ``loss = -sum_i (2^y_i - 1) / log2(1 + r_i) / IDCG`` where the rank of item i
    is smoothed, ``r_i = 1 + sum_{j != i} sigmoid((s_j - s_i) / T)``, and ``IDCG`` is the
    DCG of the ideal order of the labels. Values lie in [-1, 0); a list without relevant
    items contributes 0.

    Args:
        temperature: T, the smoothness of the approximate ranks (smaller is closer to the
            true ranks and less smooth). Default 0.1, TF-Ranking's.
        name, reduction, dtype: as for ``keras.losses.Loss``.
    """

    tfr_class = "ApproxNDCGLoss"
    default_temperature = 0.1


@register_serializable
class ListMLELoss(_TFRankingLoss):
    """ListMLE (Xia et al. 2008; TF-Ranking ``ListMLELoss``).

    Per list: the negative log-likelihood of the order given by the labels (descending)
    under the Plackett-Luce model of the scores ``s / T``::

        loss = -sum_{r=1..n} log( exp(s_pi(r)) / sum_{q=r..n} exp(s_pi(q)) )

    where ``pi`` sorts the (non-padding) items by descending label. Items with equal labels
    are put in a random order (TF-Ranking shuffles ties), so with tied labels the loss is
    stochastic; it is deterministic when all labels of a list differ.

    Args:
        temperature: T, divides the scores. Default 1.
        name, reduction, dtype: as for ``keras.losses.Loss``.
    """

    tfr_class = "ListMLELoss"

    def _correct(self, per_list, valid):
        # TF-Ranking keeps m padded items at the end of the permutation with equal scores;
        # they add log(m) + log(m - 1) + ... = log(m!) to the loss (no gradient). Remove it so
        # that a padded list has the loss of the same list without padding.
        num_padded = tf.reduce_sum(tf.cast(tf.logical_not(valid), tf.float32), axis=1)
        return per_list - tf.math.lgamma(num_padded + 1.0)

"""Listwise ranking losses for list-shaped outputs, as Keras 3 losses.

Each loss scores a list of items per example: ``y_true`` and ``y_pred`` of shape
(batch, list_size) hold graded relevance labels and model scores. The math is TF-Ranking's
(through :mod:`tfrec_onerec.compat.tf_ranking`); these classes make it a serializable Keras 3
loss. As in TF-Ranking, an item whose label is negative (e.g. -1) is padding and ignored.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from tfrec_onerec.compat import tf_ranking
from tfrec_onerec.serialization import register_serializable


class _TFRankingLoss(keras.losses.Loss):
    """Wraps one TF-Ranking Keras loss class; returns one loss value per list."""

    tfr_class = ""
    default_temperature = 1.0

    def __init__(self, temperature: float | None = None, name: str | None = None,
                 reduction: str = "sum_over_batch_size", dtype=None):
        super().__init__(name=name or self.tfr_class, reduction=reduction, dtype=dtype)
        self.temperature = self.default_temperature if temperature is None else temperature

    def _tfr_loss(self):
        losses = tf_ranking.load().keras.losses
        return getattr(losses, self.tfr_class)(reduction=tf.keras.losses.Reduction.NONE,
                                                temperature=self.temperature)

    def call(self, y_true, y_pred):
        per_list = self._tfr_loss()(tf.cast(y_true, tf.float32), tf.cast(y_pred, tf.float32))
        return tf.reshape(per_list, [-1])

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@register_serializable
class SoftmaxListwiseLoss(_TFRankingLoss):
    """Softmax cross-entropy over each list: ``-sum_i y_i/sum(y) * log softmax(s/T)_i``.

    Args:
        temperature: divides the scores before the softmax. Default 1.
    """

    tfr_class = "SoftmaxLoss"


@register_serializable
class ApproxNDCGLoss(_TFRankingLoss):
    """Negative NDCG with ranks approximated by sigmoids of score differences (Qin et al. 2010).

    Args:
        temperature: smoothness of the approximate ranks (smaller is closer to the true
            ranks). Default 0.1, TF-Ranking's.
    """

    tfr_class = "ApproxNDCGLoss"
    default_temperature = 0.1


@register_serializable
class ListMLELoss(_TFRankingLoss):
    """ListMLE (Xia et al. 2008): negative log-likelihood of the label order under the
    Plackett-Luce model of the scores (ties in labels are shuffled by TF-Ranking).

    Args:
        temperature: divides the scores. Default 1.
    """

    tfr_class = "ListMLELoss"

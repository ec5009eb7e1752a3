"""How a multi-task model sums its task losses: fixed weights, uncertainty weighting, GradNorm.

* ``"fixed"``: ``sum_k w_k L_k`` with each task's ``weight``.
* ``"uncertainty"`` (Kendall, Gal and Cipolla, CVPR 2018): every task gets a learned
  log-variance ``s_k``; a regression task adds ``0.5 exp(-s_k) L_k + 0.5 s_k`` and a binary
  task ``exp(-s_k) L_k + 0.5 s_k`` (the paper's Gaussian and softmax likelihoods, with
  ``s = log sigma^2``), each times its ``weight``. Noisier tasks learn larger ``s_k``
  and count less; the ``0.5 s_k`` term keeps ``s_k`` from growing without bound.
* ``"gradnorm"`` (Chen et al., ICML 2018): the weights ``w_k`` are adapted every step so
  that the norms ``G_k = ||grad_W w_k L_k||`` on the last shared layer ``W`` move toward
  ``mean(G) * r_k^alpha``, where ``r_k`` is task k's loss ratio ``L_k / L_k(0)`` relative to
  the mean ratio (tasks that trained slower get larger gradients). The weights follow
  the gradient of ``sum_k |G_k - target_k|`` with the targets held constant (a sign step of
  size ``learning_rate * ||grad_W L_k||``), stay positive and are renormalised to sum to the
  tasks' total weight. ``L_k(0)`` is the loss of the first training batch.

Under a `tf.distribute` strategy GradNorm's weights take the first replica's update.
"""
from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from tfrec_onerec.serialization import register_serializable

LOSS_WEIGHTINGS = ("fixed", "uncertainty", "gradnorm")


def check_loss_weighting(name: str) -> str:
    if name not in LOSS_WEIGHTINGS:
        raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {name!r}.")
    return name


def fixed_total(losses, weights: Sequence[float]):
    """``sum_k weights[k] * losses[k]`` of a (tasks,) loss vector."""
    return ops.sum(losses * ops.convert_to_tensor(list(weights), dtype=losses.dtype))


@register_serializable
class UncertaintyWeighting(keras.layers.Layer):
    """Kendall et al.'s homoscedastic-uncertainty weighting (see the module docstring).

    Args:
        weights: each task's fixed weight.
        binary: per task, True for a classification (binary) loss, False for regression.

    Call:
        losses: (tasks,) the task losses. Returns the scalar total.
    """

    def __init__(self, weights: Sequence[float], binary: Sequence[bool], **kwargs):
        super().__init__(**kwargs)
        self.task_weights = [float(w) for w in weights]
        self.binary = [bool(b) for b in binary]

    def build(self, input_shape=None):
        self.log_variance = self.add_weight(name="log_variance", shape=(len(self.task_weights),),
                                            initializer="zeros")

    def call(self, losses):
        scale = ops.convert_to_tensor([1.0 if b else 0.5 for b in self.binary], dtype=losses.dtype)
        terms = scale * ops.exp(-self.log_variance) * losses + 0.5 * self.log_variance
        return fixed_total(terms, self.task_weights)

    def get_config(self):
        return {**super().get_config(), "weights": self.task_weights, "binary": self.binary}


@register_serializable
class GradNormWeighting(keras.layers.Layer):
    """GradNorm's adaptive task weights (see the module docstring).

    Args:
        weights: the initial task weights (their sum is kept).
        alpha: the asymmetry ``alpha`` (0: equal gradient norms). Default 1.5.
        learning_rate: step size of the weights. Default 0.025.

    Call:
        losses: (tasks,) the task losses. Returns the scalar ``sum_k w_k L_k`` (the weights
        are constants for the model's gradient).
    """

    def __init__(self, weights: Sequence[float], alpha: float = 1.5, learning_rate: float = 0.025, **kwargs):
        super().__init__(**kwargs)
        self.initial_weights = [float(w) for w in weights]
        self.alpha = float(alpha)
        self.learning_rate = float(learning_rate)

    def build(self, input_shape=None):
        n = len(self.initial_weights)
        self.task_weights = self.add_weight(name="task_weights", shape=(n,), trainable=False,
                                            initializer=keras.initializers.Constant(self.initial_weights),
                                            aggregation="only_first_replica")
        self.initial_losses = self.add_weight(name="initial_losses", shape=(n,), trainable=False,
                                              initializer="zeros", aggregation="only_first_replica")

    def call(self, losses):
        return ops.sum(ops.stop_gradient(self.task_weights) * losses)

    def update(self, losses, gradient_norms):
        """One GradNorm step of the weights.

        Args:
            losses: (tasks,) this batch's task losses (no gradient needed).
            gradient_norms: (tasks,) ``||grad_W L_k||`` of the *unweighted* losses.
        """
        losses = ops.stop_gradient(losses)
        first = ops.all(ops.equal(self.initial_losses, 0.0))
        self.initial_losses.assign(ops.where(first, losses, self.initial_losses))
        ratios = losses / ops.maximum(self.initial_losses, 1e-12)
        relative = ratios / ops.maximum(ops.mean(ratios), 1e-12)
        weighted_norms = self.task_weights * gradient_norms
        targets = ops.mean(weighted_norms) * relative ** self.alpha
        step = self.learning_rate * ops.sign(weighted_norms - targets) * gradient_norms
        weights = ops.maximum(self.task_weights - step, 1e-3)
        self.task_weights.assign(weights * (sum(self.initial_weights) / ops.sum(weights)))

    def get_config(self):
        return {**super().get_config(), "weights": self.initial_weights, "alpha": self.alpha,
                "learning_rate": self.learning_rate}

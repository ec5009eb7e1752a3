"""Sparse mixture-of-experts feed-forward: top-k routing with load balancing.

The feed-forward of the OneRec decoder (arXiv 2502.18965), interchangeable with the dense
:class:`~tfrec_onerec.layers.feed_forward.FeedForward` in a
:class:`~tfrec_onerec.layers.transformer.TransformerBlock`. Tokens are (batch, length,
dim); an optional *padding mask* (batch, length) bool, True at real tokens, leaves padded
tokens out of the load statistics and the balancing.
"""
from __future__ import annotations

import keras
from keras import ops

from tfrec_onerec.layers._validation import check_positive
from tfrec_onerec.serialization import register_serializable

BALANCE_METHODS = ("aux_loss", "loss_free", "none")


@register_serializable
class SparseMoE(keras.layers.Layer):
    """Sparse mixture-of-experts feed-forward: each token goes to its top-k of E experts.

    Each expert is a two-layer FFN ``E_e(x) = act(x W1_e + b1_e) W2_e + b2_e``. A linear
    router gives each token the expert probabilities ``p = softmax(x W_r)`` (E,). The token
    is sent to the k experts with the largest *selection scores* and mixed with gates
    renormalised over the chosen ones::

        chosen = top_k(p + b, k)                 (b = 0 unless balance == "loss_free")
        g_e    = p_e / sum_{e' in chosen} p_e'   for e in chosen, else 0     (sum_e g_e = 1)
        y      = sum_e g_e E_e(x)

    Load balancing (``balance``):

    * ``"aux_loss"`` (Switch Transformer / GShard): in training, adds
      ``aux_loss_weight * E * sum_e f_e P_e`` with :meth:`add_loss`, where ``f_e`` is the
      fraction of the (non-padding) token-to-expert assignments that went to expert e
      (``sum_e f_e = 1``; with top-k each token makes k assignments) and ``P_e`` the mean
      router probability of expert e. It equals ``aux_loss_weight`` under perfect balance
      and grows as routing concentrates; the gradient flows through ``P``.
    * ``"loss_free"`` (DeepSeek's auxiliary-loss-free balancing, Wang et al. 2024): a
      non-trainable per-expert bias ``b`` is added to the scores for the *selection* only
      (the gates still use ``p``). After each training call, outside the gradient,
      ``b_e += bias_update_rate * sign(1/E - f_e)``: over-loaded experts become less
      likely to be chosen, under-loaded ones more.
    * ``"none"``: plain top-k routing.

    Expert load: every training call adds its per-expert assignment counts (padding
    excluded) to a non-trainable counter; :meth:`expert_load` returns the fractions since
    the last :meth:`reset_expert_load` (e.g. per epoch). :meth:`batch_load` gives the load
    of any batch without touching state (for evaluation or inference).

    Computation: every expert is run on every token with dense einsums and the outputs are
    weighted by the (mostly zero) gate matrix. That costs E/k times the FLOPs of true sparse
    dispatch, but has static shapes, no gathers/scatters, exports to plain TF ops and is
    faster on CPU at the sizes we train (E <= 32, d <= 256); expert-parallel dispatch is
    what the paper-scale models need instead.

    Args:
        num_experts: E, the number of experts.
        hidden_dim: hidden width of each expert FFN.
        top_k: k, experts per token (1 <= k <= E). Default 2.
        balance: ``"aux_loss"`` (default), ``"loss_free"`` or ``"none"``.
        aux_loss_weight: coefficient of the auxiliary loss. Default 0.01.
        bias_update_rate: u, the loss-free bias step per training call. Default 1e-3.
        activation: activation of the experts' hidden layer. Default ``"gelu"``.
        output_dim: output width; ``None`` (default): the input width.

    Call:
        inputs: (batch, length, dim) tokens. padding_mask: optional (batch, length) bool,
        True at real tokens. training: bool.
        Returns (batch, length, output_dim).

    Example:
        >>> moe = SparseMoE(num_experts=4, hidden_dim=32, top_k=2, balance="loss_free")
        >>> y = moe(keras.ops.ones((2, 3, 8)), training=True)
        >>> moe.expert_load().sum()
        1.0
    """

    def __init__(self, num_experts: int, hidden_dim: int, top_k: int = 2, balance: str = "aux_loss",
                 aux_loss_weight: float = 0.01, bias_update_rate: float = 1e-3, activation: str = "gelu",
                 output_dim: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.num_experts = check_positive("SparseMoE", "num_experts", num_experts)
        self.hidden_dim = check_positive("SparseMoE", "hidden_dim", hidden_dim)
        self.top_k = check_positive("SparseMoE", "top_k", top_k)
        if self.top_k > self.num_experts:
            raise ValueError(f"SparseMoE: top_k must be <= num_experts={self.num_experts}, got {top_k}.")
        if balance not in BALANCE_METHODS:
            raise ValueError(f"SparseMoE: balance must be one of {BALANCE_METHODS}, got {balance!r}.")
        if aux_loss_weight < 0 or bias_update_rate < 0:
            raise ValueError(f"SparseMoE: aux_loss_weight and bias_update_rate must be >= 0, got "
                             f"{aux_loss_weight} and {bias_update_rate}.")
        self.balance = balance
        self.aux_loss_weight = float(aux_loss_weight)
        self.bias_update_rate = float(bias_update_rate)
        self.activation = activation
        self.output_dim = None if output_dim is None else check_positive("SparseMoE", "output_dim", output_dim)
        self._activation_fn = keras.activations.get(activation)

    def build(self, inputs_shape, padding_mask_shape=None):
        dim, experts, hidden = int(inputs_shape[-1]), self.num_experts, self.hidden_dim
        out = self.output_dim or dim
        glorot = keras.initializers.GlorotUniform
        # One expert needs no routing: its router is kept (same weights) but not trained.
        self.router_kernel = self.add_weight(name="router_kernel", shape=(dim, experts), initializer=glorot(),
                                             trainable=experts > 1)
        # Per expert, fan-in/fan-out are (dim, hidden) and (hidden, out), as for a Dense layer.
        self.expert_kernel_1 = self.add_weight(name="expert_kernel_1", shape=(experts, dim, hidden),
                                               initializer=keras.initializers.VarianceScaling(
                                                   2.0 / (1.0 + hidden / dim), "fan_in", "uniform"))
        self.expert_bias_1 = self.add_weight(name="expert_bias_1", shape=(experts, hidden), initializer="zeros")
        self.expert_kernel_2 = self.add_weight(name="expert_kernel_2", shape=(experts, hidden, out),
                                               initializer=keras.initializers.VarianceScaling(
                                                   2.0 / (1.0 + out / hidden), "fan_in", "uniform"))
        self.expert_bias_2 = self.add_weight(name="expert_bias_2", shape=(experts, out), initializer="zeros")
        self.routing_bias = self.add_weight(name="routing_bias", shape=(experts,), initializer="zeros",
                                            trainable=False, aggregation="mean")
        self.load_counts = self.add_weight(name="load_counts", shape=(experts,), initializer="zeros",
                                           trainable=False, aggregation="sum")

    # -- routing ---------------------------------------------------------------------------
    def route(self, inputs):
        """The routing decision for each token.

        Args:
            inputs: (batch, length, dim).

        Returns:
            ``(probs, chosen, gates)``, each (batch, length, E): router probabilities,
            0/1 indicators of the k chosen experts, and gates (zero off the chosen experts,
            summing to 1 per token).
        """
        if not self.built:  # called directly, before the first __call__
            self.build(inputs.shape)
            self.built = True
        logits = ops.matmul(inputs, ops.cast(self.router_kernel, inputs.dtype))
        # One expert: the softmax is 1 (Keras warns on a softmax over an axis of size 1).
        probs = ops.ones_like(logits) if self.num_experts == 1 else ops.softmax(logits, axis=-1)
        selection = probs
        if self.balance == "loss_free":
            selection = probs + ops.cast(self.routing_bias, probs.dtype)
        _, indices = ops.top_k(ops.stop_gradient(selection), self.top_k)
        chosen = ops.sum(ops.one_hot(indices, self.num_experts, dtype=probs.dtype), axis=-2)
        kept = probs * chosen
        gates = kept / ops.maximum(ops.sum(kept, axis=-1, keepdims=True), 1e-9)
        return probs, chosen, gates

    def _token_weights(self, inputs, padding_mask):
        """(batch, length, 1) float: 1 at real tokens, 0 at padding."""
        if padding_mask is None:
            return ops.ones(ops.shape(inputs)[:-1] + (1,), dtype=inputs.dtype)
        return ops.expand_dims(ops.cast(padding_mask, inputs.dtype), -1)

    def _statistics(self, probs, chosen, weights):
        """(assignment counts (E,), load f (E,), mean probability P (E,)) over real tokens."""
        counts = ops.sum(ops.reshape(chosen * weights, (-1, self.num_experts)), axis=0)
        tokens = ops.maximum(ops.sum(weights), 1.0)
        load = counts / (tokens * self.top_k)
        mean_prob = ops.sum(ops.reshape(probs * weights, (-1, self.num_experts)), axis=0) / tokens
        return counts, load, mean_prob

    def batch_load(self, inputs, padding_mask=None):
        """(E,) fraction of the batch's token-to-expert assignments per expert (sums to 1);
        stateless. Padded tokens are left out. Args as :meth:`call`."""
        probs, chosen, _ = self.route(inputs)
        return self._statistics(probs, chosen, self._token_weights(inputs, padding_mask))[1]

    def expert_load(self):
        """numpy (E,): fraction of assignments per expert over the training calls since the
        last :meth:`reset_expert_load` (sums to 1; uniform before any training call)."""
        counts = ops.convert_to_numpy(self.load_counts).astype("float64")
        total = counts.sum()
        return counts / total if total > 0 else counts * 0.0 + 1.0 / self.num_experts

    def reset_expert_load(self):
        """Zeroes the load counter (call at the start of an epoch to get per-epoch load)."""
        self.load_counts.assign(ops.zeros_like(self.load_counts))

    # -- forward ---------------------------------------------------------------------------
    def call(self, inputs, padding_mask=None, training=None):
        probs, chosen, gates = self.route(inputs)
        dtype = inputs.dtype
        hidden = ops.einsum("btd,edh->bteh", inputs, ops.cast(self.expert_kernel_1, dtype))
        hidden = self._activation_fn(hidden + ops.cast(self.expert_bias_1, dtype))
        expert_out = ops.einsum("bteh,eho->bteo", hidden, ops.cast(self.expert_kernel_2, dtype))
        expert_out = expert_out + ops.cast(self.expert_bias_2, dtype)
        outputs = ops.einsum("bte,bteo->bto", gates, expert_out)
        if training:
            counts, load, mean_prob = self._statistics(probs, chosen, self._token_weights(inputs, padding_mask))
            self.load_counts.assign_add(ops.stop_gradient(ops.cast(counts, self.load_counts.dtype)))
            if self.balance == "aux_loss" and self.aux_loss_weight > 0:
                self.add_loss(self.aux_loss_weight * self.num_experts
                              * ops.sum(ops.stop_gradient(load) * mean_prob))
            elif self.balance == "loss_free" and self.bias_update_rate > 0:
                step = self.bias_update_rate * ops.sign(1.0 / self.num_experts - ops.stop_gradient(load))
                self.routing_bias.assign_add(ops.cast(step, self.routing_bias.dtype))
        return outputs

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        return tuple(inputs_shape)[:-1] + (self.output_dim or inputs_shape[-1],)

    def get_config(self):
        return {**super().get_config(), "num_experts": self.num_experts, "hidden_dim": self.hidden_dim,
                "top_k": self.top_k, "balance": self.balance, "aux_loss_weight": self.aux_loss_weight,
                "bias_update_rate": self.bias_update_rate, "activation": self.activation,
                "output_dim": self.output_dim}

"""Transformer building blocks: learned positions, feed-forward (dense or sparse MoE), blocks.

These are the parts that SASRec (causal self-attention over a behaviour sequence) and the
OneRec decoder (causal self-attention + cross-attention to an encoder + sparse MoE
feed-forward) are composed of.

Masks (the same convention in every layer here)
-----------------------------------------------
* A *padding mask* is a bool tensor (batch, length), True at real tokens (for id sequences
  of :mod:`tfrec_onerec.features.spec`: ``ids != 0``). Padded keys are never attended to;
  the outputs of a :class:`TransformerBlock` at padded query positions are set to zero, and
  padded tokens do not count in the MoE's load statistics or balancing.
* *Causal* attention lets position ``i`` attend to positions ``j <= i`` only, so changing a
  later token never changes an earlier output. With the package's right padding (real
  tokens first, padding after) a real position never even sees padding.
* A query row whose keys are all masked (e.g. cross-attention to an empty history) gets a
  finite output (Keras' masked softmax then averages all keys); the caller decides what an
  empty memory means.

Blocks are pre-LayerNorm (``x + f(LN(x))``): stacks of them need a final LayerNorm, which
the model owns.

Incremental decoding
--------------------
A causal :class:`TransformerBlock` can also decode a few tokens at a time
(:meth:`TransformerBlock.call_cached`): the self-attention keys and values of earlier
positions come from a fixed-shape cache (``init_cache``: (rows, max_length, heads,
head_dim), the new positions written into it, so a ``tf.while_loop`` carries it with
a constant shape), the memory's cross-attention keys and values are projected once
(``memory_cache``) and may be shared by groups of rows (the beams of one user), and the
feed-forward runs on the new tokens only. The weights are those of the full path, whose
outputs it reproduces (inference, no padding among the decoded tokens).
"""
from __future__ import annotations

import keras
from keras import ops

from tfrec_onerec.serialization import register_serializable

BALANCE_METHODS = ("aux_loss", "loss_free", "none")


def _check_positive(owner: str, name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}.")
    return int(value)


def _check_rate(owner: str, name: str, value) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{owner}: {name} must be in [0, 1), got {value!r}.")
    return float(value)


@register_serializable
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute position embeddings: one trainable vector per position.

    ``P[start_index + t]`` for the positions ``t = 0..length-1`` of the input, broadcast over
    the batch; add it to the token embeddings. Position 0 is the first token of the
    (right-padded) sequence, i.e. the oldest kept item of a history.

    Args:
        max_len: the number of positions (longest sequence the layer accepts).
        initializer: initializer of the (max_len, dim) table (a Keras initializer or its
            name/config). Default ``None``: normal with stddev 0.02.

    Call:
        inputs: (batch, length, dim) float tensor (only its shape is used).
        start_index: int, the position of the first token. Default 0.
        Returns (batch, length, dim): the position embeddings.

    Example:
        >>> x = keras.ops.ones((2, 5, 8))
        >>> PositionEmbedding(max_len=50)(x).shape
        (2, 5, 8)
    """

    def __init__(self, max_len: int, initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.max_len = _check_positive("PositionEmbedding", "max_len", max_len)
        self.initializer = (keras.initializers.RandomNormal(stddev=0.02) if initializer is None
                            else keras.initializers.get(initializer))

    def build(self, input_shape):
        self.embeddings = self.add_weight(name="embeddings", shape=(self.max_len, int(input_shape[-1])),
                                          initializer=self.initializer)

    def call(self, inputs, start_index=0):
        length = inputs.shape[1]
        if isinstance(length, int) and isinstance(start_index, int) and start_index + length > self.max_len:
            raise ValueError(f"PositionEmbedding: a sequence of length {length} starting at {start_index} exceeds "
                             f"max_len={self.max_len}.")
        positions = ops.slice(self.embeddings, (start_index, 0), (ops.shape(inputs)[1], self.embeddings.shape[1]))
        return ops.broadcast_to(ops.expand_dims(positions, 0), ops.shape(inputs))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "max_len": self.max_len,
                "initializer": keras.initializers.serialize(self.initializer)}


@register_serializable
class FeedForward(keras.layers.Layer):
    """The position-wise two-layer feed-forward network of a transformer block.

    ``FFN(x) = act(x W1 + b1) W2 + b2``, applied to every token independently.

    Args:
        hidden_dim: width of the hidden layer; ``None`` (default): 4 x the input width.
        activation: Keras activation of the hidden layer. Default ``"gelu"``.
        dropout: dropout on the hidden layer. Default 0.
        output_dim: width of the output; ``None`` (default): the input width.

    Call:
        inputs: (batch, length, dim). padding_mask: ignored (accepted so that dense and MoE
        feed-forwards are interchangeable in :class:`TransformerBlock`).
        Returns (batch, length, output_dim).
    """

    def __init__(self, hidden_dim: int | None = None, activation: str = "gelu", dropout: float = 0.0,
                 output_dim: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = None if hidden_dim is None else _check_positive("FeedForward", "hidden_dim", hidden_dim)
        self.output_dim = None if output_dim is None else _check_positive("FeedForward", "output_dim", output_dim)
        self.activation = activation
        self.dropout = _check_rate("FeedForward", "dropout", dropout)
        self.dropout_layer = keras.layers.Dropout(self.dropout)

    def build(self, inputs_shape, padding_mask_shape=None):
        dim = int(inputs_shape[-1])
        hidden = self.hidden_dim or 4 * dim
        self.hidden_layer = keras.layers.Dense(hidden, activation=self.activation, name="hidden")
        self.output_layer = keras.layers.Dense(self.output_dim or dim, name="output")
        self.hidden_layer.build(tuple(inputs_shape))
        self.output_layer.build(tuple(inputs_shape)[:-1] + (hidden,))

    def call(self, inputs, padding_mask=None, training=None):
        return self.output_layer(self.dropout_layer(self.hidden_layer(inputs), training=training))

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        return tuple(inputs_shape)[:-1] + (self.output_dim or inputs_shape[-1],)

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim, "activation": self.activation,
                "dropout": self.dropout, "output_dim": self.output_dim}


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
        self.num_experts = _check_positive("SparseMoE", "num_experts", num_experts)
        self.hidden_dim = _check_positive("SparseMoE", "hidden_dim", hidden_dim)
        self.top_k = _check_positive("SparseMoE", "top_k", top_k)
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
        self.output_dim = None if output_dim is None else _check_positive("SparseMoE", "output_dim", output_dim)
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


def attention_mask(padding_mask=None, causal: bool = False, length=None, batch_size=None):
    """The (batch, length, length) bool self-attention mask: key j visible to query i.

    ``mask[b, i, j] = padding_mask[b, j] and (j <= i if causal)``.

    Args:
        padding_mask: (batch, length) bool, True at real tokens, or None (no padding).
        causal: also hide later positions.
        length: the sequence length (needed when `padding_mask` is None).
        batch_size: the batch size (needed when `padding_mask` is None).

    Returns:
        (batch, length, length) bool tensor, or None when there is nothing to mask.
    """
    if padding_mask is None and not causal:
        return None
    if padding_mask is not None:
        padding_mask = ops.cast(padding_mask, "bool")
        batch_size, length = ops.shape(padding_mask)[0], ops.shape(padding_mask)[1]
    mask = None
    if causal:
        positions = ops.arange(length)
        mask = ops.expand_dims(positions[None, :] <= positions[:, None], 0)  # (1, T, T)
    if padding_mask is not None:
        keys = ops.expand_dims(padding_mask, 1)  # (B, 1, T)
        mask = keys if mask is None else ops.logical_and(mask, keys)
    return ops.broadcast_to(mask, (batch_size, length, length))


def _write_positions(cache, values, start):
    """``cache`` (rows, T, heads, dim) with ``values`` (rows, n, heads, dim) written at positions
    ``start .. start + n - 1`` of axis 1 (the same in every row); the static shape is kept,
    so a ``tf.while_loop`` carries the cache unchanged in shape."""
    end = start + ops.shape(values)[1]
    written = ops.concatenate([cache[:, :start], ops.cast(values, cache.dtype), cache[:, end:]], axis=1)
    return ops.reshape(written, ops.shape(cache))


def _cached_attention(attention, query, key, value, visible=None, grouped: bool = False):
    """Multi-head attention on projected heads (the incremental path of :class:`TransformerBlock`).

    Args:
        attention: the ``keras.layers.MultiHeadAttention`` whose output projection and
            scale (1 / sqrt(key_dim)) are used.
        query: (rows, n, heads, key_dim) projected queries.
        key, value: (rows, S, heads, key_dim / value_dim) projected keys and values, or with
            `grouped` (batch, S, ...) shared by groups of query rows: rows = groups x batch,
            row ``r`` reads key/value row ``r // groups``.
        visible: optional bool mask, (n, S), or (batch, n, S) with `grouped`, True where
            the key may be attended to. A query with no visible key averages all keys, as
            Keras' dot-product attention does.
        grouped: the keys are shared by groups of query rows (cross-attention of beams).

    Returns:
        (rows, n, dim) the attention output after the output projection.
    """
    query = query * ops.cast(1.0 / float(attention.key_dim) ** 0.5, query.dtype)
    rows, length, heads, depth = ops.shape(query)[0], ops.shape(query)[1], query.shape[2], query.shape[3]
    if grouped:  # batched matmuls per user and head over all the user's beams
        query = ops.reshape(query, (ops.shape(key)[0], -1, length, heads, depth))  # (B, G, n, H, D)
        scores = ops.einsum("bgnhd,bshd->bgnsh", query, key)
        visible = None if visible is None else ops.cast(visible, "bool")[:, None, :, :, None]
    else:  # a few keys per row: products and sums beat thousands of tiny matmuls
        scores = ops.sum(query[:, :, None] * key[:, None], axis=-1)  # (rows, n, S, H)
        visible = None if visible is None else ops.cast(visible, "bool")[None, :, :, None]
    if visible is not None:
        scores = ops.where(visible, scores, ops.cast(-1e9, scores.dtype))
    weights = ops.softmax(scores, axis=-2)
    if grouped:
        outputs = ops.reshape(ops.einsum("bgnsh,bshd->bgnhd", weights, value), (rows, length, heads, -1))
    else:
        outputs = ops.sum(weights[..., None] * value[:, None], axis=2)
    return attention.output_dense(outputs)


@register_serializable
class TransformerBlock(keras.layers.Layer):
    """One pre-LayerNorm transformer block: self-attention, optional cross-attention, FFN.

    ::

        x = x + Dropout(SelfAttention(LN(x)))            (causal if `causal`; padded keys hidden)
        x = x + Dropout(CrossAttention(LN(x), memory))   (only if `cross_attention`)
        x = x + Dropout(FFN(LN(x)))                      (dense FeedForward or SparseMoE)
        x = x * padding_mask                             (padded positions output zeros)

    With ``causal=True`` it is SASRec's block (self-attention with a causal mask, Kang &
    McAuley 2018) and, with ``cross_attention=True`` and a :class:`SparseMoE` as
    ``feed_forward``, a OneRec decoder block (arXiv 2502.18965). Attention is Keras'
    ``MultiHeadAttention`` given an explicit boolean mask. Causal blocks also decode
    incrementally with a key/value cache: :meth:`init_cache`, :meth:`memory_cache`,
    :meth:`call_cached`.

    Args:
        num_heads: attention heads.
        key_dim: width of each head; ``None`` (default): input width // num_heads.
        feed_forward: the feed-forward layer, any layer called as
            ``ffn(x, padding_mask=..., training=...)`` that keeps the width (a
            :class:`FeedForward` or :class:`SparseMoE`); ``None`` (default): a
            :class:`FeedForward` with ``ffn_dim`` hidden units and ``activation``.
        ffn_dim: hidden width of the default feed-forward; ``None``: 4 x the input width.
        activation: activation of the default feed-forward. Default ``"gelu"``.
        causal: causal self-attention. Default False.
        cross_attention: add a cross-attention sub-layer to a ``memory``. Default False.
        dropout: dropout on attention weights and on each residual branch. Default 0.
        layer_norm_epsilon: LayerNorm epsilon. Default 1e-6.

    Call:
        inputs: (batch, length, dim) float.
        padding_mask: optional (batch, length) bool, True at real tokens.
        memory: (batch, memory_length, memory_dim), required iff ``cross_attention``.
        memory_mask: optional (batch, memory_length) bool, True at real memory tokens.
        training: bool.
        Returns (batch, length, dim).
    """

    def __init__(self, num_heads: int, key_dim: int | None = None, feed_forward: keras.layers.Layer | None = None,
                 ffn_dim: int | None = None, activation: str = "gelu", causal: bool = False,
                 cross_attention: bool = False, dropout: float = 0.0, layer_norm_epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = _check_positive("TransformerBlock", "num_heads", num_heads)
        self.key_dim = None if key_dim is None else _check_positive("TransformerBlock", "key_dim", key_dim)
        self.ffn_dim = ffn_dim
        self.activation = activation
        self.causal = bool(causal)
        self.cross_attention = bool(cross_attention)
        self.dropout = _check_rate("TransformerBlock", "dropout", dropout)
        self.layer_norm_epsilon = layer_norm_epsilon
        if feed_forward is not None and not isinstance(feed_forward, keras.layers.Layer):
            raise ValueError(f"TransformerBlock: feed_forward must be a Keras layer or None, got "
                             f"{type(feed_forward).__name__}.")
        self.feed_forward = feed_forward if feed_forward is not None else FeedForward(
            ffn_dim, activation=activation, dropout=self.dropout, name="feed_forward")
        self.self_attention_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon,
                                                                   name="self_attention_norm")
        self.feed_forward_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="feed_forward_norm")
        self.cross_attention_norm = (keras.layers.LayerNormalization(epsilon=layer_norm_epsilon,
                                                                     name="cross_attention_norm")
                                     if self.cross_attention else None)
        self.residual_dropout = keras.layers.Dropout(self.dropout)

    def build(self, inputs_shape, padding_mask_shape=None, memory_shape=None, memory_mask_shape=None):
        inputs_shape = tuple(inputs_shape)
        dim = int(inputs_shape[-1])
        key_dim = self.key_dim or dim // self.num_heads
        if key_dim < 1:
            raise ValueError(f"TransformerBlock: input width {dim} is smaller than num_heads={self.num_heads}.")
        self.self_attention = keras.layers.MultiHeadAttention(self.num_heads, key_dim, dropout=self.dropout,
                                                              name="self_attention")
        self.self_attention_norm.build(inputs_shape)
        self.self_attention.build(inputs_shape, inputs_shape)
        if self.cross_attention:
            if memory_shape is None:
                raise ValueError("TransformerBlock: cross_attention=True needs a `memory` tensor "
                                 "(batch, memory_length, memory_dim).")
            self.cross_attention_layer = keras.layers.MultiHeadAttention(self.num_heads, key_dim,
                                                                         dropout=self.dropout, name="cross_attention")
            self.cross_attention_norm.build(inputs_shape)
            self.cross_attention_layer.build(inputs_shape, tuple(memory_shape))
        self.feed_forward_norm.build(inputs_shape)
        if not self.feed_forward.built:  # a deserialized feed-forward arrives built
            self.feed_forward.build(inputs_shape)
        out = self.feed_forward.compute_output_shape(inputs_shape)
        if tuple(out)[-1] != dim:
            raise ValueError(f"TransformerBlock: feed_forward must keep the width {dim}, it outputs {out[-1]}.")

    def call(self, inputs, padding_mask=None, memory=None, memory_mask=None, training=None):
        x = inputs
        shape = ops.shape(x)
        mask = attention_mask(padding_mask, self.causal, length=shape[1], batch_size=shape[0])
        h = self.self_attention_norm(x)
        h = self.self_attention(h, h, attention_mask=mask, training=training)
        x = x + self.residual_dropout(h, training=training)
        if self.cross_attention:
            if memory is None:
                raise ValueError("TransformerBlock: cross_attention=True needs `memory`.")
            cross_mask = None
            if memory_mask is not None:
                cross_mask = ops.broadcast_to(ops.expand_dims(ops.cast(memory_mask, "bool"), 1),
                                              (shape[0], shape[1], ops.shape(memory)[1]))
            h = self.cross_attention_layer(self.cross_attention_norm(x), memory, attention_mask=cross_mask,
                                           training=training)
            x = x + self.residual_dropout(h, training=training)
        h = self.feed_forward(self.feed_forward_norm(x), padding_mask=padding_mask, training=training)
        x = x + self.residual_dropout(h, training=training)
        if padding_mask is not None:
            x = x * ops.expand_dims(ops.cast(padding_mask, x.dtype), -1)
        return x

    # -- incremental (cached) decoding ------------------------------------------------------
    def init_cache(self, batch_size, max_length: int, dtype: str = "float32") -> dict:
        """An empty self-attention key/value cache for :meth:`call_cached`.

        Args:
            batch_size: rows (int or scalar int tensor), e.g. users x beams.
            max_length: positions the cache holds (the longest sequence to decode).
            dtype: dtype of the cached keys and values. Default float32.

        Returns:
            ``{"key": zeros (batch, max_length, heads, key_dim), "value": zeros (batch,
            max_length, heads, value_dim)}``.
        """
        self._check_cached_decoding()
        attention = self.self_attention
        max_length = _check_positive("TransformerBlock.init_cache", "max_length", max_length)
        return {"key": ops.zeros((batch_size, max_length, attention.num_heads, attention.key_dim), dtype),
                "value": ops.zeros((batch_size, max_length, attention.num_heads, attention.value_dim), dtype)}

    def memory_cache(self, memory) -> dict:
        """The cross-attention keys and values of `memory`, projected once for all decoding steps.

        Args:
            memory: (batch, memory_length, memory_dim), the same memory :meth:`call` reads.

        Returns:
            ``{"key": (batch, memory_length, heads, key_dim), "value": (batch, memory_length,
            heads, value_dim)}``.
        """
        self._check_cached_decoding()
        if not self.cross_attention:
            raise ValueError("TransformerBlock.memory_cache: the block has no cross-attention "
                             "(cross_attention=False).")
        return {"key": self.cross_attention_layer.key_dense(memory),
                "value": self.cross_attention_layer.value_dense(memory)}

    def call_cached(self, inputs, cache: dict, start, memory_cache: dict | None = None, memory_mask=None):
        """Incremental decoding: the block's output for new tokens given a cache of the earlier ones.

        `inputs` are the tokens at positions ``start .. start + n - 1`` of every row (the same
        positions in all rows); their self-attention keys and values are written into `cache`
        at those positions, and each new token attends to the cached positions ``<= its own``.
        The outputs equal :meth:`call`'s (causal, no padding among the decoded tokens) at
        those positions, with the same weights (the Keras ``MultiHeadAttention`` sub-layers'
        own projections), computed for the ``n`` new tokens only (the feed-forward, a
        :class:`SparseMoE` included, sees only them). Inference only: no dropout. The token
        rows may be grouped over the memory rows: with ``rows = groups * batch`` (e.g. the
        beams of a beam search, rows of one user consecutive), row ``r`` reads memory row
        ``r // groups``, so the memory is projected and stored once per user.

        Args:
            inputs: (rows, n, dim) the new tokens (none of them padding).
            cache: :meth:`init_cache`'s dict, (rows, max_length, heads, head_dim) keys/values.
            start: int scalar (Python or tensor), the position of the first new token.
            memory_cache: :meth:`memory_cache` of the memory (batch, memory_length, ...),
                required iff ``cross_attention``.
            memory_mask: optional (batch, memory_length) bool, True at real memory tokens.

        Returns:
            ``(outputs (rows, n, dim), new cache)`` (the cache with the new positions written).

        Raises:
            ValueError: the block is not causal or not built; cross-attention without
                `memory_cache`.
        """
        self._check_cached_decoding()
        x = inputs
        attention = self.self_attention
        h = self.self_attention_norm(x)
        start = ops.cast(start, "int32")
        positions = start + ops.arange(ops.shape(x)[1], dtype="int32")  # (n,)
        cache = {name: _write_positions(cache[name], dense(h), start)
                 for name, dense in (("key", attention.key_dense), ("value", attention.value_dense))}
        visible = ops.arange(ops.shape(cache["key"])[1], dtype="int32")[None, :] <= positions[:, None]  # (n, T)
        h = _cached_attention(attention, attention.query_dense(h), cache["key"], cache["value"], visible)
        x = x + h
        if self.cross_attention:
            if memory_cache is None:
                raise ValueError("TransformerBlock.call_cached: cross_attention=True needs `memory_cache` "
                                 "(from memory_cache(memory)).")
            layer = self.cross_attention_layer
            visible = None if memory_mask is None else ops.cast(memory_mask, "bool")[:, None, :]  # (batch, 1, M)
            x = x + _cached_attention(layer, layer.query_dense(self.cross_attention_norm(x)), memory_cache["key"],
                                      memory_cache["value"], visible, grouped=True)
        x = x + self.feed_forward(self.feed_forward_norm(x), training=False)
        return x, cache

    def _check_cached_decoding(self):
        if not self.causal:
            raise ValueError("TransformerBlock: cached decoding needs causal self-attention (causal=True).")
        if not self.built:
            raise ValueError("TransformerBlock: build the block (call it once) before cached decoding.")

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None, memory_shape=None,
                             memory_mask_shape=None):
        return tuple(inputs_shape)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
                "feed_forward": keras.saving.serialize_keras_object(self.feed_forward),
                "ffn_dim": self.ffn_dim, "activation": self.activation, "causal": self.causal,
                "cross_attention": self.cross_attention, "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("feed_forward") is not None:
            config["feed_forward"] = keras.saving.deserialize_keras_object(config["feed_forward"])
        return cls(**config)

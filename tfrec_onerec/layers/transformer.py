"""The transformer block, its attention masks and its key/value cache for incremental decoding.

With the learned positions (:mod:`tfrec_onerec.layers.position_embedding`) and the
feed-forwards (:mod:`tfrec_onerec.layers.feed_forward`, :mod:`tfrec_onerec.layers.sparse_moe`),
these are the parts that SASRec (causal self-attention over a behaviour sequence) and the
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
  finite output; the caller decides what an empty memory means. Keras' two attention paths
  differ here: with dropout (its einsum path) such a row attends to nothing (zero weights,
  the output projection's bias), without dropout (``dot_product_attention``) it averages all
  keys. Right-padded self-attention never has such a row at a real token.

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

from tfrec_onerec.layers._validation import check_positive, check_rate
from tfrec_onerec.layers.feed_forward import FeedForward
from tfrec_onerec.serialization import register_serializable


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
    McAuley 2018) and, with ``cross_attention=True`` and a
    :class:`~tfrec_onerec.layers.sparse_moe.SparseMoE` as ``feed_forward``, a OneRec
    decoder block (arXiv 2502.18965). Attention is Keras' ``MultiHeadAttention`` given an
    explicit boolean mask. Causal blocks also decode incrementally with a key/value cache:
    :meth:`init_cache`, :meth:`memory_cache`, :meth:`call_cached`.

    Args:
        num_heads: attention heads.
        key_dim: width of each head; ``None`` (default): input width // num_heads.
        feed_forward: the feed-forward layer, any layer called as
            ``ffn(x, padding_mask=..., training=...)`` that keeps the width (a
            :class:`~tfrec_onerec.layers.feed_forward.FeedForward` or
            :class:`~tfrec_onerec.layers.sparse_moe.SparseMoE`); ``None`` (default): a
            ``FeedForward`` with ``ffn_dim`` hidden units and ``activation``.
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
        self.num_heads = check_positive("TransformerBlock", "num_heads", num_heads)
        self.key_dim = None if key_dim is None else check_positive("TransformerBlock", "key_dim", key_dim)
        self.ffn_dim = ffn_dim
        self.activation = activation
        self.causal = bool(causal)
        self.cross_attention = bool(cross_attention)
        self.dropout = check_rate("TransformerBlock", "dropout", dropout)
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
        max_length = check_positive("TransformerBlock.init_cache", "max_length", max_length)
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
        :class:`~tfrec_onerec.layers.sparse_moe.SparseMoE` included, sees only them).
        Inference only: no dropout. The token rows may be grouped over the memory rows: with
        ``rows = groups * batch`` (e.g. the beams of a beam search, rows of one user
        consecutive), row ``r`` reads memory row ``r // groups``, so the memory is projected
        and stored once per user.

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

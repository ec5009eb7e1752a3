"""OneRec: an encoder-decoder that writes the next session of items as semantic IDs.

Kuaishou's OneRec (arXiv 2502.18965; technical report arXiv 2506.13695). Items are written
as semantic IDs of ``L`` codes (:class:`~tfrec_onerec.models.generative.tokenizer.SemanticIDTokenizer`,
here with its collision digit as the last level). For a user:

* **Encoder**: three pathways become one memory of tokens: a *static* token (user id plus
  the user's categorical features), the *short-term* behaviour (the last ``S`` items, each
  embedded as the sum of its code embeddings, plus its own item-id embedding as the technical
  report's pathways embed items by their sparse features, plus a position) and the *positive-feedback*
  behaviour (the last ``P`` items with positive feedback, likewise); ``num_encoder_layers``
  transformer blocks over the concatenation (padded items hidden).
* **Decoder**: the target session of ``m`` items is the token sequence
  ``[BOS, s^1..s^L] x m``; ``num_decoder_layers`` blocks of causal self-attention,
  cross-attention to the encoder memory and a sparse mixture-of-experts feed-forward
  (:class:`~tfrec_onerec.layers.sparse_moe.SparseMoE`, top-k routing, load balancing by an
  auxiliary loss or the loss-free bias), then a softmax over the code vocabulary.
* **Loss**: next-token cross-entropy on the code tokens of every real target item (the
  BOS that follows an item is not predicted: it is always BOS).
* **Decoding**: :meth:`OneRec.recommend` runs beam search constrained to valid semantic
  IDs (:func:`~tfrec_onerec.models.generative.beam_search.constrained_beam_search` over a
  :class:`~tfrec_onerec.layers.semantic_id_trie.SemanticIDTrie`) inside the graph; sessions
  never repeat an item. :func:`tfrec_onerec.export.export_saved_model` saves it as the
  ``recommend`` signature (:meth:`OneRec.serving_endpoints`).

Token ids: 0 padding, 1 BOS, then level ``l``'s codes at ``offset_l .. offset_l + K_l - 1``
with ``offset_0 = 2`` and ``offset_{l+1} = offset_l + K_l``. Code embeddings are shared by
the encoder's item embeddings and the decoder's input tokens.

Inputs (a dict):
    ``user_id`` (batch,) int64, hashed into ``user_buckets`` rows (0 = unknown);
    each of ``static_features`` (batch,) int64 ids ``0..vocab``;
    ``short_item_ids`` (batch, S) and ``positive_item_ids`` (batch, P) int64 item ids, oldest
    first, 0 = padding; ``session_item_ids`` (batch, m) int64 item ids of the target session
    (training only; 0 = no item). The names are those of :mod:`tfrec_onerec.data.sessions`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfrec_onerec.data.sessions import POSITIVE_FEATURE, SESSION_FEATURE, SHORT_FEATURE
from tfrec_onerec.layers.semantic_id_trie import SemanticIDTrie
from tfrec_onerec.layers.position_embedding import PositionEmbedding
from tfrec_onerec.layers.sparse_moe import SparseMoE
from tfrec_onerec.layers.transformer import TransformerBlock
from tfrec_onerec.models.base import per_replica
from tfrec_onerec.models.generative.beam_search import constrained_beam_search
from tfrec_onerec.models.registry import register
from tfrec_onerec.serialization import register_serializable

PAD, BOS = 0, 1
FIRST_CODE_TOKEN = 2
RECOMMEND_SIGNATURE = "recommend"
NEXT_ITEMS_SIGNATURE = "next_items"


def token_offsets(vocab_sizes: Sequence[int]) -> np.ndarray:
    """The token id of code 0 at each level: ``2, 2 + K_0, 2 + K_0 + K_1, ...``."""
    return FIRST_CODE_TOKEN + np.concatenate([[0], np.cumsum(vocab_sizes)[:-1]]).astype(np.int64)


@register("onerec", family="generative")
@register_serializable
class OneRec(keras.Model):
    """Generative OneRec: encoder over the user, MoE decoder writing a session of semantic IDs.

    Args:
        semantic_ids: int array (n_items, L) of unique semantic IDs (the tokenizer's
            ``semantic_ids``, collision digit included); None when rebuilt from config.
        item_ids: int array (n_items,) of the items' ids (>= 1), aligned with `semantic_ids`.
        vocab_sizes: codes per level (L,); default: ``max(code) + 1`` per level.
        max_item_id: the largest item id the lookup table holds; default ``max(item_ids)``.
        user_buckets: rows of the hashed user-id embedding (``user_id mod buckets``). Default 4096.
        static_features: ``{name: vocab_size}`` of categorical user features (ids 0..vocab).
        short_len, positive_len: S and P, the lengths of the behaviour pathways. Default 10, 20.
        session_len: m, items per generated session. Default 3.
        dim: model width d. Default 64.
        num_heads: attention heads. Default 4.
        num_encoder_layers, num_decoder_layers: blocks. Default 2, 2.
        ffn_dim: hidden width of the encoder FFNs and of each expert. Default 128.
        num_experts, top_k: the decoder's sparse MoE. Default 4, 2.
        balance: MoE load balancing, ``"aux_loss"`` or ``"loss_free"``. Default "aux_loss".
        aux_loss_weight: weight of the MoE auxiliary loss. Default 0.01.
        dropout: dropout in the blocks. Default 0.1.
        beam_size: beams of :meth:`recommend` (fixed in an export). Default 20.
        num_results: sessions returned by :meth:`recommend`. Default 10.
        item_id_embedding: add an embedding of the item id (``max_item_id + 1`` rows) to the
            code embeddings of each history item in the encoder; the decoder still writes
            codes only. Default True (MovieLens-100K Recall@10 0.080 -> 0.098 after one epoch).
        rank_size: items :meth:`next_items` ranks (and the exported ``next_items`` signature
            returns): the beam of one-item sessions. Default 100.

    Example:
        >>> tokenizer = SemanticIDTokenizer(num_levels=3, codebook_size=32)
        >>> tokenizer.fit(item_vectors.vectors, item_vectors.item_ids)
        >>> model = OneRec(tokenizer.semantic_ids, tokenizer.item_ids, session_len=3)
        >>> model.compile(optimizer="adam")
        >>> model.fit(features, features["session_item_ids"], epochs=3)
        >>> model.recommend(features)["item_ids"]  # (batch, num_results, 3)
    """

    def __init__(self, semantic_ids=None, item_ids=None, vocab_sizes: Sequence[int] | None = None,
                 max_item_id: int | None = None, user_buckets: int = 4096, static_features: Mapping | None = None,
                 short_len: int = 10, positive_len: int = 20, session_len: int = 3, dim: int = 64,
                 num_heads: int = 4, num_encoder_layers: int = 2, num_decoder_layers: int = 2, ffn_dim: int = 128,
                 num_experts: int = 4, top_k: int = 2, balance: str = "aux_loss", aux_loss_weight: float = 0.01,
                 dropout: float = 0.1, beam_size: int = 20, num_results: int = 10, trie_sizes: Mapping | None = None,
                 item_id_embedding: bool = True, rank_size: int = 100, **kwargs):
        super().__init__(**kwargs)
        if semantic_ids is not None:
            semantic_ids = np.asarray(semantic_ids, np.int64)
            item_ids = np.asarray(item_ids, np.int64)
            if semantic_ids.ndim != 2 or len(semantic_ids) != len(item_ids):
                raise ValueError(f"OneRec: semantic_ids must be (n_items, L) aligned with item_ids (n_items,); got "
                                 f"{semantic_ids.shape} and {item_ids.shape}.")
            if item_ids.min() < 1:
                raise ValueError(f"OneRec: item ids must be >= 1 (0 is padding); got min {item_ids.min()}.")
            vocab_sizes = vocab_sizes or (semantic_ids.max(axis=0) + 1).tolist()
            max_item_id = max_item_id or int(item_ids.max())
        elif vocab_sizes is None or max_item_id is None or trie_sizes is None:
            raise ValueError("OneRec needs `semantic_ids` and `item_ids` (or, from a config, vocab_sizes, "
                             "max_item_id and trie_sizes).")
        if beam_size < num_results:
            raise ValueError(f"OneRec: num_results ({num_results}) must be <= beam_size ({beam_size}).")
        self.vocab_sizes = [int(v) for v in vocab_sizes]
        self.num_levels = len(self.vocab_sizes)
        self.max_item_id = int(max_item_id)
        self.user_buckets = int(user_buckets)
        self.static_features = dict(static_features or {})
        self.short_len, self.positive_len, self.session_len = int(short_len), int(positive_len), int(session_len)
        self.dim, self.num_heads, self.ffn_dim = int(dim), int(num_heads), int(ffn_dim)
        self.num_encoder_layers, self.num_decoder_layers = int(num_encoder_layers), int(num_decoder_layers)
        self.num_experts, self.top_k, self.balance = int(num_experts), int(top_k), balance
        self.aux_loss_weight, self.dropout = float(aux_loss_weight), float(dropout)
        self.beam_size, self.num_results = int(beam_size), int(num_results)
        self.item_id_embedding = bool(item_id_embedding)
        self.rank_size = int(rank_size)
        self.offsets = token_offsets(self.vocab_sizes)
        self.vocab_size = int(self.offsets[-1] + self.vocab_sizes[-1])

        # Item id -> semantic ID (row 0 and unknown ids: -1), and the trie of valid IDs.
        self.trie = (SemanticIDTrie(semantic_ids, item_ids, name="trie") if semantic_ids is not None
                     else SemanticIDTrie(table_sizes=trie_sizes, name="trie"))
        self.item_codes = self.add_weight(name="item_codes", shape=(self.max_item_id + 1, self.num_levels),
                                          dtype="int64", trainable=False, initializer="zeros")
        if semantic_ids is not None:
            table = np.full((self.max_item_id + 1, self.num_levels), -1, np.int64)
            table[item_ids] = semantic_ids
            self.item_codes.assign(table)

        self.token_embedding = keras.layers.Embedding(self.vocab_size, self.dim, name="token_embedding")
        self.user_embedding = keras.layers.Embedding(self.user_buckets, self.dim, name="user_embedding")
        self.item_embedding = (keras.layers.Embedding(self.max_item_id + 1, self.dim, name="item_embedding")
                               if self.item_id_embedding else None)
        self.static_embeddings = {name: keras.layers.Embedding(size + 1, self.dim, name=f"static_{name}")
                                  for name, size in sorted(self.static_features.items())}
        self.pathway_embedding = keras.layers.Embedding(3, self.dim, name="pathway_embedding")  # static/short/positive
        self.short_positions = PositionEmbedding(self.short_len, name="short_positions")
        self.positive_positions = PositionEmbedding(self.positive_len, name="positive_positions")
        self.decoder_positions = PositionEmbedding(self.session_len * (self.num_levels + 1), name="decoder_positions")
        self.encoder_blocks = [TransformerBlock(self.num_heads, ffn_dim=self.ffn_dim, dropout=self.dropout,
                                                name=f"encoder_{i}") for i in range(self.num_encoder_layers)]
        self.decoder_blocks = [
            TransformerBlock(self.num_heads, causal=True, cross_attention=True, dropout=self.dropout,
                             feed_forward=SparseMoE(self.num_experts, self.ffn_dim, top_k=self.top_k,
                                                    balance=self.balance, aux_loss_weight=self.aux_loss_weight,
                                                    name=f"moe_{i}"),
                             name=f"decoder_{i}") for i in range(self.num_decoder_layers)]
        self.encoder_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="encoder_norm")
        self.decoder_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="decoder_norm")
        self.output_projection = keras.layers.Dense(self.vocab_size, name="output_projection")

    # -- pieces ------------------------------------------------------------------------------------
    def item_tokens(self, item_ids):
        """Item ids (...,) -> decoder tokens of their codes (..., L); unknown/padding items -> 0."""
        ids = ops.convert_to_tensor(item_ids, "int64")
        safe = ops.where((ids > 0) & (ids <= self.max_item_id), ids, 0)
        codes = ops.take(self.item_codes, safe, axis=0)
        tokens = codes + ops.convert_to_tensor(self.offsets, "int64")
        return ops.where(codes >= 0, tokens, PAD)

    def embed_items(self, item_ids):
        """Item ids (batch, n) -> (batch, n, d): the sum of their code embeddings, plus the item's
        own id embedding when ``item_id_embedding`` (0 for padding and unknown items)."""
        tokens = self.item_tokens(item_ids)
        embedded = self.token_embedding(tokens) * ops.expand_dims(ops.cast(tokens != PAD, "float32"), -1)
        embedded = ops.sum(embedded, axis=-2)
        if self.item_embedding is None:
            return embedded
        ids = ops.convert_to_tensor(item_ids, "int64")
        known = (ids > 0) & (ids <= self.max_item_id)
        own = self.item_embedding(ops.where(known, ids, 0)) * ops.expand_dims(ops.cast(known, "float32"), -1)
        return embedded + own

    def encode(self, inputs, training=None):
        """User features -> (memory (batch, 1 + S + P, d), memory mask (batch, 1 + S + P) bool)."""
        user = ops.mod(ops.convert_to_tensor(inputs["user_id"], "int64"), self.user_buckets)
        static = self.user_embedding(user)
        for name, layer in self.static_embeddings.items():
            static = static + layer(ops.clip(ops.convert_to_tensor(inputs[name], "int64"), 0,
                                             self.static_features[name]))
        static = ops.expand_dims(static + self.pathway_embedding(ops.zeros((1,), "int32"))[0], 1)
        short = ops.convert_to_tensor(inputs[SHORT_FEATURE], "int64")
        positive = ops.convert_to_tensor(inputs[POSITIVE_FEATURE], "int64")
        short_emb = self.embed_items(short)
        short_emb = short_emb + self.short_positions(short_emb) + self.pathway_embedding(ops.ones((1,), "int32"))
        pos_emb = self.embed_items(positive)
        pos_emb = pos_emb + self.positive_positions(pos_emb) + self.pathway_embedding(ops.full((1,), 2, "int32"))
        memory = ops.concatenate([static, short_emb, pos_emb], axis=1)
        mask = ops.concatenate([ops.ones_like(user[:, None], "bool"), short > 0, positive > 0], axis=1)
        for block in self.encoder_blocks:
            memory = block(memory, padding_mask=mask, training=training)
        return self.encoder_norm(memory), mask

    def decode(self, tokens, memory, memory_mask, training=None):
        """Decoder tokens (batch, T) + memory -> next-token logits (batch, T, vocab)."""
        x = self.token_embedding(tokens)
        x = x + self.decoder_positions(x)
        padding = tokens != PAD
        for block in self.decoder_blocks:
            x = block(x, padding_mask=padding, memory=memory, memory_mask=memory_mask, training=training)
        return self.output_projection(self.decoder_norm(x))

    def session_tokens(self, target_items):
        """Target items (batch, m) -> decoder tokens (batch, m * (L + 1)): ``[BOS, s^1..s^L]`` per
        item; a padding item (id 0) becomes padding tokens."""
        codes = self.item_tokens(target_items)  # (B, m, L)
        real = ops.expand_dims(ops.cast(ops.convert_to_tensor(target_items, "int64") > 0, "int64"), -1)
        bos = real * BOS
        tokens = ops.concatenate([bos, codes * real], axis=-1)  # (B, m, L + 1)
        return ops.reshape(tokens, (ops.shape(tokens)[0], -1))

    # -- training --------------------------------------------------------------------------------
    def call(self, inputs, training=None):
        """Teacher-forced logits (batch, m * (L + 1), vocab) of the session in ``session_item_ids``."""
        memory, mask = self.encode(inputs, training=training)
        return self.decode(self.session_tokens(inputs[SESSION_FEATURE]), memory, mask, training=training)

    def next_token_targets(self, target_items):
        """(targets (batch, T), weights (batch, T)): position t predicts token t + 1; only code
        tokens are targets (the BOS after an item is always BOS and is not predicted)."""
        tokens = self.session_tokens(target_items)
        following = ops.concatenate([tokens[:, 1:], ops.zeros_like(tokens[:, :1])], axis=1)
        weights = ops.cast((following != PAD) & (following != BOS), "float32")
        return following, weights

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Next-token cross-entropy over code tokens (mean over target tokens) + MoE losses,
        divided by the replicas of a `tf.distribute` strategy (each replica's gradients are summed,
        so the per-replica mean must be scaled, as Keras' built-in losses are)."""
        targets, weights = self.next_token_targets(x[SESSION_FEATURE] if y is None else y)
        losses = keras.losses.sparse_categorical_crossentropy(targets, y_pred, from_logits=True)
        loss = ops.sum(losses * weights) / ops.maximum(ops.sum(weights), 1.0)
        if self.losses:
            loss = loss + ops.sum(ops.stack(self.losses))
        return per_replica(loss)

    # -- decoding ---------------------------------------------------------------------------------
    def init_cache(self, memory, memory_mask, max_length: int | None = None) -> dict:
        """The decoder's key/value cache before the first token, for :meth:`decode_step`.

        Args:
            memory: (batch, M, d) and memory_mask: (batch, M) bool, from :meth:`encode`.
            max_length: decoder positions the cache holds; default the whole session,
                ``session_len * (L + 1)``.

        Returns:
            A dict. Per decoder row (rows = batch here; repeat and reorder these rows for
            beams): ``"length"`` (rows,) int32, tokens consumed so far (0), and ``"self"``,
            per decoder block its self-attention ``{"key", "value"}`` (rows, max_length,
            heads, head_dim), zeros. Per user (never repeated): ``"memory"``, per block the
            memory's cross-attention ``{"key", "value"}`` (batch, M, heads, head_dim),
            projected once, and ``"memory_mask"`` (batch, M).

        Raises:
            ValueError: `max_length` beyond the decoder's positions, or the model not built.
        """
        positions = self.session_len * (self.num_levels + 1)
        max_length = positions if max_length is None else int(max_length)
        if not 1 <= max_length <= positions:
            raise ValueError(f"OneRec.init_cache: max_length must be in [1, {positions}] (session_len x (L + 1) "
                             f"decoder positions); got {max_length}.")
        if not self.built:
            raise ValueError("OneRec.init_cache: call the model once (build it) before decoding.")
        batch = ops.shape(memory)[0]
        return {"length": ops.zeros((batch,), "int32"),
                "self": [block.init_cache(batch, max_length, memory.dtype) for block in self.decoder_blocks],
                "memory": [block.memory_cache(memory) for block in self.decoder_blocks],
                "memory_mask": ops.cast(memory_mask, "bool")}

    def decode_step(self, tokens, cache: dict):
        """Incremental decoding: logits of new tokens, reading earlier ones from the cache.

        The same logits as :meth:`decode` of the whole sequence (inference) at the new
        positions, computing only the new tokens.

        Args:
            tokens: (rows, n) int, the next ``n >= 1`` decoder tokens of every row (no
                padding), at positions ``cache["length"] ..`` (the same for all rows).
            cache: :meth:`init_cache`'s dict; its per-row entries may have ``rows = batch x
                beams`` (the beams of a user consecutive) while ``"memory"`` stays per user.

        Returns:
            ``(logits (rows, n, vocab), cache)``: the cache with the tokens written and
            ``"length"`` advanced by ``n``.
        """
        tokens = ops.convert_to_tensor(tokens, "int64")
        start = ops.max(cache["length"], initial=0)
        x = self.token_embedding(tokens)
        x = x + self.decoder_positions(x, start_index=start)
        caches = []
        for block, self_cache, memory_cache in zip(self.decoder_blocks, cache["self"], cache["memory"]):
            x, self_cache = block.call_cached(x, self_cache, start, memory_cache, cache["memory_mask"])
            caches.append(self_cache)
        logits = self.output_projection(self.decoder_norm(x))
        return logits, {**cache, "length": cache["length"] + ops.cast(ops.shape(tokens)[1], "int32"),
                        "self": caches}

    def _step(self, tokens, state):
        """Uncached beam-search step: decodes the whole prefix again (the reference for the cache)."""
        logits = self.decode(tokens, state["memory"], state["memory_mask"], training=False)
        return tf.nn.log_softmax(logits[:, -1, :]), state

    def _cached_step(self, tokens, state, context):
        """Cached beam-search step: feeds the tokens after ``state["length"]`` (one, or the last
        code and BOS at an item boundary) to :meth:`decode_step`."""
        logits, cache = self.decode_step(tokens[:, ops.max(state["length"], initial=0):], {**state, **context})
        return tf.nn.log_softmax(logits[:, -1, :]), {"length": cache["length"], "self": cache["self"]}

    def recommend(self, inputs, beam_size: int | None = None, num_results: int | None = None,
                  session_len: int | None = None, use_cache: bool = True) -> dict:
        """Constrained beam search for the next session of each user.

        Args:
            inputs: the user features of :meth:`input_signature`.
            beam_size, num_results, session_len: default the model's.
            use_cache: decode incrementally with a key/value cache (:meth:`decode_step`;
                default); False re-decodes the whole prefix at every step (the slower
                reference, same results up to float rounding).

        Returns:
            ``{"item_ids": int64 (batch, N, m), "scores": float32 (batch, N)}``, best first
            (scores: sums of log-probabilities of the codes); every item is a real item and no
            session repeats one.
        """
        memory, mask = self.encode(inputs, training=False)
        session_len = session_len or self.session_len
        search = dict(beam_size=beam_size or self.beam_size, num_items_per_session=session_len,
                      num_results=num_results or self.num_results, bos_token=BOS, token_offsets=self.offsets.tolist())
        if use_cache:
            cache = self.init_cache(memory, mask, max_length=session_len * (self.num_levels + 1))
            found = constrained_beam_search(
                self._cached_step, {"length": cache["length"], "self": cache["self"]}, self.trie,
                context={"memory": cache["memory"], "memory_mask": cache["memory_mask"]}, **search)
        else:
            found = constrained_beam_search(self._step, {"memory": memory, "memory_mask": mask}, self.trie, **search)
        return {"item_ids": found["item_ids"], "scores": found["scores"]}

    def next_items(self, inputs, num_items: int | None = None) -> dict:
        """The next items ranked by the constrained beam of one-item sessions.

        Returns:
            ``{"item_ids": int64 (batch, K), "scores": float32 (batch, K)}``, best first,
            ``K = num_items`` (default ``rank_size``).
        """
        k = int(num_items or self.rank_size)
        found = self.recommend(inputs, beam_size=k, num_results=k, session_len=1)
        return {"item_ids": found["item_ids"][:, :, 0], "scores": found["scores"]}

    def input_signature(self) -> dict:
        """TensorSpecs of the user features :meth:`recommend` reads."""
        spec = {"user_id": tf.TensorSpec([None], tf.int64, name="user_id"),
                SHORT_FEATURE: tf.TensorSpec([None, self.short_len], tf.int64, name=SHORT_FEATURE),
                POSITIVE_FEATURE: tf.TensorSpec([None, self.positive_len], tf.int64, name=POSITIVE_FEATURE)}
        spec.update({name: tf.TensorSpec([None], tf.int64, name=name) for name in sorted(self.static_features)})
        return spec

    def serving_endpoints(self) -> dict:
        """``{signature: (function, input signature)}`` for :func:`tfrec_onerec.export.export_saved_model`:
        ``recommend`` (and ``serving_default``, the same function): the user features of
        :meth:`input_signature` in; ``item_ids`` (batch, N, m) int64 and ``scores`` (batch, N) out,
        with the model's beam size and N. ``next_items``: the same features in; :meth:`next_items`
        out (``item_ids`` (batch, rank_size), ``scores``), what full-ranking evaluation reads."""
        def recommend(features):
            return self.recommend(features)

        def next_items(features):
            return self.next_items(features)

        signature = [self.input_signature()]
        return {RECOMMEND_SIGNATURE: (recommend, signature), "serving_default": (recommend, signature),
                NEXT_ITEMS_SIGNATURE: (next_items, signature)}

    def warmup_inputs(self) -> dict:
        """One request per signature for TF Serving's warmup: a user with empty histories."""
        batch = {name: np.zeros([1] + list(spec.shape[1:]), np.int64) for name, spec in self.input_signature().items()}
        return {RECOMMEND_SIGNATURE: batch, NEXT_ITEMS_SIGNATURE: batch}

    def get_config(self):
        return {**super().get_config(), "vocab_sizes": self.vocab_sizes, "max_item_id": self.max_item_id,
                "user_buckets": self.user_buckets, "static_features": self.static_features,
                "short_len": self.short_len, "positive_len": self.positive_len, "session_len": self.session_len,
                "dim": self.dim, "num_heads": self.num_heads, "num_encoder_layers": self.num_encoder_layers,
                "num_decoder_layers": self.num_decoder_layers, "ffn_dim": self.ffn_dim,
                "num_experts": self.num_experts, "top_k": self.top_k, "balance": self.balance,
                "aux_loss_weight": self.aux_loss_weight, "dropout": self.dropout, "beam_size": self.beam_size,
                "num_results": self.num_results, "trie_sizes": self.trie.table_sizes,
                "item_id_embedding": self.item_id_embedding, "rank_size": self.rank_size}

    def expert_load(self) -> list:
        """Per decoder layer, the fraction of token assignments each expert received in training."""
        return [block.feed_forward.expert_load() for block in self.decoder_blocks]

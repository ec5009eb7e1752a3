"""Beam search constrained to valid semantic IDs, inside the graph (exportable), and its eager reference.

A generative recommender (TIGER, OneRec) writes each recommended item as its semantic ID,
``L`` codes, and a session as ``m`` items, one after another. An unconstrained beam search
spends much of its width on code sequences that name no item (17-27% in public TIGER
reproductions; worse where few codes are valid). :func:`constrained_beam_search` walks a
:class:`~tfrec_onerec.layers.semantic_id_trie.SemanticIDTrie` instead: at every step it
scores only the children of each beam's trie node, so every finished beam is a real item,
and in session mode a beam never repeats an item.

The search is a ``tf.while_loop`` over the ``m * L`` code steps, with a dynamic batch size
and static beam width, built from core TensorFlow ops only: wrapped in a ``tf.function``
(a ``keras.export.ExportArchive`` endpoint or a ``tf.Module`` method) it exports to a
SavedModel that serves without this package. :func:`reference_beam_search` is a plain
Python version with identical semantics (same scores in float32, same tie-breaking), for
tests and debugging.

Semantics shared by both:

* Scores are sums of the decoder's log-probabilities of the chosen tokens (over its full
  vocabulary: invalid tokens are never renormalised away).
* Step ``j * L + l`` writes code ``l`` of item ``j``. Candidates are (beam, child) pairs,
  ordered beam-major with children by ascending code; the ``beam_size`` best survive, ties
  going to the earlier pair (``tf.math.top_k``'s rule).
* At the first step only beam 0 is alive, so no two beams are equal.
* After the last code of an item the beam returns to the trie root. In a session, a child
  node is not a candidate when every item under it is already in the beam's session: so
  no item repeats, and a beam never walks into a prefix it cannot finish (it dies only if
  the decoder gives -inf). When fewer than ``num_results`` distinct sessions exist, the
  extra rows are dead: score -inf, items and codes -1.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from tfrec_onerec.layers.semantic_id_trie import NONE, ROOT, SemanticIDTrie

NEG_INF = float("-inf")


def _token_offsets(token_offsets, num_levels: int) -> list:
    offsets = [int(token_offsets)] * num_levels if np.ndim(token_offsets) == 0 else [int(o) for o in token_offsets]
    if len(offsets) != num_levels:
        raise ValueError(f"token_offsets must be one int or one per level ({num_levels}); received {token_offsets}.")
    return offsets


def _check_arguments(beam_size, num_results, num_items_per_session, num_items):
    if not isinstance(beam_size, (int, np.integer)) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive int (fixed when the graph is built); received {beam_size!r}.")
    num_results = beam_size if num_results is None else num_results
    if not 1 <= num_results <= beam_size:
        raise ValueError(f"num_results must be in [1, beam_size={beam_size}]; received {num_results}.")
    if not 1 <= num_items_per_session <= num_items:
        raise ValueError(f"num_items_per_session must be in [1, number of items={num_items}] (items do not repeat "
                         f"within a session); received {num_items_per_session}.")
    return int(num_results)


def _session_layout(num_levels: int, num_items_per_session: int, bos_token):
    """(decoder tokens per session, tokens per item): L codes, plus BOS when it is used."""
    per_item = num_levels + (bos_token is not None)
    return per_item * num_items_per_session, per_item


def constrained_beam_search(step_fn: Callable, initial_state, trie: SemanticIDTrie, batch_size=None,
                            beam_size: int = 8, num_items_per_session: int = 1, num_results: int | None = None,
                            bos_token: int | None = None, token_offsets: int | Sequence[int] = 0,
                            state_shape_invariants=None, context=None) -> dict:
    """Beam search over semantic IDs that only ever follows valid prefixes.

    At step ``t`` (item ``j = t // L``, level ``l = t % L``) every beam asks the decoder for
    log-probabilities of the next token, gathers them at its trie node's children only
    (``trie.children`` at the level's width: no full-vocabulary mask), adds them to the beam
    score, and the ``beam_size`` best (beam, child) pairs of each example survive
    (``tf.math.top_k`` over ``beam_size * width``). Beams are reordered by parent: their
    tokens, items and the decoder state. After code ``L - 1`` the item is complete: the
    leaf is recorded and the beam goes back to the root. In sessions, a child whose leaves
    (a consecutive range, ``trie.leaf_range``) are all recorded in the beam is not a
    candidate, which blocks repeated items and prefixes that cannot be finished. Dead beams
    carry node -1 (no children).

    Args:
        step_fn: the decoder step ``step_fn(tokens, state) -> (log_probs, new_state)``.
            ``tokens``: int64 (batch * beam_size, T) the tokens written so far (with the BOS
            tokens when `bos_token` is set; ``T`` is 0 at the first step without BOS);
            rows ``b * beam_size .. (b + 1) * beam_size - 1`` are the beams of example ``b``.
            ``state``: the decoder state, same structure as `initial_state`, rows per beam.
            ``log_probs``: float (batch * beam_size, vocab) log-probabilities of the next
            token. ``new_state``: same structure and shapes (except leading dim None) as
            ``state``. A decoder with a key/value cache must consume every token after the
            last it saw: one per step, two (last code, BOS) at an item boundary with BOS.
            With a `context`, it is called ``step_fn(tokens, state, context)``. Any Keras
            model it calls must already be built.
        initial_state: a nest of tensors with leading dim batch (e.g. the encoder output
            and its mask; may be an empty tuple); each row is repeated for the beams.
        trie: the :class:`SemanticIDTrie` of valid semantic IDs.
        batch_size: scalar (int or int tensor); default: the leading dim of the first
            tensor of `initial_state` (or of `context`).
        beam_size: beams per example, a Python int (fixed in an exported graph). Default 8.
        num_items_per_session: ``m``, items written per session. Default 1.
        num_results: ``N <= beam_size`` sequences returned per example; default
            `beam_size`.
        bos_token: if set, this token opens every item (``[BOS, s^1..s^L]`` per item, as
            OneRec trains its decoder); it is written by the search, not scored.
        token_offsets: the decoder's token id of code ``c`` at level ``l`` is
            ``c + token_offsets[l]`` (one int for all levels, or one per level). Default 0.
        state_shape_invariants: shapes of the state tensors inside the loop (same nest),
            for states whose shape changes (a growing cache); default: the initial
            shapes with the leading dim unknown.
        context: optional nest of tensors with leading dim batch that the beams of an
            example share and that never changes (e.g. the encoder memory's projected
            cross-attention keys and values): passed to `step_fn` as it is, one row per
            example (row ``r`` of the tokens belongs to context row ``r // beam_size``),
            neither repeated per beam nor reordered, which saves copying it at every step.

    Returns:
        ``{"item_ids": int64 (batch, N, m), "scores": float32 (batch, N), "codes": int64
        (batch, N, m, L)}``, best first; dead rows have item id and codes -1, score -inf.

    Raises:
        ValueError: bad `beam_size`, `num_results`, `num_items_per_session` or
            `token_offsets`; no way to know the batch size; a vocabulary too small for the
            tokens (checked when `step_fn`'s output width is static).
    """
    if not isinstance(trie, SemanticIDTrie):
        raise ValueError(f"trie must be a SemanticIDTrie; received {type(trie).__name__}.")
    num_results = _check_arguments(beam_size, num_results, num_items_per_session, trie.num_items)
    num_levels, m = trie.num_levels, int(num_items_per_session)
    offsets = _token_offsets(token_offsets, num_levels)
    flat_state = [tf.convert_to_tensor(x) for x in tf.nest.flatten(initial_state)]
    flat_context = None if context is None else [tf.convert_to_tensor(x) for x in tf.nest.flatten(context)]
    if batch_size is None:
        rows = flat_state or flat_context
        if not rows:
            raise ValueError("batch_size is required when initial_state (and context) holds no tensor.")
        batch_size = tf.shape(rows[0], out_type=tf.int64)[0]
    if tf.executing_eagerly():  # run as a graph, as served (a fresh trace per eager call)
        return tf.function(lambda b, s, c: _search(step_fn, s, initial_state, trie, b, beam_size, m, num_results,
                                                   bos_token, offsets, state_shape_invariants, c, context))(
            tf.cast(batch_size, tf.int64), flat_state, flat_context)
    return _search(step_fn, flat_state, initial_state, trie, tf.cast(batch_size, tf.int64), beam_size, m,
                   num_results, bos_token, offsets, state_shape_invariants, flat_context, context)


def _search(step_fn, flat_state, state_structure, trie, batch_size, beam_size, m, num_results, bos_token, offsets,
            state_shape_invariants, flat_context=None, context_structure=None):
    num_levels = trie.num_levels
    widths = trie.table_sizes["level_max_children"]  # children per node, at most, at each level
    length, per_item = _session_layout(num_levels, m, bos_token)
    rows = batch_size * beam_size

    def per_beam(x):
        return tf.repeat(x, beam_size, axis=0)

    flat_state = [per_beam(x) for x in flat_state]
    if state_shape_invariants is None:
        invariants = [tf.TensorShape([None]).concatenate(x.shape[1:]) for x in flat_state]
    else:
        invariants = [tf.TensorShape(s) for s in tf.nest.flatten(state_shape_invariants)]
    column = tf.range(length, dtype=tf.int64)
    tokens = tf.zeros([rows, length], tf.int64)
    if bos_token is not None:  # BOS sits at the start of every item; the search never scores it
        tokens += tf.cast(column % per_item == 0, tf.int64) * int(bos_token)
    first_beam = tf.tile(tf.concat([[0.0], tf.fill([beam_size - 1], NEG_INF)], 0), [batch_size])
    loop_vars = (
        tf.constant(0, tf.int64),                          # step t
        tokens,                                            # (rows, length) decoder input tokens
        tf.fill([rows], tf.constant(ROOT, tf.int64)),      # trie node of each beam
        first_beam,                                        # (rows,) beam scores
        tf.fill([rows, m], tf.constant(NONE, tf.int64)),   # leaf nodes of each beam's session
        tf.fill([rows, m * num_levels], tf.constant(NONE, tf.int64)),  # codes written
        tuple(flat_state),
    )
    shapes = (tf.TensorShape([]), tf.TensorShape([None, length]), tf.TensorShape([None]), tf.TensorShape([None]),
              tf.TensorShape([None, m]), tf.TensorShape([None, m * num_levels]), tuple(invariants))
    example = tf.repeat(tf.range(batch_size, dtype=tf.int64) * beam_size, beam_size)  # first row of each example

    def expand(level, log_probs, nodes, scores, chosen):
        """Top (beam, child) pairs at one level: scores, parent rows, child nodes, codes."""
        width = widths[level]
        codes, children = trie.children(nodes, width)  # (rows, width)
        ids = tf.maximum(codes, 0) + offsets[level]
        candidates = scores[:, None] + tf.gather(log_probs, ids, batch_dims=1)
        valid = children >= 0
        if m > 1:  # skip children whose items are all in the session already (leaves: the item itself)
            first, count = trie.leaf_range(children)
            leaves = chosen[:, None, :]  # (rows, 1, m) leaf nodes chosen, -1 for none yet
            taken = (leaves >= first[:, :, None]) & (leaves < (first + count)[:, :, None])
            valid &= tf.reduce_sum(tf.cast(taken, tf.int64), axis=-1) < count
        candidates = tf.where(valid, candidates, NEG_INF)
        top, index = tf.math.top_k(tf.reshape(candidates, [-1, beam_size * width]), k=beam_size)
        index = tf.cast(index, tf.int64)
        parent = tf.reshape(example + tf.reshape(index // width, [-1]), [-1])

        def pick(x):
            return tf.reshape(tf.gather(tf.reshape(x, [-1, beam_size * width]), index, batch_dims=1), [-1])

        return tf.reshape(top, [-1]), parent, pick(children), pick(codes)

    def body(t, tokens, nodes, scores, chosen, codes_written, state):
        item, level = t // num_levels, t % num_levels
        position = item * per_item + level + (bos_token is not None)
        step_args = (tokens[:, :position], tf.nest.pack_sequence_as(state_structure, list(state)))
        if flat_context is not None:
            step_args += (tf.nest.pack_sequence_as(context_structure, flat_context),)
        log_probs, new_state = step_fn(*step_args)
        log_probs = tf.cast(log_probs, tf.float32)
        if log_probs.shape[-1] is not None:
            level_codes = trie.table_sizes.get("level_num_codes", [trie.num_codes] * num_levels)
            needed = max(k + o for k, o in zip(level_codes, offsets))
            if log_probs.shape[-1] < needed:
                raise ValueError(f"step_fn returns {log_probs.shape[-1]} log-probs per row; the codes with "
                                 f"token_offsets={offsets} need a vocabulary of at least {needed}.")
        branches = [lambda lv=lv: expand(lv, log_probs, nodes, scores, chosen) for lv in range(num_levels)]
        scores, parent, nodes, code = tf.switch_case(tf.cast(level, tf.int32), branches) if num_levels > 1 \
            else branches[0]()
        alive = scores > NEG_INF
        nodes = tf.where(alive, nodes, NONE)
        # Dead beams have code -1: the decoder still reads their row, so give it a real token.
        token = tf.maximum(code, 0) + tf.gather(tf.constant(offsets, tf.int64), level)
        tokens = tf.where(column[None, :] == position, token[:, None], tf.gather(tokens, parent))
        codes_written = tf.where(tf.range(m * num_levels, dtype=tf.int64)[None, :] == t, code[:, None],
                                 tf.gather(codes_written, parent))
        finished = trie.item_of_node(nodes) >= 0  # exactly at leaves
        chosen = tf.where((tf.range(m, dtype=tf.int64)[None, :] == item) & finished[:, None],
                          nodes[:, None], tf.gather(chosen, parent))
        nodes = tf.where(finished, tf.constant(ROOT, tf.int64), nodes)
        new_state = tuple(tf.gather(tf.convert_to_tensor(x), parent) for x in tf.nest.flatten(new_state))
        return t + 1, tokens, nodes, scores, chosen, codes_written, new_state

    _, _, _, scores, chosen, codes_written, _ = tf.while_loop(
        lambda t, *_: t < m * num_levels, body, loop_vars, shape_invariants=shapes,
        maximum_iterations=m * num_levels)
    scores = tf.reshape(scores, [-1, beam_size])[:, :num_results]
    alive = scores > NEG_INF
    items = trie.item_of_node(tf.reshape(chosen, [-1, beam_size, m])[:, :num_results])
    codes = tf.reshape(codes_written, [-1, beam_size, m, num_levels])[:, :num_results]
    return {"item_ids": tf.where(alive[:, :, None], items, NONE),
            "scores": scores,
            "codes": tf.where(alive[:, :, None, None], codes, NONE)}


def reference_beam_search(log_prob_fn: Callable, codes, item_ids=None, beam_size: int = 8,
                          num_items_per_session: int = 1, num_results: int | None = None,
                          bos_token: int | None = None, token_offsets: int | Sequence[int] = 0) -> dict:
    """The same search as :func:`constrained_beam_search`, for one example, in plain Python.

    It builds its own dictionary trie from `codes` and keeps beams as Python tuples, so it
    shares no code with the graph version; scores are float32 sums in the same order, and
    ties break the same way (beam-major, children by ascending code).

    Args:
        log_prob_fn: ``log_prob_fn(tokens: tuple of int) -> array (vocab,)`` the decoder's
            next-token log-probabilities after `tokens` (same tokens as the graph search
            passes to its step function, BOS included).
        codes: int array (n_items, L) of valid semantic IDs. item_ids: (n_items,) their
            items; default ``0..n_items - 1``.
        beam_size, num_items_per_session, num_results, bos_token, token_offsets: as in
            :func:`constrained_beam_search`.

    Returns:
        ``{"item_ids": (N, m) int64, "scores": (N,) float32, "codes": (N, m, L) int64}``
        numpy arrays, best first, dead rows -1 / -inf.
    """
    codes = np.asarray(codes, np.int64)
    item_ids = np.arange(len(codes)) if item_ids is None else np.asarray(item_ids)
    num_results = _check_arguments(beam_size, num_results, num_items_per_session, len(codes))
    num_levels, m = codes.shape[1], num_items_per_session
    offsets = _token_offsets(token_offsets, num_levels)
    root: dict = {}
    under: dict = {}  # id(inner node) -> the set of items below it
    for code, item in zip(codes.tolist(), item_ids.tolist()):
        node = root
        for c in code[:-1]:
            under.setdefault(id(node), set()).add(int(item))
            node = node.setdefault(c, {})
        under.setdefault(id(node), set()).add(int(item))
        node[code[-1]] = int(item)
    start = (int(bos_token),) if bos_token is not None else ()
    # A beam: (score, decoder tokens, codes written, items chosen, trie node).
    beams = [(np.float32(0.0), start, (), (), root)]
    for step in range(m * num_levels):
        level = step % num_levels
        candidates = []
        for b, (score, tokens, written, chosen, node) in enumerate(beams):
            log_probs = np.asarray(log_prob_fn(tokens), np.float32)
            for slot, code in enumerate(sorted(node)):
                child = node[code]
                new_score = np.float32(score + log_probs[code + offsets[level]])
                below = {child} if level == num_levels - 1 else under[id(child)]
                if new_score == -np.inf or below <= set(chosen):
                    continue
                new_tokens = tokens + (code + offsets[level],)
                if level == num_levels - 1:
                    chosen_next, child = chosen + (child,), root
                    if bos_token is not None:
                        new_tokens += (int(bos_token),)
                else:
                    chosen_next = chosen
                candidates.append(((-new_score, b, slot), (new_score, new_tokens, written + (code,), chosen_next,
                                                           child)))
        candidates.sort(key=lambda c: c[0])
        beams = [beam for _, beam in candidates[:beam_size]]
    out_items = np.full((num_results, m), NONE, np.int64)
    out_scores = np.full(num_results, -np.inf, np.float32)
    out_codes = np.full((num_results, m, num_levels), NONE, np.int64)
    for i, (score, _, written, chosen, _) in enumerate(beams[:num_results]):
        out_items[i], out_scores[i] = chosen, score
        out_codes[i] = np.reshape(written, (m, num_levels))
    return {"item_ids": out_items, "scores": out_scores, "codes": out_codes}

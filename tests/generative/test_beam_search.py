"""Constrained beam search: validity, no duplicates, eager reference, brute force, export and serving."""
import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from fresh_process import run_fresh
from keras import ops

from tfrec_onerec.layers.semantic_id_trie import SemanticIDTrie
from tfrec_onerec.models.generative.beam_search import constrained_beam_search, reference_beam_search

PRIME = 97  # rows of the log-prob tables: a prefix hashes to one row


def random_trie(seed, n, num_levels, num_codes):
    rng = np.random.default_rng(seed)
    codes = np.unique(rng.integers(0, num_codes, size=(n, num_levels)), axis=0)
    codes = codes[rng.permutation(len(codes))]
    return codes, rng.permutation(10 * len(codes))[:len(codes)] + 1


class TableDecoder:
    """A deterministic decoder: log-probs from a random table, keyed by (example, hash of the whole prefix).

    The same numbers come out of the graph step (`step`) and of numpy (`log_probs`), so the
    in-graph search and the eager reference see bit-identical inputs. `levels` > 0 rounds
    the log-probs to a few values to create ties.
    """

    def __init__(self, seed, batch, vocab, levels=0):
        rng = np.random.default_rng(seed)
        logits = rng.normal(scale=2.0, size=(batch, PRIME, vocab))
        if levels:
            logits = np.round(logits * levels / 4) * 4 / levels
        self.table = (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(np.float32)

    @staticmethod
    def row(tokens):
        return (sum(int(x) * (i + 3) for i, x in enumerate(tokens)) + 7 * len(tokens)) % PRIME

    def log_probs(self, example):
        return lambda tokens: self.table[example, self.row(tokens)]

    def step(self, tokens, example):
        # Dead beams too must be fed real tokens (an embedding lookup of -1 fails on CPU).
        with tf.control_dependencies([tf.debugging.assert_non_negative(tokens, message="negative token fed")]):
            tokens = tf.identity(tokens)
        length = tf.shape(tokens, out_type=tf.int64)[1]
        row = (tf.reduce_sum(tokens * (tf.range(length) + 3), axis=1) + 7 * length) % PRIME
        return tf.gather_nd(tf.constant(self.table), tf.stack([example, row], axis=1)), example


def search(decoder, trie, batch, **kwargs):
    out = constrained_beam_search(decoder.step, tf.range(batch, dtype=tf.int64), trie, **kwargs)
    return {k: v.numpy() for k, v in out.items()}


def assert_valid_sessions(out, codes, items):
    """Every live row: real items whose codes are theirs, no repeats; dead rows all -1/-inf."""
    code_of = {int(i): tuple(c) for i, c in zip(items, codes.tolist())}
    alive = np.isfinite(out["scores"])
    assert (out["scores"][:, 1:] <= out["scores"][:, :-1]).all()  # best first
    for b, n in itertools.product(*map(range, alive.shape)):
        row, row_codes = out["item_ids"][b, n], out["codes"][b, n]
        if not alive[b, n]:
            assert (row == -1).all() and (row_codes == -1).all()
            continue
        assert all(int(i) in code_of for i in row), row
        assert len(set(row.tolist())) == len(row), f"duplicate item in a session: {row}"
        assert [code_of[int(i)] for i in row] == [tuple(c) for c in row_codes.tolist()]


CASES = {
    "one item": dict(beam_size=4, num_items_per_session=1),
    "greedy": dict(beam_size=1, num_items_per_session=2),
    "session with BOS and level offsets": dict(beam_size=5, num_items_per_session=3, bos_token=15,
                                               token_offsets=[0, 5, 10]),
    "top 3 of 6 beams": dict(beam_size=6, num_items_per_session=2, num_results=3),
}


@pytest.mark.parametrize("ties", [0, 2], ids=["distinct", "ties"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_eager_reference_exactly(case, ties):
    codes, items = random_trie(0, 25, 3, 5)
    trie = SemanticIDTrie(codes, items)
    kwargs = CASES[case]
    decoder = TableDecoder(1, batch=3, vocab=16, levels=ties)
    out = search(decoder, trie, 3, **kwargs)
    for b in range(3):
        ref = reference_beam_search(decoder.log_probs(b), codes, items, **kwargs)
        for key in ("item_ids", "scores", "codes"):
            np.testing.assert_array_equal(out[key][b], ref[key], err_msg=f"{key} of example {b}")


class IncrementalTableDecoder(TableDecoder):
    """TableDecoder's numbers from a decoder that sees each token once, as a key/value cache does.

    State per beam: the running hash sum and the number of tokens consumed; each step reads
    only the tokens after them (asserting one, or two at an item boundary with BOS). The
    example ids come as the search's `context`: one row per example, shared by its beams.
    """

    def step(self, tokens, state, example):
        total, seen = state
        start, position = tf.reduce_max(seen), tf.shape(tokens, out_type=tf.int64)[1]
        with tf.control_dependencies([tf.debugging.assert_equal(seen, start, message="beams out of step"),
                                      tf.debugging.assert_less_equal(position - start, tf.constant(2, tf.int64),
                                                                     message="more than two new tokens")]):
            new = tokens[:, start:]
        total += tf.reduce_sum(new * (tf.range(start, position) + 3), axis=1)
        row = (total + 7 * position) % PRIME
        beams = tf.shape(tokens, out_type=tf.int64)[0] // tf.shape(example, out_type=tf.int64)[0]
        example = tf.gather(example, tf.range(tf.shape(tokens, out_type=tf.int64)[0]) // beams)
        return tf.gather_nd(tf.constant(self.table), tf.stack([example, row], axis=1)), (total, seen * 0 + position)


@pytest.mark.parametrize("case", ["one item", "session with BOS and level offsets", "top 3 of 6 beams"])
def test_incremental_decoder_with_a_shared_context_matches_the_reference(case):
    codes, items = random_trie(0, 25, 3, 5)
    trie = SemanticIDTrie(codes, items)
    kwargs = CASES[case]
    decoder = IncrementalTableDecoder(1, batch=3, vocab=16)
    state = (tf.zeros([3], tf.int64), tf.zeros([3], tf.int64))
    out = constrained_beam_search(decoder.step, state, trie, context=tf.range(3, dtype=tf.int64), **kwargs)
    for b in range(3):
        ref = reference_beam_search(decoder.log_probs(b), codes, items, **kwargs)
        for key in ("item_ids", "scores", "codes"):
            np.testing.assert_array_equal(out[key].numpy()[b], ref[key], err_msg=f"{key} of example {b}")


def test_more_beams_than_items_leaves_dead_rows_fed_with_real_tokens():
    # Two items, four beams: beams 3 and 4 die at once and stay dead (node -1) for two more
    # steps; the decoder (which asserts on negative tokens) still reads valid tokens for them.
    codes = np.array([[0, 0, 1], [0, 0, 0]])
    decoder = TableDecoder(3, batch=2, vocab=2)
    out = search(decoder, SemanticIDTrie(codes, [5, 6]), 2, beam_size=4)
    assert np.isfinite(out["scores"][:, :2]).all() and np.isneginf(out["scores"][:, 2:]).all()
    assert {tuple(r) for r in out["item_ids"][:, :2, 0].tolist()} <= {(5, 6), (6, 5)}
    assert (out["item_ids"][:, 2:] == -1).all() and (out["codes"][:, 2:] == -1).all()
    for b in range(2):
        ref = reference_beam_search(decoder.log_probs(b), codes, [5, 6], beam_size=4)
        np.testing.assert_array_equal(out["scores"][b], ref["scores"])


def test_greedy_session_never_walks_into_a_used_up_prefix():
    # Items A = (0, 0) and B = (1, 0); the decoder always prefers code 0 (0.9 vs 0.1). After A,
    # prefix (0,) has nothing left, so greedy search must take (1, 0) even though 0 is likelier.
    trie = SemanticIDTrie(np.array([[0, 0], [1, 0]]), item_ids=[7, 8])
    log_probs = np.log([0.9, 0.1]).astype(np.float32)

    def prefers_zero(tokens, state):
        return tf.tile(log_probs[None], [tf.shape(tokens)[0], 1]), state

    out = constrained_beam_search(prefers_zero, (), trie, batch_size=1, beam_size=1, num_items_per_session=2)
    np.testing.assert_array_equal(out["item_ids"].numpy(), [[[7, 8]]])
    np.testing.assert_array_equal(out["codes"].numpy(), [[[[0, 0], [1, 0]]]])
    np.testing.assert_allclose(out["scores"].numpy(), [[3 * np.log(0.9) + np.log(0.1)]], rtol=1e-6)
    ref = reference_beam_search(lambda tokens: log_probs, [[0, 0], [1, 0]], [7, 8], beam_size=1,
                                num_items_per_session=2)
    np.testing.assert_array_equal(ref["item_ids"], [[7, 8]])


def test_ties_go_to_the_earlier_beam_and_smaller_code():
    # A uniform decoder ties every path: the kept prefixes at each level are the first
    # beam_size in code order, so the result is the first items in code order.
    codes, items = random_trie(2, 30, 3, 4)
    trie = SemanticIDTrie(codes, items)

    def uniform(tokens, state):
        return tf.fill([tf.shape(tokens)[0], 4], np.float32(np.log(0.25))), state

    out = constrained_beam_search(uniform, tf.zeros([2]), trie, beam_size=5, num_results=4)
    order = np.lexsort(codes.T[::-1])
    np.testing.assert_array_equal(out["item_ids"].numpy()[:, :, 0], [items[order[:4]]] * 2)
    np.testing.assert_array_equal(out["codes"].numpy()[0, :, 0], codes[order[:4]])
    np.testing.assert_allclose(out["scores"].numpy(), np.full((2, 4), 3 * np.log(0.25)), rtol=1e-6)
    ref = reference_beam_search(lambda tokens: np.full(4, np.log(0.25), np.float32), codes, items, beam_size=5,
                                num_results=4)
    np.testing.assert_array_equal(ref["item_ids"][:, 0], items[order[:4]])


def test_never_emits_invalid_or_duplicate_items_over_random_searches():
    rng = np.random.default_rng(7)
    for trial in range(10):
        num_levels, num_codes = int(rng.integers(1, 4)), int(rng.integers(2, 9))
        codes, items = random_trie(trial, int(rng.integers(3, 60)), num_levels, num_codes)
        m = int(rng.integers(1, min(4, len(codes)) + 1))
        beam = int(rng.integers(1, 12))
        batch = int(rng.integers(1, 6))
        trie = SemanticIDTrie(codes, items)
        decoder = TableDecoder(100 + trial, batch, vocab=num_codes)
        out = search(decoder, trie, batch, beam_size=beam, num_items_per_session=m,
                     num_results=int(rng.integers(1, beam + 1)))
        assert out["item_ids"].shape == (batch, out["scores"].shape[1], m)
        assert np.isfinite(out["scores"][:, 0]).all()  # the best beam always finishes
        assert_valid_sessions(out, codes, items)
        # Each score is the sum of the decoder's log-probs along the written tokens.
        for b, n in zip(*np.nonzero(np.isfinite(out["scores"]))):
            tokens = out["codes"][b, n].reshape(-1).tolist()
            total = np.float32(0)
            for t, token in enumerate(tokens):
                total = np.float32(total + decoder.log_probs(b)(tokens[:t])[token])
            assert total == out["scores"][b, n]


def path_scores(decoder, example, codes, bos=None):
    """Brute force: the score of every item (m = 1)."""
    start = () if bos is None else (bos,)
    return np.array([sum(decoder.log_probs(example)(start + tuple(c[:t]))[c[t]] for t in range(len(c)))
                     for c in codes.tolist()])


def test_wide_beam_returns_the_true_top_n():
    codes, items = random_trie(3, 40, 3, 4)
    trie = SemanticIDTrie(codes, items)
    decoder = TableDecoder(5, batch=4, vocab=4)
    out = search(decoder, trie, 4, beam_size=len(codes), num_results=7)
    for b in range(4):
        scores = path_scores(decoder, b, codes)
        best = np.argsort(-scores, kind="stable")[:7]
        np.testing.assert_array_equal(out["item_ids"][b, :, 0], items[best])
        np.testing.assert_allclose(out["scores"][b], scores[best], rtol=1e-6)


def test_wide_beam_sessions_are_the_best_ordered_pairs_and_exhaust_into_dead_rows():
    codes, items = random_trie(4, 5, 2, 3)  # 5 items: 20 ordered pairs
    n = len(codes)
    trie = SemanticIDTrie(codes, items)
    decoder = TableDecoder(6, batch=2, vocab=3)
    out = search(decoder, trie, 2, beam_size=n * (n - 1) + 4, num_items_per_session=2)
    for b in range(2):
        pairs = []
        for i, j in itertools.permutations(range(n), 2):
            tokens = codes[i].tolist() + codes[j].tolist()
            pairs.append((sum(decoder.log_probs(b)(tokens[:t])[tokens[t]] for t in range(4)), items[i], items[j]))
        pairs.sort(key=lambda p: -p[0])
        np.testing.assert_allclose(out["scores"][b, :len(pairs)], [p[0] for p in pairs], rtol=1e-5)
        assert {tuple(r) for r in out["item_ids"][b, :len(pairs)].tolist()} == {p[1:] for p in pairs}
        assert np.isneginf(out["scores"][b, len(pairs):]).all()  # only 20 sessions exist
        assert (out["item_ids"][b, len(pairs):] == -1).all()


def test_dynamic_batch_in_one_traced_function():
    codes, items = random_trie(8, 30, 3, 4)
    trie = SemanticIDTrie(codes, items)
    decoder = TableDecoder(9, batch=7, vocab=4)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)])
    def recommend(example):
        return constrained_beam_search(decoder.step, example, trie, beam_size=6, num_items_per_session=2)

    full = {k: v.numpy() for k, v in recommend(tf.range(7, dtype=tf.int64)).items()}
    for rows in ([3], [6, 0, 2]):
        part = recommend(tf.constant(rows, tf.int64))
        for key in full:
            np.testing.assert_array_equal(part[key].numpy(), full[key][rows])
    assert recommend.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("kwargs,message", [
    (dict(beam_size=0), "beam_size must be a positive int"),
    (dict(beam_size=2.0), "beam_size must be a positive int"),
    (dict(beam_size=4, num_results=5), r"num_results must be in \[1, beam_size=4\]"),
    (dict(beam_size=4, num_items_per_session=4), r"num_items_per_session must be in \[1, number of items=3\]"),
    (dict(beam_size=4, token_offsets=[0, 1, 2]), "token_offsets must be one int or one per level"),
    (dict(beam_size=4, token_offsets=3), "vocabulary of at least 7"),
])
def test_bad_arguments_are_named(kwargs, message):
    trie = SemanticIDTrie(np.array([[0, 1], [0, 2], [3, 0]]))
    decoder = TableDecoder(0, batch=2, vocab=4)
    with pytest.raises(ValueError, match=message):
        constrained_beam_search(decoder.step, tf.range(2, dtype=tf.int64), trie, **kwargs)


def test_needs_a_trie_and_a_batch_size():
    decoder = TableDecoder(0, batch=2, vocab=4)
    with pytest.raises(ValueError, match="trie must be a SemanticIDTrie"):
        constrained_beam_search(decoder.step, tf.range(2, dtype=tf.int64), np.array([[0, 1]]), beam_size=2)
    with pytest.raises(ValueError, match="batch_size is required"):
        constrained_beam_search(decoder.step, (), SemanticIDTrie(np.array([[0, 1]])), beam_size=2)


class ToyRecommender(keras.Model):
    """A tiny decoder (user vector + previous token + position -> next-token log-probs) served by the search.

    The vocabulary is ``L * K`` level-offset code tokens plus BOS, as a OneRec decoder's.
    """

    def __init__(self, codes, item_ids, num_users=50, dim=16, items_per_session=2, beam_size=8, num_results=5,
                 **kwargs):
        super().__init__(**kwargs)
        codes = np.asarray(codes)
        self.num_levels, self.num_codes = codes.shape[1], int(codes.max()) + 1
        self.bos = self.num_levels * self.num_codes
        self.items_per_session, self.beam_size, self.num_results = items_per_session, beam_size, num_results
        self.trie = SemanticIDTrie(codes, item_ids)
        self.user = keras.layers.Embedding(num_users, dim)
        self.token = keras.layers.Embedding(self.bos + 1, dim)
        self.position = keras.layers.Embedding(self.num_levels + 1, dim)
        self.head = keras.layers.Dense(self.bos + 1)
        for layer in (self.user, self.token, self.position):
            layer.build((None,))
        self.head.build((None, dim))
        self.built = True

    def step(self, tokens, state):
        previous = tokens[:, -1]
        position = ops.full_like(previous, (ops.shape(tokens)[1] - 1) % (self.num_levels + 1))
        hidden = ops.tanh(state["user_vector"] + self.token(previous) + self.position(position))
        return ops.log_softmax(self.head(hidden), axis=-1), state

    def recommend(self, user_id, beam_size=None):
        state = {"user_vector": self.user(user_id)}  # a dict state, as an encoder output and its mask would be
        return constrained_beam_search(self.step, state, self.trie, beam_size=beam_size or self.beam_size,
                                       num_items_per_session=self.items_per_session, num_results=self.num_results,
                                       bos_token=self.bos,
                                       token_offsets=[level * self.num_codes for level in range(self.num_levels)])


USER_ID = tf.TensorSpec([None], tf.int64, name="user_id")


def export_recommend(model, path, beam_size=None):
    """Writes `model` with a ``recommend`` signature (beam size fixed here) through keras.export."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("recommend", lambda user_id: model.recommend(user_id, beam_size), input_signature=[USER_ID])
    archive.write_out(str(path), verbose=False)
    return path


class RecommendModule(tf.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    @tf.function(input_signature=[USER_ID])
    def recommend(self, user_id):
        return self.model.recommend(user_id)


@pytest.fixture(scope="module")
def toy():
    codes, items = random_trie(11, 80, 3, 6)
    keras.utils.set_random_seed(0)
    return ToyRecommender(codes, items), codes, items


def test_keras_decoder_matches_reference(toy):
    model, codes, items = toy
    users = np.array([3, 1, 4], np.int64)
    out = {k: v.numpy() for k, v in model.recommend(tf.constant(users)).items()}
    assert_valid_sessions(out, codes, items)
    vectors = keras.ops.convert_to_numpy(model.user(users))
    for b in range(3):
        def log_probs(tokens, b=b):
            state = {"user_vector": vectors[b:b + 1]}
            return keras.ops.convert_to_numpy(model.step(np.array([tokens], np.int64), state)[0])[0]
        ref = reference_beam_search(log_probs, codes, items, beam_size=8, num_items_per_session=2, num_results=5,
                                    bos_token=model.bos, token_offsets=[0, 6, 12])
        np.testing.assert_array_equal(out["item_ids"][b], ref["item_ids"])
        np.testing.assert_allclose(out["scores"][b], ref["scores"], rtol=1e-5)


def test_recommend_signature_serves_in_a_fresh_process(toy, tmp_path):
    model, codes, items = toy
    users = np.array([3, 1, 4, 1, 5, 9, 2], np.int64)
    expected = {k: v.numpy() for k, v in model.recommend(tf.constant(users)).items()}
    keras_path = export_recommend(model, tmp_path / "keras_export")
    module = RecommendModule(model)
    tf_path = tmp_path / "tf_export"
    tf.saved_model.save(module, str(tf_path), signatures={"recommend": module.recommend})
    code = f"""
        import json, sys
        import tensorflow as tf
        users = json.loads(sys.stdin.read())
        out = {{}}
        for name, path in (("keras", {str(keras_path)!r}), ("tf", {str(tf_path)!r})):
            recommend = tf.saved_model.load(path).signatures["recommend"]
            for size in (1, 7):
                result = recommend(user_id=tf.constant(users[:size], tf.int64))
                out[f"{{name}}{{size}}"] = {{k: v.numpy().tolist() for k, v in result.items()}}
        print(json.dumps(out))
    """
    served = run_fresh(code, users.tolist())
    for name, size in itertools.product(("keras", "tf"), (1, 7)):
        got = served[f"{name}{size}"]
        assert set(got) == {"item_ids", "scores", "codes"}
        np.testing.assert_array_equal(got["item_ids"], expected["item_ids"][:size])
        np.testing.assert_array_equal(got["codes"], expected["codes"][:size])
        np.testing.assert_allclose(got["scores"], expected["scores"][:size], rtol=1e-6)
        assert np.asarray(got["item_ids"]).shape == (size, 5, 2)

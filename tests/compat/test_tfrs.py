"""TFRS BruteForce index: exact top-K, export before any query, serving without our code."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfrec_onerec.compat import tfrs


@pytest.fixture(scope="module")
def candidates():
    rng = np.random.default_rng(0)
    return np.arange(1000, 1060), rng.normal(size=(60, 8)).astype(np.float32), rng.normal(size=(4, 8)).astype(np.float32)


def numpy_top_k(queries, embeddings, ids, k):
    scores = queries @ embeddings.T
    order = np.argsort(-scores, axis=1)[:, :k]
    return np.take_along_axis(scores, order, 1), ids[order]


def test_index_returns_exact_top_k(candidates):
    ids, embeddings, queries = candidates
    scores, found = tfrs.brute_force_index(ids, embeddings, k=6)(tf.constant(queries))
    expected_scores, expected_ids = numpy_top_k(queries, embeddings, ids, 6)
    np.testing.assert_array_equal(found.numpy(), expected_ids)
    np.testing.assert_allclose(scores.numpy(), expected_scores, rtol=1e-5)


def test_exported_before_any_query_serves_any_k_without_tfrec_onerec(candidates, tmp_path):
    ids, embeddings, queries = candidates
    path = tfrs.export_index(tfrs.brute_force_index(ids, embeddings, k=5), tmp_path / "index", 8)
    code = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        q = tf.constant(json.loads(sys.stdin.read()), tf.float32)
        index = tf.saved_model.load({str(path)!r})
        default = index.signatures["serving_default"](query_embeddings=q)
        chosen = index.signatures["top_k"](query_embeddings=q, k=tf.constant(12))
        assert not any(m.startswith(("tfrec_onerec", "tensorflow_recommenders")) for m in sys.modules)
        print(json.dumps({{"default": default["ids"].numpy().tolist(), "chosen": chosen["ids"].numpy().tolist()}}))
    """)
    result = subprocess.run([sys.executable, "-c", code], input=json.dumps(queries.tolist()), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    np.testing.assert_array_equal(out["default"], numpy_top_k(queries, embeddings, ids, 5)[1])
    np.testing.assert_array_equal(out["chosen"], numpy_top_k(queries, embeddings, ids, 12)[1])


def test_bad_arguments_are_explained(candidates):
    ids, embeddings, _ = candidates
    with pytest.raises(ValueError, match="k must be between 1 and the number of candidates \\(60\\)"):
        tfrs.brute_force_index(ids, embeddings, k=61)
    with pytest.raises(ValueError, match="Expected \\(n,\\) ids and \\(n, dim\\) embeddings"):
        tfrs.brute_force_index(ids[:10], embeddings, k=3)

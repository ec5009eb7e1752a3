"""TFRS BruteForce index: exact top-K, per-call k, and a SavedModel that serves without our code.

The export test builds an index, exports it *before it was ever queried*, and loads it in a
fresh Python process that imports only TensorFlow (neither tfrec_onerec nor
tensorflow_recommenders), where it serves the exact top-k. Exporting and loading before the
first call works. (Saving a never-called TFRS index directly with tf.saved_model.save does
not: TF-Keras skips the unbuilt layer and the loaded object cannot be called, a known TFRS
complaint; export_index saves explicit signatures instead.)
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrec_onerec.compat import tfrs

from fresh_process import run_fresh


def numpy_top_k(queries, embeddings, ids, k):
    """Exact top-k by dot product; equal scores keep the candidate order (stable sort)."""
    scores = np.asarray(queries, np.float64) @ np.asarray(embeddings, np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.asarray(ids)[order]


@pytest.fixture(scope="module")
def candidates():
    """60 candidates with small integer embeddings (dot products are exact in float32, and
    many are tied), int ids, and 5 queries."""
    rng = np.random.default_rng(0)
    embeddings = rng.integers(-2, 3, (60, 8)).astype(np.float32)
    embeddings[7] = embeddings[3]  # an exact duplicate: always tied
    queries = rng.integers(-2, 3, (5, 8)).astype(np.float32)
    return np.arange(1000, 1060), embeddings, queries


def test_index_equals_numpy_brute_force_including_ties(candidates):
    ids, embeddings, queries = candidates
    index = tfrs.build_brute_force_index(ids, embeddings, k=6)
    scores, found = index(tf.constant(queries))
    expected_scores, expected_ids = numpy_top_k(queries, embeddings, ids, 6)
    assert found.dtype == tf.int64 and found.shape == (5, 6)
    np.testing.assert_array_equal(found.numpy(), expected_ids)
    np.testing.assert_array_equal(scores.numpy(), expected_scores)
    # k per call: a Python int or a scalar tensor
    for k in (1, 60, tf.constant(13)):
        scores, found = index(tf.constant(queries), k=k)
        expected_scores, expected_ids = numpy_top_k(queries, embeddings, ids, int(k))
        np.testing.assert_array_equal(found.numpy(), expected_ids)
        np.testing.assert_array_equal(scores.numpy(), expected_scores)


def test_index_on_random_float_embeddings_and_string_ids():
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(500, 16)).astype(np.float32)
    queries = rng.normal(size=(20, 16)).astype(np.float32)
    ids = np.array([f"item-{i}" for i in range(500)])
    scores, found = tfrs.build_brute_force_index(ids, embeddings, k=10)(tf.constant(queries))
    expected_scores, expected_ids = numpy_top_k(queries, embeddings, ids, 10)
    assert found.dtype == tf.string
    np.testing.assert_array_equal(found.numpy().astype(str), expected_ids)
    np.testing.assert_allclose(scores.numpy(), expected_scores, rtol=1e-5, atol=1e-5)


SERVE = """
    import json, sys
    import numpy as np
    import tensorflow as tf

    inputs = json.loads(sys.stdin.read())
    out = {}
    plain = tf.saved_model.load(inputs["plain"])  # first use of the index in any process
    q = tf.constant(inputs["queries"], tf.float32)
    for name, result in [("default", plain.signatures["serving_default"](query_embeddings=q)),
                         ("k12", plain.signatures["top_k"](query_embeddings=q, k=tf.constant(12))),
                         ("k999", plain.signatures["top_k"](query_embeddings=q, k=tf.constant(999)))]:
        out[name] = {"ids": result["ids"].numpy().tolist(), "scores": result["scores"].numpy().tolist()}
    tower = tf.saved_model.load(inputs["tower"])
    result = tower.signatures["top_k"](features=tf.constant(inputs["features"], tf.float32), k=tf.constant(4))
    out["tower"] = {"ids": [[i.decode() for i in row] for row in result["ids"].numpy()],
                    "scores": result["scores"].numpy().tolist()}
    print(json.dumps(out))
"""


def test_exported_before_any_query_loads_and_serves_with_tensorflow_alone(candidates, tmp_path):
    ids, embeddings, queries = candidates
    # 1. an index over embeddings, exported right after it was built: never called here.
    plain = tfrs.build_brute_force_index(ids, embeddings, k=5)
    plain_path = tfrs.export_index(plain, tmp_path / "plain")
    # 2. an index with a Keras 3 query tower (raw features -> embeddings), string ids.
    keras.utils.set_random_seed(2)
    tower = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8)])
    string_ids = np.array([f"i{n}" for n in ids])
    with_tower = tfrs.build_brute_force_index(string_ids, embeddings, k=4, query_model=tower)
    tower_path = tfrs.export_index(with_tower, tmp_path / "tower", query_spec=tf.TensorSpec([None, 3], tf.float32))
    features = np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32)

    request = {"plain": plain_path, "tower": tower_path, "queries": queries.tolist(), "features": features.tolist()}
    # neither tfrec_onerec nor TFRS may be imported to serve (checked in the child)
    out = run_fresh(SERVE, request, forbidden=("tfrec_onerec", "tensorflow_recommenders"))

    for name, k in [("default", 5), ("k12", 12), ("k999", 60)]:  # k above the candidates is clamped
        expected_scores, expected_ids = numpy_top_k(queries, embeddings, ids, k)
        np.testing.assert_array_equal(out[name]["ids"], expected_ids, err_msg=name)
        np.testing.assert_array_equal(out[name]["scores"], expected_scores, err_msg=name)
    tower_embeddings = np.asarray(tower(features))
    expected_scores, expected_ids = numpy_top_k(tower_embeddings, embeddings, string_ids, 4)
    np.testing.assert_array_equal(out["tower"]["ids"], expected_ids)
    np.testing.assert_allclose(out["tower"]["scores"], expected_scores, rtol=1e-5, atol=1e-5)


def test_bad_arguments_are_explained(candidates, tmp_path):
    ids, embeddings, _ = candidates
    with pytest.raises(ValueError, match=r"k must be between 1 and the number of candidates \(60\), got 61"):
        tfrs.build_brute_force_index(ids, embeddings, k=61)
    with pytest.raises(ValueError, match=r"Expected \(n,\) candidate_ids and \(n, dim\) candidate_embeddings"):
        tfrs.build_brute_force_index(ids[:10], embeddings, k=3)
    with pytest.raises(ValueError, match="integers or strings"):
        tfrs.build_brute_force_index(ids.astype(float), embeddings, k=3)
    tower = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8)])
    index = tfrs.build_brute_force_index(ids, embeddings, k=3, query_model=tower)
    with pytest.raises(ValueError, match="has a query model: pass query_spec"):
        tfrs.export_index(index, tmp_path / "x")
    with pytest.raises(ValueError, match="has no candidates"):
        tfrs.export_index(tfrs.load().layers.factorized_top_k.BruteForce(k=3), tmp_path / "y")

"""TensorFlow Recommenders' top-K indexes: the one module that imports `tensorflow_recommenders`.

TFRS 0.7.7 is tf-keras (Keras 2) code, and a tf-keras layer inside a Keras 3 model is not
tracked by it (its weights would not train or save). We therefore use TFRS only where it
runs on plain tensors outside Keras 3 models: the brute-force top-K index over candidate
embeddings that a retrieval model produces, exported as its own SavedModel.
"""
from __future__ import annotations

import functools
import os

import numpy as np
import tensorflow as tf

from tfrec_onerec import _environment


@functools.cache
def load():
    """Imports and returns `tensorflow_recommenders` (needs ``TF_USE_LEGACY_KERAS=1``)."""
    if not _environment.legacy_keras_enabled():
        raise RuntimeError(f"TF Recommenders needs {_environment.LEGACY_KERAS_VARIABLE}=1 (tf.keras must be "
                           "tf-keras), set before TensorFlow is imported.")
    import tensorflow_recommenders

    return tensorflow_recommenders


def brute_force_index(candidate_ids, candidate_embeddings, k: int = 10):
    """A TFRS BruteForce index over candidates, queried with query embeddings.

    Args:
        candidate_ids: (num_candidates,) int64 item ids.
        candidate_embeddings: (num_candidates, dim) float32.
        k: the default number of results (at most ``num_candidates``).

    Returns:
        ``tfrs.layers.factorized_top_k.BruteForce``; ``index(queries, k=None)`` returns
        ``(scores (batch, k) float32, ids (batch, k) int64)``, scores being dot products.
    """
    ids = np.asarray(candidate_ids, dtype=np.int64)
    embeddings = np.asarray(candidate_embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(ids) != len(embeddings):
        raise ValueError(f"Expected (n,) ids and (n, dim) embeddings, got {ids.shape} and {embeddings.shape}.")
    if not 1 <= k <= len(ids):
        raise ValueError(f"k must be between 1 and the number of candidates ({len(ids)}), got {k}.")
    index = load().layers.factorized_top_k.BruteForce(k=k)
    index.index(candidates=tf.constant(embeddings), identifiers=tf.constant(ids))
    return index


def export_index(index, path: str | os.PathLike, embedding_dim: int) -> str:
    """Saves an index as a SavedModel that needs only TensorFlow to serve.

    Signatures (inputs ``query_embeddings`` (batch, embedding_dim) float32):

    * ``serving_default``: the index's default k; outputs ``scores`` and ``ids``.
    * ``top_k``: adds an int32 scalar input ``k``, so k is chosen per request (at most the
      number of candidates), not frozen at export.

    The index can be exported right after ``index()``, before any query.
    """
    queries = tf.TensorSpec([None, embedding_dim], tf.float32, name="query_embeddings")

    @tf.function(input_signature=[queries])
    def serve(query_embeddings):
        scores, ids = index(query_embeddings)
        return {"scores": scores, "ids": ids}

    @tf.function(input_signature=[queries, tf.TensorSpec([], tf.int32, name="k")])
    def top_k(query_embeddings, k):
        scores, ids = index(query_embeddings, k=k)
        return {"scores": scores, "ids": ids}

    tf.saved_model.save(index, os.fspath(path), signatures={"serving_default": serve, "top_k": top_k})
    return os.fspath(path)

"""TensorFlow Recommenders' top-K index: the one module that imports `tensorflow_recommenders`.

TFRS 0.7.7 is tf-keras (Keras 2) code: its layers subclass ``tf.keras.Model``, so it needs
``TF_USE_LEGACY_KERAS=1`` (which ``import tfrec_onerec`` sets), and a TFRS layer placed inside
a Keras 3 model would not be tracked by it (its variables would neither train nor save). We
therefore use TFRS only outside Keras 3 models: a brute-force top-K index over the candidate
embeddings that a retrieval model produces, exported as its own SavedModel.

Conventions:

* **Scores** are dot products ``query . candidate`` (TFRS ``BruteForce``). Results are sorted
  by descending score; equal scores come out in the order the candidates were indexed
  (``tf.math.top_k`` returns the lower index first).
* **Identifiers** may be integers (stored as ``int64``) or strings (``tf.string``); the
  ``ids`` output has the same type.
* **k**: TFRS's ``BruteForce.call(queries, k=None)`` accepts a per-call ``k`` (a Python int
  or a scalar int tensor), falling back to the ``k`` given at construction. It must not exceed
  the number of candidates (``tf.math.top_k`` fails otherwise). The exported SavedModel keeps
  this: a ``top_k`` signature takes ``k`` per request (clamped to the number of candidates).
* **Saving before the first query**: ``tf.saved_model.save(index, path)`` on an index that
  was never called skips it ("Skipping full serialization of TF-Keras layer ... because it is
  not built") and the loaded object cannot be called; hence TFRS examples query an index
  once before saving, and even then only the default k is served. :func:`export_index`
  instead saves explicit ``tf.function`` signatures with full input specs, so an index can be
  exported right after it is built, never having been queried, with k chosen per request.
"""
from __future__ import annotations

import functools
import os

import numpy as np
import tensorflow as tf

from tfrec_onerec.compat.tf_ranking import require_tf_keras

__all__ = ["build_brute_force_index", "export_index", "load"]


@functools.cache
def load():
    """Imports `tensorflow_recommenders` (once) and returns the module.

    Raises:
        RuntimeError: ``tf.keras`` is not tf-keras in this process (``TF_USE_LEGACY_KERAS``
            not set before TensorFlow was imported).
    """
    require_tf_keras("TF Recommenders")
    import tensorflow_recommenders

    return tensorflow_recommenders


def _identifiers(candidate_ids) -> tf.Tensor:
    ids = np.asarray(candidate_ids)
    if ids.dtype.kind in "iu":
        return tf.constant(ids.astype(np.int64))
    if ids.dtype.kind in "USO":
        return tf.constant(ids.tolist(), dtype=tf.string)  # str is UTF-8 encoded
    raise ValueError(f"candidate_ids must be integers or strings, got dtype {ids.dtype}.")


def build_brute_force_index(candidate_ids, candidate_embeddings, k: int = 10, query_model=None):
    """A TFRS ``BruteForce`` index over candidates, ready to query and to export.

    Args:
        candidate_ids: (num_candidates,) identifiers: integers (stored as int64) or strings
            (bytes or str; stored as ``tf.string``).
        candidate_embeddings: (num_candidates, dim) embeddings (converted to float32).
        k: the default number of results, in ``[1, num_candidates]``.
        query_model: None (default): the index is queried with query embeddings (batch, dim).
            Otherwise a callable (a Keras 3 or tf-keras model, or a function) mapping raw
            query features to (batch, dim) embeddings; the index applies it first, and its
            variables are saved with the index. The model is not trained through the index.

    Returns:
        A ``tfrs.layers.factorized_top_k.BruteForce``; ``index(queries, k=None)`` returns
        ``(scores, ids)`` of shapes (batch, k): float32 dot products, sorted descending, and
        the matching identifiers.

    Raises:
        ValueError: shapes or k are inconsistent, or ids are neither integers nor strings.
    """
    embeddings = np.asarray(candidate_embeddings, dtype=np.float32)
    ids = _identifiers(candidate_ids)
    if embeddings.ndim != 2 or ids.shape.rank != 1 or ids.shape[0] != embeddings.shape[0]:
        raise ValueError(f"Expected (n,) candidate_ids and (n, dim) candidate_embeddings, got {tuple(ids.shape)} "
                         f"and {embeddings.shape}.")
    if embeddings.shape[0] == 0:
        raise ValueError("No candidates to index.")
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= embeddings.shape[0]:
        raise ValueError(f"k must be between 1 and the number of candidates ({embeddings.shape[0]}), got {k!r}.")
    index = load().layers.factorized_top_k.BruteForce(query_model=query_model, k=int(k))
    index.index(candidates=tf.constant(embeddings), identifiers=ids)
    return index


def export_index(index, path: str | os.PathLike, query_spec=None) -> str:
    """Saves an index as a SavedModel that needs only TensorFlow to load and serve.

    Signatures (outputs ``scores`` (batch, k) float32 and ``ids`` (batch, k) int64 or string):

    * ``serving_default``: input ``query_embeddings`` (or the ``query_spec`` inputs); k is
      the index's default k.
    * ``top_k``: the same inputs plus an int32 scalar ``k``, chosen per request; a k larger
      than the number of candidates is clamped to it (the outputs then have that many columns).

    What is saved is a plain ``tf.Module`` holding the candidate and identifier variables (and
    the query model, if any) with these two functions, not the tf-keras index object, so
    loading needs neither TFRS nor tf-keras nor tfrec_onerec: ``tf.saved_model.load(path)``
    then ``.signatures["top_k"](query_embeddings=..., k=...)``. The index may be exported
    before it was ever queried.

    Args:
        index: an index from :func:`build_brute_force_index` (any TFRS ``BruteForce`` that has
            been given candidates with ``index()``).
        path: the SavedModel directory to write.
        query_spec: the inputs of the signatures. None (default): ``(None, dim)`` float32
            query embeddings named ``query_embeddings``, dim taken from the index. Required
            when the index has a query model: a ``tf.TensorSpec`` (input named after the
            spec's name, else ``features``) or a dict of them (the dict keys become the input
            names) describing the raw query features the query model takes. The query model
            must be trackable (a Keras model or a ``tf.Module``) for its variables to be saved.

    Returns:
        ``path`` as a string.

    Raises:
        ValueError: the index has no candidates yet, or has a query model and no query_spec.
    """
    # TFRS 0.7.7 BruteForce keeps the index in these two variables, created by index().
    candidates = getattr(index, "_candidates", None)
    identifiers = getattr(index, "_identifiers", None)
    if candidates is None or identifiers is None:
        raise ValueError("The index has no candidates: call index.index(...) (or build_brute_force_index) first.")
    num_candidates = int(candidates.shape[0])
    query_model = getattr(index, "query_model", None)
    if query_spec is None:
        if query_model is not None:
            raise ValueError("This index has a query model: pass query_spec, the TensorSpec (or dict of "
                             "TensorSpecs) of the raw query features it takes.")
        query_spec = tf.TensorSpec([None, int(candidates.shape[1])], tf.float32, name="query_embeddings")
    elif isinstance(query_spec, dict):
        query_spec = {key: tf.TensorSpec(spec.shape, spec.dtype, name=spec.name or key)
                      for key, spec in query_spec.items()}
    elif not query_spec.name:
        query_spec = tf.TensorSpec(query_spec.shape, query_spec.dtype,
                                   name="features" if query_model is not None else "query_embeddings")

    def outputs(scores, ids):
        return {"scores": scores, "ids": ids}

    @tf.function(input_signature=[query_spec])
    def serve(queries):
        return outputs(*index(queries))

    @tf.function(input_signature=[query_spec, tf.TensorSpec([], tf.int32, name="k")])
    def top_k(queries, k):
        return outputs(*index(queries, k=tf.minimum(k, num_candidates)))

    module = tf.Module(name="brute_force_index")
    module.candidates, module.identifiers = candidates, identifiers
    if query_model is not None:
        module.query_model = query_model
    module.serve, module.top_k = serve, top_k
    path = os.fspath(path)
    tf.saved_model.save(module, path, signatures={"serving_default": serve, "top_k": top_k})
    return path

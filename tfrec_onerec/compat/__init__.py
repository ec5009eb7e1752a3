"""Compatibility modules: the one place each Keras-2-era library is imported.

* :mod:`~tfrec_onerec.compat.tf_ranking`: TF-Ranking 0.5.5 on TensorFlow 2.21 (import shim
  for the removed ``tf.estimator``); ``tf_ranking.load()`` returns the ``tfr`` module.
* :mod:`~tfrec_onerec.compat.tfrs`: TensorFlow Recommenders' brute-force top-K index over
  candidate embeddings, and its export as a SavedModel that needs only TensorFlow.

Both libraries are tf-keras (Keras 2) code and need ``TF_USE_LEGACY_KERAS=1`` before
TensorFlow is imported, which ``import tfrec_onerec`` arranges. Nothing is imported here;
each module loads its library on first use.
"""

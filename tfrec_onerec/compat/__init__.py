"""Compatibility modules: the one place each Keras-2-era library is imported.

* :mod:`~tfrec_onerec.compat.tf_ranking`: TF-Ranking 0.5.5 on TensorFlow 2.21.
* :mod:`~tfrec_onerec.compat.tfrs`: TensorFlow Recommenders' top-K retrieval indexes.

Nothing heavy is imported here; each module loads its library on first use.
"""

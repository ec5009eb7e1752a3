"""TF-Ranking 0.5.5 on TensorFlow 2.21: the one module that imports `tensorflow_ranking`.

TF-Ranking imports ``tensorflow.estimator`` and ``tensorflow.compat.v1.estimator`` at import
time; both were removed in TensorFlow 2.16. :func:`load` puts inert stand-ins for them in
place for the duration of the import only (TF-Ranking's Estimator API therefore raises if
used; its Keras losses and metrics, which is what we use, do not touch it). Its losses call
``tf.keras`` internals that only tf-keras has, so ``TF_USE_LEGACY_KERAS=1`` must be in
force, which ``import tfrec_onerec`` arranges (see :mod:`tfrec_onerec._environment`).
"""
from __future__ import annotations

import functools
import sys
import types

from tfrec_onerec import _environment

ESTIMATOR_MODULES = ("tensorflow.estimator", "tensorflow.compat.v1.estimator")


class _Unavailable:
    """Any attribute of a removed estimator module: usable as a base class or a constant,
    raising a clear error when called."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return _Unavailable(f"{self._name}.{attribute}")

    def __mro_entries__(self, bases):
        return (object,)

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self._name} is unavailable: tf.estimator was removed in TensorFlow 2.16, so "
                           "TF-Ranking's Estimator API cannot be used; use its Keras losses and metrics.")


class _UnavailableModule(types.ModuleType):
    def __getattr__(self, attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return _Unavailable(f"{self.__name__}.{attribute}")


@functools.cache
def load():
    """Imports and returns the `tensorflow_ranking` module.

    Raises:
        RuntimeError: ``TF_USE_LEGACY_KERAS`` is not enabled in this process.
    """
    if not _environment.legacy_keras_enabled():
        raise RuntimeError(
            f"TF-Ranking needs {_environment.LEGACY_KERAS_VARIABLE}=1 (tf.keras must be tf-keras), set before "
            "TensorFlow is imported. Unset it (tfrec_onerec then sets it) or set it to 1.")
    import tensorflow as tf

    placed = []
    for name in ESTIMATOR_MODULES:
        if name not in sys.modules:
            sys.modules[name] = _UnavailableModule(name)
            placed.append(name)
    parents = [(tf, "estimator"), (tf.compat.v1, "estimator")]
    added = [(parent, attribute) for parent, attribute in parents if not hasattr(parent, attribute)]
    for (parent, attribute), name in zip(added, ESTIMATOR_MODULES):
        setattr(parent, attribute, sys.modules[name])
    try:
        import tensorflow_ranking
    finally:
        for name in placed:
            del sys.modules[name]
        for parent, attribute in added:
            delattr(parent, attribute)
    return tensorflow_ranking

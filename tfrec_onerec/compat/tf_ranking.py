"""TF-Ranking 0.5.5 on TensorFlow 2.21: the one module that imports `tensorflow_ranking`.

Two things stand between TF-Ranking 0.5.5 and this stack:

1. At import time it runs ``from tensorflow import estimator`` and
   ``from tensorflow.compat.v1 import estimator`` (its Estimator API), but ``tf.estimator``
   was removed in TensorFlow 2.16, so the import fails. :func:`load` puts inert stand-ins in
   ``sys.modules`` (``tensorflow.estimator``, ``tensorflow.compat.v1.estimator``) and as
   attributes of the ``tf`` and ``tf.compat.v1`` modules, only where no real ones exist, only
   for the duration of the import, and removes them afterwards. Any attribute of a stand-in
   is a placeholder that can be used as a default argument value or compared, and raises a
   ``RuntimeError`` when called: TF-Ranking's Estimator API (``tfr.estimator``,
   ``tfr.keras.estimator``, the ``head``/``model`` modules) is therefore unusable, while its
   Keras losses and metrics, which never touch it, work.
2. Its Keras classes subclass ``tf.keras`` classes and call ``tf.keras`` internals that only
   tf-keras (Keras 2) has, so ``tf.keras`` must be tf-keras: ``TF_USE_LEGACY_KERAS=1`` set
   before TensorFlow is imported. ``import tfrec_onerec`` sets it (see
   :mod:`tfrec_onerec._environment`); :func:`load` refuses with a ``RuntimeError`` when it is
   not in force.

TF-Ranking objects are tf-keras objects: use them on tensors (as :mod:`tfrec_onerec.losses`
does), never as layers of a Keras 3 model.
"""
from __future__ import annotations

import functools
import os
import sys
import threading
import types

from tfrec_onerec import _environment

ESTIMATOR_MODULES = ("tensorflow.estimator", "tensorflow.compat.v1.estimator")

_IMPORT_LOCK = threading.Lock()


def require_tf_keras(library: str) -> None:
    """Raises unless ``tf.keras`` is tf-keras in this process (needed by Keras-2-era libraries).

    Args:
        library: the library's name, for the message.

    Raises:
        RuntimeError: ``TF_USE_LEGACY_KERAS`` is not enabled, or TensorFlow resolved
            ``tf.keras`` to Keras 3 before it was set (``tf.keras`` was used before
            ``import tfrec_onerec``).
    """
    variable = _environment.LEGACY_KERAS_VARIABLE
    if not _environment.legacy_keras_enabled():
        raise RuntimeError(
            f"{library} needs {variable}=1 (tf.keras must be tf-keras), and the variable must be set before "
            f"TensorFlow is imported; this process has {variable}={os.environ.get(variable)!r}. "
            "Unset it (importing tfrec_onerec first then sets it) or set it to 1.")
    import tensorflow as tf

    resolved = getattr(tf.keras, "__name__", "")
    if not resolved.startswith("tf_keras"):
        raise RuntimeError(
            f"{library} needs tf.keras to be tf-keras, but in this process tf.keras is {resolved!r} (Keras 3): "
            f"tf.keras was used before {variable}=1 took effect. Import tfrec_onerec before anything uses "
            "TensorFlow, or set the variable in the environment of the process.")


class _Unavailable:
    """A placeholder for any attribute of a removed estimator module.

    Attribute access returns further placeholders, so import-time uses such as
    ``mode=tf_estimator.ModeKeys.TRAIN`` (a default argument) or subclassing work; calling one
    raises a ``RuntimeError`` that says why.
    """

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
                           "TF-Ranking's Estimator API cannot be used; its Keras losses and metrics can.")

    def __repr__(self):
        return f"<unavailable {self._name}>"


class _UnavailableModule(types.ModuleType):
    """A stand-in module whose every public attribute is an :class:`_Unavailable`."""

    def __getattr__(self, attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return _Unavailable(f"{self.__name__}.{attribute}")


def _has_attribute(module, attribute: str) -> bool:
    try:
        return getattr(module, attribute, None) is not None
    except ImportError:  # a lazily loaded attribute whose package is missing
        return False


@functools.cache
def load():
    """Imports `tensorflow_ranking` (once) and returns the module.

    Returns:
        The ``tensorflow_ranking`` module (cached: later calls return the same object).

    Raises:
        RuntimeError: ``tf.keras`` is not tf-keras in this process (see
            :func:`require_tf_keras`).
    """
    require_tf_keras("TF-Ranking")
    import tensorflow as tf

    with _IMPORT_LOCK:
        placed_modules, placed_attributes = [], []
        for name, (parent, attribute) in zip(ESTIMATOR_MODULES, ((tf, "estimator"), (tf.compat.v1, "estimator"))):
            real = sys.modules.get(name) or (getattr(parent, attribute) if _has_attribute(parent, attribute) else None)
            if real is not None:
                continue  # a real tf.estimator exists (older TensorFlow): leave it alone
            stand_in = _UnavailableModule(name)
            sys.modules[name] = stand_in
            placed_modules.append(name)
            setattr(parent, attribute, stand_in)
            placed_attributes.append((parent, attribute))
        try:
            import tensorflow_ranking
        finally:
            for name in placed_modules:
                sys.modules.pop(name, None)
            for parent, attribute in placed_attributes:
                try:
                    delattr(parent, attribute)
                except AttributeError:
                    pass
    return tensorflow_ranking

"""The process-wide environment decision, made once before TensorFlow is imported.

tfrec_onerec models are Keras 3 (`import keras`). Two libraries the product builds on,
TF-Ranking and TF Recommenders, are written against Keras 2: their code calls `tf.keras`
internals that only the `tf-keras` package has. TensorFlow decides what `tf.keras` means
from the environment variable ``TF_USE_LEGACY_KERAS`` when `tf.keras` is first resolved, so
we set it to ``1`` here, before anything imports TensorFlow. Consequences:

* `import keras` is Keras 3 either way; all of tfrec_onerec's models use it.
* `tf.keras` is tf-keras (Keras 2) in a process that imported tfrec_onerec first.
  A user who already set ``TF_USE_LEGACY_KERAS=0`` keeps their choice; the TF-Ranking
  compatibility module then refuses with a message naming the variable.

TensorFlow's C++ start-up chatter is reduced to warnings unless the user chose a level.
"""
import os

LEGACY_KERAS_VARIABLE = "TF_USE_LEGACY_KERAS"

os.environ.setdefault(LEGACY_KERAS_VARIABLE, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def legacy_keras_enabled() -> bool:
    """True when `tf.keras` resolves to tf-keras in this process."""
    return os.environ.get(LEGACY_KERAS_VARIABLE, "").lower() in ("1", "true", "yes")

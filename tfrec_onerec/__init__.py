"""tfrec_onerec: a TensorFlow / Keras 3 model zoo of the OneRec family of recommenders.

Layers of the package (imports run downward only)::

    cli                                   entry points
    families                              the contract of each model family: data, build, train,
                                          evaluate, export (one road for every entry point)
    training, evaluation, export          fit loops, metrics over data sets, SavedModels
    models/<family>/                      one module per model; a registry by name
    layers/, losses, metrics, compat/,    reusable building blocks (clustering: the numpy
    clustering                            k-means of residual quantization)
    features/, data/                      specs, loaders, simulator, tf.data, TFRecord

Submodules are imported lazily, so `import tfrec_onerec` stays light and never imports
TFX or Beam.
"""
import importlib

from tfrec_onerec import _environment  # noqa: F401  (must run before TensorFlow is imported)

__version__ = "0.1.0"

_SUBMODULES = (
    "clustering", "compat", "data", "evaluation", "export", "families", "features", "layers", "losses",
    "metrics", "models", "serving", "training",
)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"tfrec_onerec.{name}")
    raise AttributeError(f"module 'tfrec_onerec' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))

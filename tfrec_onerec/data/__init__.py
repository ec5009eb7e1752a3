"""Data sets: MovieLens-100K, the short-video simulator, sample building, prepared TFRecords.

* :mod:`~tfrec_onerec.data.movielens`: MovieLens-100K's typed tables and its CTR samples.
* :mod:`~tfrec_onerec.data.simulator`: the seeded short-video simulator (ground truth known).
* :mod:`~tfrec_onerec.data.samples`: histories, negative sampling and splits of a log.
* :mod:`~tfrec_onerec.data.prepared`: a prepared directory of TFRecord splits.
* `get(name)` / `names()`: data sets by their CLI names.

The names below load their module on first use, so that importing this package (the
command line does, for its help) does not load TensorFlow.
"""
import importlib

_EXPORTS = {
    "PreparedData": "prepared", "load_prepared": "prepared", "prepare": "prepared", "prepare_cached": "prepared",
    "write_prepared": "prepared", "get": "registry", "names": "registry", "SampleConfig": "samples",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value

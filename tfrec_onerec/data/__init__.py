"""Data sets: MovieLens-100K, the short-video simulator, sample building, prepared TFRecords.

* :mod:`~tfrec_onerec.data.movielens`: MovieLens-100K's typed tables and its CTR samples.
* :mod:`~tfrec_onerec.data.simulator`: the seeded short-video simulator (ground truth known).
* :mod:`~tfrec_onerec.data.samples`: histories, negative sampling and splits of a log.
* :mod:`~tfrec_onerec.data.prepared`: a prepared directory of TFRecord splits.
* `get(name)` / `names()`: data sets by their CLI names.
"""
from tfrec_onerec.data.prepared import PreparedData, load_prepared, prepare, prepare_cached, write_prepared
from tfrec_onerec.data.registry import get, names
from tfrec_onerec.data.samples import SampleConfig

__all__ = ["PreparedData", "SampleConfig", "get", "load_prepared", "names", "prepare", "prepare_cached",
           "write_prepared"]

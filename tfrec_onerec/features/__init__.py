"""Feature and task specifications, and everything derived from them.

* :mod:`~tfrec_onerec.features.spec`: `Feature`, `Task`, `FeatureSpec` and the id/sequence
  convention (pad id 0, OOV row, oldest-first sequences truncated from the left).
* :mod:`~tfrec_onerec.features.parsing`: tf.Example parsing and feature-dict checks.
* :mod:`~tfrec_onerec.features.tfrecord`: TFRecord writing.
* :mod:`~tfrec_onerec.features.datasets`: batched, prefetched `tf.data` input.
"""
from tfrec_onerec.features.spec import PAD_ID, Feature, FeatureSpec, Task, tasks_from_config, tasks_to_config

__all__ = ["PAD_ID", "Feature", "FeatureSpec", "Task", "tasks_from_config", "tasks_to_config"]

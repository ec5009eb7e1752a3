"""The Trainer component's `run_fn`: any registry model, trained by its family's contract, exported
with the shared exporter.

The Trainer reads Transform's output (gzipped tf.Example of the model's features, see
:mod:`tfx_pipelines.preprocessing`) as a :class:`~tfrec_onerec.families.FamilyData`, lets the
model's family (:mod:`tfrec_onerec.families`) build and train the model named in
``custom_config["model"]`` (:meth:`~tfrec_onerec.families.base.ModelFamily.fit`: every
training option honoured), and writes the SavedModel. A task model's ``serving_default``
signature parses *raw* serialized tf.Examples and applies the Transform graph in the same
graph, so TF Serving clients (and the Evaluator) send raw examples; ``predict`` takes the
transformed feature tensors. A model with its own signatures (``recommend``...) is written
with them (its families' data need no vocabularies, so raw and transformed features agree).

``custom_config`` (written by :func:`tfx_pipelines.pipeline.create_pipeline`)::

    model, family, hyperparameters, tasks, feature_spec (JSON), labels, metadata (the data
    set's metadata.json), data_dir (side files, e.g. item vectors), train (TrainConfig fields),
    source_fingerprint
"""
from __future__ import annotations

import json
import logging
from typing import Mapping, Sequence

import tensorflow as tf

from tfrec_onerec.features import FeatureSpec
from tfrec_onerec.features.datasets import example_batch
from tfrec_onerec.features.tfrecord import serialize_rows

RUN_FN = "tfx_pipelines.trainer.run_fn"
log = logging.getLogger(__name__)


class TransformedExampleParser(tf.Module):
    """Raw serialized tf.Example -> the model's features, through the Transform graph.

    Args:
        transform_output: a ``tft.TFTransformOutput``.
        labels: label columns of the raw schema; a serving request carries none.

    Call: string Tensor (batch,) -> ``{feature: tensor}`` as :mod:`tfx_pipelines.preprocessing`
    returns them.
    """

    def __init__(self, transform_output, labels: Sequence[str]):
        super().__init__(name="transformed_example_parser")
        self.transform_layer = transform_output.transform_features_layer()
        self._raw_spec = {name: spec for name, spec in transform_output.raw_feature_spec().items()
                          if name not in set(labels)}
        self._outputs = [name for name in transform_output.transformed_feature_spec() if name not in set(labels)]

    def __call__(self, serialized: tf.Tensor) -> dict:
        transformed = self.transform_layer(tf.io.parse_example(serialized, self._raw_spec))
        return {name: transformed[name] for name in self._outputs}


def train_and_export(config: Mapping, train_files, eval_files, transform_output, serving_model_dir: str,
                     run_dir: str | None = None):
    """Trains the configured model on transformed examples and exports it (see the module docstring).

    Returns:
        The :class:`~tfrec_onerec.families.TrainResult`.
    """
    from tfrec_onerec import families

    spec = FeatureSpec.from_json(config["feature_spec"])
    labels = list(config["labels"])
    family = families.get(config["family"])
    data = families.FamilyData(spec, dict(config.get("metadata", {})), {"train": train_files, "valid": eval_files},
                               compression="GZIP", side_dir=config.get("data_dir"))
    train_config = family.train_config(family.model_class(config["model"]),
                                       {**config.get("train", {}), "verbose": 2, "checkpoint_dir": run_dir})
    result = family.fit(config["model"], data, train_config, config.get("hyperparameters", {}),
                        config.get("tasks") or None)
    log.info("Trained %s: %s", config["model"], {k: v[-1] for k, v in result.history.history.items()})
    if hasattr(result.model, "serving_endpoints"):
        family.export(result.model, serving_model_dir, data, model_name=config["model"], exact_path=True)
    else:
        parser = TransformedExampleParser(transform_output, labels)
        family.export(result.model, serving_model_dir, data, model_name=config["model"], exact_path=True,
                      example_parser=parser, warmup_examples=serialize_rows(example_batch(spec), spec),
                      client_spec=spec)
    return result


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (``Trainer(run_fn=RUN_FN, ...)``)."""
    import tensorflow_transform as tft

    config = fn_args.custom_config
    if isinstance(config, str):
        config = json.loads(config)
    train_and_export(config, fn_args.train_files, fn_args.eval_files, tft.TFTransformOutput(fn_args.transform_output),
                     fn_args.serving_model_dir, run_dir=fn_args.model_run_dir)

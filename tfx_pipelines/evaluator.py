"""The Evaluator's TFMA configuration for point-wise models: metrics, slices and the blessing gate.

The model is evaluated through its ``serving_default`` signature on *raw* eval examples
(the Transform graph is inside it); every task is an output, scored against its label column:

* metrics: ExampleCount, AUC, AUC-PR, Calibration (mean prediction / mean label),
  MeanLabel, MeanPrediction, BinaryCrossentropy, a calibration plot;
* slices: the whole eval split and one slice per value of each slicing feature;
* a task with a ``sample_space`` (e.g. ESMM's CVR on clicked impressions) is scored on its
  sample space: that label column is the task's example weight (0 leaves an example out);
* blessing: *every binary task's* AUC on the whole split at least ``min_auc`` (value threshold)
  and, once a model was blessed before, at most ``max_auc_drop`` below the latest blessed
  one's (change threshold; the first model has no baseline and is judged by the value
  threshold alone).

Models of the other families are judged by :mod:`tfx_pipelines.family_evaluator`.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.proto import config_pb2

from tfrec_onerec.export import SERVING_SIGNATURE
from tfrec_onerec.features import Task

BLESSING_METRIC = "auc"


def eval_config(tasks: Sequence[Task], slices: Sequence[str], min_auc: float, max_auc_drop: float) -> tfma.EvalConfig:
    """The TFMA ``EvalConfig`` of binary tasks, each gated (see the module docstring)."""
    tasks = [t for t in tasks if t.kind == "binary"]  # other outputs (e.g. STAN's preferences) are not gated
    if not tasks:
        raise ValueError("The Evaluator's blessing uses AUC: it needs at least one binary task.")
    threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": float(min_auc)}),
        change_threshold=tfma.GenericChangeThreshold(direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                                                     absolute={"value": -float(max_auc_drop)}))
    metrics = [
        tfma.MetricConfig(class_name="ExampleCount"),
        tfma.MetricConfig(class_name="AUC", config='{"name": "%s"}' % BLESSING_METRIC, threshold=threshold),
        tfma.MetricConfig(class_name="AUCPrecisionRecall"),
        tfma.MetricConfig(class_name="Calibration"),
        tfma.MetricConfig(class_name="MeanLabel"),
        tfma.MetricConfig(class_name="MeanPrediction"),
        tfma.MetricConfig(class_name="BinaryCrossentropy"),
        tfma.MetricConfig(class_name="CalibrationPlot"),
    ]
    if len(tasks) == 1 and not tasks[0].sample_space:  # one output: TFMA's single-output keys (results and plots keep their plain names)
        spec = tfma.ModelSpec(signature_name=SERVING_SIGNATURE, label_key=tasks[0].label,
                              prediction_key=tasks[0].name, model_type=tfma.TF_GENERIC)
        metrics_specs = [tfma.MetricsSpec(metrics=metrics)]
    else:
        masked = [t for t in tasks if t.sample_space]
        spec = tfma.ModelSpec(signature_name=SERVING_SIGNATURE, model_type=tfma.TF_GENERIC,
                              label_keys={t.name: t.label for t in tasks},
                              prediction_keys={t.name: t.name for t in tasks},
                              example_weight_keys={t.name: t.sample_space for t in masked})
        # A task with a sample space is scored on it alone: its 0/1 column weighs the examples.
        whole = [t.name for t in tasks if not t.sample_space]
        metrics_specs = [tfma.MetricsSpec(metrics=metrics, output_names=whole)] if whole else []
        if masked:
            metrics_specs.append(tfma.MetricsSpec(metrics=metrics, output_names=[t.name for t in masked],
                                                  example_weights=config_pb2.ExampleWeightOptions(weighted=True)))
    return tfma.EvalConfig(
        model_specs=[spec],
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[name]) for name in slices],
        metrics_specs=metrics_specs)

"""The Evaluator of families that TFMA cannot judge: next-item, generative and session-outcome models.

TFMA scores one prediction per example against a label. A next-item model is judged by where
the held-out item lands among all items, a generative one by its beam's list or by the
simulator's ground truth of the session it writes, a session-outcome model by AUCs of
fractional labels next to an oracle. :func:`FamilyEvaluator` runs the model family's own
protocol (:meth:`~tfrec_onerec.families.base.ModelFamily.evaluate_export`) on the *exported*
model (its signatures, as TF Serving would call them) over the raw eval split of ExampleGen,
and blesses it as TFX's Evaluator does, so the Resolver and the Pusher treat both alike:

* value threshold: the family's headline metric (e.g. ``recall@10``; ``swt_mean`` on the
  simulator; the lowest task AUC) at least ``min_value``;
* change threshold: once a model was blessed, at most ``max_drop`` below the latest blessed
  one's value on the same examples.

It writes ``evaluation.json`` (the metrics of both models, the thresholds, the decision) into
its ``evaluation`` artifact and ``BLESSED`` / ``NOT_BLESSED`` into its ``blessing`` artifact,
with the custom properties ``blessed``, ``current_model_id`` (and the baseline's) that TFX's
``LatestBlessedModelStrategy`` and Pusher read.
"""

import json
import os

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

EVALUATION_FILE = "evaluation.json"


def split_files(examples, split: str) -> str:
    """The file pattern of one split of an Examples artifact (ExampleGen writes gzipped TFRecords)."""
    return os.path.join(examples.uri, f"Split-{split}", "*")


def model_path(model) -> str:
    """The SavedModel directory of a Trainer's Model artifact."""
    from tfx.utils import path_utils

    return path_utils.serving_model_path(model.uri)


def judge(value: float, baseline: float | None, min_value: float, max_drop: float, higher_is_better: bool) -> tuple:
    """``(blessed, reasons)``: the value threshold, then the change threshold against the baseline."""
    sign = 1.0 if higher_is_better else -1.0
    reasons = []
    if sign * (value - min_value) < 0:
        reasons.append(f"value {value:.4f} is {'below' if higher_is_better else 'above'} the threshold {min_value:.4f}")
    if baseline is not None and sign * (value - baseline) < -max_drop:
        reasons.append(f"value {value:.4f} is worse than the latest blessed model's {baseline:.4f} by more than "
                       f"{max_drop:.4f}")
    return not reasons, reasons


def evaluate_family(config: dict, examples_pattern: str, model_dir: str, baseline_dir: str | None) -> dict:
    """The family's metrics of the model (and the baseline) on the eval examples, and the decision."""
    from tfrec_onerec import families
    from tfrec_onerec.features import FeatureSpec

    family = families.get(config["family"])
    data = families.FamilyData(FeatureSpec.from_json(config["feature_spec"]), dict(config["metadata"]),
                               {"valid": examples_pattern}, compression="GZIP", side_dir=config.get("data_dir"))
    results = family.evaluate_export(model_dir, data, "valid")
    value = family.headline(results)
    baseline_value = None
    if baseline_dir:
        baseline_value = family.headline(family.evaluate_export(baseline_dir, data, "valid"))
    name, higher_is_better = family.headline_name(results), family.headline_metric[1]
    blessed, reasons = judge(value, baseline_value, float(config["min_value"]), float(config["max_drop"]),
                             higher_is_better)
    return {"family": family.name, "metric": name, "value": value, "baseline_value": baseline_value,
            "min_value": float(config["min_value"]), "max_drop": float(config["max_drop"]), "blessed": blessed,
            "reasons": reasons, "results": results}


@component
def FamilyEvaluator(examples: InputArtifact[standard_artifacts.Examples],  # noqa: N802 (a component)
                    model: InputArtifact[standard_artifacts.Model],
                    evaluation: OutputArtifact[standard_artifacts.ModelEvaluation],
                    blessing: OutputArtifact[standard_artifacts.ModelBlessing],
                    config: Parameter[str],
                    baseline_model: InputArtifact[standard_artifacts.Model] = None) -> None:
    """Evaluates the model by its family's protocol and blesses it (see the module docstring).

    ``config``: JSON with ``family``, ``feature_spec``, ``metadata``, ``data_dir``,
    ``min_value``, ``max_drop``.
    """
    import tensorflow as tf

    settings = json.loads(config)
    split = "eval" if "eval" in artifact_utils.decode_split_names(examples.split_names) else "valid"
    report = evaluate_family(settings, split_files(examples, split), model_path(model),
                             model_path(baseline_model) if baseline_model is not None else None)
    tf.io.gfile.makedirs(evaluation.uri)
    with tf.io.gfile.GFile(os.path.join(evaluation.uri, EVALUATION_FILE), "w") as handle:
        handle.write(json.dumps(report, indent=2, default=float))
    blessing.set_string_custom_property("current_model", model.uri)
    blessing.set_int_custom_property("current_model_id", model.id)
    if baseline_model is not None:
        blessing.set_string_custom_property("baseline_model", baseline_model.uri)
        blessing.set_int_custom_property("baseline_model_id", baseline_model.id)
    tf.io.gfile.makedirs(blessing.uri)
    with tf.io.gfile.GFile(os.path.join(blessing.uri, "BLESSED" if report["blessed"] else "NOT_BLESSED"), "w"):
        pass
    blessing.set_int_custom_property("blessed", 1 if report["blessed"] else 0)
    print(f"FamilyEvaluator: {report['metric']} {report['value']:.4f}"
          + (f" (latest blessed {report['baseline_value']:.4f})" if report["baseline_value"] is not None else "")
          + (": blessed" if report["blessed"] else ": not blessed (" + "; ".join(report["reasons"]) + ")"))

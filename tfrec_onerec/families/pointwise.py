"""The point-wise family: models that score (user, candidate item) examples, one output per task.

Data: one tf.Example per impression (MovieLens-100K: a rating or a sampled negative; the
simulator: an exposure) with the user's features, the candidate's, its history, and every
label column (:mod:`tfrec_onerec.data.samples`). A model is built as
``model_class(feature_spec, tasks, **hyperparameters)`` and trained with the tasks' losses
(:func:`tfrec_onerec.training.task_losses`). Evaluation: per binary task, AUC, GAUC
(impression-weighted and per-user mean) and LogLoss (:mod:`tfrec_onerec.evaluation`). Export:
``serving_default`` (serialized tf.Example) and ``predict`` (named tensors), one score per task.
Models: DIN, din_base, and the multi-task rankers (:mod:`tfrec_onerec.models.multitask`).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from tfrec_onerec import data as datasets
from tfrec_onerec.families.base import BuiltData, FamilyData, ModelFamily
from tfrec_onerec.features.spec import Task, tasks_from_config

SAMPLE_OPTIONS = {"max_len": "max_len", "negatives": "num_negatives", "eval_negatives": "eval_negatives",
                  "split": "split", "seed": "seed"}
"""Data option (CLI argument name) -> :class:`~tfrec_onerec.data.SampleConfig` field."""


def as_task_list(tasks: Sequence) -> list:
    """Task names, dicts or Tasks -> Tasks."""
    return tasks_from_config([t if isinstance(t, (Task, dict)) else {"name": t} for t in tasks])


class PointwiseFamily(ModelFamily):
    name = "pointwise"
    description = "scores (user, item) examples; one output per task (AUC, GAUC, LogLoss)"
    datasets = ("movielens-100k", "simulator", "simulator-lifelong")
    data_options = dict.fromkeys(SAMPLE_OPTIONS)
    has_tasks = True
    pipeline_min_value = 0.6
    headline_metric = ("auc", True)

    def default_data_options(self, dataset: str) -> dict:
        config = datasets.get(dataset).default_config
        return {option: getattr(config, field) for option, field in SAMPLE_OPTIONS.items()}

    def build_data(self, dataset: str, options: dict, data_path=None) -> BuiltData:
        builder = datasets.get(dataset)
        spec, splits, metadata = builder.build(sample_config(options), data_path)
        side = builder.side_arrays(data_path) if builder.side_arrays else {}
        return BuiltData(spec, splits, {**metadata, "default_tasks": list(builder.default_tasks)}, side)

    def tasks(self, data: FamilyData, tasks: Sequence | None, model_class=None) -> list:
        """The given tasks, else the model class's defaults for the data set (multi-task models:
        ``default_tasks(funnel)``), else the data set's default tasks; each checked to have its
        label columns."""
        if tasks:
            chosen = as_task_list(tasks)
        elif hasattr(model_class, "default_tasks"):
            known = data.dataset_name in datasets.names()
            chosen = as_task_list(model_class.default_tasks(datasets.get(data.dataset_name).funnel if known else ()))
        else:
            chosen = as_task_list(data.metadata.get("default_tasks") or ["click"])
        missing = sorted({c for t in chosen for c in t.columns if c not in data.spec.labels})
        if missing:
            raise ValueError(f"--task: the data has no label column {missing}; its labels are {list(data.spec.labels)}.")
        return chosen

    def dataset(self, data: FamilyData, split: str, config, training: bool = False):
        return data.records(split, data.spec, data.spec.labels, batch_size=config.batch_size if training else 4096,
                            shuffle=training, seed=config.seed)

    def build_model(self, model_class, data: FamilyData, hyperparameters: Mapping | None = None,
                    tasks: Sequence | None = None, built=None):
        return model_class(data.spec, self.tasks(data, tasks, model_class), **dict(hyperparameters or {}))

    # -- evaluation -------------------------------------------------------------------------------
    def keras_scorer(self, model):
        import tensorflow as tf

        return tf.function(lambda features: model(features, training=False))

    def export_scorer(self, loaded, info: dict):
        signature = loaded.signatures["predict"]
        names = set(signature.structured_input_signature[1])
        return lambda features: signature(**{k: v for k, v in features.items() if k in names})

    def evaluate_with(self, scorer, data: FamilyData, split: str, info: dict) -> dict:
        from tfrec_onerec import evaluation

        tasks = as_task_list(info.get("tasks") or [])
        if not tasks:
            raise ValueError("The model's tasks are unknown: the export records none (exported before the "
                             "family contract); re-export it.")
        out = evaluation.collect_predictions(scorer, data.records(split, data.spec, data.spec.labels, 4096),
                                             data.spec.user_key)
        return evaluation.score_predictions(out, tasks)

    def format_results(self, results: dict) -> str:
        from tfrec_onerec import evaluation

        return evaluation.format_results(results)

    def headline(self, results: dict) -> float:
        return min(r["auc"] for r in results.values())


FAMILY = PointwiseFamily()


def sample_config(options: Mapping) -> datasets.SampleConfig:
    """The :class:`~tfrec_onerec.data.SampleConfig` of point-wise data options."""
    return datasets.SampleConfig(**{field: options[option] for option, field in SAMPLE_OPTIONS.items()
                                    if option in options})

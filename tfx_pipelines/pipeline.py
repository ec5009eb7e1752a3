"""The pipeline factory: ExampleGen -> ... -> Pusher for any zoo model, driven by its family.

::

    ExampleGen (ImportExampleGen for TFRecord, CsvExampleGen for CSV)
      -> StatisticsGen -> SchemaGen (inferred) ------------------.
      -> ImportSchemaGen (derived from the feature spec, default) -> SchemaAgreement
      -> ExampleValidator -> DataGate (stops on anomalies, naming the features)
      -> Transform (preprocessing_fn from the spec)
      -> Trainer (the model's family builds and trains it: tfrec_onerec.families)
      -> Evaluator: TFMA for point-wise models (every task gated), FamilyEvaluator for the
         others (the family's own protocol on the exported model); value threshold and
         change threshold vs the latest blessed model
      -> Pusher (atomic, into <serving_dir>/<model>/<version>/, only when blessed)

Data: a directory prepared for the model's family (``tfrec-onerec data prepare --family F``,
or prepared on the fly by ``tfrec-onerec pipeline run``: ``spec.json``, ``metadata.json``,
``train.tfrecord`` / ``valid.tfrecord`` (the eval split is ``valid``) and side files such as
item vectors), or, for point-wise models, a directory of CSV files plus ``spec.json`` (split
4:1 by hash; CSV holds no sequence features). Sequence features enter as var-len int64 lists.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from tfx import v1 as tfx

from tfrec_onerec.features import FeatureSpec
from tfrec_onerec.features.spec import tasks_to_config
from tfx_pipelines import evaluator as evaluator_config
from tfx_pipelines.family_evaluator import FamilyEvaluator
from tfx_pipelines.fingerprint import source_fingerprint
from tfx_pipelines.gates import DataGate, SchemaAgreement
from tfx_pipelines.preprocessing import PREPROCESSING_FN
from tfx_pipelines.pusher import atomic_pusher
from tfx_pipelines.schema import schema_from_spec
from tfx_pipelines.trainer import RUN_FN

SPEC_FILE = "spec.json"
SCHEMA_MODES = ("derived", "inferred")
# Beam's DirectRunner in multi-processing mode: the embedded default.
DIRECT_MULTIPROCESSING = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")
# Every Beam worker imports tfx first: `import tfx` stubs tfx_bsl.arrow.sql_util, which
# TFDV 1.16 imports but tfx-bsl 1.21 lacks (docs/STACK.md). Without it, workers that unpickle a
# TFDV transform fail with "cannot import name 'sql_util'".
WORKER_PLUGINS = "--beam_plugins=tfx"


def beam_arguments(beam_args: Sequence[str]) -> list:
    """`beam_args` plus :data:`WORKER_PLUGINS` (unless some ``--beam_plugins`` is given)."""
    args = list(beam_args)
    return args if any(a.startswith("--beam_plugins") for a in args) else args + [WORKER_PLUGINS]


@dataclasses.dataclass
class PipelineConfig:
    """Everything a pipeline run depends on.

    Args:
        model: a registry model name (``tfrec-onerec models``).
        data: a directory prepared for the model's family, or a CSV directory (point-wise
            models; see the module docstring).
        pipeline_root: where TFX writes artifacts (and, by default, ML Metadata).
        serving_dir: the serving base directory; the model goes to ``serving_dir/<model>``.
        tasks: a task model's tasks (names of label columns, or :class:`Task` s); default:
            the data set's default tasks.
        hyperparameters: keyword arguments of the model class.
        epochs, batch_size, learning_rate, early_stopping_patience, jit_compile, seed: training
            (None: the family's and the model's defaults, see ``ModelFamily.train_config``).
        strategy: ``"none"`` or ``"mirrored"`` (a ``tf.distribute`` strategy in the Trainer).
        schema: ``"derived"`` (from the feature spec, checked against SchemaGen's) or
            ``"inferred"`` (SchemaGen's).
        min_value: the blessing threshold on the family's headline metric on the eval split:
            every task's AUC for point-wise models; default the family's ``pipeline_min_value``.
        max_drop: the change threshold: how much the metric may fall below the latest blessed model.
        slices: features to slice TFMA metrics by (those absent from the spec are skipped).
        beam_args: Beam pipeline arguments (default: DirectRunner, 2 processes).
        metadata_path: the ML Metadata SQLite file; default ``pipeline_root/metadata.sqlite``.
        pipeline_name: default ``tfrec-onerec-<model>``.
        enable_cache: reuse outputs of components whose inputs did not change.
    """

    model: str
    data: str
    pipeline_root: str
    serving_dir: str = "saved_models"
    tasks: Sequence | None = None
    hyperparameters: dict = dataclasses.field(default_factory=dict)
    epochs: int | None = 2
    batch_size: int | None = None
    learning_rate: float | None = None
    early_stopping_patience: int | None = None
    jit_compile: bool = False
    seed: int = 0
    strategy: str = "none"
    schema: str = "derived"
    min_value: float | None = None
    max_drop: float = 0.01
    slices: Sequence[str] = ("gender", "age")
    beam_args: Sequence[str] = DIRECT_MULTIPROCESSING
    metadata_path: str | None = None
    pipeline_name: str | None = None
    enable_cache: bool = True

    def __post_init__(self):
        if self.schema not in SCHEMA_MODES:
            raise ValueError(f"schema must be one of {SCHEMA_MODES}, got {self.schema!r}.")
        from tfrec_onerec import models

        if self.model not in models.list():
            raise ValueError(f"Unknown model {self.model!r}; registered models: {', '.join(models.list())}.")
        data_family = self.metadata().get("family", "pointwise")
        if self.data_format() == "csv" and self.family.name != "pointwise":
            raise ValueError(f"CSV data holds no sequences; the {self.family.name} family of {self.model!r} needs "
                             "data prepared for it (`tfrec-onerec data prepare --family ...`).")
        if data_family != self.family.name:
            raise ValueError(f"{self.data} holds data of the {data_family} family; {self.model!r} belongs to the "
                             f"{self.family.name} family. Prepare the data for it (`tfrec-onerec data prepare "
                             f"--family {self.family.name}`) or let `tfrec-onerec pipeline run` prepare it.")

    @property
    def family(self):
        """The model's family (:mod:`tfrec_onerec.families`)."""
        from tfrec_onerec import families

        return families.for_model(self.model)

    def metadata(self) -> dict:
        """The prepared data's ``metadata.json`` ({} for CSV data)."""
        path = Path(self.data) / "metadata.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def threshold(self) -> float:
        """The blessing threshold: ``min_value``, else the family's default."""
        return self.family.pipeline_min_value if self.min_value is None else float(self.min_value)

    @property
    def name(self) -> str:
        return self.pipeline_name or f"tfrec-onerec-{self.model.replace('_', '-')}"

    @property
    def model_serving_dir(self) -> str:
        return os.path.join(self.serving_dir, self.model)

    def spec(self) -> FeatureSpec:
        path = Path(self.data) / SPEC_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the pipeline's data directory needs the feature spec "
                                    "(`tfrec-onerec data prepare` writes it).")
        return FeatureSpec.from_json(path.read_text())

    def task_list(self) -> list:
        """The tasks a task model trains on (given, else the model's or the data set's defaults,
        as ``train`` picks them; see the family's ``tasks``); [] for other models."""
        if not self.family.has_tasks:
            return []
        from tfrec_onerec.families import FamilyData

        data = FamilyData(self.spec(), self.metadata(), {})
        return self.family.tasks(data, self.tasks, self.family.model_class(self.model))

    def output_tasks(self) -> list:
        """The trained model's outputs as tasks: :meth:`task_list` plus any output a model
        derives (ESMM's ``cvr``, scored on clicked examples), as the model class declares."""
        tasks = self.task_list()
        model_class = self.family.model_class(self.model)
        if hasattr(model_class, "output_tasks"):
            return model_class.output_tasks(tasks, self.hyperparameters)
        return tasks

    def data_format(self) -> str:
        data = Path(self.data)
        if (data / "train.tfrecord").is_file():
            return "tfrecord"
        if any(data.glob("*.csv")):
            return "csv"
        raise FileNotFoundError(f"{data} holds neither train.tfrecord/valid.tfrecord (a prepared data set) nor "
                                "*.csv files.")


def _example_gen(config: PipelineConfig, spec: FeatureSpec):
    if config.data_format() == "tfrecord":
        splits = [tfx.proto.Input.Split(name="train", pattern="train.tfrecord"),
                  tfx.proto.Input.Split(name="eval", pattern="valid.tfrecord")]
        return tfx.components.ImportExampleGen(input_base=os.path.abspath(config.data),
                                               input_config=tfx.proto.Input(splits=splits))
    sequences = [f.name for f in spec if f.kind == "sequence"]
    if sequences:
        raise ValueError(f"CSV data cannot hold the sequence features {sequences}; write TFRecords "
                         "(`tfrec-onerec data prepare`) instead.")
    split = tfx.proto.SplitConfig(splits=[tfx.proto.SplitConfig.Split(name="train", hash_buckets=4),
                                          tfx.proto.SplitConfig.Split(name="eval", hash_buckets=1)])
    return tfx.components.CsvExampleGen(input_base=os.path.abspath(config.data),
                                        output_config=tfx.proto.Output(split_config=split))


def write_derived_schema(spec: FeatureSpec, pipeline_root: str) -> str:
    """Writes the spec's schema under ``pipeline_root/derived_schema/<content hash>/``.

    A new spec gives a new path, so ImportSchemaGen's cache never returns a stale schema.
    ``pipeline_root`` may be remote (``gs://``): the schema must be where the components run.
    """
    import tensorflow as tf
    from google.protobuf import text_format

    text = text_format.MessageToString(schema_from_spec(spec))
    directory = os.path.join(pipeline_root, "derived_schema", hashlib.sha256(text.encode()).hexdigest()[:16])
    path = os.path.join(directory, "schema.pbtxt")
    if not tf.io.gfile.exists(path):
        tf.io.gfile.makedirs(directory)
        with tf.io.gfile.GFile(path, "w") as handle:
            handle.write(text)
    return path if "://" in path else os.path.abspath(path)


def trainer_config(config: PipelineConfig, spec: FeatureSpec) -> dict:
    """The Trainer's ``custom_config`` (JSON-serialisable; see :mod:`tfx_pipelines.trainer`)."""
    tasks = config.task_list()
    train = {"epochs": config.epochs, "batch_size": config.batch_size, "learning_rate": config.learning_rate,
             "early_stopping_patience": config.early_stopping_patience, "jit_compile": config.jit_compile,
             "strategy": config.strategy, "seed": config.seed}
    return {
        "model": config.model, "family": config.family.name, "hyperparameters": dict(config.hyperparameters),
        "tasks": tasks_to_config(tasks) if tasks else None, "feature_spec": spec.to_json(),
        "labels": list(spec.labels), "metadata": config.metadata(), "data_dir": data_uri(config.data),
        "train": {k: v for k, v in train.items() if v is not None},
        "source_fingerprint": source_fingerprint(),  # the code behind run_fn/preprocessing_fn: a cache key
    }


def data_uri(data: str) -> str:
    """`data` as the components reach it: a remote URI as is, a local path made absolute."""
    return data if "://" in data else os.path.abspath(data)


def evaluator_component(config: PipelineConfig, spec: FeatureSpec, examples, model, baseline_model, schema):
    """TFMA's Evaluator for point-wise models (every task gated), else the :func:`FamilyEvaluator`."""
    if config.family.name == "pointwise":
        return tfx.components.Evaluator(
            examples=examples, model=model, baseline_model=baseline_model, schema=schema,
            eval_config=evaluator_config.eval_config(config.output_tasks(), [s for s in config.slices if s in spec],
                                                     config.threshold, config.max_drop))
    settings = {"family": config.family.name, "feature_spec": spec.to_json(), "metadata": config.metadata(),
                "data_dir": data_uri(config.data), "min_value": config.threshold, "max_drop": config.max_drop,
                "source_fingerprint": source_fingerprint()}
    return FamilyEvaluator(examples=examples, model=model, baseline_model=baseline_model,
                           config=json.dumps(settings, sort_keys=True)).with_id("Evaluator")


def create_pipeline(config: PipelineConfig, metadata_connection_config=None) -> tfx.dsl.Pipeline:
    """Builds the TFX pipeline of `config` (see the module docstring).

    Args:
        config: the :class:`PipelineConfig`.
        metadata_connection_config: ML Metadata connection; default SQLite at
            ``config.metadata_path`` (None for Kubeflow, which brings its own).
    """
    spec = config.spec()
    example_gen = _example_gen(config, spec)
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True)
    components = [example_gen, statistics_gen, schema_gen]
    if config.schema == "derived":
        import_schema = tfx.components.ImportSchemaGen(schema_file=write_derived_schema(spec, config.pipeline_root))
        agreement = SchemaAgreement(inferred=schema_gen.outputs["schema"], derived=import_schema.outputs["schema"])
        schema = import_schema.outputs["schema"]
        components += [import_schema, agreement]
    else:
        schema = schema_gen.outputs["schema"]
    example_validator = tfx.components.ExampleValidator(statistics=statistics_gen.outputs["statistics"], schema=schema)
    data_gate = DataGate(anomalies=example_validator.outputs["anomalies"])
    custom = trainer_config(config, spec)
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"], schema=schema, preprocessing_fn=PREPROCESSING_FN,
        custom_config={"feature_spec": custom["feature_spec"], "labels": custom["labels"],
                       "source_fingerprint": custom["source_fingerprint"]})
    transform.add_upstream_node(data_gate)
    if config.schema == "derived":
        transform.add_upstream_node(agreement)
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN, examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"], schema=schema,
        train_args=tfx.proto.TrainArgs(splits=["train"]), eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config=custom)
    baseline = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    evaluator = evaluator_component(config, spec, example_gen.outputs["examples"], trainer.outputs["model"],
                                    baseline.outputs["model"], schema)
    pusher = atomic_pusher(trainer.outputs["model"], evaluator.outputs["blessing"], config.model_serving_dir)
    components += [example_validator, data_gate, transform, trainer, baseline, evaluator, pusher]
    if metadata_connection_config is None:
        metadata_connection_config = tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path or os.path.join(config.pipeline_root, "metadata.sqlite"))
    return tfx.dsl.Pipeline(
        pipeline_name=config.name, pipeline_root=config.pipeline_root, components=components,
        enable_cache=config.enable_cache, metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_arguments(config.beam_args))

"""The contract every model family keeps, and the data a family hands to its models.

A *model family* groups the models that consume the same data and are judged the same way.
It declares once:

* **data**: which data sets it reads and how each becomes tf.Example rows through a feature
  spec (:meth:`ModelFamily.build_data`, written and cached by :meth:`ModelFamily.prepare`
  in the layout of :mod:`tfrec_onerec.data.prepared`; side files such as item vectors go
  next to the TFRecords), and which data options (``--max-len``, ``--session-len``...) it
  reads (:attr:`ModelFamily.data_options`);
* **model building**: how a registered model class is built from that data
  (:meth:`ModelFamily.build_model`: vocabulary sizes from the spec, a tokenizer...);
* **training**: batches of the TFRecords (:meth:`ModelFamily.dataset`) trained by
  :func:`tfrec_onerec.training.fit`, so every :class:`~tfrec_onerec.training.TrainConfig`
  option (strategy, XLA, checkpoints and resume, early stopping, callbacks) holds for every
  family; defaults per family and per model (a model class's ``training_defaults``);
* **evaluation**: one protocol, run on a Keras model (:meth:`ModelFamily.evaluate`) or on an
  export loaded without this package (:meth:`ModelFamily.evaluate_export`), with the same
  numbers, printed by :meth:`ModelFamily.format_results`, and one headline metric
  (:attr:`ModelFamily.headline_metric`) the pipeline's evaluator gates on;
* **export**: the SavedModel with the model's signatures and warmup records, plus
  ``assets.extra/tfrec_onerec.json`` recording the model, family, tasks and data set, so an
  export is evaluated against what it was trained on.

``train``, ``evaluate``, the TFX Trainer and Evaluator, the notebooks and the benchmarks use
this contract and never name a model.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from tfrec_onerec.data.download import default_cache_dir
from tfrec_onerec.data.prepared import PreparedData, cached, load_prepared, write_prepared
from tfrec_onerec.features import FeatureSpec
from tfrec_onerec.features.datasets import tfrecord_dataset

EXPORT_INFO_FILE = "tfrec_onerec.json"
"""Written into an export's ``assets.extra``: model, family, tasks, data set (see :meth:`ModelFamily.export`)."""
SPLITS = ("train", "valid", "test")


class UnsupportedOption(ValueError):
    """An option a family cannot honour was given (the message names the flag and the family)."""


@dataclasses.dataclass
class FamilyData:
    """What a family trains and evaluates on: TFRecord files of each split, their spec, and
    the data set's metadata (plus side files such as item vectors next to them).

    Attributes:
        spec: the feature spec of the rows (features, and label columns where the family has tasks).
        metadata: the data set's ``metadata.json`` (``dataset``, ``family``, sizes, options...).
        files: ``{split: file pattern(s)}``; the pipeline's Trainer has ``train`` and ``valid``.
        compression: ``"GZIP"`` for TFX Transform's output, else None.
        side_dir: the directory holding the side files (a prepared data set's directory).
    """

    spec: FeatureSpec
    metadata: dict
    files: dict
    compression: str | None = None
    side_dir: str | None = None

    @classmethod
    def from_prepared(cls, prepared: PreparedData) -> "FamilyData":
        return cls(prepared.spec, prepared.metadata, {s: str(prepared.file(s)) for s in SPLITS},
                   side_dir=str(prepared.directory))

    @property
    def dataset_name(self) -> str:
        return self.metadata.get("dataset", "")

    def examples(self, split: str) -> int | None:
        """Rows of `split` when known: a prepared data set counts them (the pipeline's Transform
        keeps every row, so the counts hold for its output too)."""
        return self.metadata.get("examples", {}).get(split)

    def records(self, split: str, spec: FeatureSpec, labels: Sequence[str] = (), batch_size: int = 256,
                shuffle: bool = False, seed: int = 0):
        """Batches of one split parsed with `spec` (a subset of the data's spec):
        ``({feature: tensor}, {label: y})`` when `labels`, else ``{feature: tensor}``."""
        if split not in self.files:
            raise ValueError(f"The data has no {split!r} split; it has {sorted(self.files)}.")
        return tfrecord_dataset(self.files[split], spec, labels, batch_size, shuffle=shuffle, seed=seed,
                                num_examples=self.examples(split), compression_type=self.compression)

    def columns(self, split: str) -> dict:
        """``{feature or label: numpy array}`` of a whole split, parsed (for data that fits in memory,
        e.g. alignment contexts or notebooks)."""
        parts: dict = {}
        for batch in self.records(split, self.spec, self.spec.labels, batch_size=8192):
            rows = {**batch[0], **batch[1]} if self.spec.labels else batch
            for name, value in rows.items():
                parts.setdefault(name, []).append(value.numpy())
        return {name: np.concatenate(values) for name, values in parts.items()}

    def side_file(self, name: str) -> str:
        """The path of side file `name` (e.g. ``item_vectors.npz``)."""
        if not self.side_dir:
            raise FileNotFoundError(f"The data has no side-file directory, so {name!r} cannot be read; "
                                    "pass the prepared data set's directory.")
        return f"{self.side_dir.rstrip('/')}/{name}"

    def load_side_arrays(self, name: str) -> dict:
        """``{name: array}`` of a side ``.npz`` file (read through tf.io.gfile: remote URIs work)."""
        import io

        import tensorflow as tf

        path = self.side_file(name)
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"Side file {path} not found: the data set was prepared for another family, "
                                    f"or the file was removed (prepare it again).")
        with tf.io.gfile.GFile(path, "rb") as handle:
            with np.load(io.BytesIO(handle.read())) as arrays:
                return {key: arrays[key] for key in arrays.files}


@dataclasses.dataclass
class BuiltData:
    """What :meth:`ModelFamily.build_data` returns: rows of every split, written as tf.Example.

    Attributes:
        spec: the feature spec; ``spec.labels`` are written as label columns.
        splits: ``{split: {column: array}}`` for ``train``, ``valid`` and ``test``.
        metadata: JSON-serialisable facts the family's steps read later (sizes, options).
        side_arrays: ``{file name: {array name: array}}`` written as ``.npz`` next to the records.
    """

    spec: FeatureSpec
    splits: dict
    metadata: dict
    side_arrays: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TrainResult:
    """What :meth:`ModelFamily.fit` returns: the model, its Keras history, and family facts
    (e.g. OneRec's target tokens per second, the tokenizer's report)."""

    model: object
    history: object
    info: dict = dataclasses.field(default_factory=dict)


class ModelFamily:
    """Base class of the families (see the module docstring). Subclasses set the class
    attributes and implement :meth:`build_data`, :meth:`dataset`, :meth:`build_model`,
    :meth:`evaluate_with` and :meth:`format_results`.

    Attributes:
        name: the family's name, as models register with it.
        description: one line for ``tfrec-onerec models``.
        datasets: the data sets the family reads.
        data_options: ``{option: default}`` of the data options it reads (CLI flags
            ``--max-len`` etc., by their argument names); others are refused.
        train_defaults: :class:`~tfrec_onerec.training.TrainConfig` values this family uses
            unless the model class (``training_defaults``) or the caller says otherwise.
        build_options: options of :meth:`build_model` besides hyperparameters (e.g. ``tokenizer``).
        has_tasks: models have tasks (``--task``) with label columns.
        headline_metric: ``(name, higher is better)`` of the number the pipeline's evaluator gates on.
        pipeline_min_value: the pipeline's default blessing threshold on that number.
        data_version: bump when :meth:`build_data` changes its output (cached copies rebuild).
    """

    name: str = ""
    description: str = ""
    datasets: tuple = ()
    data_options: dict = {}
    train_defaults: dict = {}
    build_options: tuple = ()
    has_tasks: bool = False
    headline_metric: tuple = ("", True)
    pipeline_min_value: float = 0.0
    data_version: int = 1

    # -- options ----------------------------------------------------------------------------------
    def check_dataset(self, dataset: str) -> None:
        if dataset not in self.datasets:
            raise UnsupportedOption(f"The {self.name} family reads the data sets {', '.join(self.datasets)}; "
                                    f"not {dataset!r}.")

    def data_config(self, dataset: str, given: Mapping | None = None) -> dict:
        """The data options: the family's defaults updated with `given` (values None ignored).

        Raises:
            UnsupportedOption: an option this family does not read (named with its flag).
        """
        given = {k: v for k, v in (given or {}).items() if v is not None}
        refuse(given, self.data_options, self.name)
        return {**self.default_data_options(dataset), **given}

    def default_data_options(self, dataset: str) -> dict:
        """The data options' defaults for `dataset` (some families differ per data set)."""
        return dict(self.data_options)

    def train_config(self, model_class=None, given: Mapping | None = None):
        """The :class:`~tfrec_onerec.training.TrainConfig`: ``TrainConfig()`` < the family's
        ``train_defaults`` < the model class's ``training_defaults`` < `given` (None ignored)."""
        from tfrec_onerec.training import TrainConfig

        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        given = {k: v for k, v in (given or {}).items() if v is not None}
        unknown = sorted(set(given) - fields)
        if unknown:
            raise ValueError(f"Unknown training options {unknown}; TrainConfig has {sorted(fields)}.")
        values = {**self.train_defaults, **getattr(model_class, "training_defaults", {}), **given}
        return TrainConfig(**values)

    def check_build_options(self, options: Mapping) -> dict:
        options = {k: v for k, v in (options or {}).items() if v is not None}
        refuse(options, dict.fromkeys(self.build_options), self.name)
        return options

    # -- data -------------------------------------------------------------------------------------
    def build_data(self, dataset: str, options: dict, data_path=None) -> BuiltData:
        raise NotImplementedError

    def prepare(self, dataset: str, options: Mapping | None = None, data_path=None,
                directory: str | Path | None = None) -> FamilyData:
        """The family's data of `dataset`, written as TFRecords (see :meth:`build_data`).

        Args:
            dataset: a data set name of :attr:`datasets`.
            options: data options (see :meth:`data_config`).
            data_path: an offline copy of the source data (MovieLens: the recbole wheel).
            directory: where to write; default: the cache (``$TFREC_ONEREC_DATA_DIR/prepared``),
                keyed by family, data set, :attr:`data_version`, the data set's version (a
                registered data set's ``DatasetBuilder.version``) and options, reused once written.
        """
        self.check_dataset(dataset)
        config = self.data_config(dataset, options)

        def write(target) -> PreparedData:
            built = self.build_data(dataset, config, data_path)
            target = Path(target)
            target.mkdir(parents=True, exist_ok=True)
            for name, arrays in built.side_arrays.items():
                np.savez(target / name, **arrays)
            metadata = {"dataset": dataset, "family": self.name, "options": config, **built.metadata}
            return write_prepared(target, built.spec, built.splits, metadata)

        if directory is not None:
            return FamilyData.from_prepared(write(directory))
        key = json.dumps([self.name, dataset, self.data_version, dataset_version(dataset), config], sort_keys=True,
                         default=str)
        directory = default_cache_dir() / "prepared" / f"{self.name}-{dataset}-{_digest(key)}"
        return FamilyData.from_prepared(cached(directory, write, f"Preparing {dataset} for the {self.name} family "
                                                                  f"into {directory}"))

    def load(self, directory: str | Path) -> FamilyData:
        """A prepared directory (``--data-dir``), checked to be this family's data."""
        data = FamilyData.from_prepared(load_prepared(directory))
        family = data.metadata.get("family", "pointwise")
        if family != self.name:
            raise ValueError(f"{directory} holds data of the {family} family; the {self.name} family cannot read "
                             f"it. Prepare it for this family (`tfrec-onerec data prepare --family {self.name}`).")
        return data

    def dataset(self, data: FamilyData, split: str, config, training: bool = False):
        """Batches of `split` as the family's models train on them: ``(features, targets)``."""
        raise NotImplementedError

    # -- models -----------------------------------------------------------------------------------
    def build_model(self, model_class, data: FamilyData, hyperparameters: Mapping | None = None,
                    tasks: Sequence | None = None, built=None):
        """A new model of `model_class` for `data` (``built``: :meth:`prepare_build`'s result)."""
        raise NotImplementedError

    def fit(self, model_name: str, data: FamilyData, config=None, hyperparameters: Mapping | None = None,
            tasks: Sequence | None = None, callbacks: Sequence = (), **options) -> TrainResult:
        """Builds `model_name` for `data` and trains it with :func:`tfrec_onerec.training.fit`.

        Args:
            model_name: a registered model of this family.
            data: the :class:`FamilyData`.
            config: a :class:`~tfrec_onerec.training.TrainConfig` (default :meth:`train_config`).
            hyperparameters: keyword arguments of the model class.
            tasks: the tasks of a task family (default: the data set's); refused otherwise.
            callbacks: more Keras callbacks.
            **options: :attr:`build_options` (e.g. ``tokenizer``).
        """
        import keras

        from tfrec_onerec import training

        model_class = self.model_class(model_name)
        config = config or self.train_config(model_class)
        options = self.check_build_options(options)
        if tasks and not self.has_tasks:
            raise UnsupportedOption(f"--task: the {self.name} family's models have no tasks to choose "
                                    f"(they own their loss); got {list(tasks)}.")
        keras.utils.set_random_seed(config.seed)
        hyperparameters = self.model_hyperparameters(model_class, data, hyperparameters)
        built = self.prepare_build(data, options)
        train = self.training_batches(model_class, data, config, hyperparameters)
        valid = self.dataset(data, "valid", config)
        timer = training.StepTimer()
        model, history = training.fit(
            lambda: self.build_model(model_class, data, hyperparameters, tasks, built=built),
            train, valid, config, callbacks=[timer, *callbacks])
        return TrainResult(model, history, self.train_info(model, data, config, timer, built))

    def model_hyperparameters(self, model_class, data: FamilyData, hyperparameters: Mapping | None = None) -> dict:
        """`hyperparameters` as the model class completes them from the data: its
        ``derived_hyperparameters(data, hyperparameters)`` when it has one (e.g. Kuaishou-EBR's
        item clusters, fitted on the training split), else unchanged."""
        derive = getattr(model_class, "derived_hyperparameters", None)
        hyperparameters = dict(hyperparameters or {})
        return dict(derive(data, hyperparameters)) if derive else hyperparameters

    def training_batches(self, model_class, data: FamilyData, config, hyperparameters: Mapping | None = None):
        """The training batches: :meth:`dataset`'s, passed through the model class's
        ``training_batches(batches, data, config, hyperparameters)`` when it has one (a model
        whose training batches carry more than the family's rows, e.g. TiCoSeRec's augmented
        views of each sequence, drawn anew every epoch)."""
        batches = self.dataset(data, "train", config, training=True)
        transform = getattr(model_class, "training_batches", None)
        return transform(batches, data, config, dict(hyperparameters or {})) if transform else batches

    def prepare_build(self, data: FamilyData, options: Mapping):
        """What :meth:`build_model` needs that is fitted once, outside the strategy's scope
        (e.g. a tokenizer), from the :attr:`build_options`; passed to it as ``built``."""
        return None

    def train_info(self, model, data: FamilyData, config, timer, built) -> dict:
        """Facts about the training run, printed after it (default: the median step time)."""
        return {"seconds_per_step": timer.seconds_per_step()}

    def model_class(self, model_name: str):
        from tfrec_onerec import models

        cls = models.get(model_name)
        if models.family_of(model_name) != self.name:
            raise ValueError(f"Model {model_name!r} belongs to the {models.family_of(model_name)} family, "
                             f"not {self.name}.")
        return cls

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self, model, data: FamilyData, split: str = "test") -> dict:
        """The family's metrics of a Keras model on `split`."""
        return self.evaluate_with(self.keras_scorer(model), data, split, self.model_info(model))

    def evaluate_export(self, export_dir, data: FamilyData, split: str = "test") -> dict:
        """The same metrics of an exported SavedModel, through its signatures (as TF Serving
        would run them), against the tasks and settings recorded in the export."""
        import tensorflow as tf

        from tfrec_onerec.export import latest_version

        path = latest_version(export_dir)
        info = read_export_info(path)
        if info.get("family") not in (None, self.name):
            raise ValueError(f"{path} holds a {info['family']} model; the {self.name} family cannot evaluate it.")
        loaded = tf.saved_model.load(str(path))
        return self.evaluate_with(self.export_scorer(loaded, info), data, split, info)

    def keras_scorer(self, model) -> Callable:
        raise NotImplementedError

    def export_scorer(self, loaded, info: dict) -> Callable:
        raise NotImplementedError

    def evaluate_with(self, scorer: Callable, data: FamilyData, split: str, info: dict) -> dict:
        raise NotImplementedError

    def format_results(self, results: dict) -> str:
        raise NotImplementedError

    def headline(self, results: dict) -> float:
        """The value of :attr:`headline_metric` in `results`."""
        raise NotImplementedError

    def headline_name(self, results: dict) -> str:
        """The name of the value :meth:`headline` reads from `results`."""
        return self.headline_metric[0]

    # -- export -----------------------------------------------------------------------------------
    def model_info(self, model) -> dict:
        """What an export records about `model` (:data:`EXPORT_INFO_FILE`); subclasses add to it."""
        from tfrec_onerec.features.spec import tasks_to_config

        tasks = getattr(model, "tasks", None)
        return {"model": getattr(model, "registry_name", type(model).__name__), "family": self.name,
                "tasks": tasks_to_config(tasks) if tasks else None}

    def export(self, model, export_dir, data: FamilyData | None = None, model_name: str | None = None,
               exact_path: bool = False, **options):
        """Exports `model`, recording :meth:`model_info` and the data set in
        ``assets.extra/tfrec_onerec.json``.

        Args:
            export_dir: the base directory (``<export_dir>/<next version>/`` is written by
                :func:`~tfrec_onerec.export.export_saved_model`), or with ``exact_path`` the
                SavedModel directory itself (the TFX Trainer's).
            **options: more options of :func:`~tfrec_onerec.export.write_saved_model`.
        """
        from tfrec_onerec.export import export_saved_model, write_export

        info = {**self.model_info(model), "dataset": data.dataset_name if data else None,
                "data_options": data.metadata.get("options") if data else None}
        extra = {EXPORT_INFO_FILE: json.dumps(info, indent=2)}
        if exact_path:
            return write_export(model, export_dir, model_name or info["model"], extra_assets=extra, **options)
        return export_saved_model(model, export_dir, model_name=model_name, extra_assets=extra, **options)


def dataset_version(dataset: str) -> int:
    """The version of a registered data set's samples (0 for a data set of a family's own)."""
    from tfrec_onerec import data as datasets

    return datasets.get(dataset).version if dataset in datasets.names() else 0


def read_export_info(version_dir) -> dict:
    """The :data:`EXPORT_INFO_FILE` of an export version ({} for an export without one)."""
    import tensorflow as tf

    path = f"{str(version_dir).rstrip('/')}/assets.extra/{EXPORT_INFO_FILE}"
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as handle:
        return json.loads(handle.read())


def refuse(given: Mapping, honoured: Mapping, family: str) -> None:
    """Raises :class:`UnsupportedOption` naming every option of `given` not in `honoured`."""
    extra = sorted(set(given) - set(honoured))
    if extra:
        flags = ", ".join("--" + name.replace("_", "-") for name in extra)
        raise UnsupportedOption(f"{flags}: not an option of the {family} family (it reads "
                                f"{', '.join('--' + n.replace('_', '-') for n in honoured) or 'no such options'}).")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]

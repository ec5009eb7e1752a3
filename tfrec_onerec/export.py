"""SavedModel export in TF Serving's layout, with tf.Example and raw-tensor signatures.

``export_saved_model(model, "saved_models/din")`` writes ``saved_models/din/<version>/``:

* signature ``serving_default``: ``examples`` (batch of serialized tf.Example, string) in;
  one ``(batch, 1)`` score per task out, keyed by task name. Parsing follows the model's
  feature spec (sequences padded/truncated in the graph), so clients send raw examples.
* signature ``predict``: one named tensor per feature the model reads, same outputs.
* for a model with ``task_signatures = True`` (LT4REC), ``serving_<task>`` per task:
  serialized tf.Example in, that task's score alone out.
* ``assets.extra/tf_serving_warmup_requests``: TF Serving warmup records, one
  PredictRequest per signature, built from an example batch.
* ``assets.extra/feature_spec.json``: the feature spec, for clients building requests.

The graph holds core TensorFlow ops only: it loads with ``tf.saved_model.load`` in a process
that never imports tfrec_onerec, as TF Serving does. An export is written to a hidden
temporary directory and renamed into place, so a reader never sees a half-written version
and a failed export leaves nothing behind. An existing version is never overwritten.

Remote URIs: a path with a scheme (``gs://``, ``s3://``, ``hdfs://``, ``ram://``, ...) goes
through ``tf.io.gfile`` and the functions that return a path return it as a ``str`` there
(a local path stays a :class:`pathlib.Path`). The staging directory is then moved into place
by a copy and a delete (object stores have no rename of a directory: ``gfile.rename`` on GCS is
a copy and delete as well), ``saved_model.pb`` last, so a reader that waits for
``saved_model.pb`` (TF Serving, :mod:`tfrec_onerec.serving`) sees a complete version; but
the move is atomic on local (POSIX) file systems only: elsewhere a reader listing the files
may see a version directory that is still being filled.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfrec_onerec.features.datasets import example_batch
from tfrec_onerec.features.parsing import parse_examples
from tfrec_onerec.features.spec import FeatureSpec
from tfrec_onerec.features.tfrecord import serialize_rows

SERVING_SIGNATURE = "serving_default"
PREDICT_SIGNATURE = "predict"
EXAMPLES_INPUT = "examples"
WARMUP_FILE = "tf_serving_warmup_requests"
SPEC_FILE = "feature_spec.json"

log = logging.getLogger(__name__)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_GRAPH_FILES = ("saved_model.pb", "saved_model.pbtxt")  # copied last: a reader takes their presence as "complete"


def is_remote(path) -> bool:
    """Whether `path` is a URI with a scheme (``gs://b/x``), handled by ``tf.io.gfile``."""
    return bool(_SCHEME.match(os.fspath(path))) if isinstance(path, (str, os.PathLike)) else False


def join(base, *parts):
    """`base` / `parts`: a :class:`Path` for a local `base`, a ``str`` for a remote URI
    (``pathlib`` would turn ``gs://b`` into ``gs:/b``)."""
    if not is_remote(base):
        return Path(base).joinpath(*parts)
    out = os.fspath(base)
    for part in parts:
        out = out.rstrip("/") + "/" + str(part).strip("/")
    return out


def basename(path) -> str:
    """The last component of a local path or URI (``gs://b/m/3/`` -> ``"3"``)."""
    return os.fspath(path).rstrip("/").rsplit("/", 1)[-1] if is_remote(path) else Path(path).name


def parent(path):
    """The parent of a local path (a :class:`Path`) or URI (a ``str``)."""
    if not is_remote(path):
        return Path(path).parent
    return os.fspath(path).rstrip("/").rsplit("/", 1)[0]


def copy_tree(source, destination) -> None:
    """Copies the directory `source` to the new directory `destination`, local or remote.

    Local to local: :func:`shutil.copytree`. Otherwise every file through ``tf.io.gfile``,
    ``saved_model.pb`` last (see the module docstring).
    """
    if not is_remote(source) and not is_remote(destination):
        shutil.copytree(source, destination)
        return
    source = os.fspath(source).rstrip("/") or "/"
    last = []
    tf.io.gfile.makedirs(os.fspath(destination))
    for directory, subdirectories, files in tf.io.gfile.walk(source):
        relative = directory.rstrip("/")[len(source):].strip("/").replace(os.sep, "/")
        target = join(destination, relative) if relative else destination
        for name in subdirectories:
            tf.io.gfile.makedirs(os.fspath(join(target, name.rstrip("/"))))
        for name in files:
            pair = (os.path.join(directory, name) if not is_remote(directory) else join(directory, name),
                    join(target, name))
            if relative == "" and name in _GRAPH_FILES:
                last.append(pair)
            else:
                _copy_file(*pair)
    for src, dst in last:
        _copy_file(src, dst)


def _copy_file(source, destination) -> None:
    try:
        tf.io.gfile.copy(os.fspath(source), os.fspath(destination), overwrite=False)
    except tf.errors.NotFoundError:
        # A listing may name what is not there: ram:// lists "assets.extra/x" under "assets"
        # as ".extra" (a prefix match). Skip such names; other errors (the source is there) raise.
        if tf.io.gfile.exists(os.fspath(source)):
            raise
        log.debug("Skipped %s: listed but not found", source)


def remove_tree(path) -> None:
    """Removes the directory `path` (local or remote) if it exists."""
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    with contextlib.suppress(tf.errors.OpError):
        if tf.io.gfile.exists(path):
            tf.io.gfile.rmtree(path)


def model_inputs(model) -> FeatureSpec:
    """The part of the model's feature spec that the model reads."""
    spec = model.feature_spec
    return spec.subset(getattr(model, "input_names", spec.names))


def versions(export_dir: str | os.PathLike) -> list:
    """The numeric versions under `export_dir`, ascending (TF Serving ignores other names,
    such as our staging directories)."""
    if is_remote(export_dir):
        base = os.fspath(export_dir)
        if not tf.io.gfile.isdir(base):
            return []
        names = [name.rstrip("/") for name in tf.io.gfile.listdir(base)]
        return sorted(int(n) for n in names if re.fullmatch(r"\d+", n) and tf.io.gfile.isdir(join(base, n)))
    base = Path(export_dir)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name))


def next_version(export_dir: str | os.PathLike) -> int:
    """One more than the largest numeric version under `export_dir` (1 if none)."""
    return max(versions(export_dir), default=0) + 1


def latest_version(export_dir: str | os.PathLike) -> Path | str:
    """`export_dir` itself if it is a SavedModel, else its highest version, as TF Serving serves
    (a ``str`` for a remote URI)."""
    if is_remote(export_dir):
        path = os.fspath(export_dir).rstrip("/")
        if tf.io.gfile.exists(join(path, "saved_model.pb")):
            return path
    else:
        path = Path(export_dir)
        if (path / "saved_model.pb").is_file():
            return path
    found = versions(path)
    if not found:
        raise FileNotFoundError(f"No SavedModel version under {path} (expected {path}/<version>/saved_model.pb).")
    return join(path, str(found[-1]))


def _serving_functions(model, example_parser):
    """The (function, input signature) pairs of the two signatures."""
    def serve_examples(examples):
        return model(example_parser(examples), training=False)

    def predict(features):
        return model(features, training=False)

    example_signature = [tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)]
    predict_signature = [model.input_signature()]
    return (serve_examples, example_signature), (predict, predict_signature)


def _task_functions(model, example_parser) -> dict:
    """``{"serving_<task>": function}`` for a model with ``task_signatures = True`` (LT4REC): one
    signature per task, serialized tf.Example in, that task's output alone out (only the
    ops of that task's path run)."""
    if not getattr(model, "task_signatures", False):
        return {}

    def one_task(name):
        return lambda examples: {name: model(example_parser(examples), training=False)[name]}

    return {f"serving_{task.name}": one_task(task.name) for task in model.tasks}


def write_warmup_records(saved_model_dir: Path, model_name: str, requests: Sequence) -> int:
    """Writes TF Serving warmup records (PredictionLog protos) into ``assets.extra``.

    Args:
        saved_model_dir: the SavedModel (version) directory.
        model_name: the model name in the requests.
        requests: ``(signature name, {input name: array})`` pairs, one PredictRequest each.

    Returns:
        The number of records written.
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = join(saved_model_dir, "assets.extra", WARMUP_FILE)
    if is_remote(path):
        tf.io.gfile.makedirs(parent(path))
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature, inputs in requests:
            req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
            for name, value in inputs.items():
                req.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            log_record = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req))
            writer.write(log_record.SerializeToString())
    return len(requests)


def write_warmup_requests(saved_model_dir: Path, model_name: str, examples: Sequence[bytes], features: Mapping) -> int:
    """Warmup records for the two signatures of :func:`write_saved_model`: ``serving_default``
    with serialized tf.Example `examples`, ``predict`` with `features` (the same rows)."""
    return write_warmup_records(saved_model_dir, model_name, [
        (SERVING_SIGNATURE, {EXAMPLES_INPUT: np.array(list(examples), dtype=object)}), (PREDICT_SIGNATURE, features)])


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike):
    """Yields a hidden staging directory next to `final`, renamed to `final` on success.

    A reader never sees a half-written `final`; on any error the staging directory is
    removed and nothing changes.

    For a remote URI (a ``str`` staging URI is yielded), the staging directory is copied to
    `final` and deleted, ``saved_model.pb`` last: not atomic (see the module docstring); on
    an error a partly copied `final` is removed.

    Raises:
        FileExistsError: `final` exists (nothing is changed).
    """
    remote = is_remote(final)
    final = os.fspath(final).rstrip("/") if remote else Path(final)
    if tf.io.gfile.exists(final) if remote else final.exists():
        raise FileExistsError(f"{final} already exists; refusing to overwrite an exported version. "
                              "Pick another version or remove it first.")
    if remote:
        tf.io.gfile.makedirs(parent(final))
    else:
        final.parent.mkdir(parents=True, exist_ok=True)
    staging = join(parent(final), f".staging-{basename(final)}-{uuid.uuid4().hex[:8]}")
    moving = False
    try:
        yield staging
        if remote:
            moving = True
            copy_tree(staging, final)
            remove_tree(staging)
        else:
            os.rename(staging, final)
    except BaseException:
        if moving:
            remove_tree(final)  # created by this copy (it did not exist above)
        remove_tree(staging)
        raise


def version_dir(export_dir: str | os.PathLike, version: int | None = None) -> Path | str:
    """``export_dir/<version>``, the next free version by default (a ``str`` for a remote URI)."""
    base = export_dir if is_remote(export_dir) else Path(export_dir)
    return join(base, str(next_version(base) if version is None else int(version)))


def write_saved_model(model: keras.Model, path: str | os.PathLike, model_name: str,
                      warmup_batch: Mapping | None = None, example_parser=None,
                      warmup_examples: Sequence[bytes] | None = None, client_spec: FeatureSpec | None = None,
                      extra_assets: Mapping[str, str] | None = None) -> Path:
    """Writes `model` as a SavedModel at exactly `path`, atomically (see the module docstring).

    Args:
        model: a zoo model (a :class:`~tfrec_onerec.models.base.RecommenderModel`).
        path: the SavedModel directory to create; it must not exist.
        model_name: the model name in warmup requests.
        warmup_batch: a feature batch (``{name: array}``) for the warmup requests; default:
            :func:`example_batch` of the spec. Ignored when `warmup_examples` is given.
        example_parser: a callable (and TensorFlow trackable, e.g. a ``tf.Module``) taking a
            string Tensor (batch,) of serialized tf.Example and returning the model's feature
            dict; default: :func:`parse_examples` with the model's spec. The TFX Trainer passes
            one that applies the Transform graph, so raw examples go in.
        warmup_examples: serialized tf.Example for the warmup requests, in the parser's format.
        client_spec: the spec of the tf.Example that ``serving_default`` takes, written to
            ``assets.extra/feature_spec.json`` for clients; default: the model's inputs.
        extra_assets: ``{file name: text}`` written into ``assets.extra`` (e.g. what the model
            was trained on, see :mod:`tfrec_onerec.families`).

    Returns:
        `path` (a :class:`Path`, or a ``str`` for a remote URI).

    Raises:
        FileExistsError: `path` exists (nothing is changed).
    """
    final = os.fspath(path).rstrip("/") if is_remote(path) else Path(path)
    spec = model_inputs(model)
    if example_parser is None:
        def example_parser(examples):
            return parse_examples(examples, spec)
    if warmup_examples is None:
        warmup_examples = serialize_rows(dict(warmup_batch) if warmup_batch is not None else example_batch(spec), spec)
    warmup_features = {name: value.numpy() for name, value in
                       example_parser(tf.constant(list(warmup_examples), tf.string)).items() if name in spec}
    with atomic_directory(final) as staging:
        (serve, serve_sig), (predict, predict_sig) = _serving_functions(model, example_parser)
        archive = keras.export.ExportArchive()
        archive.track(model)
        if isinstance(example_parser, tf.__internal__.tracking.Trackable):
            archive.track(example_parser)
        archive.add_endpoint(SERVING_SIGNATURE, serve, input_signature=serve_sig)
        archive.add_endpoint(PREDICT_SIGNATURE, predict, input_signature=predict_sig)
        for name, function in _task_functions(model, example_parser).items():
            archive.add_endpoint(name, function, input_signature=serve_sig)
        archive.write_out(str(staging), verbose=False)
        write_warmup_requests(staging, model_name, warmup_examples, warmup_features)
        write_extra_assets(staging, {SPEC_FILE: (client_spec or spec).to_json(), **(extra_assets or {})})
    log.info("Exported %s to %s", type(model).__name__, final)
    return final


def write_extra_assets(saved_model_dir, files: Mapping[str, str]) -> None:
    """Writes ``{file name: text}`` into the SavedModel's ``assets.extra`` (TF Serving ignores them)."""
    for name, text in files.items():
        with tf.io.gfile.GFile(str(join(saved_model_dir, "assets.extra", name)), "w") as handle:
            handle.write(text)


def write_endpoints(model: keras.Model, path: str | os.PathLike, model_name: str,
                    extra_assets: Mapping[str, str] | None = None) -> Path:
    """Writes a model that declares its own signatures (e.g. a generative model's ``recommend``).

    The model provides ``serving_endpoints() -> {signature: (function, input signature)}``
    and ``warmup_inputs() -> {signature: {input: array}}``; the SavedModel gets exactly
    those signatures and one TF Serving warmup record per entry of ``warmup_inputs``, plus
    `extra_assets` (as :func:`write_saved_model`). Atomic and never overwriting, as
    :func:`write_saved_model`.
    """
    final = os.fspath(path).rstrip("/") if is_remote(path) else Path(path)
    with atomic_directory(final) as staging:
        archive = keras.export.ExportArchive()
        archive.track(model)
        for name, (function, signature) in model.serving_endpoints().items():
            archive.add_endpoint(name, function, input_signature=signature)
        archive.write_out(str(staging), verbose=False)
        write_warmup_records(staging, model_name, list(model.warmup_inputs().items()))
        write_extra_assets(staging, extra_assets or {})
    log.info("Exported %s to %s", type(model).__name__, final)
    return final


def write_export(model: keras.Model, path: str | os.PathLike, model_name: str, warmup_batch: Mapping | None = None,
                 **options) -> Path:
    """Writes `model` at exactly `path`: :func:`write_endpoints` for a model with its own
    ``serving_endpoints()`` (generative and next-item models; only ``extra_assets`` of the
    options apply), else :func:`write_saved_model`."""
    if hasattr(model, "serving_endpoints"):
        return write_endpoints(model, path, model_name, options.get("extra_assets"))
    return write_saved_model(model, path, model_name, warmup_batch, **options)


def export_saved_model(model: keras.Model, export_dir: str | os.PathLike, version: int | None = None,
                       warmup_batch: Mapping | None = None, model_name: str | None = None, **options) -> Path:
    """Exports `model` to ``export_dir/<version>/`` (see the module docstring).

    Args:
        model: a zoo model (a :class:`~tfrec_onerec.models.base.RecommenderModel`).
        export_dir: the model's base directory, as TF Serving's ``--model_base_path``.
        version: the version number; default: the next free one.
        warmup_batch: a feature batch (``{name: array}``) for the warmup requests; default:
            :func:`example_batch` of the spec.
        model_name: the model name in warmup requests; default: ``export_dir``'s base name.
        **options: ``example_parser``, ``warmup_examples``, ``client_spec``, ``extra_assets``
            of :func:`write_saved_model`. A model with ``serving_endpoints()`` (generative
            and next-item models) is written by :func:`write_endpoints` instead.

    Returns:
        The path of the written version (a ``str`` for a remote URI, see the module docstring).

    Raises:
        FileExistsError: the version already exists (nothing is changed).
    """
    final = version_dir(export_dir, version)
    name = model_name or (basename(parent(final)) if is_remote(final) else final.parent.resolve().name)
    return write_export(model, final, name, warmup_batch, **options)

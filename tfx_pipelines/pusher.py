"""A Pusher whose pushes are atomic and numbered as the package's exporter numbers versions.

TFX's stock Pusher copies the model file by file into ``<base>/<unix time>/`` (saved_model.pb
last). A reader listing ``saved_models/<model>/`` meanwhile sees a half-written version. This
executor copies into a hidden staging directory next to the destination and renames it to
``<base>/<version>/`` in one step (``os.rename``; atomic on one local or POSIX file system),
so TF Serving, or our own server, sees either nothing or a complete version. Versions are
``1, 2, 3, ...`` (:func:`tfrec_onerec.export.version_dir`), as the exporter writes them;
a model that is already served is not pushed twice.
An unblessed model is not pushed, and what is already served stays untouched.

The destination, not TFX's cache, decides whether to push: :func:`atomic_pusher` gives every
Pusher it builds a fresh ``custom_config`` (a nonce), so the Pusher runs on every pipeline run
(TFX 1.21 has no per-node cache switch: the compiler sets the pipeline's ``enable_cache`` on
every node) and :func:`push_atomically` looks for the model in the destination (by its
``fingerprint.pb``). A serving directory wiped between two runs is therefore filled again,
even when the Trainer and the Evaluator are cached. (On Kubeflow the nonce is fixed when
the pipeline is compiled: compile per run, or submit runs with caching off.)

Remote URIs (``gs://``, ``s3://``, ...) as model or destination go through ``tf.io.gfile``
(:mod:`tfrec_onerec.export`); there the push is a copy into a staging directory and a copy and
delete into ``<base>/<version>/`` (``saved_model.pb`` last), which is not atomic: atomicity
holds on local (POSIX) file systems only.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import tensorflow as tf

from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils
from tfx.v1.components import Pusher

from tfrec_onerec.export import atomic_directory, basename, copy_tree, is_remote, join, version_dir, versions

CHECK_KEY = "destination_check"  # the Pusher's custom_config key holding a nonce per pipeline build


def _fingerprint(saved_model) -> bytes | None:
    path = join(saved_model, "fingerprint.pb")  # checksums of the graph and variables, written by TensorFlow
    if is_remote(path):
        if not tf.io.gfile.exists(path):
            return None
        with tf.io.gfile.GFile(path, "rb") as handle:
            return handle.read()
    return path.read_bytes() if path.is_file() else None


def already_pushed(model_path: str, base_directory: str) -> Path | str | None:
    """The served version holding the same SavedModel as `model_path` (same fingerprint), if any
    (a ``str`` for a remote `base_directory`)."""
    fingerprint = _fingerprint(model_path)
    if fingerprint is None:
        return None
    for version in reversed(versions(base_directory)):
        if _fingerprint(join(base_directory, str(version))) == fingerprint:
            return join(base_directory, str(version))
    return None


def push_atomically(model_path: str, base_directory: str) -> Path | str:
    """Copies the SavedModel at `model_path` to ``base_directory/<next version>/`` atomically
    (on a local file system; see the module docstring for remote URIs).

    A model already served (e.g. the Evaluator re-blessed the same model against itself as
    baseline) is not copied again: its existing version is returned.

    Returns:
        The version directory: a :class:`Path`, or a ``str`` for a remote `base_directory`.
    """
    if is_remote(base_directory):
        base = os.fspath(base_directory).rstrip("/")
        tf.io.gfile.makedirs(base)
    else:
        base = Path(base_directory)
        base.mkdir(parents=True, exist_ok=True)
    existing = already_pushed(model_path, base)
    if existing is not None:
        return existing
    final = version_dir(base)
    with atomic_directory(final) as staging:
        copy_tree(model_path, staging)
    return final


class AtomicPushExecutor(pusher_executor.Executor):
    """Pusher executor: checks the blessing, then :func:`push_atomically` (filesystem only)."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        model_path = self.GetModelPath(input_dict)
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        if destination.WhichOneof("destination") != "filesystem":
            raise NotImplementedError("The atomic pusher pushes to a filesystem destination only.")
        pushed = push_atomically(model_path, destination.filesystem.base_directory)
        io_utils.copy_dir(model_path, model_push.uri)  # TFX's archive of what was pushed
        self._MarkPushed(model_push, pushed_destination=str(pushed), pushed_version=basename(pushed))


def atomic_pusher(model, model_blessing, serving_dir: str) -> Pusher:
    """A Pusher of `model` into `serving_dir` (``saved_models/<model name>``) when blessed.

    Its ``custom_config`` holds a fresh nonce (:data:`CHECK_KEY`), so TFX never reuses a
    cached Pusher execution: each run checks the destination (see the module docstring).
    """
    return Pusher(
        model=model, model_blessing=model_blessing,
        push_destination=pusher_pb2.PushDestination(
            filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=serving_dir)),
        custom_config={CHECK_KEY: uuid.uuid4().hex},
        custom_executor_spec=executor_spec.ExecutorClassSpec(AtomicPushExecutor))

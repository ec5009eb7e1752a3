"""Which models to serve: every model under a base directory, or a TF Serving ``models.config``.

Layout (TF Serving's): ``<base>/<model>/<version>/saved_model.pb``, versions are positive
integers, other names (our exporter's ``.staging-*`` folders, files) are ignored.

A ``models.config`` is TF Serving's ``ModelServerConfig`` text protobuf::

    model_config_list {
      config {
        name: "din"
        base_path: "/models/din"          # relative paths are read relative to the file
        model_platform: "tensorflow"
        model_version_policy { latest { num_versions: 1 } }   # or all {} / specific { versions: 3 }
        version_labels { key: "stable" value: 3 }
      }
    }

The version policy decides which of the versions on disk are served, as in TF Serving:
``latest`` (the default, one version), ``all``, or ``specific``.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One served model.

    Args:
        name: the model name clients put in ``ModelSpec.name``.
        base_path: the directory holding the numbered versions.
        policy: ``"latest"``, ``"all"`` or ``"specific"``.
        num_versions: for ``"latest"``, how many of the highest versions are served.
        versions: for ``"specific"``, the versions served.
        labels: version labels (``{"stable": 3}``), usable in ``ModelSpec.version_label``
            and in REST paths ``/v1/models/<name>/labels/<label>``.
    """

    name: str
    base_path: str
    policy: str = "latest"
    num_versions: int = 1
    versions: tuple = ()
    labels: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not self.name:
            raise ValueError("ModelConfig: a model needs a name.")
        if self.policy not in ("latest", "all", "specific"):
            raise ValueError(f"Model {self.name!r}: version policy must be latest, all or specific, "
                             f"got {self.policy!r}.")
        if self.policy == "latest" and self.num_versions < 1:
            raise ValueError(f"Model {self.name!r}: latest.num_versions must be >= 1, got {self.num_versions}.")
        if self.policy == "specific" and not self.versions:
            raise ValueError(f"Model {self.name!r}: a specific version policy needs at least one version.")

    def wanted(self, available: Sequence[int]) -> list:
        """The versions to serve out of the `available` ones, ascending."""
        available = sorted(available)
        if self.policy == "latest":
            return available[-self.num_versions:]
        if self.policy == "all":
            return available
        return [v for v in available if v in set(self.versions)]


def version_dirs(base_path: str | os.PathLike) -> dict:
    """``{version: path}`` of the complete versions under `base_path` (those with a saved_model file).

    A numbered folder without ``saved_model.pb`` is still being written (or is not a
    SavedModel); it is left out until the file appears.
    """
    base = Path(base_path)
    found = {}
    try:
        entries = list(base.iterdir())
    except (FileNotFoundError, NotADirectoryError):  # no folder (yet), or deleted while looking
        return found
    for path in entries:
        if re.fullmatch(r"\d+", path.name) and path.is_dir() and int(path.name) > 0 \
                and any((path / f).is_file() for f in SAVED_MODEL_FILES):
            found[int(path.name)] = path
    return found


def discover_models(model_base: str | os.PathLike) -> list:
    """A latest-version :class:`ModelConfig` for every model folder under `model_base`.

    Every non-hidden sub-folder is a model (it may have no version yet: it is served once
    one appears). `model_base` may itself be one model's folder (holding numbered
    versions); the model is then named after the folder.
    """
    base = Path(model_base)
    if not base.is_dir():
        raise FileNotFoundError(f"Model base {base} is not a directory (expected <base>/<model>/<version>/).")
    if version_dirs(base):
        return [ModelConfig(base.resolve().name, str(base))]
    return [ModelConfig(p.name, str(p)) for p in sorted(base.iterdir())
            if p.is_dir() and not p.name.startswith((".", "_"))]


def parse_model_config(text: str, relative_to: str | os.PathLike = ".") -> list:
    """The :class:`ModelConfig` s of a ``models.config`` text (TF Serving's ModelServerConfig).

    Raises:
        ValueError: the text does not parse, uses ``custom_model_config``, a platform other
            than tensorflow, or repeats a model name.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    try:
        parsed = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as error:
        raise ValueError(f"models.config does not parse as a TF Serving ModelServerConfig: {error}") from None
    return configs_from_proto(parsed, relative_to)


def configs_from_proto(parsed, relative_to: str | os.PathLike = ".") -> list:
    """The :class:`ModelConfig` s of a ``ModelServerConfig`` proto (see :func:`parse_model_config`)."""
    if parsed.WhichOneof("config") == "custom_model_config":
        raise ValueError("models.config: custom_model_config is not supported; use model_config_list.")
    configs = []
    for entry in parsed.model_config_list.config:
        if entry.model_platform not in ("", "tensorflow"):
            raise ValueError(f"Model {entry.name!r}: model_platform {entry.model_platform!r} is not supported "
                             "(only tensorflow SavedModels).")
        if not entry.base_path:
            raise ValueError(f"Model {entry.name!r}: base_path is required.")
        policy = entry.model_version_policy
        configs.append(ModelConfig(
            name=entry.name,
            base_path=str(Path(relative_to) / entry.base_path),
            policy=policy.WhichOneof("policy_choice") or "latest",
            num_versions=policy.latest.num_versions or 1,
            versions=tuple(policy.specific.versions),
            labels=dict(entry.version_labels)))
    names = [c.name for c in configs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"models.config names these models more than once: {repeated}.")
    return configs


def load_model_config(path: str | os.PathLike) -> list:
    """:func:`parse_model_config` of a file; relative base paths are read relative to it."""
    path = Path(path)
    return parse_model_config(path.read_text(), relative_to=path.parent)

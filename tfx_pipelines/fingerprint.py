"""A fingerprint of the package's code, for sound pipeline caching.

TFX's cache key of a component holds its inputs and exec properties, and the *contents* of a
``module_file`` only. Our Transform and Trainer name their functions by import path
(``tfx_pipelines.preprocessing.preprocessing_fn``, ``tfx_pipelines.trainer.run_fn``), so
TFX does not see the code behind them: after a change to the package, a rerun would reuse a
Transform graph or a model made by the old code. :func:`tfx_pipelines.pipeline.create_pipeline`
therefore puts :func:`source_fingerprint` into their ``custom_config``: any change to a
``.py`` file of ``tfrec_onerec/`` or ``tfx_pipelines/``, or to the package version, is a new
exec property and a fresh execution.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

PACKAGE = "tfrec_onerec"
PACKAGES = ("tfrec_onerec", "tfx_pipelines")


def package_roots() -> list:
    """The source directories of :data:`PACKAGES` (where they are imported from)."""
    import importlib

    return [Path(importlib.import_module(name).__file__).resolve().parent for name in PACKAGES]


def package_version() -> str:
    """The installed version of the package (``setup.py``'s), or ``"unknown"``."""
    from importlib import metadata

    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "unknown"


def source_fingerprint(roots: Sequence[str | os.PathLike] | None = None, version: str | None = None) -> str:
    """A hex SHA-256 of every ``.py`` file under `roots` and of the package version.

    Files are hashed in a stable order (sorted by root name and path relative to the root),
    each with its relative path, so the fingerprint depends on the code only: not on where it
    is installed, on timestamps or on ``__pycache__``.

    Args:
        roots: the source directories; default :func:`package_roots`.
        version: the package version; default :func:`package_version`.
    """
    roots = [Path(r) for r in (package_roots() if roots is None else roots)]
    digest = hashlib.sha256()
    digest.update(f"version\0{package_version() if version is None else version}\0".encode())
    for root in sorted(roots, key=lambda r: r.name):
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py") if p.is_file())
        for relative in files:
            content = (root / relative).read_bytes()
            digest.update(f"{root.name}/{relative}\0{len(content)}\0".encode())
            digest.update(content)
    return digest.hexdigest()

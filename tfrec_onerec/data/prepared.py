"""A prepared data set on disk: TFRecord splits plus the spec and metadata that describe them.

Layout of ``DIR`` (written by ``tfrec-onerec data prepare``)::

    DIR/spec.json           the FeatureSpec (features and label columns)
    DIR/metadata.json       data set name, sample settings, row counts, label meanings
    DIR/{train,valid,test}.tfrecord
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Callable, Mapping, Sequence

from tfrec_onerec.data.download import default_cache_dir
from tfrec_onerec.data.registry import get as get_dataset
from tfrec_onerec.data.samples import SPLITS, SampleConfig
from tfrec_onerec.features import FeatureSpec
from tfrec_onerec.features.datasets import tfrecord_dataset
from tfrec_onerec.features.tfrecord import write_tfrecords

SPEC_FILE = "spec.json"
METADATA_FILE = "metadata.json"


@dataclasses.dataclass
class PreparedData:
    """A prepared directory: its spec, metadata and split files."""

    directory: Path
    spec: FeatureSpec
    metadata: dict

    def file(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; splits are {SPLITS}.")
        return self.directory / f"{split}.tfrecord"

    def dataset(self, split: str, labels: Sequence[str] | None = None, batch_size: int = 256,
                shuffle: bool = False, seed: int = 0):
        """Batches of ``(features, {label: y})`` of one split (all label columns by default)."""
        labels = self.spec.labels if labels is None else labels
        return tfrecord_dataset(str(self.file(split)), self.spec, labels, batch_size, shuffle=shuffle, seed=seed,
                                num_examples=self.metadata["examples"][split])


def write_prepared(directory: str | Path, spec: FeatureSpec, splits: Mapping[str, Mapping],
                   metadata: dict, progress: bool = True) -> PreparedData:
    """Writes every split as TFRecord (with all label columns), then spec and metadata.

    The metadata is written last, so a directory with ``metadata.json`` is complete.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / METADATA_FILE).unlink(missing_ok=True)
    counts = {}
    for split in SPLITS:
        counts[split] = write_tfrecords(str(directory / f"{split}.tfrecord"), splits[split], spec,
                                        spec.labels, progress=progress)
    (directory / SPEC_FILE).write_text(spec.to_json())
    metadata = {**metadata, "examples": counts}
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))
    return PreparedData(directory, spec, metadata)


def load_prepared(directory: str | Path) -> PreparedData:
    """Opens a directory written by :func:`write_prepared`."""
    directory = Path(directory)
    if not (directory / METADATA_FILE).is_file():
        raise FileNotFoundError(f"{directory} is not a prepared data set (no {METADATA_FILE}); "
                                "create it with `tfrec-onerec data prepare`.")
    spec = FeatureSpec.from_json((directory / SPEC_FILE).read_text())
    return PreparedData(directory, spec, json.loads((directory / METADATA_FILE).read_text()))


def prepare(dataset: str, directory: str | Path, config: SampleConfig | None = None,
            data_path=None) -> PreparedData:
    """Builds data set `dataset` (see :mod:`~tfrec_onerec.data.registry`) into `directory`."""
    config = config or get_dataset(dataset).default_config
    spec, splits, metadata = get_dataset(dataset).build(config, data_path)
    return write_prepared(directory, spec, splits, metadata)


def prepare_cached(dataset: str, config: SampleConfig | None = None, data_path=None) -> PreparedData:
    """:func:`prepare` into the cache directory, keyed by data set, its version and the settings;
    reused once written."""
    builder = get_dataset(dataset)
    config = config or builder.default_config
    key = hashlib.sha256(json.dumps([dataset, builder.version, dataclasses.asdict(config)]).encode()).hexdigest()[:12]
    directory = default_cache_dir() / "prepared" / f"{dataset}-{key}"
    return cached(directory, lambda staging: prepare(dataset, staging, config, data_path),
                  f"Preparing {dataset} into {directory}")


def cached(directory: str | Path, write: Callable[[Path], PreparedData], message: str = "") -> PreparedData:
    """The prepared data set at `directory`, written by ``write(staging directory)`` if absent.

    The data is written into a hidden staging directory next to `directory` and renamed into
    place, so a reader never sees a half-written cache entry, and two processes preparing the
    same entry at once (e.g. parallel test workers) both end with the complete one.
    """
    directory = Path(directory)
    if (directory / METADATA_FILE).is_file():
        return load_prepared(directory)
    if message:
        print(message, file=sys.stderr)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.parent / f".staging-{directory.name}-{uuid.uuid4().hex[:8]}"
    try:
        write(staging)
        try:
            os.rename(staging, directory)
        except OSError:  # another process renamed its copy first (or a stale incomplete entry is in the way)
            if not (directory / METADATA_FILE).is_file():
                shutil.rmtree(directory, ignore_errors=True)
                os.rename(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load_prepared(directory)

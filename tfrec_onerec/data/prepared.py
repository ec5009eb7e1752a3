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
import sys
from pathlib import Path
from typing import Mapping, Sequence

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
    try:
        return load_prepared(directory)
    except FileNotFoundError:
        print(f"Preparing {dataset} into {directory}", file=sys.stderr)
        return prepare(dataset, directory, config, data_path)

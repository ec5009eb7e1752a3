"""Data sets by name: what `tfrec-onerec data prepare --dataset NAME` can build."""
from __future__ import annotations

import dataclasses
from typing import Callable

from tfrec_onerec.data.samples import SampleConfig

ITEM_ENTITIES_FILE = "item_entities.npz"
"""The side file of item -> knowledge-graph entity pairs (``item_id``, ``entity``)."""


@dataclasses.dataclass(frozen=True)
class DatasetBuilder:
    """How to build one data set's samples.

    Attributes:
        name: the CLI name.
        description: one line.
        build: ``(SampleConfig, data_path) -> (FeatureSpec, {split: columns}, metadata)``.
        default_tasks: the tasks a model trains on when none are named.
        funnel: the label columns of a behaviour funnel, each step possible only after the
            one before (e.g. click -> conversion): the default tasks of the multi-task models.
        default_config: the sample settings used when none are given.
        version: the version of what `build` produces; bump it whenever the code changes
            the samples, so cached prepared copies are rebuilt rather than reused.
        side_arrays: ``data_path -> {file name: {array: values}}``: side files written next
            to the samples (e.g. MovieLens' knowledge-graph links, ``item_entities.npz``).
    """

    name: str
    description: str
    build: Callable
    default_tasks: tuple = ("click",)
    funnel: tuple = ()
    default_config: SampleConfig = SampleConfig()
    version: int = 1
    side_arrays: Callable | None = None


def _build_movielens(config: SampleConfig, data_path=None):
    from tfrec_onerec.data import movielens

    data = movielens.load_movielens_100k(data_path)
    metadata = {"dataset": movielens.NAME, "source": data.source.name,
                "samples": dataclasses.asdict(config), "labels": movielens.LABEL_DOCS}
    return movielens.feature_spec(config.max_len), movielens.build_samples(data, config), metadata


def _movielens_side_arrays(data_path=None) -> dict:
    from tfrec_onerec.data import movielens

    return {ITEM_ENTITIES_FILE: movielens.item_entities(movielens.load_movielens_100k(data_path))}


def _build_simulator(config: SampleConfig, data_path=None):
    from tfrec_onerec.data import short_video

    return short_video.build(config)


def _build_lifelong(config: SampleConfig, data_path=None):
    from tfrec_onerec.data import short_video

    return short_video.build_lifelong(config)


_DATASETS = {
    "movielens-100k": DatasetBuilder(
        "movielens-100k", "MovieLens-100K ratings as CTR samples with rating histories", _build_movielens,
        ("click",), funnel=("click", "like"), version=3, side_arrays=_movielens_side_arrays),
    "simulator": DatasetBuilder(
        "simulator", "the seeded short-video simulator (click, like, conversion; ground truth known)",
        _build_simulator, ("click",), funnel=("click", "conversion"),
        # Every exposure is logged (real negatives), so nothing is sampled; a temporal split
        # gives each user several test exposures.
        default_config=SampleConfig(num_negatives=0, eval_negatives=0, split="temporal"), version=3),
    "simulator-lifelong": DatasetBuilder(
        "simulator-lifelong", "the simulator with lifelong behaviour: 1,000-click histories, periodic interests "
        "(for SIM)", _build_lifelong, ("click",), funnel=("click", "conversion"),
        # Each user's last sampled exposures are its test set: a global time cut would keep
        # only the few users whose 500 sessions end last.
        default_config=SampleConfig(max_len=1000, num_negatives=0, eval_negatives=0, split="user-temporal"),
        version=2),
}


def get(name: str) -> DatasetBuilder:
    """The data set called `name`; unknown names raise a KeyError listing the valid ones."""
    try:
        return _DATASETS[name]
    except KeyError:
        raise KeyError(f"Unknown dataset {name!r}; valid datasets: {', '.join(names())}.") from None


def names() -> list:
    return sorted(_DATASETS)

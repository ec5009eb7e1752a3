"""The social graph of a data set: typed links between users, for the models that read one.

* **The simulator** (``simulator``, ``simulator-lifelong``): its multi-relation graph
  (:attr:`~tfrec_onerec.data.simulator.SimulatedData.social_relations`: friend, family,
  colleague, follow, each homophilous to a known degree), regenerated from the world's
  configuration recorded in the prepared data's metadata (the simulator is deterministic).
* **MovieLens-100K** has no social graph. Its stand-in links users who share an attribute of
  the raw user file: the same three-digit zip-code prefix (``neighbourhood``), the same
  occupation (``colleague``), the same age bucket and gender (``peer``). These are cliques:
  what they carry is demographic homophily, not friendship.

Links are undirected, ``src < dst``, user ids as in the data sets' ``user_id`` feature.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np


@dataclasses.dataclass
class SocialGraph:
    """Typed undirected links.

    Attributes:
        src, dst: (E,) int64 user ids, ``src < dst``.
        relation: (E,) int64 relation of each link, 1..len(names).
        names: the relations' names.
    """

    src: np.ndarray
    dst: np.ndarray
    relation: np.ndarray
    names: tuple

    @property
    def num_relations(self) -> int:
        return len(self.names)


MOVIELENS_RELATIONS = ("neighbourhood", "colleague", "peer")


def social_graph(dataset: str, metadata: Mapping) -> SocialGraph:
    """The social graph of `dataset`, whose prepared data carries `metadata`.

    Raises:
        ValueError: the data set has no social graph.
    """
    if "simulator" in metadata:
        from tfrec_onerec.data import simulator

        settings = dict(metadata["simulator"])
        if "relation_homophily" in settings:
            settings["relation_homophily"] = tuple(settings["relation_homophily"])
        world = simulator.simulate(simulator.SimulatorConfig(**settings))
        edges = world.social_relations
        return SocialGraph(*(edges[c].to_numpy(np.int64) for c in ("src", "dst", "relation")),
                           names=simulator.RELATIONS)
    if dataset == "movielens-100k":
        return movielens_graph()
    raise ValueError(f"The data set {dataset!r} has no social graph (the simulator's data sets and "
                     "movielens-100k have one).")


def movielens_graph(path=None) -> SocialGraph:
    """MovieLens-100K's attribute links (module docstring) from the raw user file."""
    from tfrec_onerec.data.movielens import age_bucket, load_movielens_100k

    users = load_movielens_100k(path).users
    keys = [users["zip_code"].str[:3].to_numpy(), users["occupation"].to_numpy(),
            np.char.add(age_bucket(users["age"].to_numpy()).astype(str), users["gender"].to_numpy().astype(str))]
    ids = users["user_id"].to_numpy(np.int64)
    parts = []
    for relation, key in enumerate(keys, start=1):
        same = key[:, None] == key[None, :]
        src, dst = np.nonzero(np.triu(same, k=1))
        parts.append((ids[src], ids[dst], np.full(len(src), relation, np.int64)))
    src, dst, relation = (np.concatenate(column) for column in zip(*parts))
    return SocialGraph(np.minimum(src, dst), np.maximum(src, dst), relation, MOVIELENS_RELATIONS)

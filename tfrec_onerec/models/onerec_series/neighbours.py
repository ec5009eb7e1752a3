"""Offline neighbour sets of NeighbourEnhancedDNN, built from the training split only.

Each builder returns an int64 table ``(rows, K)``: row ``i`` holds the ids of node ``i``'s
neighbours, best first, 0-padded (id 0 is the spec's padding / unknown id, whose row is
empty). Ties are broken by activity (more training positives first), then by the smaller id,
so the tables are deterministic.

User neighbour types:

* ``"profile"`` (static neighbours): users with exactly the same categorical profile
  features (MovieLens: gender, age, occupation; the simulator: age bucket, gender, lifecycle
  stage), the K most active first.
* ``"interest"`` (dynamic neighbours): the K users whose category distribution over their
  training positives is closest by cosine (MovieLens: genres; the simulator: categories).

Item neighbour types:

* ``"collaborative"``: item-item cosine over the users who clicked them (item CF), top K.
* ``"category"``: the K most clicked other items of the same category.
* ``"knowledge"``: the K items sharing the most knowledge-graph entities one hop away
  (MovieLens-100K: actors, directors, writers, genres... from its Freebase links), cosine of
  their entity sets weighted by inverse document frequency, so a shared director counts more
  than a shared language. Item side information only: no interaction is read (ties: activity).

The interactions are the rows whose ``label`` is 1 (the positives; all rows when the data
has no such column). The similarity matrices are dense (users x users, items x items): fine
for tens of thousands of nodes, not for millions.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

USER_TYPES = ("profile", "interest")
ITEM_TYPES = ("collaborative", "category")
OPTIONAL_ITEM_TYPES = ("knowledge",)
"""Item neighbour types that need side data (a knowledge graph), used when the data has it."""


class Interactions:
    """The training positives and node attributes the builders read.

    Args:
        columns: ``{column: numpy array}`` of the training split (``FamilyData.columns``).
        user_key: the user id column. item_key: the candidate item id column.
        category_key: the candidate item's category column (None: no category types).
        profile_keys: the user's categorical profile columns (static neighbours).
        num_users, num_items, num_categories: the vocabulary sizes (ids ``1..size``).
        label: the column whose 1s are the positives. Default ``"click"``.
        item_entities: ``{"item_id", "entity": (n,) int}`` item -> knowledge-graph entity
            pairs (``knowledge`` neighbours); None: the data has no knowledge graph.
    """

    def __init__(self, columns: Mapping, user_key: str, item_key: str, category_key: str | None,
                 profile_keys: Sequence[str], num_users: int, num_items: int, num_categories: int = 0,
                 label: str = "click", item_entities: Mapping | None = None):
        users = np.asarray(columns[user_key], np.int64).reshape(-1)
        positive = (np.asarray(columns[label]).reshape(-1) == 1) if label in columns else np.ones(len(users), bool)
        self.num_users, self.num_items, self.num_categories = int(num_users), int(num_items), int(num_categories)
        self.users = np.clip(users[positive], 0, self.num_users)
        self.items = np.clip(np.asarray(columns[item_key], np.int64).reshape(-1)[positive], 0, self.num_items)
        self.categories = (None if category_key is None else
                           np.clip(np.asarray(columns[category_key], np.int64).reshape(-1)[positive], 0,
                                   self.num_categories))
        self.user_activity = np.bincount(self.users, minlength=self.num_users + 1)
        self.item_activity = np.bincount(self.items, minlength=self.num_items + 1)
        self.user_activity[0] = self.item_activity[0] = 0
        self.item_entities = item_entities
        # Each user's profile from any of its rows (profiles are static); 0 rows: unknown users.
        self.profiles = np.zeros((self.num_users + 1, len(profile_keys)), np.int64)
        self.known_profile = np.zeros(self.num_users + 1, bool)
        for column, key in enumerate(profile_keys):
            self.profiles[users, column] = np.asarray(columns[key], np.int64).reshape(-1)
        self.known_profile[users] = True
        self.known_profile[0] = False

    def require_categories(self, kind: str) -> None:
        if self.categories is None:
            raise ValueError(f"NeighbourEnhancedDNN: {kind!r} neighbours need an item category feature (a second "
                             "history feature whose query is the candidate's category); the spec has none.")


def top_k(similarity: np.ndarray, activity: np.ndarray, k: int) -> np.ndarray:
    """(rows, k) ids of each row's k most similar columns with similarity > 0, best first (ties:
    more active first, then the smaller id); the diagonal and column 0 never count; 0-padded."""
    similarity = np.array(similarity, np.float64)
    n = similarity.shape[0]
    np.fill_diagonal(similarity, 0.0)
    similarity[:, 0] = 0.0
    # Lexicographic order by (similarity desc, activity desc, id asc): stable sorts, last key first.
    ids = np.arange(n)
    order = np.argsort(ids)  # id ascending
    order = order[np.argsort(-activity[order], kind="stable")]
    table = np.zeros((n, k), np.int64)
    for row in range(1, n):
        scores = similarity[row, order]
        ranked = order[np.argsort(-scores, kind="stable")]
        chosen = ranked[similarity[row, ranked] > 0][:k]
        table[row, :len(chosen)] = chosen
    return table


def cosine(matrix: np.ndarray) -> np.ndarray:
    """Row-by-row cosine similarity of a (rows, features) matrix (0 for all-zero rows)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = matrix / np.maximum(norms, 1e-12)
    return unit @ unit.T


def profile_neighbours(data: Interactions, k: int) -> np.ndarray:
    """(num_users + 1, k) users with the same profile, most active first."""
    same = np.all(data.profiles[:, None, :] == data.profiles[None, :, :], axis=-1)
    same &= data.known_profile[:, None] & data.known_profile[None, :]
    return top_k(same.astype(np.float64), data.user_activity, k)


def interest_neighbours(data: Interactions, k: int) -> np.ndarray:
    """(num_users + 1, k) users whose category distribution is the closest (cosine)."""
    data.require_categories("interest")
    counts = np.zeros((data.num_users + 1, data.num_categories + 1), np.float64)
    np.add.at(counts, (data.users, data.categories), 1.0)
    counts[:, 0] = 0.0
    return top_k(cosine(counts), data.user_activity, k)


def collaborative_neighbours(data: Interactions, k: int) -> np.ndarray:
    """(num_items + 1, k) items with the closest sets of clicking users (item CF, cosine)."""
    clicked = np.zeros((data.num_items + 1, data.num_users + 1), np.float32)
    clicked[data.items, data.users] = 1.0
    clicked[:, 0] = 0.0
    return top_k(cosine(clicked), data.item_activity, k)


def category_neighbours(data: Interactions, k: int) -> np.ndarray:
    """(num_items + 1, k) the most clicked other items of the item's category."""
    data.require_categories("category")
    category = np.zeros(data.num_items + 1, np.int64)
    category[data.items] = data.categories
    same = (category[:, None] == category[None, :]) & (category[:, None] > 0)
    return top_k(same.astype(np.float64), data.item_activity, k)


def knowledge_neighbours(data: Interactions, k: int) -> np.ndarray:
    """(num_items + 1, k) items sharing the most (IDF-weighted) knowledge-graph entities."""
    from scipy import sparse

    if data.item_entities is None:
        raise ValueError("NeighbourEnhancedDNN: 'knowledge' neighbours need a knowledge graph (the data set's "
                         "item_entities.npz side file: MovieLens-100K has one); this data has none.")
    items = np.asarray(data.item_entities["item_id"], np.int64)
    entities = np.asarray(data.item_entities["entity"], np.int64)
    keep = (items >= 1) & (items <= data.num_items)
    items, entities = items[keep], entities[keep]
    incidence = sparse.csr_matrix((np.ones(len(items)), (items, entities)),
                                  shape=(data.num_items + 1, int(entities.max(initial=0)) + 1))
    incidence.data[:] = 1.0  # duplicate pairs count once
    frequency = np.asarray(incidence.sum(axis=0)).ravel()
    weights = np.log((data.num_items + 1) / np.maximum(frequency, 1.0)) * (frequency >= 2)  # shared entities only
    weighted = incidence @ sparse.diags(weights)
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    unit = sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ weighted
    return top_k((unit @ unit.T).toarray(), data.item_activity, k)


BUILDERS = {"profile": profile_neighbours, "interest": interest_neighbours,
            "collaborative": collaborative_neighbours, "category": category_neighbours,
            "knowledge": knowledge_neighbours}


def build_neighbours(data: Interactions, types: Sequence[str], k: int) -> dict:
    """``{type: (rows, k) int64 table}`` for each of `types` (see :data:`BUILDERS`)."""
    unknown = [t for t in types if t not in BUILDERS]
    if unknown:
        raise ValueError(f"NeighbourEnhancedDNN: unknown neighbour type(s) {unknown}; known: {sorted(BUILDERS)}.")
    return {t: BUILDERS[t](data, k) for t in types}

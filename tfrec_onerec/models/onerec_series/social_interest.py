"""Social4Rec's social-interest extractor, offline: relation features, a self-organising map, groups.

Xiao et al., "Social4Rec: Distilling User Preference from Social Graph for Video
Recommendation in Tencent" (WISE 2023, arXiv 2302.09971). Before the ranker trains, every
user gets one *interest vector per social relation*:

1. **Relation features** (:func:`relation_features`): user ``u``'s segment for relation ``r``
   is the mean interest of its ``r``-neighbours (zeros without any); the segments side by side
   are the user's social features.
2. **Self-organising map** (:class:`SelfOrganisingMap`): a Kohonen grid trained on the social
   features places users with similar social surroundings on nearby nodes; **k-means** over the
   nodes' prototypes merges them into ``num_groups`` groups (:func:`social_groups`), so sparse
   nodes join their neighbours.
3. **Relation interests** (:func:`relation_interests`): within a user's group, the ``k`` users
   nearest to it in relation ``r``'s segment; the mean of their interests is the user's
   interest vector for relation ``r``.

Interests come from the training split only (:func:`category_interests`: each user's
distribution of clicked categories), so nothing fitted here sees validation or test rows.

The released code's map is a 300 x 300 grid trained with radius 50 and learning rate 0.001
and a linear neighbourhood ``max(0, 1 - d / radius)``, meant to halve the radius and divide
the rate by 10 every 100,000 steps (a Python ``if`` on a tensor keeps that from ever
happening); here the grid, radius and rate are sized to the number of users, the
neighbourhood is the usual Gaussian, and the schedule works in the intended form (radius
halved, rate x 0.1, every ``decay_steps`` samples).
"""
from __future__ import annotations

import numpy as np

from tfrec_onerec.clustering import kmeans, squared_distances


def category_interests(users, categories, num_users: int, num_categories: int) -> np.ndarray:
    """(num_users + 1, num_categories + 1) each user's share of clicks per category (row 0 and
    users without clicks: zeros).

    Args:
        users, categories: (n,) the user and the clicked item's category of each positive
            training example (ids from 1; 0 is ignored).
    """
    counts = np.zeros((num_users + 1, num_categories + 1))
    np.add.at(counts, (np.asarray(users, np.int64), np.asarray(categories, np.int64)), 1.0)
    counts[0] = 0.0
    counts[:, 0] = 0.0
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)


def relation_features(src, dst, relation, interests: np.ndarray, num_relations: int) -> np.ndarray:
    """(users + 1, num_relations, d) user ``u``'s mean neighbour interest in each relation.

    Args:
        src, dst, relation: (E,) undirected edges (user ids from 1) and their relation (1..R).
        interests: (users + 1, d) interest vectors (row 0: padding).
        num_relations: R.
    """
    src, dst, relation = (np.asarray(a, np.int64) for a in (src, dst, relation))
    users = np.concatenate([src, dst])
    neighbours = np.concatenate([dst, src])
    kinds = np.concatenate([relation, relation]) - 1
    total = np.zeros((len(interests), num_relations, interests.shape[1]))
    np.add.at(total, (users, kinds), interests[neighbours])
    degree = np.zeros((len(interests), num_relations))
    np.add.at(degree, (users, kinds), 1.0)
    return total / np.maximum(degree, 1.0)[..., None]


class SelfOrganisingMap:
    """A Kohonen self-organising map: a ``rows x cols`` grid of prototype vectors.

    Online training, one sample at a time in a shuffled order: the best-matching node
    ``b = argmin_j ||w_j - x||`` pulls every node toward ``x`` by
    ``w_j += rate * exp(-||g_j - g_b||^2 / (2 radius^2)) * (x - w_j)`` (``g``: grid positions).
    Every ``decay_steps`` samples the radius halves and the rate is multiplied by 0.1, the
    released code's schedule.

    Args:
        rows, cols: the grid. radius: the initial neighbourhood radius, in grid steps
            (default: half the larger side). learning_rate: the initial rate. Default 0.5.
        decay_steps: samples between two decays. Default 10,000.
        seed: initial prototypes (random samples) and the order of the samples.
    """

    def __init__(self, rows: int, cols: int, radius: float | None = None, learning_rate: float = 0.5,
                 decay_steps: int = 10_000, seed: int = 0):
        if rows < 1 or cols < 1 or decay_steps < 1 or learning_rate <= 0:
            raise ValueError(f"SelfOrganisingMap: rows, cols and decay_steps must be >= 1 and learning_rate > 0; "
                             f"got {rows}, {cols}, {decay_steps}, {learning_rate}.")
        self.rows, self.cols = int(rows), int(cols)
        self.radius = float(radius if radius is not None else max(rows, cols) / 2)
        self.learning_rate = float(learning_rate)
        self.decay_steps = int(decay_steps)
        self.rng = np.random.default_rng(seed)
        self.grid = np.stack(np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij"), -1).reshape(-1, 2)
        self.prototypes: np.ndarray | None = None
        self.steps = 0

    def rates(self) -> tuple:
        """``(radius, learning_rate)`` after the decays so far."""
        decays = self.steps // self.decay_steps
        return self.radius * 0.5 ** decays, self.learning_rate * 0.1 ** decays

    def update(self, x: np.ndarray) -> int:
        """One training step on the sample (d,); returns its best-matching node."""
        winner = int(np.argmin(((self.prototypes - x) ** 2).sum(axis=1)))
        radius, rate = self.rates()
        pull = np.exp(-((self.grid - self.grid[winner]) ** 2).sum(axis=1) / (2.0 * radius ** 2))
        self.prototypes += rate * pull[:, None] * (x - self.prototypes)
        self.steps += 1
        return winner

    def fit(self, x: np.ndarray, epochs: int = 5) -> "SelfOrganisingMap":
        """Trains on the rows of `x` (n, d) for `epochs` shuffled passes."""
        x = np.asarray(x, np.float64)
        if self.prototypes is None:
            self.prototypes = x[self.rng.integers(0, len(x), self.rows * self.cols)].copy()
        for _ in range(epochs):
            for row in self.rng.permutation(len(x)):
                self.update(x[row])
        return self

    def winners(self, x: np.ndarray) -> np.ndarray:
        """(n,) the best-matching node of each row of `x`."""
        return squared_distances(np.asarray(x, np.float64), self.prototypes).argmin(axis=1)


def social_groups(features: np.ndarray, num_groups: int, grid: tuple = (10, 10), epochs: int = 5,
                  seed: int = 0) -> np.ndarray:
    """(n,) a group (0..num_groups - 1) per row of `features` (n, d): a self-organising map,
    then k-means over the prototypes of the nodes that won a row (weighted by nothing: a
    sparse node counts as a dense one), each row taking its node's group."""
    som = SelfOrganisingMap(*grid, seed=seed).fit(features, epochs)
    winners = som.winners(features)
    used = np.unique(winners)
    clusters = kmeans(som.prototypes[used], min(num_groups, len(used)), seed=seed)
    group_of_node = np.zeros(len(som.prototypes), np.int64)
    group_of_node[used] = clusters.assignment
    return group_of_node[winners]


def relation_interests(features: np.ndarray, interests: np.ndarray, groups: np.ndarray, k: int = 20) -> np.ndarray:
    """(users, R, d) each user's interest per relation: the mean interest of the `k` other users
    of its group nearest to it in that relation's segment (fewer in a small group; zeros alone).

    Args:
        features: (users, R, f) relation features (:func:`relation_features`).
        interests: (users, d) the users' interests.
        groups: (users,) the group of each user (:func:`social_groups`).
    """
    users, num_relations = features.shape[:2]
    out = np.zeros((users, num_relations, interests.shape[1]))
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        if len(members) < 2:
            continue
        for r in range(num_relations):
            distances = squared_distances(features[members, r], features[members, r])
            np.fill_diagonal(distances, np.inf)
            nearest = np.argsort(distances, axis=1, kind="stable")[:, :min(k, len(members) - 1)]
            out[members, r] = interests[members[nearest]].mean(axis=1)
    return out

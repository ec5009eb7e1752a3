"""Clicks, inactive users and a social graph with known faults: the data of graph models that
learn their social graph (LSIR, :mod:`tfrec_onerec.models.kuaishou.lsir`).

Built from the simulator (:func:`~tfrec_onerec.data.simulator.simulate`), whose ground truth
makes the learned graph checkable:

* **interactions**: each user's distinct clicked items, in the order of their first click.
  A user with at least three of them is *evaluated*: the last ``test_fraction`` of the
  items (at least one) are the test targets, the item before them the validation target,
  the rest the training interactions. Other users keep every item for training.
* **inactive users**: a random ``inactive_fraction`` of the evaluated users keep only their
  first ``inactive_items`` training items (the rest are dropped, their validation and test
  targets stay), so they have the few interactions of the inactive users LSIR is built for.
  Everyone else is *active*.
* **the observed social graph**: the world's true friendships (``social_edges``, linked by
  interest similarity) with a ``missing_rate`` share of them removed and ``noise_rate``
  times as many random links added (pairs that are not friends). The true graph and which
  observed links are noise are kept, so a learned graph is scored against the truth
  (:func:`edge_quality`).

Nothing of the validation or test targets reaches the training interactions or the graph.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SocialDataConfig:
    """The world and how its data is cut and corrupted.

    Args:
        num_users, num_items, seed: the simulated world
            (:func:`~tfrec_onerec.data.simulator.session_world`).
        test_fraction: share of an evaluated user's items held out as test targets (at least one).
        inactive_fraction: share of the evaluated users made inactive.
        inactive_items: training items an inactive user keeps (their first ones).
        missing_rate: share of the true friendships left out of the observed graph.
        noise_rate: random links added to the observed graph, as a multiple of the number of
            true friendships.
    """

    num_users: int = 3000
    num_items: int = 400
    seed: int = 0
    test_fraction: float = 0.2
    inactive_fraction: float = 0.3
    inactive_items: int = 3
    missing_rate: float = 0.3
    noise_rate: float = 0.3

    def __post_init__(self):
        for name in ("test_fraction", "inactive_fraction", "missing_rate"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"SocialDataConfig.{name} must be in [0, 1), got {value!r}.")
        if self.noise_rate < 0:
            raise ValueError(f"SocialDataConfig.noise_rate must be >= 0, got {self.noise_rate!r}.")
        if self.inactive_items < 1:
            raise ValueError(f"SocialDataConfig.inactive_items must be >= 1, got {self.inactive_items!r}.")


@dataclasses.dataclass
class SocialInteractions:
    """What :func:`social_interactions` returns. User ids 1..U, item ids 1..I.

    Attributes:
        num_users, num_items: U, I.
        train_users, train_items: (n,) int64 the training interactions, by user, each user's
            in the order of their first click.
        valid_targets, test_targets: ``{user id: (k,) int64 items}`` of the evaluated users.
        inactive: (U + 1,) bool, row ``u`` for user ``u``: made inactive (row 0: False).
        observed_src, observed_dst: (E,) int64 the observed links, ``src < dst``.
        observed_noise: (E,) bool, the link is not a true friendship.
        true_src, true_dst: (T,) int64 the true friendships, ``src < dst``.
    """

    num_users: int
    num_items: int
    train_users: np.ndarray
    train_items: np.ndarray
    valid_targets: dict
    test_targets: dict
    inactive: np.ndarray
    observed_src: np.ndarray
    observed_dst: np.ndarray
    observed_noise: np.ndarray
    true_src: np.ndarray
    true_dst: np.ndarray

    def training_degree(self) -> np.ndarray:
        """(U + 1,) int64: each user's number of training interactions (row 0: 0)."""
        return np.bincount(self.train_users, minlength=self.num_users + 1).astype(np.int64)


def social_interactions(config: SocialDataConfig = SocialDataConfig()) -> SocialInteractions:
    """The data of the module docstring; the same config gives the same data."""
    from tfrec_onerec.data.simulator import session_world, simulate

    world = simulate(session_world(config.num_users, config.num_items, config.seed))
    rng = np.random.default_rng([config.seed, 7])
    clicks = world.interactions.loc[world.interactions["click"] == 1, ["user_id", "item_id", "timestamp"]]
    clicks = clicks.sort_values(["user_id", "timestamp"], kind="stable").drop_duplicates(["user_id", "item_id"])
    histories = {int(u): g["item_id"].to_numpy(np.int64) for u, g in clicks.groupby("user_id", sort=True)}
    evaluated = np.array([u for u, items in histories.items() if len(items) >= 3], np.int64)
    inactive = np.zeros(config.num_users + 1, bool)
    inactive[rng.choice(evaluated, int(round(config.inactive_fraction * len(evaluated))), replace=False)] = True
    train_users, train_items, valid, test = [], [], {}, {}
    for user, items in histories.items():
        kept = items
        if len(items) >= 3:
            held = max(1, int(round(config.test_fraction * len(items))))
            held = min(held, len(items) - 2)
            test[user], valid[user] = items[len(items) - held:], items[len(items) - held - 1:len(items) - held]
            kept = items[:len(items) - held - 1]
            if inactive[user]:
                kept = kept[:config.inactive_items]
        train_users.append(np.full(len(kept), user, np.int64))
        train_items.append(kept)
    true_src, true_dst = (world.social_edges[c].to_numpy(np.int64) for c in ("src", "dst"))
    observed_src, observed_dst, noise = _corrupted_graph(true_src, true_dst, config, rng)
    return SocialInteractions(config.num_users, config.num_items, np.concatenate(train_users),
                              np.concatenate(train_items), valid, test, inactive, observed_src, observed_dst,
                              noise, true_src, true_dst)


def _corrupted_graph(true_src, true_dst, config: SocialDataConfig, rng: np.random.Generator):
    """The observed links: the true ones less ``missing_rate`` of them, plus random non-friend pairs."""
    keep = rng.random(len(true_src)) >= config.missing_rate
    true_keys = set(_keys(true_src, true_dst, config.num_users).tolist())
    wanted = int(round(config.noise_rate * len(true_src)))
    noise_keys: set = set()
    while len(noise_keys) < wanted:
        a, b = rng.integers(1, config.num_users + 1, (2, 2 * (wanted - len(noise_keys)) + 8))
        for key in _keys(np.minimum(a, b), np.maximum(a, b), config.num_users)[a != b].tolist():
            if key not in true_keys and len(noise_keys) < wanted:
                noise_keys.add(key)
    noise = np.array(sorted(noise_keys), np.int64)
    src = np.concatenate([true_src[keep], noise // (config.num_users + 1)])
    dst = np.concatenate([true_dst[keep], noise % (config.num_users + 1)])
    is_noise = np.concatenate([np.zeros(int(keep.sum()), bool), np.ones(len(noise), bool)])
    order = np.lexsort((dst, src))
    return src[order], dst[order], is_noise[order]


def _keys(src, dst, num_users: int) -> np.ndarray:
    return np.asarray(src, np.int64) * (num_users + 1) + np.asarray(dst, np.int64)


def edge_quality(src, dst, true_src, true_dst, num_users: int) -> dict:
    """How well undirected links ``(src, dst)`` match the true ones.

    Returns:
        ``{"edges", "precision", "recall"}``: the number of distinct links, the share of them
        that are true, and the share of the true links among them.
    """
    src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
    links = np.unique(_keys(np.minimum(src, dst), np.maximum(src, dst), num_users)[src != dst])
    truth = np.unique(_keys(true_src, true_dst, num_users))
    hits = np.isin(links, truth).sum()
    return {"edges": int(len(links)), "precision": float(hits / max(len(links), 1)),
            "recall": float(hits / max(len(truth), 1))}

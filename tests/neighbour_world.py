"""A world where long-tail items are known only through their neighbours.

Items 1..80 fall into 4 hidden clusters, ``(item - 1) % 4 + 1``; the ``item_cat`` feature is
noise, so an item's cluster is known only through the users who click it. Each user has a
taste (a cluster), visible in its history of 6 head items of that cluster, and clicks a
candidate exactly when the candidate's cluster is its taste. Items 1..40 are *head* items
(most training rows); items 41..80 are *tail* items, each in only ``TAIL_ROWS`` training
rows, all clicks. Item-CF neighbours (users who clicked the tail item also clicked head items
of its cluster) reveal a tail item's cluster; its own id embedding barely trains.
"""
import numpy as np

from tfrec_onerec.features import Feature, FeatureSpec

NUM_USERS, NUM_ITEMS, NUM_CLUSTERS, MAX_LEN = 400, 80, 4, 6
HEAD = 40
TAIL_ROWS = 2


def cluster(items):
    return np.where(items > 0, (items - 1) % NUM_CLUSTERS + 1, 0)


def neighbour_world_spec():
    return FeatureSpec([
        Feature("user_id", "categorical", vocab_size=NUM_USERS, embedding_dim=8, group="user"),
        Feature("segment", "categorical", vocab_size=3, embedding_dim=4, group="user"),
        Feature("item_id", "categorical", vocab_size=NUM_ITEMS, embedding_dim=8, vocab="item", group="item"),
        Feature("item_cat", "categorical", vocab_size=NUM_CLUSTERS, embedding_dim=4, vocab="cat", group="item"),
        Feature("hist_item_id", "sequence", vocab_size=NUM_ITEMS, embedding_dim=8, vocab="item", max_len=MAX_LEN,
                group="history", query="item_id"),
        Feature("hist_cat", "sequence", vocab_size=NUM_CLUSTERS, embedding_dim=4, vocab="cat", max_len=MAX_LEN,
                group="history", query="item_cat"),
    ], labels=["click"], user_key="user_id")


def _rows(users, candidates, taste, noise_cat, rng):
    n = len(users)
    head_of_taste = (rng.integers(0, HEAD // NUM_CLUSTERS, (n, MAX_LEN)) * NUM_CLUSTERS + taste[users][:, None])
    return {"user_id": users, "segment": users % 3 + 1, "item_id": candidates, "item_cat": noise_cat[candidates],
            "hist_item_id": head_of_taste, "hist_cat": noise_cat[head_of_taste],
            "click": (cluster(candidates) == taste[users]).astype(np.float32)}


def neighbour_world(seed=0, rows_per_user=20):
    """``(spec, train, test)``: training rows of head candidates plus ``TAIL_ROWS`` clicked rows per
    tail item; test rows of tail candidates shown to random users."""
    rng = np.random.default_rng(seed)
    taste = rng.integers(1, NUM_CLUSTERS + 1, NUM_USERS + 1)
    noise_cat = rng.integers(1, NUM_CLUSTERS + 1, NUM_ITEMS + 1)  # item_cat: one random category per item
    users = np.repeat(np.arange(1, NUM_USERS + 1), rows_per_user)
    head = rng.integers(1, HEAD + 1, len(users))
    tail_items = np.repeat(np.arange(HEAD + 1, NUM_ITEMS + 1), TAIL_ROWS)
    fans = np.array([rng.choice(np.flatnonzero(taste[1:] == cluster(np.array([i]))[0]) + 1) for i in tail_items])
    train = _rows(np.concatenate([users, fans]), np.concatenate([head, tail_items]), taste, noise_cat, rng)
    test_users = rng.integers(1, NUM_USERS + 1, 4000)
    test = _rows(test_users, rng.integers(HEAD + 1, NUM_ITEMS + 1, 4000), taste, noise_cat, rng)
    return neighbour_world_spec(), train, test

"""A hand-made world whose answer lies in old behaviours only (SIM's case).

Items 1..60 belong to 6 categories (``(item - 1) % 6 + 1``). A history holds ``LENGTH``
clicks, oldest first: the first ``OLD`` are about the user's interest (two in three from
its category), the most recent ``RECENT`` are uniformly random items. The candidate is
clicked exactly when its category is the interest, so a model that reads only the most
recent ``RECENT`` behaviours cannot beat chance, while a search over the whole history can
be perfect. Time buckets grow with age (the most recent click is bucket 1).
"""
import numpy as np

from tfrec_onerec.features import Feature, FeatureSpec

NUM_ITEMS, NUM_CATEGORIES, OLD, RECENT = 60, 6, 150, 50
LENGTH = OLD + RECENT


def category(items):
    return np.where(items > 0, (items - 1) % NUM_CATEGORIES + 1, 0)


def lifelong_spec(max_len=LENGTH):
    return FeatureSpec([
        Feature("user_id", "categorical", vocab_size=100, embedding_dim=4, group="user"),
        Feature("item_id", "categorical", vocab_size=NUM_ITEMS, embedding_dim=8, vocab="item", group="item"),
        Feature("item_cat", "categorical", vocab_size=NUM_CATEGORIES, embedding_dim=4, vocab="cat", group="item"),
        Feature("hist_item_id", "sequence", vocab_size=NUM_ITEMS, embedding_dim=8, vocab="item", max_len=max_len,
                group="history", query="item_id"),
        Feature("hist_cat", "sequence", vocab_size=NUM_CATEGORIES, embedding_dim=4, vocab="cat", max_len=max_len,
                group="history", query="item_cat"),
        Feature("hist_time_bucket", "sequence", vocab_size=16, embedding_dim=4, max_len=max_len, group="history"),
    ], labels=["click"])


def lifelong_columns(n, seed, keep_last=None):
    """n rows of the world; `keep_last`: keep only the most recent `keep_last` behaviours
    (what a model of the last-N behaviours is given)."""
    rng = np.random.default_rng(seed)
    interest = rng.integers(1, NUM_CATEGORIES + 1, n)
    old = rng.integers(0, NUM_ITEMS // NUM_CATEGORIES, (n, OLD)) * NUM_CATEGORIES + interest[:, None]
    old = np.where(rng.random((n, OLD)) < 2 / 3, old, rng.integers(1, NUM_ITEMS + 1, (n, OLD)))
    hist = np.concatenate([old, rng.integers(1, NUM_ITEMS + 1, (n, RECENT))], axis=1)
    age = np.arange(LENGTH)[::-1]  # the oldest click is the oldest
    buckets = np.broadcast_to(1 + np.floor(np.log2(1 + age)), hist.shape).astype(np.int64)
    if keep_last:
        hist, buckets = hist[:, -keep_last:], buckets[:, -keep_last:]
    candidate = rng.integers(1, NUM_ITEMS + 1, n)
    return {"user_id": rng.integers(1, 101, n), "item_id": candidate, "item_cat": category(candidate),
            "hist_item_id": hist, "hist_cat": category(hist), "hist_time_bucket": buckets,
            "click": (category(candidate) == interest).astype(np.float32)}

"""A world where a user's group says much about the user's interest and few behaviours say little.

Users belong to one of 8 segments (a profile feature); each segment favours one of the 4 item
categories of :mod:`known_answer`. A user's interest is the segment's category with
probability 0.8, else another category; the candidate is clicked exactly when its category is
the user's interest. Head users show 6 behaviours, all of their interest; tail users show one,
of their interest only half of the time. So a head user's history gives the answer, a tail
user's is better read together with the segment's preference.
"""
import numpy as np

from tfrec_onerec.features import Feature, FeatureSpec

from known_answer import MAX_LEN, NUM_CATEGORIES, NUM_ITEMS, category, known_answer_spec

NUM_SEGMENTS = 8
SEGMENT_AGREEMENT = 0.8  # P(interest = the segment's category)
TAIL_SHARE = 0.5


def group_world_spec():
    return FeatureSpec(list(known_answer_spec().features)
                       + [Feature("segment", "categorical", vocab_size=NUM_SEGMENTS, embedding_dim=4, group="user")],
                       labels=["click"])


def items_of(categories, rng):
    """A random item of each category in `categories` (any shape)."""
    return rng.integers(0, NUM_ITEMS // NUM_CATEGORIES, np.shape(categories)) * NUM_CATEGORIES + categories


def group_world_columns(n, seed):
    """``n`` rows of the world (``tail``: 1 for a tail user's row; not a model input)."""
    rng = np.random.default_rng(seed)
    segment = rng.integers(1, NUM_SEGMENTS + 1, n)
    favourite = (segment - 1) % NUM_CATEGORIES + 1
    other = (favourite - 1 + rng.integers(1, NUM_CATEGORIES, n)) % NUM_CATEGORIES + 1
    interest = np.where(rng.random(n) < SEGMENT_AGREEMENT, favourite, other)
    tail = rng.random(n) < TAIL_SHARE
    hist = items_of(np.repeat(interest[:, None], MAX_LEN, axis=1), rng)
    noisy = rng.integers(1, NUM_CATEGORIES + 1, n)
    hist[:, 0] = np.where(tail & (rng.random(n) < 0.5), items_of(noisy, rng), hist[:, 0])
    hist[tail, 1:] = 0
    candidate = rng.integers(1, NUM_ITEMS + 1, n)
    return {"user_id": rng.integers(1, 501, n), "segment": segment, "item_id": candidate,
            "item_cat": category(candidate), "hist_item_id": hist, "hist_cat": category(hist),
            "click": (category(candidate) == interest).astype(np.float32), "tail": tail.astype(np.int64)}

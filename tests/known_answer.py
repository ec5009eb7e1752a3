"""A small data set with a known answer, shared by the model and export tests.

Items 1..40 belong to 4 categories (``(item - 1) % 4 + 1``). Each user has a history of 6
items; the candidate is clicked exactly when its category is the category the history is
mostly about. A model must compare candidate and history to do better than chance.
"""
import numpy as np

from tfrec_onerec.features import Feature, FeatureSpec

NUM_ITEMS, NUM_CATEGORIES, MAX_LEN = 40, 4, 6


def category(items):
    return np.where(items > 0, (items - 1) % NUM_CATEGORIES + 1, 0)


def known_answer_spec():
    return FeatureSpec([
        Feature("user_id", "categorical", vocab_size=500, embedding_dim=4, group="user"),
        Feature("item_id", "categorical", vocab_size=NUM_ITEMS, embedding_dim=8, vocab="item", group="item"),
        Feature("item_cat", "categorical", vocab_size=NUM_CATEGORIES, embedding_dim=4, vocab="cat", group="item"),
        Feature("hist_item_id", "sequence", vocab_size=NUM_ITEMS, embedding_dim=8, vocab="item", max_len=MAX_LEN,
                group="history", query="item_id"),
        Feature("hist_cat", "sequence", vocab_size=NUM_CATEGORIES, embedding_dim=4, vocab="cat", max_len=MAX_LEN,
                group="history", query="item_cat"),
    ], labels=["click"])


def known_answer_columns(n, seed):
    rng = np.random.default_rng(seed)
    interest = rng.integers(1, NUM_CATEGORIES + 1, n)
    # 5 of 6 history items from the interest category, one random; some rows shorter.
    base = rng.integers(0, NUM_ITEMS // NUM_CATEGORIES, (n, MAX_LEN)) * NUM_CATEGORIES
    hist = base + interest[:, None]
    noise = rng.integers(1, NUM_ITEMS + 1, n)
    hist[:, 0] = noise
    lengths = rng.integers(3, MAX_LEN + 1, n)
    hist[np.arange(MAX_LEN)[None, :] >= lengths[:, None]] = 0
    candidate = rng.integers(1, NUM_ITEMS + 1, n)
    click = (category(candidate) == interest).astype(np.float32)
    return {"user_id": rng.integers(1, 501, n), "item_id": candidate, "item_cat": category(candidate),
            "hist_item_id": hist, "hist_cat": category(hist), "click": click}


def known_funnel_spec():
    """The known-answer features with a click -> conversion funnel's labels."""
    return FeatureSpec(known_answer_spec().features, labels=["click", "conversion"])


def known_funnel_columns(n, seed):
    """Known-answer rows plus ``conversion``: a click on an even item converts (so conversion
    implies click, as in a funnel)."""
    columns = known_answer_columns(n, seed)
    columns["conversion"] = (columns["click"] * (columns["item_id"] % 2 == 0)).astype(np.float32)
    return columns

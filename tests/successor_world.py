"""A next-item data set with a known answer, shared by the next-item model tests.

Each user walks the items in order from a random start: item i is followed by i + 1 (after
NUM_ITEMS comes 1). The next item is fully determined by the last one; popularity knows
nothing of it (its Recall@10 is about 10 / (NUM_ITEMS - history)).
"""
import numpy as np
import pandas as pd

NUM_ITEMS, MAX_LEN = 60, 12


def successor_events(num_users=500, seed=0):
    """The walks as an event log (user_id, item_id, timestamp), 5 to 15 items per user."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(1, num_users + 1):
        start, length = rng.integers(1, NUM_ITEMS + 1), rng.integers(5, 16)
        rows += [(user, (start + i - 1) % NUM_ITEMS + 1, i) for i in range(length)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])

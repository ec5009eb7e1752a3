"""A tiny simulated world around a hand-written log, for tests that check values by hand."""
import numpy as np
import pandas as pd

from tfrec_onerec.data import simulator

DURATIONS = [10.0, 10.0, 20.0, 20.0, 10.0, 30.0]  # items 1..6
# user, session, timestamp, item, click, watch_time, like, follow, share
LOG = [
    (1, 1, 10, 6, 1, 40.0, 0, 0, 0),  # a view (40 >= 30)
    (1, 2, 100, 1, 1, 10.0, 1, 0, 0),  # view + like
    (1, 2, 120, 2, 0, 0.0, 0, 0, 0),
    (1, 2, 130, 3, 1, 5.0, 0, 1, 0),  # follow
    (1, 3, 1000, 4, 1, 30.0, 0, 0, 0),  # view
    (1, 3, 1040, 5, 1, 2.0, 0, 0, 1),  # share
    (1, 3, 1050, 6, 0, 0.0, 0, 0, 0),
    (1, 3, 1060, 1, 1, 3.0, 0, 0, 0),  # the 4th exposure: beyond m = 3
    (2, 4, 500, 2, 1, 20.0, 0, 0, 0),  # view
    (2, 4, 530, 3, 0, 0.0, 0, 0, 0),
    (2, 5, 2000, 5, 0, 0.0, 0, 0, 0),  # no click at all
]


def hand_world(log=LOG, **config):
    """A SimulatedData around a hand-written log: 2 users, 6 items, 1 category."""
    c = simulator.SimulatorConfig(num_users=2, num_items=6, num_categories=1, latent_dim=2, friends_per_user=0,
                                  **config)
    users = pd.DataFrame({"user_id": [1, 2], "age_bucket": [3, 5], "gender": [1, 2], "lifecycle_stage": [2, 4],
                          "activity": [1.0, 1.0]})
    items = pd.DataFrame({"item_id": np.arange(1, 7), "category": np.ones(6, np.int64), "duration": DURATIONS,
                          "popularity": np.zeros(6)})
    frame = pd.DataFrame(log, columns=["user_id", "session_id", "timestamp", "item_id", "click", "watch_time",
                                       "like", "follow", "share"])
    frame["position"] = frame.groupby("session_id").cumcount()
    interest = np.array([[1.0, 0.0], [0.0, 1.0]])
    latent = np.array([[1.0, 0.0], [0.0, 1.0]] * 3)
    return simulator.SimulatedData(c, users, items, np.zeros((6, 1), np.float32),
                                   pd.DataFrame({"src": [], "dst": []}), frame, interest, latent)

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


def successor_split(num_users=300):
    """The walks' leave-one-out next-item split (:func:`tfrec_onerec.data.sequences.leave_one_out`)."""
    from tfrec_onerec.data import sequences

    return sequences.leave_one_out(successor_events(num_users), NUM_ITEMS, max_len=MAX_LEN)


def full_ranking_and_popularity(model, data):
    """Full-ranking test metrics of a trained next-item `model` on `data`, and the popularity
    baseline's on the same users."""
    from tfrec_onerec.models.sequence.next_item import evaluate_full_ranking

    return (evaluate_full_ranking(model.score_items(data.inputs("test")), data),
            evaluate_full_ranking(data.item_counts, data))


def served_recommendations(path, histories):
    """``{"ids", "scores"}`` of the export's ``recommend`` signature for (n, L) `histories`, run
    in a fresh process that never imports tfrec_onerec (as TF Serving would)."""
    from fresh_process import run_fresh

    return run_fresh("""
        import json, sys
        import numpy as np
        import tensorflow as tf
        payload = json.loads(sys.stdin.read())
        recommend = tf.saved_model.load(payload["path"]).signatures["recommend"]
        found = recommend(item_seq=tf.constant(np.array(payload["histories"], np.int64)))
        print(json.dumps({"ids": found["item_ids"].numpy().tolist(), "scores": found["scores"].numpy().tolist()}))
    """, {"path": str(path), "histories": np.asarray(histories).tolist()})


def check_saved_and_served(model, histories, tmp_path):
    """Saves `model` as .keras and loads it back (same class, config and scores), exports it and
    checks the export's ``recommend`` in a fresh process matches ``model.recommend``.

    Returns:
        The loaded Keras model.
    """
    import keras

    from tfrec_onerec import export

    name = model.registry_name
    expected_ids, expected_scores = (keras.ops.convert_to_numpy(t) for t in model.recommend({"item_seq": histories}))
    model.save(tmp_path / f"{name}.keras")
    loaded = keras.models.load_model(tmp_path / f"{name}.keras")
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded.item_scores({"item_seq": histories})),
                               keras.ops.convert_to_numpy(model.item_scores({"item_seq": histories})),
                               rtol=1e-5, atol=1e-5)
    out = served_recommendations(export.export_saved_model(model, tmp_path / name), histories)
    np.testing.assert_array_equal(out["ids"], expected_ids)
    np.testing.assert_allclose(out["scores"], expected_scores, rtol=1e-5)
    return loaded

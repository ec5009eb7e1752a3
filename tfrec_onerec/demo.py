"""The demo behind `make demo`: MovieLens-100K -> DIN -> SavedModel -> recommendations."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfrec_onerec import data, evaluation, models, training
from tfrec_onerec.data import movielens, samples
from tfrec_onerec.export import export_saved_model, latest_version

DEMO_USERS = (1, 405, 655)  # a long-time rater, the most active user, another heavy rater


def recommend(export_dir, data_tables: movielens.MovieLens100K, user_id: int, top_k: int, max_len: int):
    """Top-`top_k` unrated movies of a user, scored by the exported model's `predict` signature."""
    loaded = tf.saved_model.load(str(latest_version(export_dir)))
    signature = loaded.signatures["predict"]
    columns = movielens.candidate_columns(data_tables, user_id, max_len)
    inputs = set(signature.structured_input_signature[1])
    scores = signature(**{k: tf.constant(v) for k, v in columns.items() if k in inputs})["click"].numpy().reshape(-1)
    best = np.argsort(-scores, kind="stable")[:top_k]
    return columns["item_id"][best], scores[best]


def run_demo(epochs: int = 2, export_dir: str = "saved_models/din", num_users: int = 3, top_k: int = 5):
    print("== 1. MovieLens-100K (from the recbole 1.2.1 wheel on PyPI, sha256-verified)")
    tables = movielens.load_movielens_100k()
    print(f"   {len(tables.ratings):,} ratings, {len(tables.users)} users, {len(tables.items):,} movies, "
          f"{len(tables.kg):,} KG triples")
    config = data.SampleConfig()
    prepared = data.prepare_cached(movielens.NAME, config)
    print(f"   samples per split: {prepared.metadata['examples']} (leave-one-out; 1 negative per training "
          f"positive, {config.eval_negatives} per test positive)")

    print(f"== 2. Training DIN for {epochs} epoch(s) with model.fit")
    keras.utils.set_random_seed(0)
    model, _ = training.fit(lambda: models.get("din")(prepared.spec, ["click"]),
                            prepared.dataset("train", batch_size=256, shuffle=True),
                            prepared.dataset("valid", batch_size=4096),
                            training.TrainConfig(epochs=epochs, early_stopping_patience=None))
    print("   test metrics:")
    print(evaluation.format_results(evaluation.evaluate(model, prepared.dataset("test", batch_size=4096))))

    print("== 3. Exporting a SavedModel (TF Serving layout)")
    path = export_saved_model(model, export_dir, model_name="din")
    print(f"   {path}  (signatures: serving_default, predict; warmup requests in assets.extra)")

    print("== 4. Recommendations from the exported SavedModel (unrated movies, highest score first)")
    titles = dict(zip(tables.items["item_id"], tables.items["title"]))
    years = dict(zip(tables.items["item_id"], tables.items["year"]))
    for user_id in DEMO_USERS[:num_users]:
        history = samples.order_events(tables.ratings[tables.ratings["user_id"] == user_id])["item_id"]
        print(f"   user {user_id}: {len(history)} ratings, most recent: "
              + "; ".join(titles[i] for i in history.to_numpy()[-3:]))
        items, scores = recommend(export_dir, tables, user_id, top_k, config.max_len)
        for rank, (item, score) in enumerate(zip(items, scores), 1):
            print(f"      {rank}. {titles[item]} ({years[item]})  score {score:.3f}")

"""The next-item family: models that read a user's item sequence and score every item as the next.

Data (:mod:`tfrec_onerec.data.sequences`, leave-one-out): each user's items in time order;
the last is the test target, the one before it the validation target. Every split is written
as tf.Example rows of three id sequences (var-len int64 lists; parsing pads them):

* ``item_seq`` (L = ``max_len``): the input window, oldest first;
* ``next_item_seq`` (L): the item after each position (the training target of every position;
  0 at padding). Training rows are the windows of :func:`~tfrec_onerec.data.sequences.leave_one_out`;
  a validation or test row is the last L items before the target, shifted, so its last real
  position's target is the held-out item and the validation loss is the training loss's;
* ``seen_item_ids`` (the longest history): in validation and test rows every item the user had
  before the target (empty in training rows); full ranking removes them;
* ``time_seq`` (L floats): when each input item came, in seconds after the row's first item
  (0 at padding). Models do not read it at serving; training batches carry it for the models
  whose training reads time (TiCoSeRec's augmentations).

A model is built from the spec's ``item_seq`` feature (``embedding_dim``, a hyperparameter,
sets its width) and owns its loss. Evaluation: the held-out item ranked among all items the
user has not seen (Recall@K = HitRate@K with one target, NDCG@K, MRR), next to the popularity
baseline (training counts) on the same users. Export: ``recommend`` (top-N), ``serving_default``
(tf.Example) and ``score_items`` (every item's score, what evaluation reads). Models: SASRec, STAMP, TiCoSeRec.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from tfrec_onerec.data.sequences import SEQUENCE_FEATURE as INPUT_FEATURE
from tfrec_onerec.data.sequences import TARGET_FEATURE, TIME_FEATURE
from tfrec_onerec.families.base import BuiltData, FamilyData, ModelFamily
from tfrec_onerec.features import Feature, FeatureSpec
from tfrec_onerec.metrics import full_ranking_metrics

SEEN_FEATURE = "seen_item_ids"
KS = (10, 20)  # the cut-offs of full-ranking metrics


def next_item_rows(sequences: Sequence[np.ndarray], times: Sequence[np.ndarray], cut: int, max_len: int) -> dict:
    """Validation (``cut=2``) or test (``cut=1``) rows of each user's full sequence.

    Args:
        sequences: each user's items, oldest first. times: their timestamps.

    Returns:
        ``{item_seq, next_item_seq: (U, L), seen_item_ids: (U, longest history)}`` int64:
        the L items before the target, the same shifted by one (the target last), and every
        item before the target, each right-padded with 0; ``time_seq``: (U, L) float32, the
        input items' times in seconds after the first one's.
    """
    from tfrec_onerec.features.parsing import pad_sequences_numpy

    def window(s):
        return s[:len(s) - cut + 1][-(max_len + 1):]

    windows = [window(s) for s in sequences]
    input_times = [window(t)[:-1] - window(t)[0] for t in times]
    histories = [s[:len(s) - cut] for s in sequences]
    return {INPUT_FEATURE: pad_sequences_numpy([w[:-1] for w in windows], max_len),
            TARGET_FEATURE: pad_sequences_numpy([w[1:] for w in windows], max_len),
            SEEN_FEATURE: pad_sequences_numpy(histories, max(1, max(len(h) for h in histories))),
            TIME_FEATURE: np.stack([np.pad(t, (0, max_len - len(t))) for t in input_times]).astype(np.float32)}


def next_item_spec(num_items: int, max_len: int, seen_len: int) -> FeatureSpec:
    """The spec of next-item rows (see the module docstring)."""
    item = dict(vocab_size=num_items, vocab="item", embedding_dim=64)
    return FeatureSpec([
        Feature(INPUT_FEATURE, "sequence", max_len=max_len, group="history",
                description="the user's items, oldest first", **item),
        Feature(TARGET_FEATURE, "sequence", max_len=max_len, group="target",
                description="the item after each position of item_seq", **item),
        Feature(SEEN_FEATURE, "sequence", max_len=seen_len, group="target",
                description="every item before the held-out target (validation and test rows)", **item),
        Feature(TIME_FEATURE, "numeric", dim=max_len, group="history",
                description="seconds from the row's first item to each item of item_seq (0 at padding)"),
    ])


def with_embedding_dim(spec: FeatureSpec, dim: int) -> FeatureSpec:
    """`spec` with every feature's embedding width set to `dim` (the model width)."""
    import dataclasses

    return FeatureSpec([dataclasses.replace(f, embedding_dim=int(dim)) for f in spec], spec.labels, spec.user_key)


def last_targets(next_items: np.ndarray) -> np.ndarray:
    """(n,) the target at each row's last real position of (n, L) right-padded targets."""
    last = np.maximum((next_items != 0).sum(axis=1) - 1, 0)
    return next_items[np.arange(len(next_items)), last]


class NextItemFamily(ModelFamily):
    name = "next_item"
    description = "reads a user's item sequence, scores every item as the next (Recall/NDCG@K, full ranking)"
    datasets = ("movielens-100k", "simulator")
    data_options = {"max_len": 50, "simulator_users": 3000, "simulator_items": 400, "seed": 0}
    train_defaults = {"epochs": 30, "batch_size": 128, "learning_rate": 2e-3}
    pipeline_min_value = 0.02
    headline_metric = ("recall@10", True)
    data_version = 2  # 2: time_seq

    def build_data(self, dataset: str, options: dict, data_path=None) -> BuiltData:
        from tfrec_onerec.data import movielens
        from tfrec_onerec.data.sequences import movielens_next_item, simulator_next_item
        from tfrec_onerec.data.simulator import session_world, simulate

        max_len = options["max_len"]
        if dataset == movielens.NAME:
            sequences = movielens_next_item(movielens.load_movielens_100k(data_path), max_len)
        else:
            world = session_world(options["simulator_users"], options["simulator_items"], options["seed"])
            sequences = simulator_next_item(simulate(world), max_len)
        valid, test = (next_item_rows(sequences.sequences, sequences.times, cut, max_len) for cut in (2, 1))
        seen_len = max(valid[SEEN_FEATURE].shape[1], test[SEEN_FEATURE].shape[1])
        for rows in (valid, test):
            rows[SEEN_FEATURE] = np.pad(rows[SEEN_FEATURE], [(0, 0), (0, seen_len - rows[SEEN_FEATURE].shape[1])])
        train = {INPUT_FEATURE: sequences.train_inputs, TARGET_FEATURE: sequences.train_targets,
                 TIME_FEATURE: sequences.train_times.astype(np.float32),
                 # no seen items in training rows: a broadcast view, no memory
                 SEEN_FEATURE: np.broadcast_to(np.zeros((1, seen_len), np.int64), (len(sequences.train_inputs), seen_len))}
        metadata = {"num_items": sequences.num_items, "max_len": max_len, "users": int(len(sequences.user_ids)),
                    "item_counts": sequences.item_counts.tolist()}
        return BuiltData(next_item_spec(sequences.num_items, max_len, seen_len),
                         {"train": train, "valid": valid, "test": test}, metadata)

    def dataset(self, data: FamilyData, split: str, config, training: bool = False):
        """``({item_seq[, time_seq in training]}, next_item_seq)`` batches."""
        inputs = [INPUT_FEATURE] + ([TIME_FEATURE] if training and TIME_FEATURE in data.spec else [])
        spec = data.spec.subset(inputs + [TARGET_FEATURE])
        records = data.records(split, spec, batch_size=config.batch_size if training else 1024, shuffle=training,
                               seed=config.seed)
        return records.map(lambda row: ({name: row[name] for name in inputs}, row[TARGET_FEATURE]))

    def build_model(self, model_class, data: FamilyData, hyperparameters: Mapping | None = None,
                    tasks: Sequence | None = None, built=None):
        hyperparameters = dict(hyperparameters or {})
        spec = with_embedding_dim(data.spec.subset([INPUT_FEATURE]), hyperparameters.pop("embedding_dim", 64))
        return model_class(spec, **hyperparameters)

    # -- evaluation -------------------------------------------------------------------------------
    def keras_scorer(self, model):
        import tensorflow as tf

        return tf.function(lambda history: model.item_scores({INPUT_FEATURE: history}, training=False))

    def export_scorer(self, loaded, info: dict):
        signature = loaded.signatures["score_items"]
        return lambda history: signature(**{INPUT_FEATURE: history})["scores"]

    def evaluate_with(self, scorer, data: FamilyData, split: str, info: dict) -> dict:
        scores, targets, seen = [], [], []
        for rows in data.records(split, data.spec, batch_size=512):
            scores.append(np.asarray(scorer(rows[INPUT_FEATURE])))
            targets.append(last_targets(rows[TARGET_FEATURE].numpy()))
            seen.append(rows[SEEN_FEATURE].numpy())
        scores, targets, seen = np.concatenate(scores), np.concatenate(targets), np.concatenate(seen)
        popularity = np.asarray(data.metadata["item_counts"], np.float64)
        return {"model": full_ranking_metrics(scores, targets, seen),
                "popularity": full_ranking_metrics(popularity, targets, seen)}

    def format_results(self, results: dict) -> str:
        lines = [f"Full ranking of the held-out item among the items each user has not seen "
                 f"({results['model']['users']} users):"]
        for name, metrics in results.items():
            lines.append(f"   {name:<11}" + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "users"))
        return "\n".join(lines)

    def headline(self, results: dict) -> float:
        return results["model"]["recall@10"]


FAMILY = NextItemFamily()

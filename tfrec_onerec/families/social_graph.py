"""The social-graph family: models that recommend from the user-item graph and users' social
links, judged by full ranking, apart for inactive users, and by how true their graph is.

Data (the simulator only: it knows the true friendships):
:mod:`tfrec_onerec.data.social_interactions`. tf.Example rows:

* ``train``: one row per training interaction: ``user_id``, ``item_id``;
* ``valid`` and ``test``: one row per evaluated user: ``user_id``, ``item_id`` (the first
  held-out item: validation batches are ``(user, item)`` pairs like training's),
  ``target_item_ids`` (every held-out item of the split), ``seen_item_ids`` (the items
  ranked last: the training items, and in test rows the validation item too) and
  ``inactive`` (1 for an inactive user).

The graph goes to the side file ``social_graph.npz``: the training interactions in order, the
observed links with which of them are noise, and the true friendships (read only to score a
learned graph). A model is built as ``model_class(num_users=..., graph=..., **hyperparameters)``
from it and owns its loss; batches are ``({"user_id"}, item_id)``.

Evaluation: every evaluated user's held-out items ranked among all items not seen
(Recall@K, NDCG@K with several targets), for all, inactive and active users, next to the
popularity baseline (training counts) on the same users; a model that learns its graph also
reports the learned graph's links against the truth (precision, recall) next to the observed
graph's. Headline: NDCG@10 of the inactive users. Models: lsir (``learn_graph=False``: the
same encoder on the raw graph).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from tfrec_onerec.families.base import BuiltData, FamilyData, ModelFamily
from tfrec_onerec.features import Feature, FeatureSpec

GRAPH_FILE = "social_graph.npz"
USER, ITEM, TARGETS, SEEN, INACTIVE = "user_id", "item_id", "target_item_ids", "seen_item_ids", "inactive"
KS = (10, 20)
GROUPS = ("all", "inactive", "active")


def multi_target_metrics(scores: np.ndarray, targets: np.ndarray, seen: np.ndarray, ks=KS) -> dict:
    """Recall@K and NDCG@K with several held-out items per row, the seen items ranked last
    (:func:`~tfrec_onerec.metrics.recall_at_k` and :func:`~tfrec_onerec.metrics.ndcg_at_k`
    over every item, relevance 1 at the targets).

    Args:
        scores: (n, I) scores, column j for item j + 1 (a (I,) row broadcasts).
        targets: (n, T) held-out item ids, 0-padded; each row has at least one.
        seen: (n, S) item ids ranked last (0: padding).

    Returns:
        ``{"recall@k", "ndcg@k" per k, "users": n}``, means over the rows.
    """
    from tfrec_onerec.metrics import ndcg_at_k, recall_at_k

    targets, seen = np.asarray(targets, np.int64), np.asarray(seen, np.int64)
    scores = np.array(np.broadcast_to(np.asarray(scores, np.float64), (len(targets), np.shape(scores)[-1])))
    relevance = np.zeros_like(scores)
    for ids, table, value in ((seen, scores, -np.inf), (targets, relevance, 1.0)):
        rows = np.repeat(np.arange(len(ids)), ids.shape[1])
        real = ids.reshape(-1) > 0
        table[rows[real], ids.reshape(-1)[real] - 1] = value
    out = {}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(relevance, scores, k)
        out[f"ndcg@{k}"] = ndcg_at_k(relevance, scores, k)
    return {**out, "users": int(len(targets))}


class SocialGraphFamily(ModelFamily):
    name = "social_graph"
    description = "recommends from the user-item graph and social links; judged on inactive users and graph truth"
    datasets = ("simulator",)
    data_options = {"simulator_users": 3000, "simulator_items": 400, "seed": 0, "inactive_fraction": 0.3,
                    "missing_rate": 0.3, "noise_rate": 0.3}
    train_defaults = {"epochs": 20, "batch_size": 256, "learning_rate": 5e-3, "early_stopping_patience": 3,
                      "monitor": "val_hit_rate_at_10"}
    headline_metric = ("inactive ndcg@10", True)
    pipeline_min_value = 0.02

    def social_config(self, options: Mapping):
        from tfrec_onerec.data.social_interactions import SocialDataConfig

        return SocialDataConfig(num_users=options["simulator_users"], num_items=options["simulator_items"],
                                seed=options["seed"], inactive_fraction=options["inactive_fraction"],
                                missing_rate=options["missing_rate"], noise_rate=options["noise_rate"])

    def build_data(self, dataset: str, options: dict, data_path=None) -> BuiltData:
        from tfrec_onerec.data.social_interactions import social_interactions
        from tfrec_onerec.features.parsing import pad_sequences_numpy

        data = social_interactions(self.social_config(options))
        train = {USER: data.train_users, ITEM: data.train_items}
        by_user = np.split(data.train_items, np.cumsum(np.bincount(data.train_users,
                                                                   minlength=data.num_users + 1))[:-1])
        splits = {"train": train}
        for split, targets in (("valid", data.valid_targets), ("test", data.test_targets)):
            users = np.array(sorted(targets), np.int64)
            seen = [np.concatenate([by_user[u], data.valid_targets[u]]) if split == "test" else by_user[u]
                    for u in users]
            splits[split] = {USER: users, ITEM: np.array([targets[u][0] for u in users], np.int64),
                             TARGETS: [targets[u] for u in users], SEEN: seen,
                             INACTIVE: data.inactive[users].astype(np.int64)}
        target_len = max(len(t) for split in ("valid", "test") for t in splits[split][TARGETS])
        seen_len = max(1, max(len(s) for split in ("valid", "test") for s in splits[split][SEEN]))
        for split in ("valid", "test"):
            splits[split][TARGETS] = pad_sequences_numpy(splits[split][TARGETS], target_len)
            splits[split][SEEN] = pad_sequences_numpy(splits[split][SEEN], seen_len)
        size = len(train[USER])
        train.update({TARGETS: np.broadcast_to(np.zeros((1, target_len), np.int64), (size, target_len)),
                      SEEN: np.broadcast_to(np.zeros((1, seen_len), np.int64), (size, seen_len)),
                      INACTIVE: data.inactive[train[USER]].astype(np.int64)})
        item = dict(vocab_size=data.num_items, vocab="item", embedding_dim=64)
        spec = FeatureSpec([
            Feature(USER, "categorical", vocab_size=data.num_users, embedding_dim=64, group="user",
                    description="the user"),
            Feature(ITEM, "categorical", group="item", description="a training item (valid/test: the first "
                    "held-out item)", **item),
            Feature(TARGETS, "sequence", max_len=target_len, group="target",
                    description="the split's held-out items of the user (valid and test rows)", **item),
            Feature(SEEN, "sequence", max_len=seen_len, group="target",
                    description="items ranked last: training items (test rows: and the validation item)", **item),
            Feature(INACTIVE, "categorical", vocab_size=1, embedding_dim=1, group="user",
                    description="1: an inactive user (few training interactions)"),
        ])
        counts = np.bincount(data.train_items, minlength=data.num_items + 1)[1:]
        side = {GRAPH_FILE: {"train_users": data.train_users, "train_items": data.train_items,
                             "observed_src": data.observed_src, "observed_dst": data.observed_dst,
                             "observed_noise": data.observed_noise, "true_src": data.true_src,
                             "true_dst": data.true_dst, "inactive": data.inactive}}
        metadata = {"simulator": {"num_users": data.num_users, "num_items": data.num_items, "seed": options["seed"]},
                    "num_users": data.num_users, "num_items": data.num_items, "item_counts": counts.tolist(),
                    "inactive_items": self.social_config(options).inactive_items,
                    "observed_links": int(len(data.observed_src)), "noisy_links": int(data.observed_noise.sum()),
                    "true_links": int(len(data.true_src))}
        return BuiltData(spec, splits, metadata, side)

    def dataset(self, data: FamilyData, split: str, config, training: bool = False):
        """``({"user_id"}, item_id)`` training batches; validation and test batches also carry
        ``seen_item_ids`` (the items their ranking metric leaves out)."""
        inputs = [USER] if training else [USER, SEEN]
        records = data.records(split, data.spec.subset(inputs + [ITEM]), batch_size=config.batch_size if training
                               else 1024, shuffle=training, seed=config.seed)
        return records.map(lambda rows: ({name: rows[name] for name in inputs}, rows[ITEM]))

    def graph_arrays(self, data: FamilyData) -> dict:
        return data.load_side_arrays(GRAPH_FILE)

    def prepare_build(self, data: FamilyData, options: Mapping):
        return self.graph_arrays(data)

    def build_model(self, model_class, data: FamilyData, hyperparameters: Mapping | None = None,
                    tasks: Sequence | None = None, built=None):
        from tfrec_onerec.models.kuaishou.lsir import neighbour_table

        graph = built if built is not None else self.graph_arrays(data)
        hyperparameters = {"inactive_items": data.metadata["inactive_items"], **dict(hyperparameters or {})}
        num_users = int(data.metadata["num_users"])
        neighbours = neighbour_table(graph["observed_src"], graph["observed_dst"], num_users)
        activity = np.bincount(graph["train_users"], minlength=num_users + 1)
        candidates = np.flatnonzero(activity > hyperparameters["inactive_items"]).astype(np.int64)
        return model_class(num_users=num_users, num_items=int(data.metadata["num_items"]),
                           num_interactions=len(graph["train_users"]), neighbour_width=neighbours.shape[1],
                           num_candidates=len(candidates),
                           graph={"train_users": graph["train_users"], "train_items": graph["train_items"],
                                  "neighbours": neighbours, "candidates": candidates},
                           **hyperparameters)

    # -- evaluation -------------------------------------------------------------------------------
    def keras_scorer(self, model):
        import tensorflow as tf

        score = tf.function(lambda users: model({USER: users}, training=False)["scores"])
        return lambda users: score(tf.constant(users, tf.int64)).numpy()

    def export_scorer(self, loaded, info: dict):
        signature = loaded.signatures["score_items"]
        return lambda users: signature(**{USER: users})["scores"].numpy()

    def evaluate_with(self, scorer, data: FamilyData, split: str, info: dict) -> dict:
        rows = data.columns(split)
        scores = np.concatenate([scorer(rows[USER][i:i + 1024]) for i in range(0, len(rows[USER]), 1024)])
        popularity = np.asarray(data.metadata["item_counts"], np.float64)
        inactive = rows[INACTIVE] > 0
        results = {}
        for group, mask in zip(GROUPS, (np.ones_like(inactive), inactive, ~inactive)):
            results[group] = {name: multi_target_metrics(s if s.ndim == 1 else s[mask], rows[TARGETS][mask],
                                                         rows[SEEN][mask])
                              for name, s in (("model", scores), ("popularity", popularity))}
        return {"groups": results}

    def evaluate(self, model, data: FamilyData, split: str = "test") -> dict:
        """The metrics of the module docstring; a Keras model that learns its graph also gets
        the learned graph scored against the truth (``"graph"``, :meth:`graph_quality`)."""
        results = super().evaluate(model, data, split)
        if getattr(model, "learn_graph", False):
            results["graph"] = self.graph_quality(model, data)
        return results

    def graph_quality(self, model, data: FamilyData) -> dict:
        """The observed and the learned links against the true friendships (precision, recall),
        and which share of the noisy observed links the model removed (and of the true ones)."""
        from tfrec_onerec.data.social_interactions import edge_quality

        graph = self.graph_arrays(data)
        num_users = int(data.metadata["num_users"])
        learned = model.graph_after_learning()
        neighbours = model.neighbours.numpy()
        rows = np.repeat(np.arange(num_users + 1), neighbours.shape[1]).reshape(neighbours.shape)
        kept = learned["kept"] & (neighbours > 0)
        added_rows = np.repeat(np.arange(num_users + 1), learned["added"].shape[1]).reshape(learned["added"].shape)
        src = np.concatenate([rows[kept], added_rows[learned["added"] > 0]])
        dst = np.concatenate([neighbours[kept], learned["added"][learned["added"] > 0]])
        truth = (graph["true_src"], graph["true_dst"])
        observed_noise = set(zip(graph["observed_src"][graph["observed_noise"]].tolist(),
                                 graph["observed_dst"][graph["observed_noise"]].tolist()))
        removed = (neighbours > 0) & ~learned["kept"]
        removed_pairs = {(min(a, b), max(a, b)) for a, b in zip(rows[removed].tolist(), neighbours[removed].tolist())}
        observed_links = len(graph["observed_src"])
        return {"observed": edge_quality(graph["observed_src"], graph["observed_dst"], *truth, num_users),
                "learned": edge_quality(src, dst, *truth, num_users),
                "noisy_removed": len(removed_pairs & observed_noise) / max(len(observed_noise), 1),
                "true_removed": len(removed_pairs - observed_noise) / max(observed_links - len(observed_noise), 1)}

    def format_results(self, results: dict) -> str:
        lines = ["Held-out items ranked among the items each user has not seen:",
                 f"{'users':<10}{'ranker':<12}" + "".join(f"{k:>11}" for k in ("recall@10", "ndcg@10", "recall@20",
                                                                                "ndcg@20", "users"))]
        for group, rankers in results["groups"].items():
            for name, m in rankers.items():
                lines.append(f"{group:<10}{name:<12}" + "".join(f"{m[k]:>11.4f}" for k in
                                                                  ("recall@10", "ndcg@10", "recall@20", "ndcg@20"))
                             + f"{m['users']:>11}")
        if "graph" in results:
            g = results["graph"]
            for name in ("observed", "learned"):
                lines.append(f"{name} graph: {g[name]['edges']} links, precision {g[name]['precision']:.4f}, "
                             f"recall {g[name]['recall']:.4f}")
            lines.append(f"removed: {g['noisy_removed']:.1%} of the noisy observed links, "
                         f"{g['true_removed']:.1%} of the true ones")
        return "\n".join(lines)

    def headline(self, results: dict) -> float:
        return results["groups"]["inactive"]["model"]["ndcg@10"]


FAMILY = SocialGraphFamily()

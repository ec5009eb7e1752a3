"""The generative family: models that write the user's next session as semantic IDs (OneRec).

Data: one tf.Example per session sample, the same columns from both data sets (so one model
trains on either):

* the user: ``user_id`` and categorical static features (MovieLens-100K: gender, age,
  occupation; the simulator: age bucket, gender, lifecycle stage);
* the behaviour pathways ``short_item_ids`` and ``positive_item_ids`` (oldest first);
* the target ``session_item_ids`` (m items; right-padded);
* ``seen_item_ids`` (MovieLens-100K validation and test rows): every item rated before the
  target, removed from the ranked list as SASRec's evaluation removes them.

MovieLens-100K: leave-one-out (:mod:`tfrec_onerec.data.movielens_sessions`; validation and test
targets are one-item sessions). The simulator: its high-quality clicked sessions for training,
every clicked session for validation and test, split by time (:mod:`tfrec_onerec.data.sessions`);
the simulated world is rebuilt from its seed for ground-truth evaluation. The items' vectors
(content, knowledge graph, co-occurrence: :mod:`tfrec_onerec.data.item_embeddings`) go to the
side file ``item_vectors.npz``; the semantic-ID tokenizer is fitted on them when a model is
built (or a fitted one is loaded: build option ``tokenizer``).

Training: next-token loss of the session's codes (the model owns it), Adam with warmup and
cosine decay. Evaluation: on MovieLens-100K the next item's full-ranking Recall@K / NDCG@K
(the beam of one-item sessions, :meth:`~tfrec_onerec.models.generative.onerec.OneRec.next_items`,
seen items removed); on the simulator the true expected metrics (watch time, view-through,
follow and like rates) of the top generated session (:func:`~tfrec_onerec.data.simulator_truth.evaluate_sessions`).
Export: ``recommend`` (= ``serving_default``) and ``next_items``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from tfrec_onerec.data.sessions import POSITIVE_FEATURE, SESSION_FEATURE, SHORT_FEATURE
from tfrec_onerec.families.base import BuiltData, FamilyData, ModelFamily
from tfrec_onerec.families.next_item import KS, SEEN_FEATURE
from tfrec_onerec.features import Feature, FeatureSpec

ITEM_VECTORS_FILE = "item_vectors.npz"
MOVIELENS_STATIC = ("gender", "age", "occupation")
SIMULATOR_STATIC = ("age_bucket", "gender", "lifecycle_stage")
SIMULATOR_HEADLINE = "swt_mean"
"""On the simulator the pipeline gates on the true session watch time of the top generated session."""

DATASET_DEFAULTS = {
    "movielens-100k": {"sessions": {"short_len": 10, "positive_len": 20},
                       "tokenizer": {"num_levels": 2, "codebook_size": 64},
                       "model": {"item_id_embedding": True}},
    "simulator": {"sessions": {"short_len": 10, "positive_len": 20},
                  "tokenizer": {"num_levels": 3, "codebook_size": 32},
                  "model": {}},
}
"""Per data set: behaviour-pathway lengths (``sessions``), the tokenizer's levels x codes, and
OneRec hyperparameters used unless given. MovieLens-100K (one epoch, leave-one-out Recall@10 on
400 test users): the item-id embedding next to the code embeddings in the encoder took
0.080 to 0.098; pathways of 50 / 50 items instead of 10 / 20 gave 0.100 at three times
the training time, so the default stays 10 / 20; semantic IDs of 2 x 64 codes (+ the
collision digit) gave 0.122 against 0.098 for 3 x 32 and 4 x 16."""

PAPER_CONFIGURATIONS = {
    "onerec-report-0.015b": {
        "sessions": {"session_len": 1, "short_len": 20, "positive_len": 256},
        "tokenizer": {"num_levels": 3, "codebook_size": 8192, "method": "rq_kmeans"},
        "model": {"dim": 128, "num_heads": 4, "num_encoder_layers": 4, "num_decoder_layers": 4, "ffn_dim": 256,
                  "num_experts": 24, "top_k": 2, "balance": "loss_free"},
    },
    "onerec-v1": {
        "sessions": {"session_len": 5},
        "tokenizer": {"num_levels": 3, "codebook_size": 8192, "method": "rq_kmeans"},
        "model": {"num_experts": 24, "top_k": 2},
        "alignment": {"user_fraction": 0.01, "num_candidates": 128, "learning_rate": 2e-4},
    },
}
"""The papers' settings in this package's arguments (``sessions``: the data options;
``tokenizer``: :func:`fit_tokenizer`; ``model``: :class:`~tfrec_onerec.models.generative.onerec.OneRec`;
``alignment``: :class:`~tfrec_onerec.models.generative.alignment.AlignmentConfig`). They need
Kuaishou-scale data (millions of items, so that 3 x 8192 codes are used) and accelerators.

* ``onerec-report-0.015b``: the technical report's smallest model (arXiv 2506.13695: d = 128,
  4 heads, FFN 256, "4 layers", 0.015B parameters; short-term 20 and positive-feedback 256
  items; loss over the 3 codes of one item; loss-free MoE balancing), read as 4 encoder + 4
  decoder blocks with V1's 24 experts top-2 (the report does not say what its 0.015B counts).
  The report's lifelong pathway (hierarchical k-means + Q-Former) is not built here.
* ``onerec-v1``: the V1 paper's stated settings (arXiv 2502.18965: 3 x 8192 balanced RQ
  k-means, sessions of m = 5, 24 experts top-2, IPA on 1% of users with N = 128 beams,
  Adam 2e-4); the width and depth of OneRec-1B are not given in the paper, so they are left
  at the arguments' values."""


def generative_spec(static_sizes: Mapping[str, int], num_users: int, num_items: int, short_len: int,
                    positive_len: int, session_len: int, seen_len: int) -> FeatureSpec:
    """The spec of session samples (see the module docstring); ``seen_len`` 0: no seen items."""
    item = dict(vocab_size=num_items, vocab="item", embedding_dim=64)
    features = [Feature("user_id", "categorical", vocab_size=num_users, group="user")]
    features += [Feature(name, "categorical", vocab_size=size, group="user") for name, size in static_sizes.items()]
    features += [
        Feature(SHORT_FEATURE, "sequence", max_len=short_len, group="history", description="recent items", **item),
        Feature(POSITIVE_FEATURE, "sequence", max_len=positive_len, group="history",
                description="recent items with positive feedback", **item),
        Feature(SESSION_FEATURE, "sequence", max_len=session_len, group="target",
                description="the target session's items in order", **item)]
    if seen_len:
        features.append(Feature(SEEN_FEATURE, "sequence", max_len=seen_len, group="target",
                                description="every item before the target (validation and test rows)", **item))
    return FeatureSpec(features)


def fit_tokenizer(item_vectors: Mapping, dataset: str, num_levels: int | None = None,
                  codebook_size: int | None = None, method: str = "rq_kmeans", seed: int = 0):
    """A :class:`~tfrec_onerec.models.generative.tokenizer.SemanticIDTokenizer` fitted on
    ``{"item_ids", "vectors"}`` (levels and codes: default :data:`DATASET_DEFAULTS` of `dataset`)."""
    from tfrec_onerec.models.generative.tokenizer import SemanticIDTokenizer

    defaults = DATASET_DEFAULTS.get(dataset, DATASET_DEFAULTS["simulator"])["tokenizer"]
    tokenizer = SemanticIDTokenizer(num_levels=num_levels or defaults["num_levels"],
                                    codebook_size=codebook_size or defaults["codebook_size"], method=method, seed=seed)
    tokenizer.fit(item_vectors["vectors"], item_vectors["item_ids"])
    return tokenizer


def ranking_from_lists(ranked: np.ndarray, targets: np.ndarray, seen: np.ndarray, ks=KS) -> dict:
    """Recall@K / NDCG@K / MRR of each target in its ranked list after removing seen items.

    Args:
        ranked: (n, K) item ids, best first (0: an empty slot).
        targets: (n,) target item ids.
        seen: (n, S) items seen before the target (0: padding), removed from the list (the
            target itself never is). A target outside the remaining list is a miss.
    """
    from tfrec_onerec.metrics import ranking_metrics_from_ranks

    ranks = np.full(len(targets), np.inf)
    for row, (items, target) in enumerate(zip(ranked, targets)):
        removed = set(seen[row][seen[row] > 0].tolist()) - {int(target)}
        kept = [int(i) for i in items if i > 0 and int(i) not in removed]
        if int(target) in kept:
            ranks[row] = kept.index(int(target)) + 1
    found = ranking_metrics_from_ranks(ranks, ks)
    out = {}
    for k in ks:  # one target per row: hit rate = recall
        out[f"recall@{k}"], out[f"ndcg@{k}"] = found[f"hit_rate@{k}"], found[f"ndcg@{k}"]
    return {**out, "mrr": found["mrr"], "users": int(len(targets))}


class GenerativeFamily(ModelFamily):
    name = "generative"
    description = "writes the next session as semantic IDs (full-ranking Recall/NDCG; simulator: true session value)"
    datasets = ("movielens-100k", "simulator")
    data_options = {"session_len": 3, "short_len": None, "positive_len": None, "simulator_users": 3000,
                    "simulator_items": 400, "seed": 0}
    train_defaults = {"epochs": 3, "batch_size": 256, "learning_rate": 1e-3, "warmup_fraction": 0.05}
    build_options = ("tokenizer",)
    pipeline_min_value = 0.02
    headline_metric = ("recall@10", True)

    def default_data_options(self, dataset: str) -> dict:
        return {**self.data_options, **DATASET_DEFAULTS[dataset]["sessions"]}

    def build_data(self, dataset: str, options: dict, data_path=None) -> BuiltData:
        from tfrec_onerec.data import movielens, sessions
        from tfrec_onerec.data.item_embeddings import movielens_item_vectors, simulator_item_vectors
        from tfrec_onerec.data.movielens_sessions import movielens_sessions
        from tfrec_onerec.data.simulator import session_world, simulate

        lengths = {k: options[k] for k in ("session_len", "short_len", "positive_len")}
        metadata = {}
        if dataset == movielens.NAME:
            tables = movielens.load_movielens_100k(data_path)
            splits = movielens_sessions(tables, **lengths)
            vectors, static = movielens_item_vectors(tables), MOVIELENS_STATIC
            num_items = int(tables.num_items)
        else:
            world = {"num_users": options["simulator_users"], "num_items": options["simulator_items"],
                     "seed": options["seed"]}
            simulation = simulate(session_world(**world))
            built = sessions.build_sessions(simulation, sessions.SessionConfig(target="clicked", **lengths))
            quality = sessions.SessionQuality(min_items=lengths["session_len"], min_watch_time=30.0,
                                              require_interaction=False)
            splits = dict(built.splits, train=quality.select(built.splits["train"]))
            vectors, static = simulator_item_vectors(simulation), SIMULATOR_STATIC
            num_items, metadata["simulator"] = len(simulation.items), world
        seen_len = max((split[SEEN_FEATURE].shape[1] for split in splits.values() if SEEN_FEATURE in split), default=0)
        for split in splits.values():
            if seen_len:
                n, width = len(split["user_id"]), split.get(SEEN_FEATURE, np.zeros((0, 0))).shape[1]
                split[SEEN_FEATURE] = (np.pad(split[SEEN_FEATURE], [(0, 0), (0, seen_len - width)])
                                       if SEEN_FEATURE in split else
                                       np.broadcast_to(np.zeros((1, seen_len), np.int64), (n, seen_len)))
        sizes = {name: int(max(split[name].max() for split in splits.values())) for name in static}
        num_users = int(max(split["user_id"].max() for split in splits.values()))
        spec = generative_spec(sizes, num_users, num_items, seen_len=seen_len, **lengths)
        return BuiltData(spec, splits, metadata,
                         {ITEM_VECTORS_FILE: {"item_ids": vectors.item_ids, "vectors": vectors.vectors}})

    def static_features(self, spec: FeatureSpec) -> dict:
        return {f.name: f.vocab_size for f in spec if f.kind == "categorical" and f.name != "user_id"}

    def dataset(self, data: FamilyData, split: str, config, training: bool = False):
        names = [f.name for f in data.spec if f.name != SEEN_FEATURE]
        records = data.records(split, data.spec.subset(names), batch_size=config.batch_size if training else 1024,
                               shuffle=training, seed=config.seed)
        return records.map(lambda row: (row, row[SESSION_FEATURE]))

    def prepare_build(self, data: FamilyData, options: Mapping):
        from tfrec_onerec.models.generative.tokenizer import SemanticIDTokenizer

        if options.get("tokenizer"):
            return {"tokenizer": SemanticIDTokenizer.load(options["tokenizer"])}
        vectors = data.load_side_arrays(ITEM_VECTORS_FILE)
        return {"tokenizer": fit_tokenizer(vectors, data.dataset_name, seed=data.metadata["options"].get("seed", 0))}

    def build_model(self, model_class, data: FamilyData, hyperparameters: Mapping | None = None,
                    tasks: Sequence | None = None, built=None):
        tokenizer = (built or self.prepare_build(data, {}))["tokenizer"]
        spec = data.spec
        lengths = {"session_len": spec[SESSION_FEATURE].max_len, "short_len": spec[SHORT_FEATURE].max_len,
                   "positive_len": spec[POSITIVE_FEATURE].max_len}
        defaults = DATASET_DEFAULTS.get(data.dataset_name, {}).get("model", {})
        return model_class(tokenizer.semantic_ids, tokenizer.item_ids, static_features=self.static_features(spec),
                           **{**defaults, **lengths, **dict(hyperparameters or {})})

    def train_info(self, model, data: FamilyData, config, timer, built) -> dict:
        """The tokenizer's report and the training speed in target tokens per second (steady
        training steps only: no validation, no tracing)."""
        tokens = 0
        for _, session in self.dataset(data, "train", config):
            tokens += int(np.count_nonzero(session.numpy()))
        steps = -(-data.examples("train") // config.batch_size) if data.examples("train") else None
        seconds = timer.seconds_per_step() * steps if steps else float("nan")
        return {"seconds_per_step": timer.seconds_per_step(), "target_tokens_per_second":
                tokens * model.num_levels / seconds, "tokenizer": built["tokenizer"] if built else None,
                "expert_load": [load.round(3).tolist() for load in model.expert_load()]}

    # -- evaluation -------------------------------------------------------------------------------
    def keras_scorer(self, model):
        import tensorflow as tf

        signature = [model.input_signature()]
        return {"recommend": tf.function(lambda f: model.recommend(f)["item_ids"], input_signature=signature),
                "next_items": tf.function(lambda f: model.next_items(f)["item_ids"], input_signature=signature)}

    def export_scorer(self, loaded, info: dict):
        signatures = loaded.signatures
        return {name: (lambda f, s=signatures[name]: s(**f)["item_ids"]) for name in ("recommend", "next_items")}

    def evaluate_with(self, scorer, data: FamilyData, split: str, info: dict) -> dict:
        from tfrec_onerec.data.simulator import session_world, simulate
        from tfrec_onerec.data.simulator_truth import evaluate_sessions

        inputs = [f.name for f in data.spec if f.name not in (SESSION_FEATURE, SEEN_FEATURE)]
        simulated = "simulator" in data.metadata
        lists, users, targets, seen = [], [], [], []
        for rows in data.records(split, data.spec, batch_size=256):
            features = {name: rows[name] for name in inputs}
            lists.append(np.asarray(scorer["recommend" if simulated else "next_items"](features)))
            users.append(rows["user_id"].numpy())
            targets.append(rows[SESSION_FEATURE].numpy()[:, 0])
            if SEEN_FEATURE in rows:
                seen.append(rows[SEEN_FEATURE].numpy())
        lists = np.concatenate(lists)
        if simulated:
            world = simulate(session_world(**data.metadata["simulator"]))
            return {"sessions": evaluate_sessions(world, np.concatenate(users), lists[:, 0, :]),
                    "users": int(len(lists))}
        seen = np.concatenate(seen) if seen else np.zeros((len(lists), 0), np.int64)
        return {"model": ranking_from_lists(lists, np.concatenate(targets), seen)}

    def format_results(self, results: dict) -> str:
        if "sessions" in results:
            return (f"True expected metrics of the top generated session ({results['users']} test users):\n   "
                    + ", ".join(f"{k} {v:.4f}" for k, v in results["sessions"].items()))
        metrics = results["model"]
        return (f"Full ranking of the next item ({metrics['users']} users; the beam's list, seen items removed):\n"
                "   " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "users"))

    def headline(self, results: dict) -> float:
        return results["sessions"][SIMULATOR_HEADLINE] if "sessions" in results else results["model"]["recall@10"]

    def headline_name(self, results: dict) -> str:
        return SIMULATOR_HEADLINE if "sessions" in results else self.headline_metric[0]


FAMILY = GenerativeFamily()

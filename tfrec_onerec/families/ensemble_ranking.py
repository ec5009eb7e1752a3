"""The ensemble-ranking family: models that fuse an upstream ranker's predictions into one
order of a request's candidates, judged by what the simulator says the shown items are worth.

Data (the simulator only: it knows every candidate's expected outcomes):
:mod:`tfrec_onerec.data.ensemble_requests`, one tf.Example per request: the user, ``N``
candidates, one prediction ("pxtr") per candidate and objective, and the logging policy's
``K`` shown candidates with their graded feedback (the targets). A model is built as
``model_class(feature_spec, **hyperparameters)`` and owns its loss; batches are
``(features, {"grade", "exposed"})``.

Evaluation: every request of the split shows the ``K`` best candidates of each ranker, and
a shown item is worth the simulator's expected value of showing it to the user: watch ratio
+ long view + follow + like (:func:`~tfrec_onerec.data.simulator_truth.true_item_outcomes`,
equal weights as :data:`~tfrec_onerec.data.simulator_truth.DEFAULT_REWARD_WEIGHTS`). Rankers:

* ``model``: the model's scores;
* ``formula``: the hand-tuned fusion a team would ship, ``sum_x w_x log pxtr_x``, its
  weights searched on the *training* requests when the data is built (equal weights and 200
  random ones, seeded by the data seed; kept in the data's metadata as ``formula_weights``),
  those that order the shown candidates' grades best: neither the truth nor the evaluated
  split is read, so the baseline is leak-free;
* ``logging``: the candidates the log showed; ``random``; ``oracle``: the ``K`` of highest
  true value (the bound).

Reported: each ranker's mean value of a request's shown items, the model's over the
formula's (the headline, ``value_vs_formula``: the pipeline's gate is 1.0, a learned fusion
must beat the formula) and over the oracle's, and each ranker's pairwise accuracy on the
logged grades (shown pairs with different grades, ordered as their grades). Models: emer.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from tfrec_onerec.families.base import BuiltData, FamilyData, ModelFamily

RANKERS = ("model", "formula", "logging", "random", "oracle")
FORMULA_CANDIDATES = 200
"""Random weight vectors the formula's search tries, besides equal weights."""


class EnsembleRankingFamily(ModelFamily):
    name = "ensemble_ranking"
    description = "fuses the pxtrs of a request's candidates into one order; judged by the truth of what it shows"
    datasets = ("simulator",)
    data_options = {"simulator_users": 1000, "simulator_items": 300, "seed": 0}
    # The self-adjusting weights rescale the loss as training goes: early stopping follows the
    # posterior part alone (the ordering of real feedback), which they leave alone.
    train_defaults = {"epochs": 10, "batch_size": 64, "learning_rate": 1e-3, "early_stopping_patience": 2,
                      "monitor": "val_posterior_loss"}
    headline_metric = ("value_vs_formula", True)
    pipeline_min_value = 1.0

    def default_data_options(self, dataset: str) -> dict:
        return dict(self.data_options)

    def build_data(self, dataset: str, options: dict, data_path=None) -> BuiltData:
        from tfrec_onerec.data.ensemble_requests import RequestConfig, build_requests

        spec, splits, metadata = build_requests(self.world(options), RequestConfig(seed=options["seed"]))
        weights = formula_weights(splits["train"], options["seed"])
        return BuiltData(spec, splits, {"simulator": self.world_options(options), **metadata,
                                        "formula_weights": [float(w) for w in weights]})

    @staticmethod
    def world_options(options: Mapping) -> dict:
        return {"num_users": options["simulator_users"], "num_items": options["simulator_items"],
                "seed": options["seed"]}

    def world(self, options: Mapping):
        from tfrec_onerec.data.simulator import session_world, simulate

        return simulate(session_world(**self.world_options(options)))

    def dataset(self, data: FamilyData, split: str, config, training: bool = False):
        """``(features, {"grade", "exposed"})`` batches of whole requests."""
        from tfrec_onerec.data.ensemble_requests import EXPOSED, GRADE

        targets = (GRADE, EXPOSED)
        records = data.records(split, data.spec, batch_size=config.batch_size if training else 1024,
                               shuffle=training, seed=config.seed)
        return records.map(lambda rows: ({k: v for k, v in rows.items() if k not in targets},
                                         {k: rows[k] for k in targets}))

    def build_model(self, model_class, data: FamilyData, hyperparameters: Mapping | None = None,
                    tasks: Sequence | None = None, built=None):
        return model_class(data.spec, **dict(hyperparameters or {}))

    # -- evaluation -------------------------------------------------------------------------------
    def keras_scorer(self, model):
        import tensorflow as tf

        score = tf.function(lambda features: model(features, training=False), reduce_retracing=True)
        return lambda features: score({name: features[name] for name in model.input_names})["score"].numpy()

    def export_scorer(self, loaded, info: dict):
        signature = loaded.signatures["predict"]
        names = list(signature.structured_input_signature[1])
        return lambda features: signature(**{name: features[name] for name in names})["score"].numpy()

    def evaluate_with(self, scorer, data: FamilyData, split: str, info: dict) -> dict:
        from tfrec_onerec.data.ensemble_requests import CANDIDATES, EXPOSED, GRADE, PXTR_FEATURES, USER_FEATURE
        from tfrec_onerec.data.simulator_truth import DEFAULT_REWARD_WEIGHTS, true_item_outcomes

        rows = data.columns(split)
        shown = int(data.metadata["requests_config"]["exposed"])
        world = self.world({"simulator_users": data.metadata["simulator"]["num_users"],
                            "simulator_items": data.metadata["simulator"]["num_items"],
                            "seed": data.metadata["simulator"]["seed"]})
        candidates = rows[CANDIDATES]
        truth = true_item_outcomes(world, rows[USER_FEATURE][:, None], np.maximum(candidates, 1))
        value = sum(weight * truth[name] for name, weight in DEFAULT_REWARD_WEIGHTS.items())
        value = np.where(candidates > 0, value, 0.0)
        pxtrs = [rows[name] for name in PXTR_FEATURES if name in rows]
        rng = np.random.default_rng(int(data.metadata["simulator"]["seed"]) + 1)
        scores = {"model": np.concatenate([scorer({k: v[i:i + 1024] for k, v in rows.items()})
                                           for i in range(0, len(candidates), 1024)]),
                  "formula": formula_scores(pxtrs, data.metadata["formula_weights"]),
                  "logging": rows[EXPOSED] + 1e-3 * rng.random(candidates.shape),  # the shown K, in any order
                  "random": rng.random(candidates.shape),
                  "oracle": value}
        results = {}
        for name, score in scores.items():
            results[name] = {"value": float(top_value(score, value, candidates > 0, shown).mean()),
                             "grade_pair_accuracy": grade_pair_accuracy(score, rows[GRADE], rows[EXPOSED] > 0)}
        return {"rankers": results, "shown": shown, "requests": int(len(candidates)),
                "value_vs_formula": results["model"]["value"] / results["formula"]["value"],
                "value_vs_oracle": results["model"]["value"] / results["oracle"]["value"]}

    def format_results(self, results: dict) -> str:
        lines = [f"{results['requests']} requests, the {results['shown']} best candidates of each ranker shown; "
                 "value: the simulator's expected watch ratio + long view + follow + like",
                 f"{'ranker':<10}{'value':>9}{'grade pairs':>13}"]
        for name, r in results["rankers"].items():
            lines.append(f"{name:<10}{r['value']:>9.4f}{r['grade_pair_accuracy']:>13.4f}")
        lines.append(f"Model vs formula: x{results['value_vs_formula']:.4f}; "
                     f"vs oracle: x{results['value_vs_oracle']:.4f}")
        return "\n".join(lines)

    def headline(self, results: dict) -> float:
        return results["value_vs_formula"]


def formula_scores(pxtrs: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """(R, N) ``sum_x w_x log pxtr_x`` of each candidate."""
    return sum(w * np.log(np.clip(p, 1e-6, 1.0)) for w, p in zip(weights, pxtrs))


def formula_weights(train: Mapping, seed: int) -> np.ndarray:
    """(P,) the formula's weights, fitted once on the training requests `train` (``{feature:
    array}``) when the data is built: of equal weights and :data:`FORMULA_CANDIDATES` random
    ones (Dirichlet(1), seeded by `seed`), those with the best pairwise accuracy on the shown
    candidates' grades."""
    from tfrec_onerec.data.ensemble_requests import EXPOSED, GRADE, PXTR_FEATURES

    shown = np.argsort(-train[EXPOSED], axis=1, kind="stable")[:, :int(train[EXPOSED].sum(axis=1).max())]

    def of_shown(values):  # (R, N) -> (R, K): only shown candidates have grades
        return np.take_along_axis(values, shown, axis=1)

    pxtrs = [of_shown(train[name]) for name in PXTR_FEATURES if name in train]
    grade, is_shown = of_shown(train[GRADE]), of_shown(train[EXPOSED]) > 0
    rng = np.random.default_rng(seed)
    count = len(pxtrs)
    options = np.concatenate([np.full((1, count), 1.0 / count), rng.dirichlet(np.ones(count), FORMULA_CANDIDATES)])
    accuracy = [grade_pair_accuracy(formula_scores(pxtrs, w), grade, is_shown) for w in options]
    return options[int(np.argmax(accuracy))]


def top_value(scores: np.ndarray, value: np.ndarray, valid: np.ndarray, k: int) -> np.ndarray:
    """(R,) the summed `value` of each row's `k` valid candidates of highest `scores`."""
    order = np.argsort(-np.where(valid, scores, -np.inf), axis=1, kind="stable")[:, :k]
    return np.take_along_axis(value, order, axis=1).sum(axis=1)


def grade_pair_accuracy(scores: np.ndarray, grade: np.ndarray, shown: np.ndarray) -> float:
    """The share of shown pairs with different grades that `scores` order as the grades
    (ties in score count half)."""
    pairs = shown[:, :, None] & shown[:, None, :] & (grade[:, :, None] > grade[:, None, :])
    difference = scores[:, :, None] - scores[:, None, :]
    right = (difference > 0) + 0.5 * (difference == 0)
    return float((right * pairs).sum() / max(pairs.sum(), 1))


FAMILY = EnsembleRankingFamily()

"""The session-outcome family: models that predict what showing a whole session yields (reward models).

Data (the simulator only: MovieLens has no watch time, follows or likes): one tf.Example per
logged session of ``m = session_len`` exposures, clicked or not, with the user's context at
the session's start, the session's items and its outcome labels ``swt`` (watch time), ``vtr``
(view-through), ``wtr`` (follow), ``ltr`` (like) and ``ctr`` (:mod:`tfrec_onerec.data.sessions`;
split by time). A model is a task model (one tower per task, trained on the label of the
same name), built as the point-wise family builds its models.

Evaluation: per task, the AUC of telling sessions with the outcome (label > 0) from those
without, next to the AUC of the simulator's own expected label (the oracle: what any model
can reach), and the Pearson correlation of the model's scalar reward (the towers weighted by
its ``reward_weights``) with the true session value. Models: onerec_reward.
"""
from __future__ import annotations

import numpy as np

from tfrec_onerec.families.base import BuiltData, FamilyData
from tfrec_onerec.families.pointwise import PointwiseFamily, as_task_list


class SessionOutcomeFamily(PointwiseFamily):
    name = "session_outcome"
    description = "predicts a session's outcomes (watch time, views, follows, likes; AUC vs the simulator's oracle)"
    datasets = ("simulator",)
    data_options = {"session_len": 3, "simulator_users": 3000, "simulator_items": 400, "seed": 0}
    train_defaults = {"epochs": 8, "learning_rate": 5e-3}
    pipeline_min_value = 0.55
    headline_metric = ("auc", True)

    def default_data_options(self, dataset: str) -> dict:
        return dict(self.data_options)

    def build_data(self, dataset: str, options: dict, data_path=None) -> BuiltData:
        from tfrec_onerec.data import sessions
        from tfrec_onerec.data.simulator import session_world, simulate

        world = {"num_users": options["simulator_users"], "num_items": options["simulator_items"],
                 "seed": options["seed"]}
        built = sessions.build_sessions(simulate(session_world(**world)),
                                        sessions.SessionConfig(session_len=options["session_len"]))
        return BuiltData(built.spec, built.splits, {"simulator": world, "default_tasks": list(sessions.SESSION_TASKS),
                                                    "view_threshold": built.config.view_threshold})

    def model_info(self, model) -> dict:
        return {**super().model_info(model), "reward_weights": dict(model.reward_weights)}

    def evaluate_with(self, scorer, data: FamilyData, split: str, info: dict) -> dict:
        from tfrec_onerec import evaluation
        from tfrec_onerec.data.sessions import SESSION_FEATURE
        from tfrec_onerec.data.simulator import session_world, simulate
        from tfrec_onerec.data.simulator_truth import session_value, true_session_metrics
        from tfrec_onerec.metrics import auc

        tasks = as_task_list(info["tasks"])
        items, scores, labels = [], {t.name: [] for t in tasks}, {t.label: [] for t in tasks}
        users = []
        for features, targets in data.records(split, data.spec, data.spec.labels, 4096):
            predictions = scorer(features)
            for task in tasks:
                scores[task.name].append(np.asarray(predictions[task.name]).reshape(-1))
                labels[task.label].append(targets[task.label].numpy())
            users.append(features["user_id"].numpy())
            items.append(features[SESSION_FEATURE].numpy())
        join = evaluation.concatenate_parts
        scores, labels, users, items = join(scores), join(labels), np.concatenate(users), np.concatenate(items)
        truth = true_session_metrics(simulate(session_world(**data.metadata["simulator"])), users, items,
                                     data.metadata.get("view_threshold", 1.0))
        results = {}
        for task in tasks:
            positive = labels[task.label] > 0
            results[task.name] = {"auc": auc(positive, scores[task.name]),
                                  "oracle_auc": auc(positive, truth[task.label]),
                                  "positives": int(positive.sum()), "sessions": int(positive.size)}
        weights = info.get("reward_weights") or {t.name: 1.0 for t in tasks}
        reward = sum(float(w) * scores[name] for name, w in weights.items())
        correlation = float(np.corrcoef(reward, session_value(truth, weights))[0, 1])
        return {"tasks": results, "reward_value_correlation": correlation}

    def format_results(self, results: dict) -> str:
        lines = ["Per task: AUC of sessions with the outcome vs without; oracle: the simulator's expected label",
                 f"{'task':<10}{'AUC':>8}{'oracle':>8}{'positives':>11}{'sessions':>10}"]
        for task, r in results["tasks"].items():
            lines.append(f"{task:<10}{r['auc']:>8.4f}{r['oracle_auc']:>8.4f}{r['positives']:>11d}{r['sessions']:>10d}")
        lines.append(f"Correlation of the reward with the true session value: {results['reward_value_correlation']:.4f}")
        return "\n".join(lines)

    def headline(self, results: dict) -> float:
        return min(r["auc"] for r in results["tasks"].values())


FAMILY = SessionOutcomeFamily()

"""The session-value family: models that learn what showing an item is worth over the rest of
the session, from logged sessions, and are judged by playing new sessions with users.

Data (the simulator only: it is the environment that answers):
:mod:`tfrec_onerec.data.session_steps`, one tf.Example per logged exposure of a stochastic
logging policy in :class:`~tfrec_onerec.data.environment.ShortVideoEnvironment` (with
:data:`~tfrec_onerec.data.session_steps.LOG_ENVIRONMENT`'s exits: popular items cost
sessions). A model is built as ``model_class(feature_spec, **hyperparameters)`` and owns its
loss; batches are ``(features with next_item_id, {"reward", "exit", "click", "like", "follow"})``.

Evaluation is online, in the environment: every user of the world plays one new session
under each policy, from the same environment seed (own per split: ``valid`` and ``test``
differ), and the family reports each policy's mean session return (the environment's reward:
watch seconds), session length and clicks:

* ``model``: the model's ``value`` (its ranking score), the best item not yet shown;
* ``model_myopic``: the same model's immediate-reward head (the myopic ranker it contains);
* ``logging``: the policy that wrote the training log;
* ``oracle_myopic`` and ``oracle_long_term``: the truth's immediate reward and ``r / p_exit``
  (:func:`~tfrec_onerec.data.environment.oracle_policy`), bounds of what a ranker reaches;
* ``random``.

The headline is ``return_vs_logging``: the model's return over the logging policy's (a model
must beat the data it learned from; the pipeline's gate is 1.0). Export: ``predict``,
``serving_default``, ``score_items`` (what the rollouts read) and ``recommend``.
Models: session_ltv, watchtime_marl.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from tfrec_onerec.families.base import BuiltData, FamilyData, ModelFamily

POLICIES = ("model", "model_myopic", "logging", "oracle_myopic", "oracle_long_term", "random")
EVALUATION_SEEDS = {"valid": 11, "test": 12}
"""Offsets of each split's evaluation environment seed from the data seed."""
SCORE_BATCH = 256
TRAINING_LABELS = ("reward", "exit", "click", "like", "follow")
"""The labels of training batches: the reward and the exit, and the feedback aspects a
multi-aspect model learns besides them."""


class SessionValueFamily(ModelFamily):
    name = "session_value"
    description = "learns an item's long-term session value from logged steps; judged by playing sessions"
    datasets = ("simulator",)
    data_options = {"simulator_users": 3000, "simulator_items": 400, "seed": 0, "sessions_per_user": 10}
    # A bootstrapped loss chases a moving target: its validation value is no stopping signal.
    train_defaults = {"epochs": 5, "batch_size": 256, "learning_rate": 1e-3, "early_stopping_patience": None}
    headline_metric = ("return_vs_logging", True)
    pipeline_min_value = 1.0
    data_version = 2  # 2: like and follow labels

    def build_data(self, dataset: str, options: dict, data_path=None) -> BuiltData:
        from tfrec_onerec.data.session_steps import build_session_steps
        from tfrec_onerec.data.simulator import session_world, simulate

        world = {"num_users": options["simulator_users"], "num_items": options["simulator_items"],
                 "seed": options["seed"]}
        spec, splits, metadata = build_session_steps(simulate(session_world(**world)), log_config(options),
                                                     options["seed"])
        return BuiltData(spec, splits, {"simulator": world, **metadata})

    def dataset(self, data: FamilyData, split: str, config, training: bool = False):
        """``(features with next_item_id, {label: (B,)})`` batches of :data:`TRAINING_LABELS`."""
        return data.records(split, data.spec, TRAINING_LABELS, batch_size=config.batch_size if training else 4096,
                            shuffle=training, seed=config.seed)

    def build_model(self, model_class, data: FamilyData, hyperparameters: Mapping | None = None,
                    tasks: Sequence | None = None, built=None):
        return model_class(data.spec, **dict(hyperparameters or {}))

    # -- evaluation -------------------------------------------------------------------------------
    def keras_scorer(self, model):
        import tensorflow as tf

        score = tf.function(lambda features: model.item_scores(features), reduce_retracing=True)
        return lambda features: {k: v.numpy() for k, v in score(features).items()}

    def export_scorer(self, loaded, info: dict):
        signature = loaded.signatures["score_items"]
        return lambda features: {k: v.numpy() for k, v in signature(**features).items()}

    def evaluate_with(self, scorer, data: FamilyData, split: str, info: dict) -> dict:
        from tfrec_onerec.data import environment as env
        from tfrec_onerec.data.session_steps import current_state, user_histories
        from tfrec_onerec.data.simulator import session_world, simulate

        if split not in EVALUATION_SEEDS:
            raise ValueError(f"The {self.name} family plays sessions for 'valid' or 'test', not {split!r}.")
        options = data.metadata["options"]
        config = log_config(options)
        world = simulate(session_world(**data.metadata["simulator"]))
        seed = 1000 * options["seed"] + EVALUATION_SEEDS[split]
        environment = env.ShortVideoEnvironment(world, config.environment, seed=seed)
        histories = user_histories(world, config.user_history_len)

        def model_policy(head: str):
            def policy(sessions):
                scores = np.zeros((len(sessions.user_ids), environment.num_items))
                rows = np.flatnonzero(sessions.active)
                state = current_state(sessions, config.history_len, histories)
                for start in range(0, len(rows), SCORE_BATCH):
                    part = rows[start:start + SCORE_BATCH]
                    scores[part] = scorer({name: value[part] for name, value in state.items()})[head]
                return env.unseen_argmax(scores, sessions)
            return policy

        policies = {"model": model_policy("value"), "model_myopic": model_policy("reward"),
                    "logging": env.sampling_policy(environment, config.temperature, config.exploration, seed=seed + 1),
                    "oracle_myopic": env.oracle_policy(environment, "myopic"),
                    "oracle_long_term": env.oracle_policy(environment, "long_term"),
                    "random": env.random_policy(environment, seed=seed + 2)}
        users = np.arange(1, environment.num_users + 1)
        results = {}
        for name, policy in policies.items():
            environment.rng = np.random.default_rng(seed)  # the same draws where the policies agree
            sessions = env.rollout(environment, policy, users)
            results[name] = {"return": float(sessions.returns.mean()), "length": float(sessions.length.mean()),
                             "clicks": float(sessions.feedback["click"].sum(axis=1).mean()),
                             "sessions": int(len(users))}
        return {"policies": results, "return_vs_logging": results["model"]["return"] / results["logging"]["return"],
                "return_vs_myopic": results["model"]["return"] / results["model_myopic"]["return"]}

    def format_results(self, results: dict) -> str:
        policies = results["policies"]
        lines = [f"One new session per user ({next(iter(policies.values()))['sessions']} users) under each policy:",
                 f"{'policy':<18}{'return':>10}{'length':>9}{'clicks':>9}"]
        for name, r in policies.items():
            lines.append(f"{name:<18}{r['return']:>10.2f}{r['length']:>9.2f}{r['clicks']:>9.2f}")
        lines.append(f"Model vs logging policy: x{results['return_vs_logging']:.3f}; "
                     f"vs its own myopic head: x{results['return_vs_myopic']:.3f}")
        return "\n".join(lines)

    def headline(self, results: dict) -> float:
        return results["return_vs_logging"]


def log_config(options: Mapping):
    """The :class:`~tfrec_onerec.data.session_steps.LogConfig` of the family's data options."""
    from tfrec_onerec.data.session_steps import LogConfig

    return LogConfig(sessions_per_user=options["sessions_per_user"])


FAMILY = SessionValueFamily()

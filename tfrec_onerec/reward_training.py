"""Training OneRec's session reward model on the simulator, scored against its ground truth.

``tfrec-onerec train --model onerec_reward --dataset simulator`` runs these steps:

1. :func:`load_reward_data`: a simulated log and its session samples
   (:func:`~tfrec_onerec.data.sessions.build_sessions`: every logged session of ``m``
   exposures, clicked or not, with its user context and session labels; splits by time);
2. :func:`fit_reward_model`: :class:`~tfrec_onerec.models.generative.reward.OneRecRewardModel`
   trained with :func:`tfrec_onerec.training.fit` (one BCE tower per task, early stopping
   on the validation split);
3. :func:`evaluate_reward_model`: per task, the AUC of the model's score for "the session
   had the outcome" (label > 0) next to the AUC of the simulator's own expected label (the
   oracle: what any model can reach), and the correlation of the scalar reward with the
   true session value.

MovieLens has no session outcomes (watch time, likes, follows), so only the simulator applies.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfrec_onerec import training
from tfrec_onerec.data import sessions
from tfrec_onerec.data.simulator import SimulatedData, SimulatorConfig, simulate
from tfrec_onerec.data.simulator_truth import session_value, true_session_metrics
from tfrec_onerec.features.datasets import columns_dataset
from tfrec_onerec.metrics import auc
from tfrec_onerec.models.generative.reward import OneRecRewardModel


def load_reward_data(simulator_config: SimulatorConfig | None = None,
                     session_config: sessions.SessionConfig | None = None) -> tuple:
    """``(SimulatedData, SessionData)``: a simulated world and all its logged sessions.

    Args:
        simulator_config: the world; default ``SimulatorConfig()``.
        session_config: how sessions are cut; default ``SessionConfig()`` (m = 3 exposed items).
    """
    world = simulate(simulator_config or SimulatorConfig())
    return world, sessions.build_sessions(world, session_config)


def fit_reward_model(data: sessions.SessionData, config: training.TrainConfig | None = None,
                     batch_size: int = 256, seed: int = 0, tasks: Sequence[str] = sessions.SESSION_TASKS,
                     **hyperparameters):
    """Builds the reward model for ``data.spec`` and trains it on the ``train`` split.

    Args:
        data: the :class:`~tfrec_onerec.data.sessions.SessionData`.
        config: the :class:`~tfrec_onerec.training.TrainConfig` (epochs, learning rate,
            early stopping on the ``valid`` split).
        batch_size: sessions per batch.
        seed: the shuffle seed.
        tasks: the towers, each trained on the session label of the same name. Default
            ``("swt", "vtr", "wtr", "ltr")``.
        **hyperparameters: more :class:`OneRecRewardModel` arguments (``model_dim``...).

    Returns:
        ``(model, history)``.
    """
    tasks = list(tasks)
    train = columns_dataset(data.splits["train"], data.spec, tasks, batch_size=batch_size, shuffle=True, seed=seed)
    valid = columns_dataset(data.splits["valid"], data.spec, tasks, batch_size=4096)
    return training.fit(lambda: OneRecRewardModel(data.spec, tasks, **hyperparameters), train, valid, config)


def evaluate_reward_model(model: OneRecRewardModel, world: SimulatedData, data: sessions.SessionData,
                          split: str = "test") -> dict:
    """Per-task AUC of the model and of the simulator's oracle, and the reward's correlation.

    A session label (e.g. ``ltr``, the share of its items liked) is a fraction; the AUC is
    that of telling sessions with the outcome (label > 0) from those without.

    Returns:
        ``{"tasks": {task: {"auc", "oracle_auc", "positives", "sessions"}},
        "reward_value_correlation": float}``; the correlation is Pearson's between
        :meth:`OneRecRewardModel.reward` and the true session value
        (:func:`~tfrec_onerec.data.simulator_truth.session_value` of the expected labels).
    """
    columns = data.splits[split]
    features = data.features(split)
    scores = model.predict(features, batch_size=4096, verbose=0)
    truth = true_session_metrics(world, columns["user_id"], columns[sessions.SESSION_FEATURE],
                                 data.config.view_threshold)
    tasks = {}
    for task in model.tasks:
        positive = np.asarray(columns[task.label]) > 0
        tasks[task.name] = {"auc": auc(positive, scores[task.name][:, 0]),
                            "oracle_auc": auc(positive, truth[task.label]),
                            "positives": int(positive.sum()), "sessions": int(positive.size)}
    reward = np.concatenate([np.asarray(model.reward({k: v[i:i + 4096] for k, v in features.items()}))
                             for i in range(0, len(columns["user_id"]), 4096)])
    correlation = float(np.corrcoef(reward, session_value(truth, model.reward_weights))[0, 1])
    return {"tasks": tasks, "reward_value_correlation": correlation}

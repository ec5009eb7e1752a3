"""DeepCTR 0.9.4's ESMM, MMOE or PLE on the benchmark's arrays; run by ``multitask_benchmark.py``
in a subprocess, in the setting of ``_deepctr_din.py`` (imported for its helpers, its check
of ``TF_USE_LEGACY_KERAS=1`` and its silencing of DeepCTR's PyPI version check): tf-keras 2.x,
only DeepCTR's ``--no-deps`` install directory on ``PYTHONPATH``, no tfrec_onerec.

Usage: ``python _deepctr_multitask.py WORKDIR MODEL`` (MODEL: ``esmm``, ``mmoe`` or ``ple``)

Reads:
    ``WORKDIR/config.json``: ``features`` (the spec's ``get_config()["features"]``), ``tasks``
    (the two label columns of the funnel, the CTR one first), ``cvr_name`` (ESMM's pCVR
    output), ``hyperparameters`` (``{model: tfrec_onerec's arguments}``), ``epochs``,
    ``batch_size``, ``learning_rate``, ``warmup_steps``, ``embedding_stddev``, ``seed``.
    ``WORKDIR/data.npz``: ``train/<column>`` and ``test/<column>`` (features and tasks).

Writes ``WORKDIR/<MODEL>_scores.npz`` (``{task: test scores}`` in row order; ESMM adds its
pCVR under ``cvr_name``) and ``WORKDIR/<MODEL>_result.json``, printed as the last stdout line.
"""
import json
import os
import sys

from _deepctr_din import auc, feature_columns, fit_timed, keras_version  # noqa: I001  (first: the env check)

import numpy as np
import tensorflow as tf
from deepctr.feature_column import DenseFeat, SparseFeat, VarLenSparseFeat
from deepctr.models import ESMM, MMOE, PLE


def columns_for(features, stddev: float, seed: int) -> list:
    """DIN's columns (same tables, rows, dims, N(0, stddev); histories masked on id 0 and, as
    DeepCTR's default ``combiner="mean"``, mean-pooled over their real steps like our
    ``FlatFeatures``) plus a ``DenseFeat`` per numeric feature, fed as it is (as ours). DIN's
    check that a history ``hist_X`` goes with a candidate ``X`` holds for both data sets."""
    columns, _ = feature_columns([f for f in features if f["kind"] != "numeric"], stddev, seed)
    return columns + [DenseFeat(f["name"], f["dim"]) for f in features if f["kind"] == "numeric"]


def model_inputs(data, split: str, columns) -> dict:
    out = {}
    for c in columns:
        values = data[f"{split}/{c.name}"]
        if isinstance(c, (SparseFeat, VarLenSparseFeat)):
            values = values.astype(np.int32)
        else:
            values = values.astype(np.float32)
        out[c.name] = values.reshape(len(values), -1)
    return out


def build(name: str, columns, hp: dict, tasks, seed: int):
    """DeepCTR's model with our hyperparameters (its gates: no hidden layer, as ours)."""
    common = dict(l2_reg_embedding=0.0, l2_reg_dnn=0.0, seed=seed, dnn_dropout=hp["dropout"],
                  dnn_activation=hp["activation"], dnn_use_bn=False, task_types=("binary",) * len(tasks),
                  task_names=tuple(tasks))
    towers = tuple(hp["tower_units"])
    if name == "esmm":
        return ESMM(columns, tower_dnn_hidden_units=towers, **common)
    experts = dict(expert_dnn_hidden_units=tuple(hp["expert_units"]), tower_dnn_hidden_units=towers,
                   gate_dnn_hidden_units=())
    if name == "mmoe":
        return MMOE(columns, num_experts=hp["shared_experts"], **experts, **common)
    if name == "ple":
        return PLE(columns, shared_expert_num=hp["shared_experts"], specific_expert_num=hp["task_experts"],
                   num_levels=hp["num_levels"], **experts, **common)
    raise ValueError(f"unknown model {name!r}")


def identical_dnns(model) -> int:
    """DNN blocks (experts, towers) that start with the same weights as an earlier one of the
    same shape: DeepCTR seeds every DNN's glorot_normal kernels with the model's one ``seed``."""
    seen, same = [], 0
    for layer in model.layers:
        if type(layer).__name__ == "DNN" and layer.weights:
            weights = [w.numpy() for w in layer.weights]
            same += any(len(s) == len(weights) and all(a.shape == b.shape and np.array_equal(a, b)
                                                       for a, b in zip(s, weights)) for s in seen)
            seen.append(weights)
    return same


def main(workdir: str, name: str) -> None:
    config = json.loads(open(os.path.join(workdir, "config.json")).read())
    data = np.load(os.path.join(workdir, "data.npz"))
    tasks = config["tasks"]
    tf.keras.utils.set_random_seed(config["seed"])

    columns = columns_for(config["features"], config["embedding_stddev"], config["seed"])
    model = build(name, columns, config["hyperparameters"][name], tasks, config["seed"])
    model.compile(optimizer=tf.keras.optimizers.Adam(config["learning_rate"]),
                  loss=["binary_crossentropy"] * len(tasks))
    duplicates = identical_dnns(model)

    timing = fit_timed(model, model_inputs(data, "train", columns),
                       [data[f"train/{t}"].astype(np.float32) for t in tasks], config)

    names, scorer = list(tasks), model
    if name == "esmm":  # DeepCTR's ESMM outputs (ctr, ctcvr); its pCVR is the product's second factor
        names.append(config["cvr_name"])
        scorer = tf.keras.Model(model.inputs, model.outputs + [model.get_layer(tasks[1]).input[1]])
    outputs = scorer.predict(model_inputs(data, "test", columns), batch_size=4096, verbose=0)
    scores = {t: np.asarray(s, np.float32).reshape(-1) for t, s in zip(names, outputs)}
    np.savez(os.path.join(workdir, f"{name}_scores.npz"), **scores)
    result = {
        **timing,
        "subprocess_auc": {t: auc(data[f"test/{t}"], scores[t]) for t in tasks},
        "params": int(model.count_params()),
        "identical_initial_dnns": duplicates,
        "versions": {"deepctr": __import__("deepctr").__version__, "tensorflow": tf.__version__,
                     "tf.keras": keras_version()},
    }
    with open(os.path.join(workdir, f"{name}_result.json"), "w") as out:
        json.dump(result, out)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])

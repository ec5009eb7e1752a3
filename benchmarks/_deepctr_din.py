"""DeepCTR 0.9.4's DIN or BST on the benchmark's arrays; run by ``din_benchmark.py`` (and
``sequence_benchmark.py``) in a subprocess.

DeepCTR is Keras 2 code. The parent runs this script with ``TF_USE_LEGACY_KERAS=1`` (so
``tf.keras`` is tf-keras 2.x) and with only DeepCTR's ``--no-deps`` install directory on
``PYTHONPATH``. It never imports tfrec_onerec: everything it needs comes from ``WORKDIR``.

Usage: ``python _deepctr_din.py WORKDIR``

Reads:
    ``WORKDIR/config.json``: ``model`` (``"din"``, default, or ``"bst"``: the Behavior
    Sequence Transformer, one transformer layer of 8 heads over the history, whose outputs
    are flattened into the MLP), ``features`` (the feature spec's ``get_config()["features"]``;
    numeric features become DeepCTR ``DenseFeat`` s),
    ``attention_units``, ``mlp_units``, ``activation`` (``"prelu"`` or ``"dice"``),
    ``epochs``, ``batch_size``, ``learning_rate``, ``warmup_steps``, ``embedding_stddev``,
    ``seed``.
    ``WORKDIR/data.npz``: ``train/<column>`` and ``test/<column>`` for every feature and
    the label ``click``.

Writes ``WORKDIR/test_scores.npy`` (the test predictions, in row order) and
``WORKDIR/result.json``, and prints the same JSON as its last stdout line.
"""
import json
import os
import sys
import types

if os.environ.get("TF_USE_LEGACY_KERAS", "").lower() not in ("1", "true", "yes"):
    sys.exit("_deepctr_din.py must run with TF_USE_LEGACY_KERAS=1 (DeepCTR needs Keras 2 / tf-keras).")

# `import deepctr` starts a thread that asks PyPI for a newer DeepCTR release. A benchmark
# should not reach the network (and the thread's failure message would land on stdout at
# a random time), so the version check sees a "not found" reply and says nothing.
import requests  # noqa: E402

requests.get = lambda *args, **kwargs: types.SimpleNamespace(status_code=404, text="")

import numpy as np  # noqa: E402
from _throughput import ThroughputTimer  # noqa: E402
import tensorflow as tf  # noqa: E402
from deepctr.feature_column import DenseFeat, SparseFeat, VarLenSparseFeat, get_feature_names  # noqa: E402
from deepctr.models import BST, DIN  # noqa: E402

SEQUENCE_LENGTH = "seq_length"
"""BST's input of each row's history length (DeepCTR reads it by this name)."""


class PReLU(tf.keras.layers.PReLU):
    """PReLU with one slope per unit, initialised to 0.25, as tfrec_onerec's DIN.

    DeepCTR accepts an activation *class* (it calls ``activation()`` with no arguments);
    tf-keras' PReLU starts its slopes at 0 and, unless told otherwise, learns one per
    position of a (batch, length, units) input, so both are fixed here.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("alpha_initializer", tf.keras.initializers.Constant(0.25))
        super().__init__(**kwargs)

    def build(self, input_shape):
        self.shared_axes = list(range(1, len(input_shape) - 1)) or None
        super().build(input_shape)


class Throughput(ThroughputTimer, tf.keras.callbacks.Callback):
    """:class:`ThroughputTimer` on this process's Keras."""


def fit_timed(model, train_x, train_y, config: dict) -> dict:
    """Trains `model` with :class:`Throughput` timing; returns the examples and timing figures."""
    timer = Throughput(config["epochs"], config["warmup_steps"])
    model.fit(train_x, train_y, batch_size=config["batch_size"], epochs=config["epochs"], shuffle=True,
              verbose=0, callbacks=[timer])
    n = len(train_y[0]) if isinstance(train_y, list) else len(train_y)
    timed_examples = n - config["warmup_steps"] * config["batch_size"]
    return {"examples": int(n), "epoch_seconds": timer.epoch_seconds, "timed_examples": int(timed_examples),
            "timed_seconds": timer.timed_seconds, "examples_per_second": timed_examples / timer.timed_seconds}


def keras_version() -> str:
    """The version of the Keras that ``tf.keras`` resolved to (it must be tf-keras 2.x)."""
    module = tf.keras.layers.Layer.__module__.split(".")[0]
    version = __import__(module).__version__
    if module != "tf_keras":
        raise RuntimeError(f"tf.keras is {module} {version}, not tf-keras; DeepCTR needs Keras 2.")
    return f"{module} {version}"


def auc(labels, scores) -> float:
    """Mann-Whitney AUC with tied scores sharing their mean rank (a cross-check only; the
    parent recomputes the reported AUC from the saved scores with tfrec_onerec.metrics)."""
    labels = np.asarray(labels).reshape(-1) > 0.5
    scores = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(scores, kind="mergesort")
    ranked = scores[order]
    starts = np.r_[True, ranked[1:] != ranked[:-1]]
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], len(ranked)] - 1
    ranks = np.empty(len(scores))
    ranks[order] = ((first + last) / 2.0 + 1.0)[np.cumsum(starts) - 1]
    n_pos, n_neg = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def feature_columns(features, stddev: float, seed: int, lengths: bool = False) -> tuple:
    """DeepCTR columns mirroring the spec: same tables (shared by ``vocab``), rows and dims.

    Our tables have ``vocab_size + 2`` rows (0 = padding, 1..vocab_size, one OOV row); the
    DeepCTR tables get the same number so that both models have the same parameters. History
    features use DeepCTR's masking (``mask_zero``: id 0 is padding), which matches our
    right-padded, 0-padded histories; DIN never reads a ``length_name`` for its history, BST
    does (`lengths`: the histories name :data:`SEQUENCE_LENGTH`).
    """
    columns, history = [], []
    vocabs = list(dict.fromkeys(f["vocab"] for f in features))
    for f in features:
        # One seed per table: initialisers with equal seeds would start tables of equal shape identical.
        init = tf.keras.initializers.RandomNormal(stddev=stddev, seed=seed * 1000 + vocabs.index(f["vocab"]))
        sparse = SparseFeat(f["name"], vocabulary_size=f["vocab_size"] + 2, embedding_dim=f["embedding_dim"],
                            embedding_name=f["vocab"], embeddings_initializer=init)
        if f["kind"] == "categorical":
            columns.append(sparse)
        elif f["kind"] == "sequence":
            if f["name"] != "hist_" + f["query"]:
                raise ValueError(f"DeepCTR's DIN pairs history 'hist_X' with candidate 'X'; {f['name']!r} "
                                 f"attends to {f['query']!r}.")
            columns.append(VarLenSparseFeat(sparse, maxlen=f["max_len"],
                                            length_name=SEQUENCE_LENGTH if lengths else None))
            history.append(f["query"])
        elif f["kind"] == "numeric":
            columns.append(DenseFeat(f["name"], f["dim"]))
        else:
            raise ValueError(f"Feature kind {f['kind']!r} is not wired for DeepCTR in this benchmark.")
    return columns, history


def model_inputs(data, split: str, columns) -> dict:
    """``{input name: array}``: categorical (n, 1) int32, histories (n, max_len) int32, numeric
    (n, dim) float32, and BST's history lengths (n, 1) int32."""
    out = {}
    dense = {c.name for c in columns if isinstance(c, DenseFeat)}
    histories = [c.name for c in columns if isinstance(c, VarLenSparseFeat)]
    for name in get_feature_names(columns):
        if name == SEQUENCE_LENGTH:
            out[name] = (data[f"{split}/{histories[0]}"] != 0).sum(axis=1).astype(np.int32).reshape(-1, 1)
            continue
        values = data[f"{split}/{name}"].astype(np.float32 if name in dense else np.int32)
        out[name] = values.reshape(len(values), -1) if name in dense or values.ndim == 1 else values
    return out


def main(workdir: str) -> None:
    config = json.loads(open(os.path.join(workdir, "config.json")).read())
    data = np.load(os.path.join(workdir, "data.npz"))
    tf.keras.utils.set_random_seed(config["seed"])

    bst = config.get("model", "din") == "bst"
    columns, history = feature_columns(config["features"], config["embedding_stddev"], config["seed"], lengths=bst)
    activation = {"prelu": PReLU, "dice": "dice"}[config["activation"]]
    if bst:
        model = BST(columns, history, transformer_num=1, att_head_num=8, use_bn=False,
                    dnn_hidden_units=tuple(config["mlp_units"]), dnn_activation=activation, l2_reg_dnn=0.0,
                    l2_reg_embedding=0.0, dnn_dropout=0.0, seed=config["seed"], task="binary")
    else:
        model = DIN(columns, history, dnn_use_bn=False, dnn_hidden_units=tuple(config["mlp_units"]),
                    dnn_activation=activation, att_hidden_size=tuple(config["attention_units"]),
                    att_activation=activation, att_weight_normalization=False, l2_reg_dnn=0.0,
                    l2_reg_embedding=0.0, dnn_dropout=0.0, seed=config["seed"], task="binary")
    model.compile(optimizer=tf.keras.optimizers.Adam(config["learning_rate"]), loss="binary_crossentropy")

    timing = fit_timed(model, model_inputs(data, "train", columns), data["train/click"].astype(np.float32), config)
    scores = model.predict(model_inputs(data, "test", columns), batch_size=4096, verbose=0).reshape(-1)
    np.save(os.path.join(workdir, "test_scores.npy"), scores.astype(np.float32))
    result = {
        **timing,
        "test_auc": auc(data["test/click"], scores),
        "params": int(model.count_params()),
        "versions": {"deepctr": __import__("deepctr").__version__, "tensorflow": tf.__version__,
                     "tf.keras": keras_version()},
    }
    with open(os.path.join(workdir, "result.json"), "w") as out:
        json.dump(result, out)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])

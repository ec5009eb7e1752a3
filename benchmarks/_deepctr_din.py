"""DeepCTR 0.9.4's DIN on the benchmark's data; run by din_benchmark.py in a subprocess.

DeepCTR is Keras 2 code: the parent process runs this file with TF_USE_LEGACY_KERAS=1 and
DeepCTR (installed with --no-deps into a cache directory) on PYTHONPATH. Prints one JSON line.

Usage: python _deepctr_din.py DATA.npz CONFIG.json
"""
import json
import sys
import time

import numpy as np
import tensorflow as tf
from deepctr.feature_column import SparseFeat, VarLenSparseFeat, get_feature_names
from deepctr.models import DIN

from tfrec_onerec.metrics import auc


class EpochTimer(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = getattr(self, "seconds", []) + [time.perf_counter() - self.start]


def main(data_path, config_path):
    data = np.load(data_path)
    config = json.load(open(config_path))
    spec = config["features"]
    columns = []
    for f in spec:
        if f["kind"] == "categorical":
            columns.append(SparseFeat(f["name"], vocabulary_size=f["vocab_size"] + 2, embedding_dim=f["embedding_dim"],
                                      embedding_name=f["vocab"]))
        elif f["kind"] == "sequence":
            columns.append(VarLenSparseFeat(
                SparseFeat(f["name"], vocabulary_size=f["vocab_size"] + 2, embedding_dim=f["embedding_dim"],
                           embedding_name=f["vocab"]), maxlen=f["max_len"], length_name="seq_length"))
    history = [f["query"] for f in spec if f["kind"] == "sequence"]
    tf.keras.utils.set_random_seed(0)
    model = DIN(columns, history, dnn_hidden_units=tuple(config["mlp_units"]), dnn_activation=config["activation"],
                att_hidden_size=tuple(config["attention_units"]), att_activation=config["activation"],
                att_weight_normalization=False, l2_reg_embedding=0.0)
    model.compile(tf.keras.optimizers.Adam(config["learning_rate"]), "binary_crossentropy")
    names = get_feature_names(columns)

    def inputs(split):
        x = {name: data[f"{split}/{name}"] for name in names if name != "seq_length"}
        x["seq_length"] = (data[f"{split}/{spec[-1]['name']}"] != 0).sum(axis=1)
        return x

    timer = EpochTimer()
    train_y = data["train/click"]
    model.fit(inputs("train"), train_y, batch_size=config["batch_size"], epochs=config["epochs"], shuffle=True,
              verbose=0, callbacks=[timer])
    scores = model.predict(inputs("test"), batch_size=4096, verbose=0).reshape(-1)
    print(json.dumps({"epoch_seconds": timer.seconds, "examples": int(len(train_y)),
                      "examples_per_second": len(train_y) / timer.seconds[-1],
                      "test_auc": auc(data["test/click"], scores),
                      "params": int(model.count_params())}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

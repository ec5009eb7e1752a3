"""DIN and its base model: mechanism, learning, round trips, bad input."""
from pathlib import Path

import keras
import numpy as np
import pytest

from tfrec_onerec import models, training
from tfrec_onerec.features.datasets import columns_dataset
from tfrec_onerec.metrics import auc

from fresh_process import run_fresh


def features_only(columns):
    return {k: v for k, v in columns.items() if k != "click"}


def test_registry_lists_and_rejects():
    assert {"din", "din_base"} <= set(models.list())
    assert models.get("din") is models.sequence.DIN
    with pytest.raises(KeyError, match="valid models: .*din"):
        models.get("dn")


@pytest.mark.parametrize("name", ["din", "din_base"])
def test_learns_the_known_answer(known_answer, name):
    spec, train, test = known_answer
    keras.utils.set_random_seed(0)
    model, history = training.fit(
        lambda: models.get(name)(spec, ["click"], mlp_units=(32, 16)),
        columns_dataset(train, spec, ["click"], batch_size=128, shuffle=True),
        config=training.TrainConfig(epochs=6, learning_rate=3e-3, verbose=0))
    scores = model.predict(features_only(test), batch_size=512, verbose=0)["click"]
    assert history.history["loss"][-1] < history.history["loss"][0]
    # A trivial baseline (the base rate, or any candidate-only score) has AUC 0.5 here.
    assert auc(test["click"], scores) > 0.9


def test_din_output_depends_on_history_through_attention(known_answer):
    spec, train, _ = known_answer
    model = models.get("din")(spec)
    batch = {k: v[:4] for k, v in features_only(train).items()}
    out = model(batch)["click"]
    assert out.shape == (4, 1)
    empty = dict(batch, hist_item_id=np.zeros_like(batch["hist_item_id"]), hist_cat=np.zeros_like(batch["hist_cat"]))
    out_empty = keras.ops.convert_to_numpy(model(empty)["click"])
    assert np.isfinite(out_empty).all()
    assert not np.allclose(keras.ops.convert_to_numpy(out), out_empty)


def test_multi_task_heads_and_config_round_trip(known_answer):
    spec, train, _ = known_answer
    model = models.get("din")(spec, ["click", "like"], attention_softmax=True, activation="dice")
    batch = {k: v[:8] for k, v in features_only(train).items()}
    out = model(batch)
    assert set(out) == {"click", "like"}
    clone = models.get("din").from_config(model.get_config())
    clone(batch)
    clone.set_weights(model.get_weights())
    for task in out:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(batch)[task]),
                                   keras.ops.convert_to_numpy(out[task]), rtol=1e-6)


@pytest.mark.parametrize("name", ["din", "din_base"])
def test_keras_save_load_round_trip(known_answer, tmp_path, name):
    spec, train, _ = known_answer
    model = training.compile_model(models.get(name)(spec), training.TrainConfig())
    batch = {k: v[:16] for k, v in features_only(train).items()}
    model.fit(columns_dataset({k: v[:256] for k, v in train.items()}, spec, ["click"], batch_size=64),
              epochs=1, verbose=0, shuffle=False)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(batch)["click"]),
                               keras.ops.convert_to_numpy(model(batch)["click"]), rtol=1e-6)


def test_bad_input_names_the_feature(known_answer):
    spec, train, _ = known_answer
    model = models.get("din")(spec)
    batch = {k: v[:4] for k, v in features_only(train).items()}
    with pytest.raises(ValueError, match="Missing feature 'hist_cat'"):
        model({k: v for k, v in batch.items() if k != "hist_cat"})
    with pytest.raises(ValueError, match="'item_id': expected integer ids"):
        model(dict(batch, item_id=batch["item_id"].astype(np.float32)))
    with pytest.raises(ValueError, match="'hist_item_id'.*rank 2"):
        model(dict(batch, hist_item_id=batch["hist_item_id"][:, 0]))


def test_needs_a_history_feature():
    from tfrec_onerec.features import Feature, FeatureSpec
    with pytest.raises(ValueError, match="needs a 'history' feature"):
        models.get("din")(FeatureSpec([Feature("user_id", "categorical", vocab_size=3)]))


def test_mirrored_strategy_updates_equal_one_device_and_jit_trains():
    """MirroredStrategy over two logical CPUs makes the same SGD update as one device (a fresh
    process: logical devices must be configured before TensorFlow starts); XLA steps train."""
    out = run_fresh("""
        import json, sys
        import tfrec_onerec
        import keras, numpy as np
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        sys.path.insert(0, json.loads(sys.stdin.read())["tests"])
        from known_answer import known_answer_spec, known_answer_columns
        from tfrec_onerec import models, training
        from tfrec_onerec.features.datasets import columns_dataset
        spec, cols = known_answer_spec(), known_answer_columns(64, 0)
        ds = columns_dataset(cols, spec, ["click"], batch_size=64)

        def one_step(strategy):
            # same initial weights; ReLU, since Dice's batch statistics differ per replica by design
            keras.utils.set_random_seed(0)
            model, history = training.fit(lambda: models.get("din")(spec, activation="relu"), ds,
                                          config=training.TrainConfig(epochs=1, learning_rate=0.01, verbose=0),
                                          strategy=strategy)
            return model.get_weights(), history.history["loss"][0]

        single, loss_single = one_step(tf.distribute.get_strategy())
        mirrored, loss_mirrored = one_step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
        _, h = training.fit(lambda: models.get("din")(spec), ds,
                            config=training.TrainConfig(epochs=2, jit_compile=True, verbose=0))
        print(json.dumps({"single": [w.tolist() for w in single], "mirrored": [w.tolist() for w in mirrored],
                          "loss_single": float(loss_single), "loss_mirrored": float(loss_mirrored),
                          "jit_losses": [float(x) for x in h.history["loss"]]}))
    """, {"tests": str(Path(__file__).resolve().parents[1])}, forbidden=())
    assert len(out["single"]) == len(out["mirrored"]) > 0
    for a, b in zip(out["single"], out["mirrored"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert abs(out["loss_single"] - out["loss_mirrored"]) < 1e-5, (out["loss_single"], out["loss_mirrored"])
    assert len(out["jit_losses"]) == 2 and np.all(np.isfinite(out["jit_losses"]))


def test_din_recovers_the_simulators_click_model():
    """On the simulator, whose true click probabilities are known, DIN's scores beat chance
    and correlate with the truth (the oracle's AUC bounds what any model can reach)."""
    from tfrec_onerec.data import get, short_video, simulator

    world = simulator.SimulatorConfig(seed=0, num_users=1000, num_items=500)  # half the default world: quicker
    spec, splits, _ = short_video.build(get("simulator").default_config, world)
    keras.utils.set_random_seed(0)
    model, _ = training.fit(lambda: models.get("din")(spec, ["click"]),
                            columns_dataset(splits["train"], spec, ["click"], batch_size=512, shuffle=True),
                            config=training.TrainConfig(epochs=2, learning_rate=2e-3, verbose=0))
    test = splits["test"]
    scores = model.predict({k: test[k] for k in spec.names}, batch_size=4096, verbose=0)["click"].reshape(-1)
    oracle = auc(test["click"], test["true_p_click"])
    assert 0.57 < auc(test["click"], scores) <= oracle + 0.01
    assert np.corrcoef(scores, test["true_p_click"])[0, 1] > 0.3

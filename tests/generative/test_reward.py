"""OneRec's reward model: shapes, the session self-attention, learning on the simulator, round trips."""
import keras
import numpy as np
import pytest
from fresh_process import run_fresh

from tfrec_onerec import export, models, training
from tfrec_onerec.data import sessions, simulator
from tfrec_onerec.data.simulator_truth import session_value, true_session_metrics
from tfrec_onerec.features.datasets import columns_dataset
from tfrec_onerec.features.tfrecord import serialize_rows
from tfrec_onerec.metrics import auc
from tfrec_onerec.models.generative.reward import OneRecRewardModel



@pytest.fixture(scope="module")
def world():
    sim = simulator.simulate(simulator.SimulatorConfig(num_users=1500, num_items=100, num_categories=5))
    return sim, sessions.build_sessions(sim)


@pytest.fixture(scope="module")
def trained(world):
    sim, data = world
    keras.utils.set_random_seed(0)
    model, history = training.fit(
        lambda: models.get("onerec_reward")(data.spec, model_dim=32, tower_units=(32,)),
        columns_dataset(data.splits["train"], data.spec, list(sessions.SESSION_TASKS), batch_size=256, shuffle=True),
        config=training.TrainConfig(epochs=8, learning_rate=5e-3, verbose=0))
    return model, history


def batch_of(data, n=8, split="train"):
    return {k: v[:n] for k, v in data.features(split).items()}


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_registered_and_shapes(world):
    _, data = world
    assert models.get("onerec_reward") is OneRecRewardModel
    model = OneRecRewardModel(data.spec, model_dim=16, num_heads=2, tower_units=(8,))
    # The user identifier is left out unless named (it memorises small logs).
    assert model.input_names == ["age_bucket", "gender", "lifecycle_stage", "short_item_ids", "positive_item_ids",
                                 "session_item_ids"]
    with_id = OneRecRewardModel(data.spec, user_features=["user_id", "gender"], model_dim=16, num_heads=2)
    assert with_id.input_names[:2] == ["user_id", "gender"] and with_id(batch_of(data))["ltr"].shape == (8, 1)
    batch = batch_of(data)
    out = model(batch)
    assert sorted(out) == sorted(sessions.SESSION_TASKS)
    for value in out.values():
        assert value.shape == (8, 1) and np.all((numpy(value) > 0) & (numpy(value) < 1))
    assert model.item_representations(batch).shape == (8, 3, 16)
    reward = numpy(model.reward(batch))
    assert reward.shape == (8,)
    np.testing.assert_allclose(reward, sum(numpy(out[t])[:, 0] for t in sessions.SESSION_TASKS), rtol=1e-5)
    np.testing.assert_allclose(numpy(model.reward(batch, {"ltr": 2.0, "swt": 0.5})),
                               2 * numpy(out["ltr"])[:, 0] + 0.5 * numpy(out["swt"])[:, 0], rtol=1e-5)


def test_self_attention_mixes_the_session_items(world):
    _, data = world
    keras.utils.set_random_seed(1)
    model = OneRecRewardModel(data.spec, model_dim=16, num_heads=2, tower_units=(8,))
    batch = batch_of(data, 4)
    other = dict(batch, session_item_ids=batch["session_item_ids"].copy())
    other["session_item_ids"][:, 2] = other["session_item_ids"][:, 2] % 100 + 1  # change the last item only
    before, after = numpy(model.item_representations(batch)), numpy(model.item_representations(other))
    # The first two items' own inputs are unchanged; their representations move through attention.
    x_before, _ = model.item_user_features(model.checked_inputs(batch))
    x_after, _ = model.item_user_features(model.checked_inputs(other))
    np.testing.assert_allclose(numpy(x_before)[:, :2], numpy(x_after)[:, :2], rtol=1e-6)
    assert np.abs(before[:, :2] - after[:, :2]).max() > 1e-4
    # A padded item is hidden: it does not reach the others and its representation is 0.
    padded = dict(batch, session_item_ids=batch["session_item_ids"].copy())
    padded["session_item_ids"][:, 2] = 0
    rep = numpy(model.item_representations(padded))
    assert np.all(rep[:, 2] == 0)
    assert np.abs(rep[:, :2] - before[:, :2]).max() > 1e-4  # the two real items no longer see the third


def test_target_aware_histories_and_empty_rows(world):
    _, data = world
    model = OneRecRewardModel(data.spec, model_dim=16, num_heads=2, tower_units=(8,))
    batch = batch_of(data, 4, "test")
    empty = dict(batch, short_item_ids=np.zeros_like(batch["short_item_ids"]),
                 positive_item_ids=np.zeros_like(batch["positive_item_ids"]))
    out, out_empty = numpy(model(batch)["ltr"]), numpy(model(empty)["ltr"])
    assert np.isfinite(out_empty).all() and not np.allclose(out, out_empty)
    all_padding = dict(empty, session_item_ids=np.zeros_like(batch["session_item_ids"]))
    assert np.isfinite(numpy(model.reward(all_padding))).all()


def test_learns_the_simulators_session_value(world, trained):
    """Like/follow AUC beat a constant predictor (0.5); the reward tracks the true session value."""
    sim, data = world
    model, history = trained
    assert history.history["loss"][-1] < history.history["loss"][0]
    test = data.splits["test"]
    out = model.predict(data.features("test"), batch_size=1024, verbose=0)
    truth = true_session_metrics(sim, test["user_id"], test["session_item_ids"])
    for task, floor in (("ltr", 0.6), ("wtr", 0.58), ("vtr", 0.6), ("swt", 0.6)):
        got, oracle = auc(test[task] > 0, out[task][:, 0]), auc(test[task] > 0, truth[task])
        assert floor < got <= oracle + 0.02, (task, got, oracle)
    reward = numpy(model.reward(data.features("test")))
    assert np.corrcoef(reward, session_value(truth))[0, 1] > 0.5


def test_config_and_keras_round_trips(world, trained, tmp_path):
    _, data = world
    model, _ = trained
    batch = batch_of(data, 16, "test")
    clone = OneRecRewardModel.from_config(model.get_config())
    clone(batch)
    clone.set_weights(model.get_weights())
    assert clone.input_names == model.input_names
    np.testing.assert_allclose(numpy(clone.reward(batch)), numpy(model.reward(batch)), rtol=1e-5)
    path = tmp_path / "reward.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is OneRecRewardModel and loaded.reward_weights == model.reward_weights
    for task, value in model(batch).items():
        np.testing.assert_allclose(numpy(loaded(batch)[task]), numpy(value), rtol=1e-5)


def test_export_serves_without_tfrec_onerec(world, trained, tmp_path):
    _, data = world
    model, _ = trained
    batch = batch_of(data, 16, "test")
    batch["short_item_ids"][0] = 0  # an empty history
    batch["session_item_ids"][1, 2] = 0  # a shorter session
    path = export.export_saved_model(model, tmp_path / "onerec_reward", warmup_batch=batch)
    expected = {k: numpy(v).tolist() for k, v in model(batch).items()}
    code = f"""
        import json, sys
        import tensorflow as tf
        payload = json.loads(sys.stdin.read())
        loaded = tf.saved_model.load({str(path)!r})
        served = loaded.signatures["serving_default"](
            examples=tf.constant([bytes.fromhex(r) for r in payload["records"]]))
        raw = loaded.signatures["predict"](**{{k: tf.constant(v, tf.int64) for k, v in payload["batch"].items()}})
        print(json.dumps({{"served": {{k: v.numpy().tolist() for k, v in served.items()}},
                          "raw": {{k: v.numpy().tolist() for k, v in raw.items()}}}}))
    """
    payload = {"records": [r.hex() for r in serialize_rows(batch, export.model_inputs(model))],
               "batch": {k: v.tolist() for k, v in batch.items() if k in model.input_names}}
    out = run_fresh(code, payload)
    for task in sessions.SESSION_TASKS:
        np.testing.assert_allclose(out["served"][task], expected[task], rtol=1e-5)
        np.testing.assert_allclose(out["raw"][task], expected[task], rtol=1e-5)


def test_bad_arguments_are_named(world):
    _, data = world
    with pytest.raises(ValueError, match="session_feature 'items'"):
        OneRecRewardModel(data.spec, session_feature="items")
    with pytest.raises(ValueError, match="session_feature 'user_id'"):
        OneRecRewardModel(data.spec, session_feature="user_id")
    with pytest.raises(ValueError, match=r"reward_weights names \['click'\]"):
        OneRecRewardModel(data.spec, reward_weights={"click": 1.0})
    with pytest.raises(ValueError, match="multiple of num_heads"):
        OneRecRewardModel(data.spec, model_dim=10, num_heads=4)
    with pytest.raises(ValueError, match="user_features must be categorical or numeric"):
        OneRecRewardModel(data.spec, user_features=["short_item_ids"])
    with pytest.raises(KeyError, match="No feature 'age'"):
        OneRecRewardModel(data.spec, user_features=["age"])
    model = OneRecRewardModel(data.spec, model_dim=8, num_heads=2, tower_units=(4,))
    batch = batch_of(data, 2)
    with pytest.raises(ValueError, match="weights must name some of the tasks"):
        model.reward(batch, {"click": 1.0})
    with pytest.raises(ValueError, match="Missing feature 'session_item_ids'"):
        model({k: v for k, v in batch.items() if k != "session_item_ids"})
    with pytest.raises(ValueError, match="'session_item_ids'.*max_len=3"):
        model(dict(batch, session_item_ids=np.ones((2, 4), np.int64)))

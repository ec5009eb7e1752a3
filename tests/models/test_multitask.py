"""The multi-task rankers: each model's mechanism on a hand-made case, masked losses, loss
weighting, learning on the simulator, round trips and exports that serve without the package."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrec_onerec import evaluation, export, families, models, training
from tfrec_onerec.features.datasets import columns_dataset
from tfrec_onerec.features.spec import Task
from tfrec_onerec.features.tfrecord import serialize_rows
from tfrec_onerec.metrics import auc
from tfrec_onerec.models.multitask.loss_weighting import GradNormWeighting, UncertaintyWeighting

from fresh_process import run_fresh
from known_answer import known_funnel_columns, known_funnel_spec

MULTI_TASK = ["shared_bottom", "moe", "mmoe", "cgc", "ple", "esmm", "aitm", "lt4rec", "stan"]
SMALL = {"lt4rec": {"shared_units": (64, 32), "pruning_rounds": 2, "final_density": 0.3}}  # a quicker mask search
FUNNEL = ["click", "conversion"]


def numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def funnel():
    spec = known_funnel_spec()
    columns = known_funnel_columns(64, 0)
    return spec, columns, {k: v for k, v in columns.items() if k in spec.names}


def outputs(model, batch):
    return {k: numpy(v).reshape(-1) for k, v in model(batch).items()}


def test_every_model_is_registered_in_the_pointwise_family():
    for name in MULTI_TASK:
        assert models.family_of(name) == "pointwise"


def test_models_need_two_tasks_and_default_to_the_funnel(funnel):
    spec = funnel[0]
    with pytest.raises(ValueError, match="MMoE needs at least 2 tasks"):
        models.get("mmoe")(spec, ["click"])
    assert models.get("mmoe").default_tasks(("click", "conversion")) == [Task("click"), Task("conversion")]
    with pytest.raises(ValueError, match="ESMM takes two binary entire-space tasks"):
        models.get("esmm")(spec, ["click", "conversion", "click"])


def test_gate_weights_sum_to_one_in_every_level(funnel):
    spec, _, batch = funnel
    model = models.get("ple")(spec, FUNNEL, num_levels=2, task_experts=2, shared_experts=3)
    _, gates = model.represent(model.flat(batch))
    assert sorted(gates) == ["level_0/shared", "level_0/task_0", "level_0/task_1", "level_1/task_0", "level_1/task_1"]
    assert numpy(gates["level_0/shared"]).shape == (64, 2 * 2 + 3)  # the shared gate sees every expert
    for weights in gates.values():
        np.testing.assert_allclose(numpy(weights).sum(axis=1), 1.0, rtol=1e-5)
    usage = model.expert_utilisation(batch)
    assert usage["level_1/task_0"].shape == (5,) and abs(usage["level_1/task_0"].sum() - 1) < 1e-5


def test_mmoe_with_one_expert_is_a_shared_bottom(funnel):
    spec, _, batch = funnel
    bottom = models.get("shared_bottom")(spec, FUNNEL, bottom_units=(8,), tower_units=(4,))
    mmoe = models.get("mmoe")(spec, FUNNEL, shared_experts=1, expert_units=(8,), tower_units=(4,))
    bottom(batch), mmoe(batch)
    mmoe.flat.set_weights(bottom.flat.get_weights())
    kernel, bias = bottom.bottom.dense_layers[0].get_weights()
    experts = mmoe.levels[0].shared_group
    experts.kernels[0].assign(kernel[None]), experts.biases[0].assign(bias[None])
    for ours, theirs in zip(mmoe.towers, bottom.towers):
        ours.set_weights(theirs.get_weights())
    for task, values in outputs(bottom, batch).items():
        np.testing.assert_allclose(outputs(mmoe, batch)[task], values, rtol=1e-5)


def test_ple_with_one_level_is_cgc_and_moe_has_one_gate(funnel):
    spec, _, batch = funnel
    cgc = models.get("cgc")(spec, FUNNEL)
    ple = models.get("ple")(spec, FUNNEL, num_levels=1)
    cgc(batch), ple(batch)
    ple.set_weights(cgc.get_weights())
    for task, values in outputs(cgc, batch).items():
        np.testing.assert_allclose(outputs(ple, batch)[task], values, rtol=1e-6)
    with pytest.raises(ValueError, match="CGC has num_levels=1; got 2"):
        models.get("cgc")(spec, FUNNEL, num_levels=2)
    moe = models.get("moe")(spec, FUNNEL)
    representations, gates = moe.represent(moe.flat(batch))
    assert list(gates) == ["level_0/task_0"]
    np.testing.assert_array_equal(numpy(representations[0]), numpy(representations[1]))
    mmoe = models.get("mmoe")(spec, FUNNEL)
    assert sorted(mmoe.represent(mmoe.flat(batch))[1]) == ["level_0/task_0", "level_0/task_1"]


def bce(y, p):
    return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_esmm_multiplies_probabilities_and_trains_cvr_only_through_the_product(funnel):
    spec, columns, batch = funnel
    model = models.get("esmm")(spec, FUNNEL)
    out = outputs(model, batch)
    assert [t.name for t in model.tasks] == ["click", "conversion", "cvr"]
    assert model.tasks[2] == Task("cvr", label="conversion", sample_space="click", weight=0.0)
    np.testing.assert_allclose(out["conversion"], out["click"] * out["cvr"], rtol=1e-6)
    y = {"click": columns["click"], "conversion": columns["conversion"], "cvr": columns["conversion"]}
    loss = float(model.compute_loss(y=y, y_pred=model(batch)))
    np.testing.assert_allclose(loss, bce(y["click"], out["click"]) + bce(y["conversion"], out["conversion"]), rtol=1e-5)
    # The cvr output has no loss of its own: its labels do not change the loss ...
    flipped = dict(y, cvr=1 - y["cvr"])
    assert float(model.compute_loss(y=flipped, y_pred=model(batch))) == pytest.approx(loss, rel=1e-6)
    # ... and with pCTR ~ 0 the product carries (almost) no gradient to the CVR tower.
    model.ctr_tower.logit.bias.assign([-30.0])
    with tf.GradientTape() as tape:
        total = model.compute_loss(y=y, y_pred=model(batch))
    gradients = tape.gradient(total, model.cvr_tower.trainable_weights)
    assert max(float(tf.reduce_max(tf.abs(g))) for g in gradients) < 1e-9


def test_aitm_calibrator_is_zero_on_a_monotone_funnel_and_positive_otherwise(funnel):
    spec, columns, batch = funnel
    model = models.get("aitm")(spec, FUNNEL)
    monotone = {"click": np.array([[0.5], [0.4]]), "conversion": np.array([[0.2], [0.4]])}
    assert float(model.calibrator(monotone)) == 0.0
    inverted = {"click": np.array([[0.2], [0.4]]), "conversion": np.array([[0.5], [0.1]])}
    assert float(model.calibrator(inverted)) == pytest.approx(0.3 / 2)
    y = {name: columns[name] for name in FUNNEL}
    out = outputs(model, batch)
    calibrator = np.mean(np.maximum(out["conversion"] - out["click"], 0))
    expected = bce(y["click"], out["click"]) + bce(y["conversion"], out["conversion"]) + 0.6 * calibrator
    np.testing.assert_allclose(float(model.compute_loss(y=y, y_pred=model(batch))), expected, rtol=1e-5)
    _, attention = model.represent(model.flat(batch))
    np.testing.assert_allclose(numpy(attention["conversion"]).sum(axis=1), 1.0, rtol=1e-5)


def test_a_task_loss_covers_only_its_sample_space(funnel):
    spec, _, batch = funnel
    tasks = [Task("click"), Task("cvr", label="conversion", sample_space="click", weight=2.0)]
    model = models.get("mmoe")(spec, tasks)
    y = {"click": np.array([1.0, 0.0, 1.0, 0.0]), "cvr": np.array([1.0, 0.0, 0.0, 1.0])}
    p = {"click": np.array([[0.8], [0.3], [0.6], [0.5]]), "cvr": np.array([[0.9], [0.2], [0.4], [0.7]])}
    mask = {"click": np.ones(4), "cvr": y["click"]}
    losses = numpy(model.task_losses(y, p, mask))
    click = -np.mean(np.log([0.8, 0.7, 0.6, 0.5]))
    cvr = -np.mean(np.log([0.9, 0.6]))  # the two clicked rows only
    np.testing.assert_allclose(losses, [click, cvr], rtol=1e-5)
    np.testing.assert_allclose(float(model.compute_loss(y=y, y_pred=p, sample_weight=mask)), click + 2 * cvr, rtol=1e-5)


def test_task_targets_give_the_sample_space_as_sample_weight():
    tasks = [Task("click"), Task("cvr", label="conversion", sample_space="click")]
    rows = tf.data.Dataset.from_tensors(({"x": tf.constant([1, 2])},
                                         {"click": tf.constant([1.0, 0.0]), "conversion": tf.constant([1.0, 0.0])}))
    features, targets, weights = next(iter(training.task_targets(rows, tasks)))
    np.testing.assert_array_equal(targets["cvr"], [1.0, 0.0])
    np.testing.assert_array_equal(weights["cvr"], [1.0, 0.0])
    np.testing.assert_array_equal(weights["click"], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"no label column \['conversion'\]"):
        next(iter(training.task_targets(rows.map(lambda f, y: (f, {"click": y["click"]})), tasks)))


def test_evaluation_scores_a_task_on_its_sample_space_and_on_the_entire_space():
    out = {"scores": {"cvr": np.array([0.9, 0.2, 0.4, 0.7, 0.1])},
           "labels": {"conversion": np.array([1, 0, 0, 0, 1.0]), "click": np.array([1, 1, 1, 0, 1.0])},
           "users": np.array([1, 1, 2, 2, 2])}
    result = evaluation.score_predictions(out, [Task("cvr", label="conversion", sample_space="click")])["cvr"]
    assert result["examples"] == 4
    assert result["auc"] == pytest.approx(auc([1, 0, 0, 1], [0.9, 0.2, 0.4, 0.1]))
    assert result["entire_space_auc"] == pytest.approx(auc([1, 0, 0, 0, 1], [0.9, 0.2, 0.4, 0.7, 0.1]))


def test_uncertainty_weighting_by_hand():
    layer = UncertaintyWeighting([1.0, 2.0], binary=[True, False])
    layer.build()
    layer.log_variance.assign([0.5, -1.0])
    losses = np.array([0.7, 0.2], np.float32)
    expected = (np.exp(-0.5) * 0.7 + 0.25) + 2 * (0.5 * np.exp(1.0) * 0.2 - 0.5)
    assert float(layer(losses)) == pytest.approx(expected, rel=1e-5)


def test_gradnorm_moves_weight_toward_the_task_that_trains_slower():
    layer = GradNormWeighting([1.0, 1.0], alpha=1.0, learning_rate=0.1)
    layer.build()
    layer.update(np.array([1.0, 1.0], np.float32), np.array([1.0, 1.0], np.float32))  # records L(0)
    np.testing.assert_allclose(numpy(layer.initial_losses), [1.0, 1.0])
    np.testing.assert_allclose(numpy(layer.task_weights), [1.0, 1.0])
    # Task 0's loss halved, task 1's did not: r = (2/3, 4/3); mean weighted norm 1, targets (2/3, 4/3).
    layer.update(np.array([0.5, 1.0], np.float32), np.array([1.0, 1.0], np.float32))
    # sign(1 - 2/3) = +1 lowers w0 by 0.1, sign(1 - 4/3) = -1 raises w1 by 0.1; the sum stays 2.
    np.testing.assert_allclose(numpy(layer.task_weights), [0.9, 1.1], rtol=1e-6)


def test_the_family_defaults_to_the_data_sets_funnel():
    from tfrec_onerec.families.base import FamilyData

    family = families.get("pointwise")
    data = FamilyData(known_funnel_spec(), {"dataset": "simulator", "family": "pointwise"}, {})
    assert family.tasks(data, None, models.get("esmm")) == [Task("click"), Task("conversion")]
    assert family.tasks(data, None, models.get("din")) == [Task("click")]  # single-task models: the data set's
    with pytest.raises(ValueError, match=r"no label column \['purchase'\]"):
        family.tasks(data, [Task("cvr", label="conversion", sample_space="purchase")], models.get("mmoe"))


@pytest.mark.parametrize("weighting", ["uncertainty", "gradnorm"])
def test_adaptive_loss_weightings_train_their_weights(weighting):
    spec, columns = known_funnel_spec(), known_funnel_columns(2048, 0)
    keras.utils.set_random_seed(0)
    model, history = training.fit(lambda: models.get("mmoe")(spec, FUNNEL, loss_weighting=weighting),
                                  columns_dataset(columns, spec, FUNNEL, batch_size=128, shuffle=True),
                                  config=training.TrainConfig(epochs=2, learning_rate=3e-3, verbose=0))
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert set(history.history) >= {"click_loss", "conversion_loss", "click_auc", "conversion_auc"}
    if weighting == "gradnorm":
        weights = numpy(model.weighting.task_weights)
        assert not np.allclose(weights, 1.0) and weights.sum() == pytest.approx(2.0, rel=1e-5)
        assert np.all(numpy(model.weighting.initial_losses) > 0)
    else:
        assert not np.allclose(numpy(model.weighting.log_variance), 0.0)


@pytest.fixture(scope="module")
def simulated():
    """Every multi-task model trained 2 epochs on a small simulator world (600 users), with
    the test split and the oracle's AUCs."""
    from tfrec_onerec.data import get, short_video, simulator

    spec, splits, _ = short_video.build(get("simulator").default_config,
                                        simulator.SimulatorConfig(seed=0, num_users=600, num_items=500))
    trained = {}
    for name in MULTI_TASK:
        keras.utils.set_random_seed(0)
        trained[name], _ = training.fit(
            lambda: models.get(name)(spec, FUNNEL, **SMALL.get(name, {})),
            columns_dataset(splits["train"], spec, list(spec.labels), batch_size=512, shuffle=True),
            config=training.TrainConfig(epochs=2, learning_rate=2e-3, verbose=0))
    keras.utils.set_random_seed(0)  # ESMM's baseline: a CVR model trained on clicked impressions only
    naive, _ = training.fit(
        lambda: models.get("din_base")(spec, [Task("cvr", label="conversion", sample_space="click")]),
        columns_dataset(splits["train"], spec, list(spec.labels), batch_size=512, shuffle=True),
        config=training.TrainConfig(epochs=2, learning_rate=2e-3, verbose=0))
    return spec, splits["test"], trained, naive


def test_every_model_learns_the_simulators_funnel(simulated):
    """Chance (any constant score) has AUC 0.5; the simulator's true probabilities bound what
    a model can reach. Each model's click and conversion AUCs lie well above chance and
    below the oracle's."""
    spec, test, trained, naive = simulated
    features = {k: test[k] for k in spec.names}
    oracle = {"click": auc(test["click"], test["true_p_click"]),
              "conversion": auc(test["conversion"], test["true_p_click"] * test["true_p_conversion"])}
    clicked = test["click"] > 0
    for name, model in trained.items():
        scores = {k: v.reshape(-1) for k, v in model.predict(features, batch_size=4096, verbose=0).items()}
        for task in FUNNEL:
            assert 0.6 < auc(test[task], scores[task]) <= oracle[task] + 0.01, (name, task)
        if name == "esmm":  # pCVR ranks conversions among clicked impressions, better than a naive CVR model
            naive_cvr = naive.predict(features, batch_size=4096, verbose=0)["cvr"].reshape(-1)
            esmm_auc, naive_auc = (auc(test["conversion"][clicked], s[clicked]) for s in (scores["cvr"], naive_cvr))
            assert esmm_auc > max(0.55, naive_auc)
            assert auc(test["conversion"], scores["cvr"]) > auc(test["conversion"], naive_cvr)  # the entire space
        if name == "stan":  # the learned click preference tracks the users' true lifecycle stage
            assert np.corrcoef(scores["click_preference"], test["lifecycle_stage"])[0, 1] > 0.5


def test_every_model_round_trips_through_config_and_keras_files(simulated, tmp_path):
    spec, test, trained, _ = simulated
    batch = {k: test[k][:32] for k in spec.names}
    for name, model in trained.items():
        expected = outputs(model, batch)
        clone = type(model).from_config(model.get_config())
        clone(batch)
        clone.set_weights(model.get_weights())
        model.save(tmp_path / f"{name}.keras")
        loaded = keras.models.load_model(tmp_path / f"{name}.keras")
        assert type(loaded) is type(model) and loaded.tasks == model.tasks
        for copy in (clone, loaded):
            for task, values in expected.items():
                np.testing.assert_allclose(outputs(copy, batch)[task], values, rtol=1e-5, atol=1e-7)


def test_every_export_serves_in_a_process_without_tfrec_onerec(simulated, tmp_path):
    spec, test, trained, _ = simulated
    batch = {k: test[k][:16] for k in spec.names}
    paths, expected = {}, {}
    for name, model in trained.items():
        paths[name] = str(export.export_saved_model(model, tmp_path / name, warmup_batch=batch))
        expected[name] = outputs(model, batch)
    records = [r.hex() for r in serialize_rows(batch, spec)]
    out = run_fresh("""
        import json, sys
        import tensorflow as tf
        payload = json.loads(sys.stdin.read())
        batch = {k: tf.constant(v, tf.float32 if k == "log_duration" else tf.int64)
                 for k, v in payload["batch"].items()}
        examples = tf.constant([bytes.fromhex(r) for r in payload["records"]])
        result = {}
        for name, path in payload["paths"].items():
            signatures = tf.saved_model.load(path).signatures
            names = set(signatures["predict"].structured_input_signature[1])
            result[name] = {k: v.numpy().reshape(-1).tolist()
                            for k, v in signatures["predict"](**{k: v for k, v in batch.items() if k in names}).items()}
            for signature in sorted(signatures):
                if signature.startswith("serving_") and signature != "serving_default":  # one task's alone
                    [(task, value)] = signatures[signature](examples=examples).items()
                    result[name][signature] = {task: value.numpy().reshape(-1).tolist()}
        print(json.dumps(result))
    """, {"paths": paths, "batch": {k: v.tolist() for k, v in batch.items()}, "records": records})
    for name in MULTI_TASK:
        per_task = {k: out[name].pop(k) for k in list(out[name]) if k.startswith("serving_")}
        assert sorted(out[name]) == sorted(expected[name]), name
        for task, values in expected[name].items():
            np.testing.assert_allclose(out[name][task], values, rtol=1e-5, atol=1e-6)
        assert sorted(per_task) == (["serving_click", "serving_conversion"] if name == "lt4rec" else []), name
        for signature, scores in per_task.items():
            [(task, values)] = scores.items()
            np.testing.assert_allclose(values, expected[name][task], rtol=1e-5, atol=1e-6)


def test_lt4rec_pruning_is_global_by_magnitude_and_follows_the_schedule():
    from tfrec_onerec.models.multitask.lt4rec import prune_masks, pruning_rate

    kernels = [np.array([[0.1, -0.5], [0.3, 0.0]]), np.array([[2.0, -0.2, 0.05]])]
    masks = [np.array([[1, 1], [1, 0]]), np.ones((1, 3))]  # 6 weights kept
    pruned = prune_masks(kernels, masks, 0.5)  # drop the 3 smallest kept magnitudes: 0.05, 0.1, 0.2
    np.testing.assert_array_equal(pruned[0], [[0, 1], [1, 0]])
    np.testing.assert_array_equal(pruned[1], [[1, 0, 0]])
    assert pruning_rate(0.2, 4) == pytest.approx(0.33126, abs=1e-5)
    density, mask = [], [np.ones((40, 50))]
    kernel = [np.random.default_rng(0).normal(size=(40, 50))]
    for _ in range(4):
        mask = prune_masks(kernel, mask, pruning_rate(0.2, 4))
        density.append(mask[0].mean())
    np.testing.assert_allclose(density, [0.669, 0.4475, 0.2995, 0.2], atol=1e-3)


@pytest.fixture(scope="module")
def lt4rec_trained():
    spec = known_funnel_spec()
    train, valid = known_funnel_columns(2000, 0), known_funnel_columns(500, 1)
    keras.utils.set_random_seed(0)
    model = models.get("lt4rec")(spec, FUNNEL, shared_units=(32, 16), pruning_rounds=2, final_density=0.25)
    model(known_funnel_columns(1, 3))
    initial = [numpy(layer.kernel) for layer in model.masked_layers]
    model, history = training.fit(lambda: model, columns_dataset(train, spec, FUNNEL, batch_size=128, shuffle=True),
                                  columns_dataset(valid, spec, FUNNEL, batch_size=500),
                                  config=training.TrainConfig(epochs=3, learning_rate=3e-3, verbose=0))
    return model, history, initial


def test_lt4rec_finds_a_mask_per_task_and_keeps_pruned_weights_at_zero(lt4rec_trained):
    model, history, initial = lt4rec_trained
    log = model.search_log
    assert [(e["task"], e["round"]) for e in log] == [(t, r) for t in FUNNEL for r in range(3)]
    np.testing.assert_allclose([e["density"] for e in log[:3]], [1.0, 0.5, 0.25], atol=2e-3)  # p = 1 - 0.25^(1/2)
    for k in range(2):  # each task keeps the mask of its best validation round
        best = max((e for e in log if e["task"] == FUNNEL[k]), key=lambda e: e["validation"])
        assert model.mask_density(k) == pytest.approx(best["density"], abs=2e-3)
    masks = [[numpy(layer.masks[k]) for layer in model.masked_layers] for k in range(2)]
    assert any((a != b).any() for a, b in zip(*masks)), "the tasks' masks are identical"
    for layer, start, m0, m1 in zip(model.masked_layers, initial, *masks):
        for k, mask in enumerate((m0, m1)):
            assert np.all(numpy(layer.masked_kernel(k))[mask == 0] == 0.0)
        unused = (m0 == 0) & (m1 == 0)  # masked for every task: never trained, still the initial value
        np.testing.assert_array_equal(numpy(layer.kernel)[unused], start[unused])
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert int(numpy(model.active_task)) == -1 and int(numpy(model.masks_searched)) == 1


def test_lt4rec_round_trips_without_searching_again(lt4rec_trained, tmp_path):
    model, _, _ = lt4rec_trained
    columns = known_funnel_columns(32, 5)
    batch = {k: v for k, v in columns.items() if k in model.input_names}
    model.save(tmp_path / "lt4rec.keras")
    loaded = keras.models.load_model(tmp_path / "lt4rec.keras")
    for task, values in outputs(model, batch).items():
        np.testing.assert_allclose(outputs(loaded, batch)[task], values, rtol=1e-5)
    assert loaded.mask_density(1) == pytest.approx(model.mask_density(1))
    loaded.compile(optimizer="adam")
    loaded.fit(columns_dataset(columns, model.feature_spec, FUNNEL, batch_size=32).map(
        lambda f, y: (f, {t: y[t] for t in FUNNEL})), epochs=1, verbose=0)
    assert loaded.search_log == []  # the masks were found already


def test_stan_beta_resampling_by_hand(funnel):
    spec, _, batch = funnel
    model = models.get("stan")(spec, FUNNEL)
    model(batch)
    assert [t.name for t in model.tasks] == ["click", "conversion", "click_preference", "conversion_preference"]
    assert model.tasks[2] == Task("click_preference", label="prior_click", kind="regression")
    users = np.array([1, 2, 1])
    preference = np.array([[0.5, 0.2], [0.0, 1.0], [1.0, 0.4]], np.float32)
    draws = numpy(model.resample(users, preference, training=True))
    assert draws.shape == (3, 2) and np.all((draws > 0) & (draws < 1))
    # User 1's examples count c = 1 then 2: alpha = 1 + 0.5 * 1 + 1.0 * 2, beta = 1 + 0.5 * 1 + 0.0 * 2.
    np.testing.assert_allclose(numpy(model.alpha)[1], [3.5, 1 + 0.2 + 0.8], rtol=1e-6)
    np.testing.assert_allclose(numpy(model.beta)[1], [1.5, 1 + 0.8 + 1.2], rtol=1e-6)
    np.testing.assert_allclose(numpy(model.alpha)[2], [1.0, 2.0], rtol=1e-6)  # user 2: c = 1
    np.testing.assert_allclose(numpy(model.counts)[:3], [0, 2, 1])
    means = numpy(model.resample(users, preference, training=False))  # evaluation: the Beta means, no update
    np.testing.assert_allclose(means[0], [3.5 / 5.0, 2.0 / 5.0], rtol=1e-6)
    np.testing.assert_allclose(numpy(model.counts)[:3], [0, 2, 1])


def test_lt4rec_with_an_optimizer_per_task_steps_each_with_its_own():
    spec, columns = known_funnel_spec(), known_funnel_columns(512, 0)
    keras.utils.set_random_seed(0)
    model, history = training.fit(
        lambda: models.get("lt4rec")(spec, FUNNEL, shared_units=(16,), pruning_rounds=1, final_density=0.5,
                                     optimizer_per_task=True),
        columns_dataset(columns, spec, FUNNEL, batch_size=128), config=training.TrainConfig(epochs=2, verbose=0))
    click, conversion = model.task_optimizers()
    assert click is model.optimizer
    # 4 batches an epoch; the search ends rewound, then 2 joint epochs: the tasks take turns.
    assert int(numpy(click.iterations)) == int(numpy(conversion.iterations)) == 4
    assert int(numpy(model.train_steps)) == 8
    assert model.get_config()["optimizer_per_task"] is True
    for k in range(2):  # without validation data each task keeps its last (most pruned) mask
        assert model.mask_density(k) == pytest.approx(0.5, abs=0.01)
    assert np.isfinite(history.history["loss"]).all()


def test_stan_counts_each_users_examples_of_a_batch_one_after_another():
    from tfrec_onerec.models.multitask.stan import rank_within_user

    rows = np.array([3, 1, 3, 2, 3, 1], np.int32)
    ranks = numpy(rank_within_user(rows))
    for user in (1, 2, 3):
        assert sorted(ranks[rows == user]) == list(range(1, (rows == user).sum() + 1))

"""The model-family contract, checked by hand on toy data (no model is trained here)."""
import time

import numpy as np
import pytest

from tfrec_onerec import families, models, training
from tfrec_onerec.families import FamilyData, ModelFamily, UnsupportedOption, generative, next_item, pointwise
from tfrec_onerec.families.base import BuiltData
from tfrec_onerec.features import Feature, FeatureSpec
from tfrec_onerec.features.spec import Task


# -- next_item: rows and full ranking -----------------------------------------------------------
def test_next_item_rows_of_two_users_by_hand():
    sequences = [np.array([1, 2, 3, 4, 5]), np.array([6, 7, 8])]
    times = [np.array([100.0, 160, 200, 230, 300]), np.array([7.0, 9, 20])]
    test = next_item.next_item_rows(sequences, times, cut=1, max_len=3)
    # the 3 items before the target (5, 8), the same shifted by one, and everything before the target
    np.testing.assert_array_equal(test["item_seq"], [[2, 3, 4], [6, 7, 0]])
    np.testing.assert_array_equal(test["next_item_seq"], [[3, 4, 5], [7, 8, 0]])
    np.testing.assert_array_equal(test["seen_item_ids"], [[1, 2, 3, 4], [6, 7, 0, 0]])
    np.testing.assert_array_equal(next_item.last_targets(test["next_item_seq"]), [5, 8])
    # the input items' times, from the first input item's
    np.testing.assert_array_equal(test["time_seq"], [[0, 40, 70], [0, 2, 0]])
    valid = next_item.next_item_rows(sequences, times, cut=2, max_len=3)  # targets 4 and 7
    np.testing.assert_array_equal(valid["item_seq"], [[1, 2, 3], [6, 0, 0]])
    np.testing.assert_array_equal(valid["next_item_seq"], [[2, 3, 4], [7, 0, 0]])
    np.testing.assert_array_equal(valid["seen_item_ids"], [[1, 2, 3], [6, 0, 0]])
    np.testing.assert_array_equal(next_item.last_targets(valid["next_item_seq"]), [4, 7])
    np.testing.assert_array_equal(valid["time_seq"], [[0, 60, 100], [0, 0, 0]])
    assert all(rows[k].dtype == np.int64 for rows in (test, valid) for k in rows if k != "time_seq")
    assert test["time_seq"].dtype == valid["time_seq"].dtype == np.float32


def test_full_ranking_metrics_by_hand():
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5],   # items 1..5
                       [0.1, 0.2, 0.3, 0.4, 0.5]])
    before = scores.copy()
    targets = np.array([3, 1])
    seen = np.array([[1, 3], [0, 0]])  # row 0: item 1 removed; item 3 is the target, so it stays
    found = next_item.full_ranking_metrics(scores, targets, seen, ks=(1, 2))
    ranks = np.array([2, 5])  # row 0: item 2 then item 3; row 1: item 1 scores lowest of five
    assert found == pytest.approx({"recall@1": 0.0, "ndcg@1": 0.0, "recall@2": 0.5, "ndcg@2": 0.5 / np.log2(3),
                                   "mrr": np.mean(1 / ranks), "users": 2}, abs=1e-12)
    assert found["users"] == 2 and isinstance(found["users"], int)
    np.testing.assert_array_equal(scores, before)  # the caller's scores are not changed
    # one (num_items,) row (popularity) broadcast to every user; ties: the lower item id first
    tie = next_item.full_ranking_metrics(np.ones(5), np.array([4]), np.array([[2]]), ks=(2, 3))
    assert tie["recall@2"] == 0.0 and tie["recall@3"] == 1.0 and tie["mrr"] == pytest.approx(1 / 3)  # 1, 3, then 4


def test_ranking_from_lists_by_hand():
    ranked = np.array([[5, 3, 0, 2], [1, 2, 3, 4], [7, 8, 9, 0]])
    targets = np.array([2, 4, 1])
    seen = np.array([[3, 0], [1, 4], [0, 0]])
    # row 0: 3 removed -> [5, 2], rank 2; row 1: 1 removed (4 is the target) -> [2, 3, 4], rank 3;
    # row 2: the target is not in the list -> a miss
    found = generative.ranking_from_lists(ranked, targets, seen, ks=(1, 2, 3))
    assert found == pytest.approx({"recall@1": 0.0, "ndcg@1": 0.0, "recall@2": 1 / 3, "ndcg@2": 1 / np.log2(3) / 3,
                                   "recall@3": 2 / 3, "ndcg@3": (1 / np.log2(3) + 1 / np.log2(4)) / 3,
                                   "mrr": (1 / 2 + 1 / 3) / 3, "users": 3}, abs=1e-12)


# -- options ----------------------------------------------------------------------------------
class ToyFamily(ModelFamily):
    name = "toy"
    data_options = {"max_len": 4, "seed": 0}
    train_defaults = {"epochs": 7, "batch_size": 64, "learning_rate": 0.5}


class ToyModel:
    training_defaults = {"batch_size": 32, "learning_rate": 0.25}


def test_train_config_precedence():
    family = ToyFamily()
    config = family.train_config(ToyModel, {"learning_rate": 0.125, "epochs": None, "seed": None})
    # TrainConfig() < family train_defaults < model training_defaults < given (None ignored)
    assert (config.epochs, config.batch_size, config.learning_rate) == (7, 32, 0.125)
    assert (config.early_stopping_patience, config.seed, config.strategy) == (2, 0, "none")  # TrainConfig's
    assert family.train_config().batch_size == 64 and family.train_config(object).learning_rate == 0.5
    assert ModelFamily().train_config() == training.TrainConfig()
    with pytest.raises(ValueError, match="Unknown training options \\['epoch'\\]"):
        family.train_config(ToyModel, {"epoch": 3})
    assert families.for_model("sasrec").train_config(models.get("sasrec")).epochs == 30
    assert families.for_model("onerec").train_config(models.get("onerec")).warmup_fraction == 0.05


def test_data_config_refuses_unknown_options_with_the_flag_name():
    family = families.get("next_item")
    with pytest.raises(UnsupportedOption, match="--negatives: not an option of the next_item family"):
        family.data_config("simulator", {"negatives": 2, "max_len": 5})
    with pytest.raises(UnsupportedOption, match="--eval-negatives, --session-len: .* next_item"):
        family.data_config("simulator", {"session_len": 2, "eval_negatives": 1})
    assert issubclass(UnsupportedOption, ValueError)
    config = family.data_config("simulator", {"negatives": None, "max_len": 5})  # None: not given
    assert config == {**family.data_options, "max_len": 5}
    with pytest.raises(UnsupportedOption, match=r"--window: not an option of the toy family \(it reads --max-len, --seed\)"):
        ToyFamily().data_config("x", {"window": 1, "seed": 2})
    # the pointwise family's defaults differ per data set
    point = families.get("pointwise")
    assert point.data_config("simulator")["negatives"] == 0 and point.data_config("movielens-100k")["negatives"] == 1


def test_for_model_of_every_registered_model():
    expected = {"din": "pointwise", "din_base": "pointwise", "dien": "pointwise", "sim": "pointwise",
                "sasrec": "next_item", "stamp": "next_item", "ticoserec": "next_item", "kuaishou_ebr": "next_item", "onerec": "generative", "onerec_reward": "session_outcome",
                "session_ltv": "session_value", "watchtime_marl": "session_value"}
    assert set(expected) <= set(models.list())
    for name in models.list():
        family = families.for_model(name)
        assert family.name == models.family_of(name) == expected.get(name, family.name)
        assert families.get(family.name) is family
        assert family.model_class(name) is models.get(name)
        assert family.datasets and family.headline_metric[0]
        other = next(f for f in families.names() if f != family.name)
        with pytest.raises(ValueError, match=f"belongs to the {family.name} family"):
            families.get(other).model_class(name)
    with pytest.raises(KeyError, match="families: ensemble_ranking, generative, next_item, pointwise, session_outcome, session_value"):
        families.get("nope")


# -- data -------------------------------------------------------------------------------------
TOY_SPEC = FeatureSpec([Feature("user_id", "categorical", vocab_size=9, group="user"),
                        Feature("hist", "sequence", max_len=3, vocab_size=9, group="history")],
                       labels=["click", "like"])
TOY_SPLITS = {split: {"user_id": np.arange(1, n + 1, dtype=np.int64),
                      "hist": np.arange(3 * n, dtype=np.int64).reshape(n, 3) % 9 + 1,
                      "click": np.arange(n) % 2, "like": (np.arange(n) % 3 == 0).astype(np.float32)}
              for split, n in (("train", 5), ("valid", 3), ("test", 4))}


class ToyDataFamily(ToyFamily):
    datasets = ("toy",)

    def build_data(self, dataset, options, data_path=None):
        return BuiltData(TOY_SPEC, TOY_SPLITS, {"default_tasks": ["click"]}, {"side.npz": {"a": np.arange(3)}})


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    return ToyDataFamily().prepare("toy", {"max_len": 3}, directory=tmp_path_factory.mktemp("toy"))


def test_prepare_and_family_data_columns(toy_data):
    assert toy_data.dataset_name == "toy" and toy_data.metadata["family"] == "toy"
    assert toy_data.metadata["options"] == {"max_len": 3, "seed": 0}
    assert [toy_data.examples(s) for s in ("train", "valid", "test")] == [5, 3, 4]
    for split, columns in TOY_SPLITS.items():
        found = toy_data.columns(split)
        assert sorted(found) == ["click", "hist", "like", "user_id"]
        for name, values in columns.items():
            np.testing.assert_array_equal(found[name], values)
    np.testing.assert_array_equal(toy_data.load_side_arrays("side.npz")["a"], np.arange(3))
    with pytest.raises(ValueError, match="no 'eval' split"):
        toy_data.records("eval", toy_data.spec)
    with pytest.raises(ValueError, match="holds data of the toy family; the pointwise family cannot read it"):
        families.get("pointwise").load(toy_data.side_dir)


def test_pointwise_tasks_refuse_a_missing_label_column(toy_data):
    family = families.get("pointwise")
    data = FamilyData(toy_data.spec, {**toy_data.metadata, "family": "pointwise"}, toy_data.files)
    assert family.tasks(data, None) == [Task("click")]  # the data set's default tasks
    assert family.tasks(data, [Task("click", label="like")]) == [Task("click", label="like")]
    with pytest.raises(ValueError, match=r"--task: the data has no label column \['rating'\]"):
        family.tasks(data, ["rating"])
    with pytest.raises(ValueError, match=r"no label column \['ltr'\]"):
        family.tasks(data, [{"name": "like", "label": "ltr"}])


def test_read_export_info_of_an_export_without_it_is_empty(tmp_path):
    import tensorflow as tf

    module = tf.Module()
    module.double = tf.function(lambda x: 2 * x, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "1"))
    assert (tmp_path / "1" / "saved_model.pb").is_file()
    assert families.read_export_info(tmp_path / "1") == {}
    assert families.read_export_info(str(tmp_path / "1") + "/") == {}


# -- training ---------------------------------------------------------------------------------
def test_step_timer_leaves_out_the_first_step_of_each_epoch(monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(time, "perf_counter", lambda: clock["now"])
    timer = training.StepTimer()
    assert np.isnan(timer.seconds_per_step())

    def step(batch, seconds):
        timer.on_train_batch_begin(batch)
        clock["now"] += seconds
        timer.on_train_batch_end(batch)
        clock["now"] += 100.0  # between steps: not timed

    for epoch_steps in ([50.0, 0.5, 0.25], [70.0, 0.75]):  # the first step of each epoch traces: slow
        timer.on_epoch_begin(0)
        for batch, seconds in enumerate(epoch_steps):
            step(batch, seconds)
        timer.on_test_batch_begin(0)  # validation is not a training step
        clock["now"] += 30.0
        timer.on_test_batch_end(0)
        timer.on_epoch_end(0)
    assert timer.step_seconds == [0.5, 0.25, 0.75]
    assert timer.seconds_per_step() == 0.5


def test_step_timer_credits_each_step_of_a_multi_step_call_its_share(monkeypatch):
    """With steps_per_execution 4, Keras reports calls of steps 0-3, 4-7, 8-9."""
    clock = {"now": 0.0}
    monkeypatch.setattr(time, "perf_counter", lambda: clock["now"])
    timer = training.StepTimer()
    for first, last, seconds in ((0, 3, 40.0), (4, 7, 2.0), (8, 9, 3.0)):
        timer.on_train_batch_begin(first)
        clock["now"] += seconds
        timer.on_train_batch_end(last)
    assert timer.step_seconds == [0.5] * 4 + [1.5] * 2  # the first call (tracing) is left out
    assert timer.seconds_per_step() == 0.5


def test_steps_per_execution_is_a_positive_integer():
    assert training.TrainConfig().steps_per_execution == 1
    with pytest.raises(ValueError, match="TrainConfig.steps_per_execution must be an integer >= 1, got 0"):
        training.TrainConfig(steps_per_execution=0)

"""The feature spec, the sequence convention, tf.Example round trips and input checks."""
import numpy as np
import pytest
import tensorflow as tf

from tfrec_onerec.features import Feature, FeatureSpec, Task
from tfrec_onerec.features.datasets import columns_dataset, tfrecord_dataset
from tfrec_onerec.features.parsing import check_features, pad_sequence, pad_sequences_numpy, parse_examples
from tfrec_onerec.features.tfrecord import serialize_rows, write_tfrecords


def small_spec(max_len=4):
    return FeatureSpec([
        Feature("user_id", "categorical", vocab_size=10, group="user"),
        Feature("price", "numeric", dim=2, group="item"),
        Feature("item_id", "categorical", vocab_size=20, vocab="item", group="item"),
        Feature("hist_item_id", "sequence", vocab_size=20, vocab="item", max_len=max_len, group="history",
                query="item_id"),
    ], labels=["click"])


def test_spec_config_round_trip_and_json():
    spec = small_spec()
    assert FeatureSpec.from_config(spec.get_config()) == spec
    assert FeatureSpec.from_json(spec.to_json()) == spec
    assert list(spec.vocabularies()) == ["user_id", "item"]
    assert spec["hist_item_id"].num_rows == 22 and spec["hist_item_id"].oov_id == 21


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="x", kind="bogus"), "kind must be one of"),
    (dict(name="x", kind="categorical"), "vocab_size >= 1"),
    (dict(name="x", kind="sequence", vocab_size=3), "max_len >= 1"),
])
def test_invalid_features_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Feature(**kwargs)


def test_shared_vocabulary_must_agree():
    with pytest.raises(ValueError, match="share vocabulary 'item'"):
        FeatureSpec([Feature("a", "categorical", vocab_size=5, vocab="item"),
                     Feature("b", "categorical", vocab_size=6, vocab="item")])


def test_query_must_share_vocabulary():
    with pytest.raises(ValueError, match="query 'user_id'"):
        FeatureSpec([Feature("user_id", "categorical", vocab_size=5),
                     Feature("h", "sequence", vocab_size=5, max_len=2, vocab="item", query="user_id")])


def test_task_defaults_label_and_rejects_unknown_kind():
    assert Task("click").label == "click"
    with pytest.raises(ValueError, match="kind must be one of"):
        Task("x", kind="listwise-ish")


def test_pad_sequence_keeps_newest_and_pads_right_including_empty_rows():
    ragged = tf.ragged.constant([[1, 2, 3, 4, 5, 6], [7], [], [8, 9, 10, 11]], dtype=tf.int64)
    padded = pad_sequence(ragged, 4).numpy()
    np.testing.assert_array_equal(padded, [[3, 4, 5, 6], [7, 0, 0, 0], [0, 0, 0, 0], [8, 9, 10, 11]])
    numpy_twin = pad_sequences_numpy([[1, 2, 3, 4, 5, 6], [7], [], [8, 9, 10, 11]], 4)
    np.testing.assert_array_equal(numpy_twin, padded)


def columns(n=5):
    rng = np.random.default_rng(0)
    hist = pad_sequences_numpy([list(range(1, k + 1)) for k in range(n)], 4)  # row 0: all padding
    return {"user_id": rng.integers(1, 11, n), "price": rng.random((n, 2)).astype(np.float32),
            "item_id": rng.integers(1, 21, n), "hist_item_id": hist, "click": rng.integers(0, 2, n).astype(float)}


def test_tfrecord_round_trip_equals_in_memory_columns(tmp_path):
    spec, cols = small_spec(), columns()
    write_tfrecords(str(tmp_path / "d.tfrecord"), cols, spec, ["click"], progress=False)
    from_file = list(tfrecord_dataset(str(tmp_path / "d.tfrecord"), spec, ["click"], batch_size=5))
    in_memory = list(columns_dataset(cols, spec, ["click"], batch_size=5))
    (xf, yf), (xm, ym) = from_file[0], in_memory[0]
    for name in spec.names:
        assert xf[name].dtype == xm[name].dtype
        np.testing.assert_allclose(xf[name].numpy(), xm[name].numpy())
    np.testing.assert_array_equal(xf["hist_item_id"].numpy()[0], [0, 0, 0, 0])
    np.testing.assert_allclose(yf["click"].numpy(), cols["click"])
    np.testing.assert_allclose(ym["click"].numpy(), cols["click"])


def test_missing_required_feature_in_example_names_it():
    spec = small_spec()
    cols = columns(2)
    without_item = FeatureSpec([spec["user_id"], spec["price"]])
    records = serialize_rows(cols, without_item)
    with pytest.raises(tf.errors.InvalidArgumentError, match="item_id"):
        parse_examples(tf.constant(records), spec)


def test_write_is_atomic_and_refuses_bad_columns(tmp_path):
    spec, cols = small_spec(), columns()
    path = tmp_path / "d.tfrecord"
    write_tfrecords(str(path), cols, spec, ["click"], progress=False)
    before = path.read_bytes()
    bad = dict(cols, hist_item_id=cols["hist_item_id"][:, :3])
    with pytest.raises(ValueError, match="'hist_item_id': expected per-row shape"):
        write_tfrecords(str(path), bad, spec, ["click"], progress=False)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d.tfrecord"]


def test_check_features_errors_name_feature_and_expectation():
    spec = small_spec()
    good = {k: v for k, v in columns(3).items() if k != "click"}
    checked = check_features(good, spec)
    assert checked["user_id"].dtype == tf.int64 and checked["price"].dtype == tf.float32
    with pytest.raises(ValueError, match="Missing feature 'item_id': expected int64 tensor of shape"):
        check_features({k: v for k, v in good.items() if k != "item_id"}, spec)
    with pytest.raises(ValueError, match="'user_id': expected integer ids .* got dtype float"):
        check_features(dict(good, user_id=good["user_id"].astype(np.float32)), spec)
    with pytest.raises(ValueError, match=r"'hist_item_id': expected .* \(rank 2\), got shape \(3,\)"):
        check_features(dict(good, hist_item_id=np.ones(3, np.int64)), spec)
    with pytest.raises(ValueError, match="'hist_item_id': .* max_len=4"):
        check_features(dict(good, hist_item_id=np.ones((3, 7), np.int64)), spec)
    with pytest.raises(ValueError, match="'price': expected numbers"):
        check_features(dict(good, price=np.array([["a", "b"]] * 3)), spec)

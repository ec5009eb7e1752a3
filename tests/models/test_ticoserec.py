"""TiCoSeRec: NT-Xent by hand, the loss as next-item plus weighted NT-Xent of the views, seeded
views drawn anew each epoch from training rows only, learning a known answer, round trips and an
export that serves without the package."""
import keras
import numpy as np
import pytest

from tfrec_onerec import families, models
from tfrec_onerec.data import sequences
from tfrec_onerec.data.time_augmentation import ItemSimilarity, augmented_views
from tfrec_onerec.models.sequence.sasrec import SASRec
from tfrec_onerec.models.sequence.ticoserec import nt_xent, with_augmented_views

from successor_world import (MAX_LEN, NUM_ITEMS, check_saved_and_served, full_ranking_and_popularity,
                             successor_split)


def numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def successor_data():
    return successor_split(300)


@pytest.fixture(scope="module")
def similarity(successor_data):
    windows = np.concatenate([successor_data.train_inputs, successor_data.train_targets], axis=1)
    return ItemSimilarity(NUM_ITEMS).fit(list(windows))


@pytest.fixture(scope="module")
def trained(successor_data, similarity):
    keras.utils.set_random_seed(0)
    model = models.get("ticoserec")(successor_data.spec(embedding_dim=32))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    batches = with_augmented_views(successor_data.train_dataset(batch_size=64, with_times=True), similarity)
    history = model.fit(batches, epochs=8, verbose=0)
    return model, history.history["loss"]


def end_aligned(ids, hidden):
    """Each row's outputs rolled so that its last real position comes last (released layout)."""
    last = [int(np.flatnonzero(row).max()) for row in ids]
    return np.stack([np.roll(h, MAX_LEN - 1 - i, axis=0) for h, i in zip(hidden, last)])


def test_nt_xent_by_hand():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[1.0, 1.0], [0.5, 0.0]])
    views, temperature = np.concatenate([a, b]), 0.5
    logits = views @ views.T / temperature
    expected = []
    for i, twin in enumerate([2, 3, 0, 1]):  # each view's positive is its twin; itself is left out
        others = np.delete(logits[i], i)
        expected.append(np.log(np.exp(others).sum()) - logits[i, twin])
    assert float(nt_xent(a, b, temperature)) == pytest.approx(np.mean(expected), rel=1e-6)
    # identical, well-separated views: the twin is found with certainty
    assert float(nt_xent(10 * np.eye(3), 10 * np.eye(3))) < 1e-3
    # cosine: the same on unit rows, whatever the norms
    unit = views / np.linalg.norm(views, axis=1, keepdims=True)
    assert float(nt_xent(3 * a, b, temperature, cosine=True)) == pytest.approx(
        float(nt_xent(unit[:2], unit[2:], temperature)), rel=1e-6)


def test_loss_is_next_item_plus_weighted_nt_xent_of_the_views():
    keras.utils.set_random_seed(3)
    spec = sequences.next_item_spec(NUM_ITEMS, MAX_LEN, embedding_dim=8)
    assert models.get("ticoserec")(spec).similarity == "cosine"  # the released code's dot product is an option
    model = models.get("ticoserec")(spec, dropout=0.0, contrastive_weight=0.25, temperature=2.0, similarity="dot")
    ids = np.zeros((3, MAX_LEN), np.int64)
    ids[0, :4], ids[1, :2], ids[2, :6] = [3, 4, 5, 6], [9, 10], [20, 21, 22, 23, 24, 25]
    view_a, view_b = ids.copy(), ids.copy()
    view_a[0, 1] = 0         # masked
    view_b[2, :3] = [23, 22, 21]  # reordered
    targets = np.where(ids > 0, ids + 1, 0)
    x = {"item_seq": ids, "item_seq_view_a": view_a, "item_seq_view_b": view_b}
    y_pred = model(x)
    next_item = numpy(SASRec.compute_loss(model, x, targets, y_pred))
    flat = [end_aligned(v, numpy(model({"item_seq": v}))).reshape(3, -1) for v in (view_a, view_b)]
    expected = next_item + 0.25 * float(nt_xent(flat[0], flat[1], 2.0))
    assert float(model.compute_loss(x, targets, y_pred)) == pytest.approx(expected, rel=1e-5)
    # validation reports the next-item loss alone, and needs no views
    assert float(model.compute_loss({"item_seq": ids}, targets, y_pred, training=False)) == pytest.approx(next_item)
    with pytest.raises(ValueError, match=r"augmented views \['item_seq_view_a', 'item_seq_view_b'\].*with_augmented_views"):
        model.compute_loss({"item_seq": ids}, targets, y_pred)
    # without augmentation the two views are the sequence itself (they differ by dropout only)
    plain = type(model).from_config({**model.get_config(), "augment": False})
    plain.build()
    plain.set_weights(model.get_weights())
    flat = end_aligned(ids, numpy(plain({"item_seq": ids}))).reshape(3, -1)
    assert float(plain.compute_loss({"item_seq": ids}, targets, y_pred)) == pytest.approx(
        next_item + 0.25 * float(nt_xent(flat, flat, 2.0)), rel=1e-5)
    # the last real position's output, by cosine
    last = type(model).from_config({**model.get_config(), "view_representation": "last", "similarity": "cosine"})
    last.build()
    last.set_weights(model.get_weights())
    users = [numpy(model.user_representation({"item_seq": v})) for v in (view_a, view_b)]
    assert float(last.compute_loss(x, targets, y_pred)) == pytest.approx(
        next_item + 0.25 * float(nt_xent(users[0], users[1], 2.0, cosine=True)), rel=1e-5)


def test_views_are_seeded_augmentations_drawn_anew_each_pass(successor_data, similarity):
    def first_batch_views(batches):
        features, _ = next(iter(batches))
        return numpy(features["item_seq"]), numpy(features["item_seq_view_a"]), numpy(features["item_seq_view_b"])

    plain = successor_data.train_dataset(batch_size=32, shuffle=False, with_times=True)
    batches = with_augmented_views(plain, similarity, seed=7)
    items, view_a, view_b = first_batch_views(batches)
    times = successor_data.train_times[:32]
    expected = augmented_views(items, times, np.random.default_rng(7), similarity)
    np.testing.assert_array_equal(view_a, expected[0])
    np.testing.assert_array_equal(view_b, expected[1])
    assert (view_a != items).any(axis=1).mean() > 0.5 and (view_a != view_b).any()
    # the second pass (epoch) draws new views of the same rows
    assert (first_batch_views(batches)[1] != view_a).any()
    with pytest.raises(ValueError, match="need the timestamps 'time_seq'"):
        first_batch_views(with_augmented_views(successor_data.train_dataset(batch_size=32), similarity))


def test_family_training_batches_draw_views_from_training_items_only():
    family = families.get("next_item")
    data = family.prepare("simulator", {"simulator_users": 300, "simulator_items": 60, "max_len": 10})
    config = family.train_config(models.get("ticoserec"), {"batch_size": 4096})
    read = []
    columns = data.columns
    data.columns = lambda split: read.append(split) or columns(split)
    features, _ = next(iter(family.training_batches(models.get("ticoserec"), data, config, {})))
    assert read == ["train"]  # the item similarity never sees validation or test rows
    assert sorted(features) == ["item_seq", "item_seq_view_a", "item_seq_view_b"]
    train = columns("train")
    training_items = set(np.unique(np.concatenate([train["item_seq"], train["next_item_seq"]], axis=1)))
    for view in ("item_seq_view_a", "item_seq_view_b"):
        assert set(np.unique(numpy(features[view]))) <= training_items | {0}
    sasrec_batches = family.training_batches(models.get("sasrec"), data, config, {})
    assert sorted(next(iter(sasrec_batches))[0]) == ["item_seq", "time_seq"]


def test_learns_successors_and_beats_popularity(trained, successor_data):
    model, losses = trained
    assert losses[-1] < losses[0] * 0.75
    test, popularity = full_ranking_and_popularity(model, successor_data)
    assert test["recall@10"] > 0.9 and popularity["recall@10"] < 0.35


def test_round_trips_and_serves_without_the_package(trained, successor_data, tmp_path):
    model, _ = trained
    loaded = check_saved_and_served(model, successor_data.inputs("test")[:4], tmp_path)
    assert loaded.similarity == "cosine" and loaded.augment


def test_refuses_bad_weights():
    spec = sequences.next_item_spec(NUM_ITEMS, MAX_LEN, embedding_dim=8)
    with pytest.raises(ValueError, match="contrastive_weight must be >= 0 and temperature > 0"):
        models.get("ticoserec")(spec, temperature=0.0)
    with pytest.raises(ValueError, match="view_representation must be one of .* got 'mean' and 'cosine'"):
        models.get("ticoserec")(spec, view_representation="mean")

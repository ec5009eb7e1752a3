"""NeighbourEnhancedDNN: the offline neighbour sets by hand, leak-free building from the training
split, tail items learned through their neighbours, round trips, a package-free export, errors."""
import keras
import numpy as np
import pytest

from tfrec_onerec import families, models, training
from tfrec_onerec.features.datasets import columns_dataset
from tfrec_onerec.metrics import auc
from tfrec_onerec.models.onerec_series.neighbours import Interactions, build_neighbours, top_k

from fresh_process import check_ranker_round_trip
from neighbour_world import HEAD, NUM_ITEMS, NUM_USERS, neighbour_world

NO_NEIGHBOURS = {"user_neighbour_types": [], "item_neighbour_types": []}


def features_only(columns):
    return {k: v for k, v in columns.items() if k != "click"}


def hand_made_interactions():
    """Users 1..4 (profiles: 1, 2 -> (1, 1); 3 -> (1, 1); 4 -> (2, 1)), items 1..5 (categories
    1, 1, 2, 2, 1). Clicks: u1 {1, 2, 3}, u2 {1, 2}, u3 {3, 4}, u4 {5}; u4's click on 2 is a
    non-click row and does not count."""
    rows = [(1, 1, 1), (1, 2, 1), (1, 3, 1), (2, 1, 1), (2, 2, 1), (3, 3, 1), (3, 4, 1), (4, 5, 1), (4, 2, 0)]
    users, items, click = (np.array(c) for c in zip(*rows))
    category = np.array([0, 1, 1, 2, 2, 1])[items]
    gender = np.array([0, 1, 1, 1, 2])[users]
    return Interactions({"user_id": users, "item_id": items, "item_cat": category, "gender": gender, "click": click},
                        "user_id", "item_id", "item_cat", ["gender"], num_users=5, num_items=6, num_categories=2)


def test_top_k_orders_by_similarity_then_activity_then_id_and_skips_self_and_zeros():
    similarity = np.array([[0, 0, 0, 0], [0, 1, 0.5, 0.5], [0, 0.5, 1, 0.0], [0, 0.5, 0.0, 1]])
    activity = np.array([0, 1, 1, 3])
    np.testing.assert_array_equal(top_k(similarity, activity, 2), [[0, 0], [3, 2], [1, 0], [1, 0]])


def test_neighbour_sets_by_hand():
    tables = build_neighbours(hand_made_interactions(), ["profile", "interest", "collaborative", "category"], 2)
    # Profile (gender): users 1, 2, 3 share gender 1; activity u1 3, u2 2, u3 2 (ties: smaller id).
    np.testing.assert_array_equal(tables["profile"][1:5], [[2, 3], [1, 3], [1, 2], [0, 0]])
    # Interest: category counts u1 (2, 1), u2 (2, 0), u3 (0, 2), u4 (1, 0); cosine u1-u2 0.894,
    # u1-u3 0.447, u1-u4 0.894 (tie with u2: u2 is more active), u2-u4 1, u3 shares nothing with u2/u4.
    np.testing.assert_array_equal(tables["interest"][1:5], [[2, 4], [4, 1], [1, 0], [2, 1]])
    # Item CF: item 1 {u1, u2}, 2 {u1, u2}, 3 {u1, u3}, 4 {u3}, 5 {u4}; cosine 1-2 = 1, 1-3 = 0.5,
    # 3-4 = 0.707; item 5 shares no user; row 6 (never clicked) and row 0 are empty.
    np.testing.assert_array_equal(tables["collaborative"][1:7], [[2, 3], [1, 3], [4, 1], [3, 0], [0, 0], [0, 0]])
    # Category: the most clicked other items of the same category (1: items 1, 2, 5; 2: items 3, 4).
    np.testing.assert_array_equal(tables["category"][1:7], [[2, 5], [1, 5], [4, 0], [3, 0], [1, 2], [0, 0]])


def test_knowledge_neighbours_by_hand():
    """Items 1..5 and their entities: 1 {a, b, c}, 2 {a, b}, 3 {c, d}, 4 {d}, 5 {e}; entity a is
    held by items 1 and 2 only, b by 1 and 2, c by 1 and 3, d by 3 and 4; e by item 5 alone (it
    ties nothing and is dropped). IDF weights are equal (each shared entity held by two of the
    seven rows), so the similarity is the plain cosine of the shared-entity sets."""
    entities = {"item_id": np.array([1, 1, 1, 2, 2, 3, 3, 4, 5, 2]), "entity": np.array([1, 2, 3, 1, 2, 3, 4, 4, 5, 1])}
    data = Interactions({"user_id": np.array([1, 1, 1]), "item_id": np.array([1, 3, 3])}, "user_id", "item_id", None,
                        [], num_users=1, num_items=6, item_entities=entities)
    table = build_neighbours(data, ["knowledge"], 2)["knowledge"]
    # cos(1, 2) = 2 / sqrt(3 * 2) = 0.816; cos(1, 3) = 1 / sqrt(6) = 0.408; cos(3, 4) = 1 / sqrt(2) = 0.707;
    # items 5 and 6 share nothing; the duplicate pair (2, a) counts once.
    np.testing.assert_array_equal(table[1:7], [[2, 3], [1, 0], [4, 1], [3, 0], [0, 0], [0, 0]])
    with pytest.raises(ValueError, match="'knowledge' neighbours need a knowledge graph"):
        build_neighbours(hand_made_interactions(), ["knowledge"], 2)


def test_unknown_type_and_missing_category_name_the_problem():
    with pytest.raises(ValueError, match=r"unknown neighbour type\(s\) \['friends'\]"):
        build_neighbours(hand_made_interactions(), ["friends"], 2)
    no_category = Interactions({"user_id": np.array([1]), "item_id": np.array([1])}, "user_id", "item_id", None,
                               [], num_users=1, num_items=1)
    with pytest.raises(ValueError, match="'interest' neighbours need an item category feature"):
        build_neighbours(no_category, ["interest"], 2)


def fit(spec, train, **hyperparameters):
    keras.utils.set_random_seed(0)
    model, _ = training.fit(
        lambda: models.get("neighbour_enhanced_dnn")(spec, ["click"], mlp_units=(32, 16), **hyperparameters),
        columns_dataset(train, spec, ["click"], batch_size=128, shuffle=True),
        config=training.TrainConfig(epochs=5, learning_rate=3e-3, verbose=0))
    return model


@pytest.fixture(scope="module")
def world():
    spec, train, test = neighbour_world(0)
    interactions = Interactions(train, "user_id", "item_id", "item_cat", ["segment"], NUM_USERS, NUM_ITEMS)
    return spec, train, test, build_neighbours(interactions, ["profile", "collaborative"], 10)


@pytest.fixture(scope="module")
def trained(world):
    spec, train, _, neighbours = world
    return fit(spec, train, user_neighbour_types=["profile"], item_neighbour_types=["collaborative"],
               neighbours=neighbours)


def test_tail_items_are_learned_through_their_collaborative_neighbours(world, trained):
    """Tail items have two training rows each and a noise category: their cluster shows only in
    the head items their fans also clicked. The ranker without neighbours stays well below."""
    spec, train, test, _ = world
    plain = fit(spec, train, **NO_NEIGHBOURS)
    scores = {name: model.predict(features_only(test), batch_size=1024, verbose=0)["click"].reshape(-1)
              for name, model in (("neighbours", trained), ("plain", plain))}
    assert test["item_id"].min() > HEAD  # every test candidate is a tail item
    with_neighbours, without = auc(test["click"], scores["neighbours"]), auc(test["click"], scores["plain"])
    assert with_neighbours > 0.97
    assert without < with_neighbours - 0.05


def test_the_item_vector_reads_the_neighbour_table(world, trained):
    spec, train, test, neighbours = world
    batch = {k: v[:64] for k, v in features_only(test).items()}
    table = trained.sides["item"]["table"]
    before = keras.ops.convert_to_numpy(trained(batch)["click"])
    saved = keras.ops.convert_to_numpy(table)
    table.assign(np.zeros_like(saved))
    after = keras.ops.convert_to_numpy(trained(batch)["click"])
    table.assign(saved)
    assert not np.allclose(before, after)
    np.testing.assert_array_equal(trained.neighbour_tables()["collaborative"], neighbours["collaborative"])


def test_round_trips_keep_the_tables_and_serve_without_the_package(world, trained, tmp_path):
    _, _, test, neighbours = world
    loaded = check_ranker_round_trip(trained, {k: v[:16] for k, v in features_only(test).items()}, tmp_path)
    np.testing.assert_array_equal(loaded.neighbour_tables()["profile"], neighbours["profile"])
    assert loaded.user_neighbour_types == ["profile"] and loaded.attention


def test_bad_configurations_name_the_problem(world):
    spec, _, _, neighbours = world
    build = models.get("neighbour_enhanced_dnn")
    with pytest.raises(ValueError, match=r"unknown item neighbour type\(s\) \['profile'\]"):
        build(spec, item_neighbour_types=["profile"])
    with pytest.raises(ValueError, match=r"no table for the user type\(s\) \['interest'\]"):
        build(spec, item_neighbour_types=[], neighbours={"profile": neighbours["profile"]})
    with pytest.raises(ValueError, match=r"'collaborative' neighbour table must be \(vocab_size \+ 1 = 81, "
                                         r"num_neighbours = 5\); got \(81, 10\)"):
        build(spec, user_neighbour_types=[], item_neighbour_types=["collaborative"], num_neighbours=5,
              neighbours=neighbours)


def test_the_family_builds_the_neighbours_from_the_training_split_only():
    family = families.for_model("neighbour_enhanced_dnn")
    data = family.prepare("movielens-100k")
    read = []
    columns = data.columns
    data.columns = lambda split: read.append(split) or columns(split)
    given = family.model_hyperparameters(models.get("neighbour_enhanced_dnn"), data,
                                         {"item_neighbour_types": ["category"], "num_neighbours": 4})
    assert read == ["train"]  # validation and test rows are never read
    # MovieLens-100K has a knowledge graph: its neighbours are a switch (item side data only).
    with_graph = family.model_hyperparameters(models.get("neighbour_enhanced_dnn"), data,
                                              {"item_neighbour_types": ["knowledge"], "num_neighbours": 4})
    knowledge = with_graph["neighbours"]["knowledge"]
    assert (knowledge[1:, 0] > 0).mean() > 0.9 and knowledge.shape == (1683, 4)
    train = columns("train")
    interactions = Interactions(train, "user_id", "item_id", "item_genre", ["gender", "age", "occupation"], 943, 1682,
                                19)
    expected = build_neighbours(interactions, ["profile", "interest", "category"], 4)
    assert sorted(given["neighbours"]) == ["category", "interest", "profile"]
    for name, table in expected.items():
        np.testing.assert_array_equal(given["neighbours"][name], table)
    profile = {c: np.zeros(944, np.int64) for c in ("gender", "age", "occupation")}
    for c in profile:
        profile[c][train["user_id"]] = train[c]
    neighbours = given["neighbours"]["profile"][1:]
    real = neighbours > 0
    for c in profile:  # static neighbours share the whole profile
        assert np.all(profile[c][neighbours][real] == np.repeat(profile[c][1:, None], 4, axis=1)[real])

"""Social4Rec: relation attention and the loss by hand, cold users learned through their social
circles, the plain two-tower switch, leak-free offline interests, round trips and a package-free export."""
import keras
import numpy as np
import pytest

from tfrec_onerec import families, models, training
from tfrec_onerec.features.datasets import columns_dataset
from tfrec_onerec.metrics import auc
from tfrec_onerec.models.onerec_series.social4rec import squared_hinge_auc

from fresh_process import check_ranker_round_trip
from known_answer import MAX_LEN, NUM_CATEGORIES as CLUSTERS, NUM_ITEMS as ITEMS, category, known_answer_spec

USERS = 500  # the known-answer spec's user vocabulary
WARM = 400  # users 1..400 have training rows; 401..500 are cold: no row, no history


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def cold_world(seed=0):
    """``(spec, train, cold_test, relation_interests)``: a user clicks items of its taste
    cluster. Warm users train with histories of their taste; cold users are tested with empty
    histories. Relation 1's interest vector is the user's taste (its circle shares it),
    relation 2's a random cluster (a circle that tells nothing)."""
    rng = np.random.default_rng(seed)
    taste = rng.integers(1, CLUSTERS + 1, USERS + 1)

    def rows(users, history: bool):
        n = len(users)
        candidates = rng.integers(1, ITEMS + 1, n)
        hist = rng.integers(0, ITEMS // CLUSTERS, (n, MAX_LEN)) * CLUSTERS + taste[users][:, None]
        hist = hist if history else np.zeros_like(hist)
        return {"user_id": users, "item_id": candidates, "item_cat": category(candidates), "hist_item_id": hist,
                "hist_cat": category(hist), "click": (category(candidates) == taste[users]).astype(np.float32)}

    train = rows(np.repeat(np.arange(1, WARM + 1), 20), history=True)
    test = rows(rng.integers(WARM + 1, USERS + 1, 3000), history=False)
    interests = np.zeros((USERS + 1, 2, CLUSTERS + 1), np.float32)
    interests[np.arange(1, USERS + 1), 0, taste[1:]] = 1.0
    interests[np.arange(1, USERS + 1), 1, rng.integers(1, CLUSTERS + 1, USERS)] = 1.0
    return known_answer_spec(), train, test, interests


def fit(spec, train, **hyperparameters):
    keras.utils.set_random_seed(0)
    model, _ = training.fit(lambda: models.get("social4rec")(spec, ["click"], **hyperparameters),
                            columns_dataset(train, spec, ["click"], batch_size=128, shuffle=True),
                            config=training.TrainConfig(epochs=6, learning_rate=3e-3, verbose=0))
    return model


@pytest.fixture(scope="module")
def world():
    return cold_world()


@pytest.fixture(scope="module")
def trained(world):
    spec, train, _, interests = world
    return fit(spec, train, relation_interests=interests)


def features_only(columns):
    return {k: v for k, v in columns.items() if k != "click"}


def test_cold_users_are_ranked_through_their_social_circle(world, trained):
    """Cold users have no training row and no history: the plain two-tower model can only guess
    (AUC near 0.5); Social4Rec reads their circle's interest. (The relation weights stay near
    uniform here: the projections alone can drop the uninformative relation.)"""
    spec, train, test, _ = world
    plain = fit(spec, train, social=False)
    scores = {name: model.predict(features_only(test), batch_size=1024, verbose=0)["click"].reshape(-1)
              for name, model in (("social", trained), ("plain", plain))}
    assert auc(test["click"], scores["plain"]) < 0.6
    assert auc(test["click"], scores["social"]) > 0.9
    alpha, _ = trained.relation_weights({k: v[:500] for k, v in features_only(test).items()})
    np.testing.assert_allclose(numpy(alpha).sum(axis=1), 1.0, rtol=1e-5)


def test_relation_attention_by_hand_and_a_missing_relation_gets_no_weight(world):
    spec, _, _, interests = world
    model = models.get("social4rec")(spec, relation_interests=interests, attention_units=2)
    batch = {"user_id": np.array([1, 2]), "item_id": np.array([1, 2]), "item_cat": np.array([1, 2]),
             "hist_item_id": np.zeros((2, MAX_LEN), np.int64), "hist_cat": np.zeros((2, MAX_LEN), np.int64)}
    model(batch)
    table = np.zeros_like(interests)
    table[1, 0, 1], table[1, 1, 2] = 1.0, 1.0  # user 1: both relations
    table[2, 0, 3] = 1.0  # user 2: relation 1 only
    model.interest_table.assign(table)
    projection = np.zeros((2, CLUSTERS + 1, 2), np.float32)
    projection[0, 1] = [1.0, 0.0]  # W_1 maps cluster 1 to (1, 0)
    projection[1, 2] = [0.0, 2.0]  # W_2 maps cluster 2 to (0, 2)
    model.relation_projection.assign(projection)
    user = numpy(model.user_projection(keras.ops.concatenate([model.embedding.embed("user_id", batch["user_id"])],
                                                                axis=-1)))
    alpha, projected = (numpy(x) for x in model.relation_weights(batch))
    e = np.tanh([user[0] @ [1.0, 0.0], user[0] @ [0.0, 2.0]])
    np.testing.assert_allclose(alpha[0], np.exp(e) / np.exp(e).sum(), rtol=1e-5)
    np.testing.assert_allclose(alpha[1], [1.0, 0.0])  # user 2 has no relation-2 interest
    np.testing.assert_allclose(projected[0], [[1.0, 0.0], [0.0, 2.0]])


def test_loss_by_hand():
    labels = np.array([1.0, 0.0, 0.0, 1.0])
    scores = np.array([0.2, 0.5, -0.1, 0.6])
    # Pairs (positive, negative) in the wrong order: (0.2, 0.5) only -> 0.3^2 over 4 pairs.
    assert float(numpy(squared_hinge_auc(labels, scores, 0.0))) == pytest.approx(0.09 / 4)
    # Margin 0.5: gaps -0.3, 0.3, 0.1, 0.7 -> 0.8^2 + 0.2^2 + 0.4^2 + 0.
    assert float(numpy(squared_hinge_auc(labels, scores, 0.5))) == pytest.approx((0.64 + 0.04 + 0.16) / 4, rel=1e-5)
    model = models.get("social4rec")(known_answer_spec(), social=False)
    probabilities = keras.ops.sigmoid(model.scale * np.array([0.2, 0.5, -0.1, 0.6], np.float32) + model.bias)
    loss = float(numpy(model.compute_loss(y={"click": labels}, y_pred={"click": probabilities})))
    p = 1 / (1 + np.exp(-5 * scores))
    weights = np.where(labels > 0, 1.0, 0.5)
    cross_entropy = np.sum(weights * -(labels * np.log(p) + (1 - labels) * np.log(1 - p))) / weights.sum()
    assert loss == pytest.approx(cross_entropy * (1 + 0.09 / 4), rel=1e-4)


def test_round_trips_keep_the_interests_and_serve_without_the_package(world, trained, tmp_path):
    _, _, test, interests = world
    loaded = check_ranker_round_trip(trained, {k: v[:16] for k, v in features_only(test).items()}, tmp_path)
    np.testing.assert_array_equal(numpy(loaded.interest_table), interests)
    assert loaded.social and loaded.num_relations == 2


def test_bad_configurations_name_the_problem(world):
    spec, _, _, interests = world
    build = models.get("social4rec")
    with pytest.raises(ValueError, match="needs `relation_interests`"):
        build(spec)
    with pytest.raises(ValueError, match=r"must have vocab_size \+ 1 = 501 rows \(one per user_id\); got 3"):
        build(spec, relation_interests=interests[:3])
    with pytest.raises(ValueError, match=r"scores one binary task; got \['click', 'like'\]"):
        build(spec, ["click", "like"], social=False)


def test_the_family_builds_the_interests_from_training_clicks_and_the_social_graph():
    family = families.for_model("social4rec")
    data = family.prepare("movielens-100k")
    read = []
    columns = data.columns
    data.columns = lambda split: read.append(split) or columns(split)
    given = family.model_hyperparameters(models.get("social4rec"), data, {"num_groups": 5})
    assert read == ["train"]  # validation and test rows are never read
    table = given["relation_interests"]
    assert table.shape == (944, 3, 20) and "num_groups" not in given
    assert np.all(table[0] == 0)
    np.testing.assert_allclose(table[1:].sum(axis=-1), 1.0, rtol=1e-5)  # means of click distributions
    assert family.model_hyperparameters(models.get("social4rec"), data, {"social": False}) == {"social": False}

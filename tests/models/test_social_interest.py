"""Social4Rec's offline social-interest extractor: interests, relation features, the
self-organising map and its groups, relation interests, by hand and on planted structure."""
import numpy as np
import pytest

from tfrec_onerec.data import simulator
from tfrec_onerec.models.onerec_series.social_interest import (SelfOrganisingMap, category_interests,
                                                               relation_features, relation_interests, social_groups)


def test_category_interests_by_hand():
    interests = category_interests([1, 1, 1, 2, 0], [1, 2, 2, 3, 1], num_users=3, num_categories=3)
    np.testing.assert_allclose(interests, [[0, 0, 0, 0], [0, 1 / 3, 2 / 3, 0], [0, 0, 0, 1], [0, 0, 0, 0]])


def test_relation_features_average_each_relations_neighbours():
    interests = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # Relation 1: 1-2, 1-3; relation 2: 2-3. User 1's relation-2 segment has no neighbour.
    features = relation_features([1, 1, 2], [2, 3, 3], [1, 1, 2], interests, num_relations=2)
    np.testing.assert_allclose(features[1], [[0.5, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(features[2], [[1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(features[3], [[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(features[0], 0.0)


def test_one_map_update_by_hand():
    som = SelfOrganisingMap(1, 2, radius=1.0, learning_rate=0.5, decay_steps=1)
    som.prototypes = np.array([[0.0, 0.0], [2.0, 2.0]])
    assert som.update(np.array([0.5, 0.0])) == 0
    # Winner (node 0) moves half-way; node 1, one grid step away, by 0.5 * exp(-1/2).
    pull = 0.5 * np.exp(-0.5)
    np.testing.assert_allclose(som.prototypes, [[0.25, 0.0], [2.0 + pull * (0.5 - 2.0), 2.0 - pull * 2.0]])
    assert som.rates() == (0.5, pytest.approx(0.05))  # one decay: radius halved, rate x 0.1


def test_groups_separate_planted_social_circles():
    rng = np.random.default_rng(0)
    centres = np.array([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]])
    planted = np.repeat(np.arange(3), 60)
    features = centres[planted] + 0.3 * rng.normal(size=(180, 3))
    groups = social_groups(features, num_groups=3, grid=(6, 6), seed=0)
    for circle in range(3):  # each circle falls in one group, and the groups differ
        assert len(np.unique(groups[planted == circle])) == 1
    assert len(np.unique(groups)) == 3


def test_relation_interests_by_hand():
    # Users 0..3 in group 0, user 4 alone in group 1; one relation whose segment is 1-d.
    features = np.array([[[0.0]], [[1.0]], [[5.0]], [[6.0]], [[0.0]]])
    interests = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 1.0], [9.0, 9.0]])
    out = relation_interests(features, interests, np.array([0, 0, 0, 0, 1]), k=2)
    np.testing.assert_allclose(out[0, 0], (interests[1] + interests[2]) / 2)  # nearest: 1 (d 1), 2 (d 25)
    np.testing.assert_allclose(out[2, 0], (interests[3] + interests[1]) / 2)  # nearest: 3 (d 1), 1 (d 16)
    np.testing.assert_array_equal(out[4], 0.0)  # alone in its group


def test_close_relations_carry_a_users_interest_and_the_follow_relation_does_not():
    """On the simulator's graph, a user's interest per relation (from the other users of its
    group nearest in that relation) tracks its own interest in the order of the relations'
    homophily: family above colleague above follow."""
    world = simulator.simulate(simulator.SimulatorConfig(seed=0, num_users=1500, num_items=300))
    log = world.interactions[world.interactions["click"] == 1]
    category = world.items["category"].to_numpy()[log["item_id"].to_numpy() - 1]
    interests = category_interests(log["user_id"], category, 1500, world.config.num_categories)
    edges = world.social_relations
    features = relation_features(edges["src"], edges["dst"], edges["relation"], interests, 4)
    groups = social_groups(features[1:].reshape(1500, -1), num_groups=20, seed=0)
    per_relation = relation_interests(features[1:], interests[1:], groups, k=20)

    def agreement(r):
        a, b = interests[1:], per_relation[:, r]
        return np.mean((a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12))
    family, colleague, follow = agreement(1), agreement(2), agreement(3)  # measured 0.485, 0.456, 0.425
    assert family > colleague + 0.01 and colleague > follow + 0.01

"""Numpy clustering: balanced assignment, k-means, residual k-means."""
import numpy as np
import pytest
from clustered_points import blobs

from tfrec_onerec.clustering import (balanced_assignment, kmeans, reconstruction_errors, residual_kmeans,
                                     residual_quantize, residual_reconstruct, squared_distances)


def inertia(x, assignment):
    return sum(((x[assignment == k] - x[assignment == k].mean(0)) ** 2).sum() for k in np.unique(assignment))


# -- balanced assignment and k-means ----------------------------------------------------------
def test_balanced_assignment_by_hand():
    # Points 0, 1, 2, 10 on a line, centroids at 0 and 10. Nearest-centroid puts three points in
    # cluster 0; with two places each, the points that would lose most (largest regret: 0 then 1)
    # stay, and point 2 moves to cluster 1 (total cost 0 + 1 + 64 + 0, the optimum).
    x = np.array([[0.0], [1.0], [2.0], [10.0]])
    distances = squared_distances(x, np.array([[0.0], [10.0]]))
    np.testing.assert_allclose(distances, [[0, 100], [1, 81], [4, 64], [100, 0]])
    np.testing.assert_array_equal(balanced_assignment(distances), [0, 0, 1, 1])


@pytest.mark.parametrize("n, k", [(60, 6), (61, 6), (67, 8), (5, 8), (8, 8)])
def test_balanced_assignment_sizes_differ_by_at_most_one(n, k):
    distances = np.random.default_rng(n * k).random((n, k)) ** 3  # skewed: many points prefer few clusters
    sizes = np.bincount(balanced_assignment(distances), minlength=k)
    assert sizes.sum() == n
    assert set(sizes) <= {n // k, n // k + 1} and (sizes == n // k + 1).sum() == n % k


def test_balanced_kmeans_gives_equal_clusters_and_beats_random_assignment():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(240, 8)) * np.linspace(0.5, 2.0, 8)
    fit = kmeans(x, 12, balanced=True, seed=0)
    np.testing.assert_array_equal(np.bincount(fit.assignment, minlength=12), np.full(12, 20))
    np.testing.assert_allclose(fit.inertia, inertia(x, fit.assignment))
    random_inertias = [inertia(x, rng.permutation(np.arange(240) % 12)) for _ in range(20)]
    assert fit.inertia < 0.7 * min(random_inertias)
    np.testing.assert_array_equal(kmeans(x, 12, balanced=True, seed=0).assignment, fit.assignment)  # seeded


@pytest.mark.parametrize("balanced", [True, False])
def test_kmeans_recovers_well_separated_clusters(balanced):
    centres = np.eye(5) * 10.0
    x, labels = blobs(30, centres, noise=0.5)
    fit = kmeans(x, 5, balanced=balanced, seed=3)
    # Each true cluster is exactly one found cluster (a permutation of the labels).
    pairs = set(zip(labels.tolist(), fit.assignment.tolist()))
    assert len(pairs) == 5 and len({p for _, p in pairs}) == 5
    np.testing.assert_allclose(np.sort(fit.centroids, axis=0), np.sort(centres, axis=0), atol=0.3)


def test_kmeans_refuses_bad_arguments():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="num_clusters"):
        kmeans(x, 5)
    with pytest.raises(ValueError, match=r"x must be \(n, d\)"):
        kmeans(np.zeros(4), 2)
    with pytest.raises(ValueError, match="NaN"):
        kmeans(np.full((4, 2), np.nan), 2)
    with pytest.raises(ValueError, match="codebook_size"):
        residual_kmeans(x, 2, [2, 2, 2])


# -- residual k-means ------------------------------------------------------------------------
@pytest.mark.parametrize("balanced", [True, False])
def test_residual_levels_reduce_the_reconstruction_error(balanced):
    x = np.random.default_rng(2).normal(size=(256, 16))
    fit = residual_kmeans(x, 4, 8, balanced=balanced, seed=0)
    assert fit.codes.shape == (256, 4) and len(fit.codebooks) == 4
    total_variance = ((x - x.mean(0)) ** 2).sum(1).mean()
    errors = fit.errors
    assert errors[0] < total_variance and (np.diff(errors) < 0).all(), errors
    # The reported errors are the distances to the sums of the chosen centroids.
    for level in range(1, 5):
        expected = ((x - fit.reconstruct(levels=level)) ** 2).sum(1).mean()
        np.testing.assert_allclose(errors[level - 1], expected)
    if balanced:
        for level in range(4):
            np.testing.assert_array_equal(np.bincount(fit.codes[:, level], minlength=8), np.full(8, 32))


def test_residual_quantize_and_reconstruct_by_hand():
    codebooks = [np.array([[0.0, 0.0], [4.0, 4.0]]), np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])]
    x = np.array([[5.0, 4.2], [0.1, 0.9], [3.0, 4.0]])
    codes = residual_quantize(x, codebooks)
    np.testing.assert_array_equal(codes, [[1, 0], [0, 1], [1, 2]])
    np.testing.assert_allclose(residual_reconstruct(codes, codebooks), [[5, 4], [0, 1], [3, 4]])
    np.testing.assert_allclose(reconstruction_errors(x, codes, codebooks),
                               [np.mean([1 + 0.04, 0.01 + 0.81, 1]), np.mean([0.04, 0.02, 0])])

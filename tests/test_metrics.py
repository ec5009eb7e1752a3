"""Metrics against hand-computed cases and brute-force numpy references."""
import itertools

import numpy as np
import pytest

from tfrec_onerec import metrics


def brute_force_auc(labels, scores):
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_by_hand_with_ties():
    # pairs (pos, neg): (0.8>0.3)=1, (0.8>0.5)=1, (0.5=0.5)=1/2, (0.5>0.3)=1 -> 3.5/4
    assert metrics.auc([1, 0, 1, 0], [0.8, 0.3, 0.5, 0.5]) == pytest.approx(0.875)
    assert metrics.auc([1, 1, 0], [0.1, 0.2, 0.9]) == 0.0


def test_auc_matches_pair_counting_on_random_data():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = rng.integers(0, 20, 300) / 20.0  # many ties
    assert metrics.auc(labels, scores) == pytest.approx(brute_force_auc(labels, scores))


def test_auc_errors_name_the_problem():
    with pytest.raises(ValueError, match="both classes; got 3 positives and 0 negatives"):
        metrics.auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="differ in size: 2 vs 3"):
        metrics.auc([1, 0], [0.1, 0.2, 0.3])


def test_gauc_by_hand_both_weightings_and_skips_single_class_users():
    labels = [1, 0, 0,   1, 0,   1, 1]
    scores = [.9, .1, .95, .2, .8, .5, .6]
    users = [1, 1, 1,   2, 2,   3, 3]
    # user 1: pos .9 vs negs .1, .95 -> 1/2; user 2: 0; user 3: single class, skipped
    impression = metrics.gauc(labels, scores, users, "impression")
    assert impression.value == pytest.approx((3 * 0.5 + 2 * 0.0) / 5)
    assert (impression.groups_used, impression.groups_skipped) == (2, 1)
    assert metrics.gauc(labels, scores, users, "user").value == pytest.approx(0.25)


def test_gauc_matches_a_per_user_loop_on_random_data():
    rng = np.random.default_rng(1)
    n = 2000
    users = rng.integers(0, 60, n)
    labels = rng.integers(0, 2, n)
    scores = np.round(rng.random(n), 2)
    per_user, weights = [], []
    for u in np.unique(users):
        m = users == u
        if 0 < labels[m].sum() < m.sum():
            per_user.append(brute_force_auc(labels[m], scores[m]))
            weights.append(m.sum())
    assert metrics.gauc(labels, scores, users).value == pytest.approx(np.average(per_user, weights=weights))
    assert metrics.gauc(labels, scores, users, "user").value == pytest.approx(np.mean(per_user))


def test_gauc_rejects_unknown_weighting():
    with pytest.raises(ValueError, match="weighting must be one of"):
        metrics.gauc([1, 0], [1, 0], [1, 1], "positive")


def test_log_loss_by_hand():
    assert metrics.log_loss([1, 0], [0.8, 0.4]) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)
    assert np.isfinite(metrics.log_loss([1, 0], [0.0, 1.0]))  # clipped, not infinite


RELEVANCE = np.array([[0, 2, 0, 1],
                      [0, 0, 0, 0],   # no relevant item: skipped
                      [1, 0, 0, 0]])
SCORES = np.array([[0.9, 0.8, 0.1, 0.5],
                   [0.1, 0.2, 0.3, 0.4],
                   [0.5, 0.5, 0.5, 0.5]])  # all tied: stable order keeps item 0 first


def test_ranking_metrics_by_hand():
    # query 0 ranking: items 0 (rel 0), 1 (rel 2), 3 (rel 1), 2 (rel 0)
    dcg = (2 ** 2 - 1) / np.log2(3) + (2 ** 1 - 1) / np.log2(4)
    idcg = (2 ** 2 - 1) / np.log2(2) + (2 ** 1 - 1) / np.log2(3)
    ndcg = metrics.ndcg_at_k(RELEVANCE, SCORES, 3)
    assert ndcg.value == pytest.approx((dcg / idcg + 1.0) / 2)
    assert (ndcg.queries_used, ndcg.queries_skipped) == (2, 1)
    assert metrics.recall_at_k(RELEVANCE, SCORES, 2).value == pytest.approx((0.5 + 1.0) / 2)
    assert metrics.hit_rate_at_k(RELEVANCE, SCORES, 1).value == pytest.approx(0.5)
    assert metrics.mrr(RELEVANCE, SCORES).value == pytest.approx((1 / 2 + 1) / 2)
    assert metrics.mrr(RELEVANCE, SCORES, k=1).value == pytest.approx(0.5)


def test_ranking_metrics_match_brute_force_on_random_lists():
    rng = np.random.default_rng(2)
    rel = rng.integers(0, 3, (50, 8)) * (rng.random((50, 8)) < 0.3)
    scores = rng.random((50, 8))
    ndcg, rec, mrr_ = [], [], []
    for r, s in zip(rel, scores):
        if not (r > 0).any():
            continue
        ranked = r[np.argsort(-s, kind="stable")]
        gains = (2.0 ** ranked[:5] - 1) / np.log2(np.arange(2, 7))
        ideal = (2.0 ** np.sort(r)[::-1][:5] - 1) / np.log2(np.arange(2, 7))
        ndcg.append(gains.sum() / ideal.sum())
        rec.append((ranked[:5] > 0).sum() / (r > 0).sum())
        mrr_.append(1.0 / (np.flatnonzero(ranked > 0)[0] + 1))
    assert metrics.ndcg_at_k(rel, scores, 5).value == pytest.approx(np.mean(ndcg))
    assert metrics.recall_at_k(rel, scores, 5).value == pytest.approx(np.mean(rec))
    assert metrics.mrr(rel, scores).value == pytest.approx(np.mean(mrr_))


def test_ranking_shape_and_k_errors():
    with pytest.raises(ValueError, match=r"\(num_queries, list_size\)"):
        metrics.ndcg_at_k(np.ones(3), np.ones(3), 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        metrics.recall_at_k(RELEVANCE, SCORES, 0)

"""Metrics against hand-computed cases, brute-force references and TF-Ranking's metrics."""
import itertools
import math

import numpy as np
import pytest

from tfrec_onerec import metrics


# -- independent references (pairs, loops, Python sorting) ---------------------------------------
def pair_counting_auc(labels, scores):
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def python_ranking(rel_row, score_row):
    """Items of one query, best first: real items by descending score, ties by position, then
    padding (rel < 0), as a list of relevances (padding as 0)."""
    items = sorted(range(len(rel_row)), key=lambda i: (rel_row[i] < 0, -score_row[i], i))
    return [max(rel_row[i], 0) for i in items]


def reference_ranking_metrics(relevance, scores, k):
    out = {"ndcg": [], "recall": [], "hit": [], "mrr": [], "mrr@k": []}
    for rel, sc in zip(relevance.tolist(), scores.tolist()):
        ranked = python_ranking(rel, sc)
        n_rel = sum(r > 0 for r in ranked)
        if n_rel == 0:
            continue
        dcg = sum((2 ** r - 1) / math.log2(i + 2) for i, r in enumerate(ranked[:k]))
        idcg = sum((2 ** r - 1) / math.log2(i + 2) for i, r in enumerate(sorted(ranked, reverse=True)[:k]))
        first = next(i for i, r in enumerate(ranked) if r > 0) + 1
        out["ndcg"].append(dcg / idcg)
        out["recall"].append(sum(r > 0 for r in ranked[:k]) / n_rel)
        out["hit"].append(float(any(r > 0 for r in ranked[:k])))
        out["mrr"].append(1.0 / first)
        out["mrr@k"].append(1.0 / first if first <= k else 0.0)
    return {name: float(np.mean(values)) for name, values in out.items()}


# -- AUC -------------------------------------------------------------------------------------------
def test_auc_by_hand_with_ties():
    # pairs (pos, neg): (.8 > .3) 1, (.8 > .5) 1, (.5 = .5) 1/2, (.5 > .3) 1  ->  3.5 / 4
    assert metrics.auc([1, 0, 1, 0], [0.8, 0.3, 0.5, 0.5]) == 0.875
    assert metrics.auc([1, 1, 0], [0.1, 0.2, 0.9]) == 0.0
    assert metrics.auc([0, 1], [3.0, 3.0]) == 0.5
    assert type(metrics.auc([0, 1], [0, 1])) is float


def test_auc_matches_pair_counting_on_random_data_with_many_ties():
    rng = np.random.default_rng(0)
    for n in (2, 7, 300):
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]
        scores = rng.integers(0, 20, n) / 20.0
        assert metrics.auc(labels, scores) == pytest.approx(pair_counting_auc(labels, scores), abs=1e-12)


def test_auc_accepts_bool_labels_and_any_shape():
    assert metrics.auc(np.array([[True], [False]]), np.array([[0.9], [0.1]])) == 1.0


def test_auc_errors_name_the_problem():
    with pytest.raises(ValueError, match="both classes; got 3 positives and 0 negatives"):
        metrics.auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="labels and scores differ in size: 2 vs 3"):
        metrics.auc([1, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="labels must be 0 or 1; got 1 other values, e.g. \\[0.5\\]"):
        metrics.auc([1, 0, 0.5], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="scores contain NaN"):
        metrics.auc([1, 0], [0.1, float("nan")])


# -- GAUC ------------------------------------------------------------------------------------------
LABELS = [1, 0, 0, 1, 0, 1, 1]
SCORES = [.9, .1, .95, .2, .8, .5, .6]
USERS = ["a", "a", "a", "b", "b", "c", "c"]


def test_gauc_by_hand_both_weightings_and_single_class_groups_skipped():
    # a: pos .9 vs negs .1, .95 -> 1/2 (3 rows); b: pos .2 < neg .8 -> 0 (2 rows); c: all positive
    impression = metrics.gauc(LABELS, SCORES, USERS, "impression")
    assert impression.value == pytest.approx((3 * 0.5 + 2 * 0.0) / 5)
    assert (impression.groups_used, impression.groups_skipped) == (2, 1)
    per_user = metrics.gauc(LABELS, SCORES, USERS, weighting="user")
    assert per_user.value == pytest.approx(0.25) and per_user.weighting == "user"
    assert float(per_user) == per_user.value
    assert metrics.gauc(LABELS, SCORES, USERS) == impression  # default weighting


def test_gauc_with_one_group_is_the_auc():
    labels, scores = [1, 0, 1, 0, 0], [0.3, 0.3, 0.9, 0.1, 0.5]
    assert metrics.gauc(labels, scores, np.zeros(5)).value == pytest.approx(metrics.auc(labels, scores))


@pytest.mark.parametrize("weighting", ["impression", "user"])
def test_gauc_matches_a_per_group_pair_counting_loop(weighting):
    rng = np.random.default_rng(1)
    n = 1500
    users = rng.integers(0, 80, n)
    labels = (rng.random(n) < np.where(users % 7 == 0, 0.0, 0.3)).astype(int)  # every 7th user: negatives only
    scores = np.round(rng.random(n), 1)  # many ties
    per_group, weights, skipped = [], [], 0
    for u in np.unique(users):
        rows = users == u
        if 0 < labels[rows].sum() < rows.sum():
            per_group.append(pair_counting_auc(labels[rows], scores[rows]))
            weights.append(rows.sum() if weighting == "impression" else 1)
        else:
            skipped += 1
    result = metrics.gauc(labels, scores, users, weighting)
    assert result.value == pytest.approx(np.average(per_group, weights=weights), abs=1e-12)
    assert (result.groups_used, result.groups_skipped) == (len(per_group), skipped) and skipped > 0


def test_gauc_on_200k_rows_in_1k_groups_uses_every_group():
    # Vectorized over groups; speed belongs to benchmarks, not to this test.
    rng = np.random.default_rng(2)
    n = 200_000
    users, labels, scores = rng.integers(0, 1000, n), rng.integers(0, 2, n), rng.random(n).astype(np.float32)
    result = metrics.gauc(labels, scores, users)
    assert result.groups_used == 1000 and abs(result.value - 0.5) < 0.02


def test_gauc_without_usable_groups_is_nan_and_says_so():
    result = metrics.gauc([1, 1, 0], [0.1, 0.2, 0.3], [1, 1, 2])
    assert math.isnan(result.value) and (result.groups_used, result.groups_skipped) == (0, 2)


def test_gauc_errors_name_the_problem():
    with pytest.raises(ValueError, match="weighting must be one of \\('impression', 'user'\\), got 'positive'"):
        metrics.gauc([1, 0], [1, 0], [1, 1], "positive")
    with pytest.raises(ValueError, match="groups and labels differ in size: 3 vs 2"):
        metrics.gauc([1, 0], [1, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="labels and scores differ in size"):
        metrics.gauc([1, 0], [1, 0, 1], [1, 1])


# -- LogLoss ---------------------------------------------------------------------------------------
def test_log_loss_by_hand_and_clipping():
    assert metrics.log_loss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    # a confident mistake costs -log(eps), not infinity
    assert metrics.log_loss([1, 0], [0.0, 1.0]) == pytest.approx(-math.log(1e-7), rel=1e-6)
    assert metrics.log_loss([1], [0.0], eps=1e-3) == pytest.approx(-math.log(1e-3))
    assert metrics.log_loss([0.25], [0.5]) == pytest.approx(math.log(2))  # soft labels


def test_log_loss_errors_name_the_problem():
    with pytest.raises(ValueError, match="probs must lie in \\[0, 1\\].*not logits"):
        metrics.log_loss([1, 0], [2.3, -1.0])
    with pytest.raises(ValueError, match="labels and probs differ in size: 2 vs 1"):
        metrics.log_loss([1, 0], [0.5])
    with pytest.raises(ValueError, match="labels must lie in \\[0, 1\\]"):
        metrics.log_loss([2, 0], [0.5, 0.5])


# -- ranking ---------------------------------------------------------------------------------------
RELEVANCE = np.array([[0, 2, 0, 1],
                      [0, 0, 0, 0],     # no relevant item: left out of every mean
                      [1, 0, 0, 0],
                      [0, 1, -1, -1]])  # two padded slots
LIST_SCORES = np.array([[0.9, 0.8, 0.1, 0.5],
                        [0.1, 0.2, 0.3, 0.4],
                        [0.5, 0.5, 0.5, 0.5],   # all tied: position decides, item 0 first
                        [0.3, 0.2, 9.0, 8.0]])  # padding ranks last despite its scores


def test_ranking_metrics_by_hand():
    # query 0 ranking: items 0 (rel 0), 1 (rel 2), 3 (rel 1), 2 (rel 0); query 2: item 0 first;
    # query 3: items 0 (rel 0), 1 (rel 1), then the padding.
    dcg0 = (2 ** 2 - 1) / math.log2(3) + (2 ** 1 - 1) / math.log2(4)
    idcg0 = (2 ** 2 - 1) / math.log2(2) + (2 ** 1 - 1) / math.log2(3)
    ndcg3 = (1 / math.log2(3)) / 1.0
    assert metrics.ndcg_at_k(RELEVANCE, LIST_SCORES, 3) == pytest.approx((dcg0 / idcg0 + 1.0 + ndcg3) / 3)
    assert metrics.ndcg_at_k(RELEVANCE, LIST_SCORES, 1) == pytest.approx((0 + 1 + 0) / 3)
    assert metrics.recall_at_k(RELEVANCE, LIST_SCORES, 2) == pytest.approx((0.5 + 1.0 + 1.0) / 3)
    assert metrics.hit_rate_at_k(RELEVANCE, LIST_SCORES, 1) == pytest.approx(1 / 3)
    assert metrics.mrr(RELEVANCE, LIST_SCORES) == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert metrics.mrr(RELEVANCE, LIST_SCORES, k=1) == pytest.approx(1 / 3)
    assert type(metrics.mrr(RELEVANCE, LIST_SCORES)) is float


def test_ties_are_broken_by_position_and_k_beyond_the_list_means_all():
    tied = np.zeros((1, 3))
    assert metrics.mrr([[0, 0, 1]], tied) == pytest.approx(1 / 3)
    assert metrics.mrr([[1, 0, 0]], tied) == 1.0
    assert metrics.ndcg_at_k(RELEVANCE, LIST_SCORES, 50) == metrics.ndcg_at_k(RELEVANCE, LIST_SCORES, None)
    assert metrics.recall_at_k(RELEVANCE, LIST_SCORES, None) == 1.0


def test_queries_without_relevant_items_are_left_out():
    with_empty = metrics.ndcg_at_k(RELEVANCE, LIST_SCORES, 2)
    without = metrics.ndcg_at_k(RELEVANCE[[0, 2, 3]], LIST_SCORES[[0, 2, 3]], 2)
    assert with_empty == without
    assert math.isnan(metrics.mrr(np.zeros((2, 3)), np.ones((2, 3))))


@pytest.mark.parametrize("k", [1, 3, 8])
def test_ranking_metrics_match_a_python_sorting_reference(k):
    rng = np.random.default_rng(3)
    relevance = rng.integers(0, 4, (300, 8)) * (rng.random((300, 8)) < 0.3)
    relevance[rng.random((300, 8)) < 0.1] = -1  # padding
    scores = rng.integers(0, 5, (300, 8)).astype(float)  # many ties
    expected = reference_ranking_metrics(relevance, scores, k)
    assert metrics.ndcg_at_k(relevance, scores, k) == pytest.approx(expected["ndcg"], abs=1e-12)
    assert metrics.recall_at_k(relevance, scores, k) == pytest.approx(expected["recall"], abs=1e-12)
    assert metrics.hit_rate_at_k(relevance, scores, k) == pytest.approx(expected["hit"], abs=1e-12)
    assert metrics.mrr(relevance, scores) == pytest.approx(expected["mrr"], abs=1e-12)
    assert metrics.mrr(relevance, scores, k) == pytest.approx(expected["mrr@k"], abs=1e-12)


def test_ranking_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"must both be \(num_queries, list_size\); got \(3,\) and \(3,\)"):
        metrics.ndcg_at_k(np.ones(3), np.ones(3), 1)
    with pytest.raises(ValueError, match="k must be a positive int"):
        metrics.recall_at_k(RELEVANCE, LIST_SCORES, 0)
    with pytest.raises(ValueError, match="k must be a positive int"):
        metrics.hit_rate_at_k(RELEVANCE, LIST_SCORES, 2.5)
    with pytest.raises(ValueError, match="must not contain NaN"):
        metrics.mrr([[1, 0]], [[0.1, float("nan")]])


def test_full_ranking_helpers_agree_with_the_list_metrics_on_one_hot_relevance():
    rng = np.random.default_rng(4)
    scores = rng.integers(0, 30, (200, 50)).astype(float)  # ties included
    targets = rng.integers(0, 50, 200)
    ranks = metrics.target_ranks(scores, targets)
    one_hot = np.eye(50)[targets]
    assert ranks.min() >= 1 and ranks.max() <= 50
    result = metrics.ranking_metrics_from_ranks(ranks, ks=(1, 10))
    assert set(result) == {"hit_rate@1", "ndcg@1", "hit_rate@10", "ndcg@10", "mrr"}
    for k in (1, 10):
        assert result[f"hit_rate@{k}"] == pytest.approx(metrics.hit_rate_at_k(one_hot, scores, k))
        assert result[f"hit_rate@{k}"] == pytest.approx(metrics.recall_at_k(one_hot, scores, k))
        assert result[f"ndcg@{k}"] == pytest.approx(metrics.ndcg_at_k(one_hot, scores, k))
    assert result["mrr"] == pytest.approx(metrics.mrr(one_hot, scores))
    assert metrics.ranking_metrics_from_ranks([1, 3], ks=(2,)) == {
        "hit_rate@2": 0.5, "ndcg@2": 0.5, "mrr": pytest.approx((1 + 1 / 3) / 2)}
    with pytest.raises(ValueError, match="ranks must be integers >= 1"):
        metrics.ranking_metrics_from_ranks([0, 2])
    with pytest.raises(ValueError, match="targets must be int column indices in \\[0, 50\\)"):
        metrics.target_ranks(scores, np.full(200, 50))


# -- cross-check with TF-Ranking ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tfr():
    from tfrec_onerec.compat import tf_ranking

    return tf_ranking.load()


@pytest.fixture(scope="module")
def graded_lists():
    """Integer graded labels (so TF-Ranking's "relevant = label >= 1" is our "> 0"), padding,
    queries with no relevant item, and tie-free scores (TF-Ranking breaks ties at random)."""
    rng = np.random.default_rng(5)
    relevance = (rng.integers(0, 4, (400, 12)) * (rng.random((400, 12)) < 0.35)).astype(np.float32)
    relevance[rng.random((400, 12)) < 0.15] = -1.0
    scores = rng.normal(size=(400, 12)).astype(np.float32)
    has_relevant = (relevance > 0).any(axis=1)
    assert 0 < (~has_relevant).sum() < 400
    return relevance, scores, has_relevant.mean()


@pytest.mark.parametrize("k", [1, 5, None])
def test_ranking_metrics_agree_with_tf_ranking(tfr, graded_lists, k):
    """TF-Ranking's NDCGMetric defaults are ours (gain 2^rel - 1, discount 1/log2(rank + 1));
    it also treats labels < 0 as padding. It averages over *all* queries, a query without a
    relevant item counting 0, where we leave such queries out: tfr = ours * share_with_relevant."""
    relevance, scores, share = graded_lists
    ours = {
        "NDCGMetric": metrics.ndcg_at_k(relevance, scores, k),
        "MRRMetric": metrics.mrr(relevance, scores, k),
        "RecallMetric": metrics.recall_at_k(relevance, scores, k),
        "HitsMetric": metrics.hit_rate_at_k(relevance, scores, k),
    }
    for name, value in ours.items():
        metric = getattr(tfr.keras.metrics, name)(topn=k)
        metric.update_state(relevance, scores)
        assert value * share == pytest.approx(float(metric.result()), rel=1e-5), name

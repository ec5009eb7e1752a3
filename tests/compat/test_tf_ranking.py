"""TF-Ranking on TF 2.21: the import shim, and its metrics as a cross-check of ours."""
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfrec_onerec import metrics
from tfrec_onerec.compat import tf_ranking


def test_load_leaves_no_estimator_stand_ins_behind():
    tfr = tf_ranking.load()
    assert hasattr(tfr.keras.losses, "SoftmaxLoss")
    assert not hasattr(tf, "estimator") and "tensorflow.estimator" not in sys.modules


def test_refuses_without_legacy_keras():
    code = ("import os; os.environ['TF_USE_LEGACY_KERAS'] = '0'\n"
            "import tfrec_onerec\nfrom tfrec_onerec.compat import tf_ranking\n"
            "try:\n    tf_ranking.load()\nexcept RuntimeError as e:\n    print('REFUSED', e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "REFUSED TF-Ranking needs TF_USE_LEGACY_KERAS=1" in result.stdout


@pytest.fixture(scope="module")
def lists():
    rng = np.random.default_rng(3)
    relevance = rng.integers(0, 4, (200, 10)).astype(np.float32)
    relevance[:, 0] = np.maximum(relevance[:, 0], 1)  # every query has a relevant item (TF-Ranking counts
    scores = rng.normal(size=(200, 10)).astype(np.float32)  # queries without one as 0; we skip them)
    return relevance, scores


@pytest.mark.parametrize("k", [1, 5, 10])
def test_ndcg_agrees_with_tf_ranking(lists, k):
    relevance, scores = lists
    ndcg = tf_ranking.load().keras.metrics.NDCGMetric(topn=k)  # gain 2^rel - 1, log2 discount
    ndcg.update_state(relevance, scores)
    assert metrics.ndcg_at_k(relevance, scores, k).value == pytest.approx(float(ndcg.result()), rel=1e-5)


@pytest.mark.parametrize("k", [1, 3, None])
def test_mrr_agrees_with_tf_ranking(lists, k):
    relevance, scores = lists
    mrr = tf_ranking.load().keras.metrics.MRRMetric(topn=k)
    mrr.update_state(relevance, scores)
    assert metrics.mrr(relevance, scores, k).value == pytest.approx(float(mrr.result()), rel=1e-5)

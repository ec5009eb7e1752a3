"""The spec-derived preprocessing_fn: vocabularies and quantile buckets on a hand-made case.

(That it equals the library's own parsing on real rows is checked on the pipeline's output
in test_tfx_pipeline.py.)
"""
import numpy as np
import tfx  # noqa: F401  (before TFDV/TFT, see docs/STACK.md)
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata

from tfrec_onerec.features import Feature, FeatureSpec
from tfx_pipelines.preprocessing import preprocessing_fn
from tfx_pipelines.schema import schema_from_spec


def transform(rows, spec, tmp_path):
    metadata = dataset_metadata.DatasetMetadata(schema_from_spec(spec))
    config = {"feature_spec": spec.to_json(), "labels": list(spec.labels)}
    with tft_beam.Context(temp_dir=str(tmp_path)):
        (out, _), _ = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(inputs, config))
    return out


def test_vocabulary_is_shared_frequency_ranked_with_oov_and_quantiles_bucketize(tmp_path):
    spec = FeatureSpec([
        Feature("item", "categorical", vocab_size=2, vocab="items", preprocessing="vocabulary"),
        Feature("hist", "sequence", vocab_size=2, vocab="items", max_len=2, preprocessing="vocabulary"),
        Feature("price", "categorical", vocab_size=2, preprocessing="quantiles"),
    ], labels=["click"])
    items = [7, 7, 7, 3, 3, 9]
    hists = [[7], [3], [], [9], [], [5]]  # counts over both: 7 x4, 3 x3, 9 x2, 5 x1 -> vocabulary [7, 3]
    prices = [1.0, 2.0, 3.0, 100.0, 200.0, 300.0]
    rows = [{"item": [i], "hist": h, "price": [p], "click": [1.0]} for i, h, p in zip(items, hists, prices)]
    # Output rows are sorted back into input order by their (unique) price.
    out = sorted(transform(rows, spec, tmp_path), key=lambda r: float(np.ravel(r["price"])[0]))
    assert [int(r["item"]) for r in out] == [1, 1, 1, 2, 2, 3]  # 7 -> 1, 3 -> 2, 9 (not kept) -> OOV 3
    assert [list(r["hist"]) for r in out] == [[1, 0], [2, 0], [0, 0], [3, 0], [0, 0], [3, 0]]
    buckets = [int(r["price"]) for r in out]
    assert buckets[:2] == [1, 1] and buckets[-2:] == [2, 2] and buckets == sorted(buckets)


def test_sequences_keep_the_newest_ids_and_ids_pass_through(tmp_path):
    spec = FeatureSpec([
        Feature("user", "categorical", vocab_size=5),
        Feature("hist", "sequence", vocab_size=9, max_len=3),
        Feature("x", "numeric", dim=2),
    ], labels=["click"])
    rows = [{"user": [4], "hist": [1, 2, 3, 4, 5], "x": [0.5, -1.0], "click": [0.0]},
            {"user": [9], "hist": [], "x": [2.0, 3.0], "click": [1.0]}]
    out = sorted(transform(rows, spec, tmp_path), key=lambda r: float(r["click"]))
    assert [int(r["user"]) for r in out] == [4, 9]  # out-of-range ids are left to the embedding's OOV row
    assert [list(r["hist"]) for r in out] == [[3, 4, 5], [0, 0, 0]]
    np.testing.assert_allclose([r["x"] for r in out], [[0.5, -1.0], [2.0, 3.0]])

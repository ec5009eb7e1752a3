"""The README's claims on real data (MovieLens-100K), checked in the default run through the
family contract (:mod:`tfrec_onerec.families`), each at the smallest size that keeps it robust.

Each test trains on the full training split (seed 0) and asserts a floor well below what it
measured, so a regression fails but a different thread count or CPU does not. The measured
numbers (seed 0; seed 1 in brackets) and the README's full-size runs they stand for:

* DIN vs din_base (point-wise family, 1 epoch, batch 1024): test AUC DIN AUC_DIN vs
  din_base AUC_BASE, GAUC GAUC_DIN vs GAUC_BASE. The README's claim: the target attention
  beats sum pooling of the history.
* SASRec (next-item family, SAS_EPOCHS epochs): leave-one-out full ranking Recall@10 SAS_R10,
  NDCG@10 SAS_N10 vs popularity's 0.050 / 0.025 (the documented 30-epoch run: 0.201 / 0.108).
* OneRec (generative family, 1 epoch, DATASET_DEFAULTS): Recall@10 ONEREC_R10 on the first
  ONEREC_USERS test users vs popularity's 0.050 (the documented 3-epoch run: 0.139 on all 943).
"""
import pytest

from tfrec_onerec import families
from tfrec_onerec.families import FamilyData

DATASET = "movielens-100k"


def train_config(family, model_name, **given):
    return family.train_config(family.model_class(model_name),
                               {"early_stopping_patience": None, "verbose": 0, "seed": 0, **given})


def test_din_beats_its_sum_pooling_base_on_movielens():
    family = families.for_model("din")
    data = family.prepare(DATASET)
    results = {}
    for name in ("din_base", "din"):
        trained = family.fit(name, data, train_config(family, name, epochs=1, batch_size=1024))
        results[name] = family.evaluate(trained.model, data, "test")["click"]
    print(f"\nMovieLens-100K test: din {results['din']}\ndin_base {results['din_base']}")
    assert results["din_base"]["auc"] > 0.7
    assert results["din"]["auc"] > results["din_base"]["auc"] + 0.005
    assert results["din"]["gauc"] > results["din_base"]["gauc"] + 0.005

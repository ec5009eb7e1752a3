"""The paper's claim on real data: DIN beats its sum-pooling base model (slow: full training)."""
import keras
import pytest

from tfrec_onerec import data, evaluation, models, training


@pytest.mark.slow
def test_din_beats_the_base_model_on_movielens():
    prepared = data.prepare_cached("movielens-100k")
    results = {}
    for name in ("din_base", "din"):
        keras.utils.set_random_seed(0)
        model, _ = training.fit(lambda: models.get(name)(prepared.spec, ["click"]),
                                prepared.dataset("train", batch_size=256, shuffle=True),
                                prepared.dataset("valid", batch_size=4096),
                                training.TrainConfig(epochs=4, early_stopping_patience=None, verbose=0))
        results[name] = evaluation.evaluate(model, prepared.dataset("test", batch_size=4096))["click"]
    assert results["din_base"]["auc"] > 0.8
    assert results["din"]["auc"] > results["din_base"]["auc"]
    assert results["din"]["gauc"] > results["din_base"]["gauc"]

"""The RQ-VAE: training, codes, save/load, eager initialisation under XLA."""
import keras
import numpy as np
import pytest
from clustered_points import blobs

from tfrec_onerec.clustering import residual_kmeans
from tfrec_onerec.models.generative.rq_vae import RQVAE


@pytest.fixture(scope="module")
def trained_rqvae():
    centres = np.random.default_rng(0).normal(size=(16, 12))
    x, labels = blobs(60, centres, noise=0.3, seed=1)
    x = x.astype(np.float32)
    model = RQVAE(12, latent_dim=8, hidden_units=(32,), num_levels=2, codebook_size=16, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(x, batch_size=64, epochs=20, shuffle=True, verbose=0)
    return model, x, labels, history.history


def test_rqvae_trains_and_beats_the_mean_predictor(trained_rqvae):
    model, x, labels, history = trained_rqvae
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert set(history) >= {"loss", "reconstruction_loss", "quantization_loss"}
    out = model.predict(x, batch_size=256, verbose=0)
    assert out["reconstruction"].shape == x.shape and out["codes"].shape == (len(x), 2)
    mse = ((out["reconstruction"] - x) ** 2).mean()
    assert mse < 0.3 * ((x - x.mean(0)) ** 2).mean()
    # Level-1 codes carry the cluster structure: most blobs map to one dominant code.
    purity = np.mean([np.bincount(out["codes"][labels == c, 0]).max() / (labels == c).sum() for c in range(16)])
    assert purity > 0.8
    np.testing.assert_array_equal(model.encode(x), out["codes"])


def test_rqvae_save_load_round_trip(trained_rqvae, tmp_path):
    model, x, _, _ = trained_rqvae
    path = tmp_path / "rqvae.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config() == model.get_config()
    before, after = model(x, training=False), loaded(x, training=False)
    np.testing.assert_allclose(after["reconstruction"], before["reconstruction"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(after["codes"], before["codes"])
    assert float(loaded.quantizer.initialized.numpy()) == 1.0


def test_rqvae_with_eager_initialisation_trains_under_xla():
    x, _ = blobs(64, np.eye(4) * 3.0, noise=0.3, seed=2)
    x = x.astype(np.float32)
    model = RQVAE(4, latent_dim=4, hidden_units=(8,), num_levels=2, codebook_size=4, kmeans_init=False, seed=0)
    model.build((None, 4))
    latents = keras.ops.convert_to_numpy(model.encode_latent(x))
    model.quantizer.initialize_from(latents, balanced=True)
    assert float(model.quantizer.initialized.numpy()) == 1.0
    expected = residual_kmeans(latents, 2, 4, balanced=True, seed=0).codebooks
    np.testing.assert_allclose(model.quantizer.codebooks.numpy(), np.stack(expected), rtol=1e-5, atol=1e-6)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
    history = model.fit(x, batch_size=64, epochs=4, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]


def test_rqvae_refuses_bad_sizes():
    with pytest.raises(ValueError, match="input_dim"):
        RQVAE(0)

"""The RQ-VAE: an encoder MLP, a residual vector quantizer and a decoder MLP, trained end to end.

Residual-quantized variational auto-encoder (Lee et al. CVPR 2022, as used by TIGER,
NeurIPS 2023), one of the semantic-ID tokenizer's methods
(:mod:`tfrec_onerec.models.generative.tokenizer`): the codes of its
:class:`~tfrec_onerec.layers.quantizers.ResidualVectorQuantizer` are an item's semantic ID.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

from tfrec_onerec.layers.quantizers import ResidualVectorQuantizer
from tfrec_onerec.serialization import register_serializable


def _dense_stack(units: Sequence[int], output_dim: int, activation: str, seed: int, name: str) -> list:
    """Seeded ``Dense(units[i], activation)`` layers followed by a linear ``Dense(output_dim)``."""
    widths = list(units) + [int(output_dim)]
    return [keras.layers.Dense(w, activation=activation if i < len(units) else None,
                               kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i),
                               name=f"{name}_{i}") for i, w in enumerate(widths)]


@register_serializable
class RQVAE(keras.Model):
    """Residual-quantized variational auto-encoder (Lee et al., CVPR 2022; TIGER, NeurIPS 2023).

    ``x -> encoder MLP -> z -> ResidualVectorQuantizer -> z_q (straight-through) -> decoder
    MLP -> x_hat``. The training loss per example is the reconstruction error
    ``mean_d (x - x_hat)^2`` plus the quantizer's codebook and commitment losses; the
    codes of the L levels are the item's semantic ID. Train with ``model.fit(x)`` (no
    targets: the input is its own target).

    XLA: the first-batch k-means initialisation is a data-dependent ``cond`` that XLA does
    not compile, so train with Keras' default ``jit_compile="auto"`` (which resolves to no
    XLA here), or set ``kmeans_init=False``, call ``model.quantizer.initialize_from(
    model.encode_latent(x))`` once, and compile with ``jit_compile=True``.

    Args:
        input_dim: width of the vectors to encode.
        latent_dim: width of the quantized latent. Default 32.
        hidden_units: encoder widths (the decoder mirrors them). Default ``(128, 64)``.
        num_levels, codebook_size, beta, kmeans_init, kmeans_iters, dead_code_patience:
            see :class:`ResidualVectorQuantizer`.
        activation: of the hidden layers. Default ``"relu"``.
        seed: seeds the weights and the quantizer. Default 0.

    Call:
        inputs: (batch, input_dim) float.
        Returns a dict: ``reconstruction`` (batch, input_dim); ``codes`` (batch, L) int32;
        ``latent`` (batch, latent_dim) encoder output; ``quantized`` (batch, latent_dim);
        ``quantization_loss`` (batch,).

    Example:
        >>> model = RQVAE(input_dim=64, num_levels=3, codebook_size=32)
        >>> model.compile(optimizer="adam")
        >>> model.fit(item_vectors, epochs=50, batch_size=256)
        >>> codes = model.encode(item_vectors)          # (n, 3)
    """

    def __init__(self, input_dim: int, latent_dim: int = 32, hidden_units: Sequence[int] = (128, 64),
                 num_levels: int = 3, codebook_size: int = 32, beta: float = 0.25, kmeans_init: bool = True,
                 kmeans_iters: int = 10, dead_code_patience: int = 20, activation: str = "relu", seed: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        if int(input_dim) < 1 or int(latent_dim) < 1:
            raise ValueError(f"RQVAE: input_dim and latent_dim must be >= 1, got {input_dim} and {latent_dim}.")
        self.input_dim = int(input_dim)
        self.latent_dim = int(latent_dim)
        self.hidden_units = [int(u) for u in hidden_units]
        self.activation = activation
        self.seed = int(seed)
        self.encoder_layers = _dense_stack(self.hidden_units, self.latent_dim, activation, self.seed, "encoder")
        self.decoder_layers = _dense_stack(self.hidden_units[::-1], self.input_dim, activation, self.seed + 100,
                                           "decoder")
        self.quantizer = ResidualVectorQuantizer(num_levels, codebook_size, beta, kmeans_init, kmeans_iters,
                                                 dead_code_patience, seed, name="quantizer")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.quantization_tracker = keras.metrics.Mean(name="quantization_loss")

    def build(self, input_shape):
        shape = (None, self.input_dim)
        for layer in self.encoder_layers:
            layer.build(shape)
            shape = (None, layer.units)
        self.quantizer.build(shape)
        for layer in self.decoder_layers:
            layer.build(shape)
            shape = (None, layer.units)

    @staticmethod
    def _run(layers, x):
        for layer in layers:
            x = layer(x)
        return x

    def encode_latent(self, inputs):
        """(batch, input_dim) -> (batch, latent_dim) encoder output."""
        return self._run(self.encoder_layers, inputs)

    def decode(self, quantized):
        """(batch, latent_dim) -> (batch, input_dim) decoder output."""
        return self._run(self.decoder_layers, quantized)

    def call(self, inputs, training=None):
        latent = self.encode_latent(inputs)
        q = self.quantizer(latent, training=training)
        return {"reconstruction": self.decode(q["quantized"]), "codes": q["codes"], "latent": latent,
                "quantized": q["quantized"], "quantization_loss": q["loss"]}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        inputs = x if not isinstance(x, (tuple, list)) else x[0]
        reconstruction = ops.mean((ops.convert_to_tensor(inputs) - y_pred["reconstruction"]) ** 2, axis=-1)
        per_example = reconstruction + y_pred["quantization_loss"]
        if sample_weight is not None:
            weight = ops.cast(sample_weight, per_example.dtype)
            loss = ops.sum(per_example * weight) / ops.maximum(ops.sum(weight), 1e-12)
        else:
            loss = ops.mean(per_example)
        self.reconstruction_tracker.update_state(reconstruction)
        self.quantization_tracker.update_state(y_pred["quantization_loss"])
        return loss + ops.sum(self.losses) if self.losses else loss

    def encode(self, x, batch_size: int = 1024) -> np.ndarray:
        """(n, input_dim) vectors -> (n, L) int32 codes (inference mode, numpy)."""
        x = np.asarray(x, np.float32)
        parts = [ops.convert_to_numpy(self(x[i:i + batch_size], training=False)["codes"])
                 for i in range(0, len(x), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.quantizer.num_levels), np.int32)

    def get_config(self):
        q = self.quantizer
        return {**super().get_config(), "input_dim": self.input_dim, "latent_dim": self.latent_dim,
                "hidden_units": self.hidden_units, "num_levels": q.num_levels, "codebook_size": q.codebook_size,
                "beta": q.beta, "kmeans_init": q.kmeans_init, "kmeans_iters": q.kmeans_iters,
                "dead_code_patience": q.dead_code_patience, "activation": self.activation, "seed": self.seed}

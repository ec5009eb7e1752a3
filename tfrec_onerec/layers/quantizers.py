"""The residual vector quantizer: L codebooks trained by gradient (RQ-VAE's quantizer).

Residual quantization writes a vector ``x`` as the sum of one codeword per level, each
level quantizing what the previous ones left::

    r_1 = x,    s_l = argmin_k ||r_l - C_l[k]||^2,    r_{l+1} = r_l - C_l[s_l]
    x ~ C_1[s_1] + C_2[s_2] + ... + C_L[s_L]

:class:`ResidualVectorQuantizer` (Lee et al. CVPR 2022, as used by TIGER, NeurIPS 2023)
learns the codebooks by gradient with a straight-through estimator, commitment and
codebook losses, k-means initialisation (in the graph on the first training batch, or
eagerly by :func:`tfrec_onerec.clustering.residual_kmeans`) and dead-code reset. The
model around it is :class:`~tfrec_onerec.models.generative.rq_vae.RQVAE`; the numpy
clustering (OneRec's RQ-Kmeans) is :mod:`tfrec_onerec.clustering`.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tfrec_onerec.clustering import residual_kmeans
from tfrec_onerec.serialization import register_serializable


def _kmeans_graph(points, centroids, iterations: int):
    """In-graph Lloyd iterations (keras.ops): points (B, d), centroids (K, d) -> (K, d).

    A cluster that loses all its points keeps its previous centroid.
    """
    k = ops.shape(centroids)[0]
    for _ in range(iterations):
        distances = (ops.sum(points * points, -1, keepdims=True) - 2.0 * ops.matmul(points, ops.transpose(centroids))
                     + ops.expand_dims(ops.sum(centroids * centroids, -1), 0))
        members = ops.one_hot(ops.argmin(distances, axis=-1), k, dtype=points.dtype)  # (B, K)
        counts = ops.sum(members, axis=0)
        sums = ops.matmul(ops.transpose(members), points)
        centroids = ops.where(ops.expand_dims(counts > 0, -1), sums / ops.expand_dims(ops.maximum(counts, 1.0), -1),
                              centroids)
    return centroids


def _kmeans_plus_plus_graph(points, k: int, seed_generator):
    """In-graph k-means++ seeding (keras.ops): (B, d) points -> (k, d) distinct-ish rows.

    Row i is drawn with probability proportional to its squared distance to the nearest
    row already drawn (inverse-CDF sampling with uniforms drawn up front).
    """
    batch = ops.shape(points)[0]
    uniforms = keras.random.uniform((k,), seed=seed_generator)
    first = ops.minimum(ops.cast(uniforms[0] * ops.cast(batch, "float32"), "int32"), batch - 1)
    chosen = ops.take(points, ops.reshape(first, (1,)), axis=0)  # (1, d)
    rows = ops.expand_dims(ops.arange(k), -1)
    centroids = ops.where(rows == 0, chosen, ops.zeros((k, ops.shape(points)[1]), points.dtype))
    closest = ops.sum((points - chosen) ** 2, axis=-1)

    def step(i, state):
        centroids, closest = state
        cumulative = ops.cumsum(closest)
        target = ops.cast(ops.take(uniforms, i), closest.dtype) * cumulative[-1]
        index = ops.minimum(ops.sum(ops.cast(cumulative <= target, "int32")), batch - 1)
        chosen = ops.take(points, ops.reshape(index, (1,)), axis=0)
        centroids = ops.where(rows == i, chosen, centroids)
        return centroids, ops.minimum(closest, ops.sum((points - chosen) ** 2, axis=-1))

    centroids, _ = ops.fori_loop(1, k, step, (centroids, closest))
    return centroids


@register_serializable
class ResidualVectorQuantizer(keras.layers.Layer):
    """L residual codebooks trained by gradient (the quantizer of RQ-VAE and TIGER).

    For a batch of latents ``z`` (``r_1 = z``), level l picks the nearest codeword
    ``e_l = C_l[s_l]``, ``s_l = argmin_k ||r_l - C_l[k]||^2``, and passes on
    ``r_{l+1} = r_l - sg(e_l)`` (``sg`` = stop-gradient). The output is the
    straight-through estimate ``z + sg(z_q - z)`` of ``z_q = sum_l e_l``: its value is
    ``z_q``, its gradient flows to ``z`` unchanged. The per-example quantization loss is::

        sum_l  mean_d (sg(r_l) - e_l)^2  +  beta * mean_d (r_l - sg(e_l))^2
               (codebook loss)              (commitment loss)

    Training-time mechanics (all when called with ``training=True``):

    * **k-means initialisation**: on the first training batch, each level's codebook is
      set by k-means++ seeding and ``kmeans_iters`` Lloyd iterations on that level's
      residuals (:meth:`initialize_from` does the same eagerly from any
      number of latents, optionally balanced).
    * **dead-code reset**: a code chosen by no example of ``dead_code_patience``
      consecutive training batches is re-initialised to a random residual of the current
      batch at its level (for level 1: a random encoder output). ``0`` turns it off.

    Args:
        num_levels: L. Default 3.
        codebook_size: K codes per level. Default 32.
        beta: weight of the commitment loss. Default 0.25.
        kmeans_init: initialise the codebooks by k-means on the first batch. Default True.
        kmeans_iters: Lloyd iterations of that initialisation. Default 10.
        dead_code_patience: training batches without use after which a code is reset.
            Default 20; 0 disables the reset.
        seed: seeds the initial codebooks and the random choices. Default 0.

    Call:
        inputs: (batch, dim) float latents.
        Returns a dict: ``quantized`` (batch, dim) straight-through ``z_q``; ``codes``
        (batch, L) int32; ``loss`` (batch,) the quantization loss above; ``partial``
        (batch, L, dim) the running sums ``sum_{j<=l} e_j``.
    """

    def __init__(self, num_levels: int = 3, codebook_size: int = 32, beta: float = 0.25, kmeans_init: bool = True,
                 kmeans_iters: int = 10, dead_code_patience: int = 20, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if int(num_levels) < 1 or int(codebook_size) < 1:
            raise ValueError(f"ResidualVectorQuantizer: num_levels and codebook_size must be >= 1, "
                             f"got {num_levels} and {codebook_size}.")
        if beta < 0 or int(kmeans_iters) < 0 or int(dead_code_patience) < 0:
            raise ValueError(f"ResidualVectorQuantizer: beta, kmeans_iters and dead_code_patience must be >= 0, "
                             f"got {beta}, {kmeans_iters}, {dead_code_patience}.")
        self.num_levels = int(num_levels)
        self.codebook_size = int(codebook_size)
        self.beta = float(beta)
        self.kmeans_init = bool(kmeans_init)
        self.kmeans_iters = int(kmeans_iters)
        self.dead_code_patience = int(dead_code_patience)
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        shape = (self.num_levels, self.codebook_size, dim)
        self.codebooks = self.add_weight(name="codebooks", shape=shape,
                                         initializer=keras.initializers.RandomUniform(-1.0 / self.codebook_size,
                                                                                      1.0 / self.codebook_size,
                                                                                      seed=self.seed))
        self.initialized = self.add_weight(name="initialized", shape=(), initializer="zeros", trainable=False)
        self.unused_steps = self.add_weight(name="unused_steps", shape=shape[:2], initializer="zeros",
                                            trainable=False)

    def initialize_from(self, latents: np.ndarray, balanced: bool = False, max_iter: int = 50) -> None:
        """Sets the codebooks eagerly by residual k-means on latents (n, dim), n >= K."""
        if not self.built:
            self.build(np.shape(latents))
        fit = residual_kmeans(np.asarray(latents), self.num_levels, self.codebook_size, balanced=balanced,
                              max_iter=max_iter, seed=self.seed)
        self.codebooks.assign(np.stack(fit.codebooks).astype(self.codebooks.dtype))
        self.initialized.assign(1.0)
        self.unused_steps.assign(np.zeros(self.unused_steps.shape))

    def _kmeans_codebooks(self, inputs):
        """(L, K, dim) codebooks from residual k-means on the batch (no gradient)."""
        points = ops.stop_gradient(inputs)
        codebooks = []
        for _ in range(self.num_levels):
            start = _kmeans_plus_plus_graph(points, self.codebook_size, self.seed_generator)
            centroids = _kmeans_graph(points, start, self.kmeans_iters)
            codebooks.append(centroids)
            points = points - ops.take(centroids, self._nearest(points, centroids), axis=0)
        return ops.stack(codebooks)

    @staticmethod
    def _nearest(points, codebook):
        distances = (ops.sum(points * points, -1, keepdims=True) - 2.0 * ops.matmul(points, ops.transpose(codebook))
                     + ops.expand_dims(ops.sum(codebook * codebook, -1), 0))
        return ops.argmin(distances, axis=-1)

    def call(self, inputs, training=None):
        codebooks = ops.convert_to_tensor(self.codebooks)
        if training and self.kmeans_init:
            codebooks = ops.cond(self.initialized > 0, lambda: codebooks, lambda: self._kmeans_codebooks(inputs))
            self.codebooks.assign(codebooks)
            self.initialized.assign(1.0)
        residual = inputs
        total = ops.zeros_like(inputs)
        codes, partial, residuals = [], [], []
        loss = ops.zeros(ops.shape(inputs)[:1], inputs.dtype)
        for level in range(self.num_levels):
            codebook = codebooks[level]
            code = self._nearest(ops.stop_gradient(residual), codebook)
            chosen = ops.take(codebook, code, axis=0)
            loss = loss + ops.mean((ops.stop_gradient(residual) - chosen) ** 2, axis=-1)
            loss = loss + self.beta * ops.mean((residual - ops.stop_gradient(chosen)) ** 2, axis=-1)
            residuals.append(residual)
            residual = residual - ops.stop_gradient(chosen)
            total = total + chosen
            codes.append(code)
            partial.append(total)
        codes = ops.cast(ops.stack(codes, axis=1), "int32")
        if training and self.dead_code_patience:
            self._reset_dead_codes(codebooks, codes, residuals)
        quantized = inputs + ops.stop_gradient(total - inputs)
        return {"quantized": quantized, "codes": codes, "loss": loss, "partial": ops.stack(partial, axis=1)}

    def _reset_dead_codes(self, codebooks, codes, residuals):
        """Counts batches without use per code; re-draws codes unused for `dead_code_patience` batches."""
        used = ops.sum(ops.one_hot(codes, self.codebook_size, dtype="float32"), axis=0) > 0  # (L, K)
        unused = ops.where(used, 0.0, ops.convert_to_tensor(self.unused_steps) + 1.0)
        dead = unused >= float(self.dead_code_patience)
        batch = ops.shape(residuals[0])[0]
        fresh = []
        for level in range(self.num_levels):
            index = keras.random.randint((self.codebook_size,), 0, batch, seed=self.seed_generator)
            fresh.append(ops.take(ops.stop_gradient(residuals[level]), index, axis=0))
        fresh = ops.cast(ops.stack(fresh), codebooks.dtype)
        self.codebooks.assign(ops.where(ops.expand_dims(dead, -1), fresh, ops.convert_to_tensor(self.codebooks)))
        self.unused_steps.assign(ops.where(dead, 0.0, unused))

    def compute_output_spec(self, inputs, training=None):
        batch, dim = inputs.shape[0], inputs.shape[-1]
        return {"quantized": keras.KerasTensor((batch, dim), inputs.dtype),
                "codes": keras.KerasTensor((batch, self.num_levels), "int32"),
                "loss": keras.KerasTensor((batch,), inputs.dtype),
                "partial": keras.KerasTensor((batch, self.num_levels, dim), inputs.dtype)}

    def get_config(self):
        return {**super().get_config(), "num_levels": self.num_levels, "codebook_size": self.codebook_size,
                "beta": self.beta, "kmeans_init": self.kmeans_init, "kmeans_iters": self.kmeans_iters,
                "dead_code_patience": self.dead_code_patience, "seed": self.seed}

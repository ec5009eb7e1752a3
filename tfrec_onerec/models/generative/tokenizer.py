"""The semantic-ID tokenizer: item vectors -> short codes of L levels plus a collision digit.

OneRec (arXiv 2502.18965; technical report arXiv 2506.13695) and TIGER (NeurIPS 2023) write
every item as a *semantic ID*: the codes ``(s_1, ..., s_L)`` of a residual quantizer of the
item's vector (residual k-means, :mod:`tfrec_onerec.clustering`, or an RQ-VAE,
:mod:`tfrec_onerec.models.generative.rq_vae`), so that similar items share prefixes.
Items whose L codes all coincide get one more *disambiguation* level (TIGER's
collision digit): 0 for the first item of such a group (in fitting order), 1, 2, ... for
the others. Every item thus has a unique ID of length ``L + 1``, with vocabularies
``[K] * L + [max group size]``.

The tokenizer keeps both directions of the lookup (item -> semantic ID, semantic ID ->
item), the prefix tree of valid IDs for constrained decoding
(:meth:`SemanticIDTokenizer.trie`), a per-level quality report and its own save/load.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from tfrec_onerec.clustering import reconstruction_errors, residual_kmeans, residual_quantize
from tfrec_onerec.layers.semantic_id_trie import SemanticIDTrie
from tfrec_onerec.models.generative.rq_vae import RQVAE

METHODS = ("rq_kmeans", "rq_vae")
_CONFIG_FILE, _TABLES_FILE, _RQVAE_FILE = "tokenizer.json", "tables.npz", "rqvae.keras"


# -- numpy helpers (public: the report's definitions, checkable by hand) --------------------
def collision_digits(codes: np.ndarray) -> np.ndarray:
    """The disambiguation level: the rank of each item among the items sharing its codes.

    Args:
        codes: (n, L) int codes.

    Returns:
        (n,) int64: 0 for the first item (in row order) of each group of identical rows,
        1, 2, ... for the following ones; all 0 when there is no collision.
    """
    codes = np.asarray(codes)
    n = codes.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort(np.vstack([np.arange(n), codes.T[::-1]]))  # by codes, then row
    sorted_codes = codes[order]
    new_group = np.r_[True, (sorted_codes[1:] != sorted_codes[:-1]).any(axis=1)]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    digits = np.empty(n, np.int64)
    digits[order] = np.arange(n) - group_start
    return digits


def _entropy_bits(labels: np.ndarray) -> float:
    """Entropy in bits of the empirical distribution of the rows of labels (n, m)."""
    if labels.shape[0] == 0:
        return 0.0
    _, counts = np.unique(labels, axis=0, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def level_metrics(codes: np.ndarray, codebook_size: int | Sequence[int]) -> list:
    """Per-level code-usage statistics of semantic IDs (before the disambiguation level).

    For level l (1-based), over the n items:

    * ``codes_used``: distinct codes at level l; ``utilisation`` = codes_used / K_l.
    * ``entropy_bits``: entropy of the level's code distribution, in **bits** (log2);
      ``normalised_entropy`` = entropy_bits / log2(K_l) (1 = uniform use of all codes).
    * ``conditional_entropy_bits``: ``H(s_l | s_1..s_{l-1})`` = H(prefix_l) - H(prefix_{l-1}),
      in bits: what level l adds once the prefix is known.
    * ``unique_prefixes``: distinct prefixes ``(s_1..s_l)``.
    * ``collision_rate``: share of items whose prefix ``(s_1..s_l)`` is shared with at least
      one other item (at the last level L: the items the disambiguation level separates).

    Args:
        codes: (n, L) int codes.
        codebook_size: K, or one size per level.

    Returns:
        A list of L dicts with the keys above plus ``level``.
    """
    codes = np.asarray(codes)
    n, num_levels = codes.shape
    sizes = [int(codebook_size)] * num_levels if np.isscalar(codebook_size) else [int(k) for k in codebook_size]
    out, previous = [], 0.0
    for level in range(num_levels):
        prefix = codes[:, :level + 1]
        _, inverse, counts = np.unique(prefix, axis=0, return_inverse=True, return_counts=True)
        joint = _entropy_bits(prefix)
        marginal = _entropy_bits(codes[:, level:level + 1])
        used = len(np.unique(codes[:, level]))
        out.append({
            "level": level + 1,
            "codes_used": used,
            "utilisation": used / sizes[level],
            "entropy_bits": marginal,
            "normalised_entropy": marginal / np.log2(sizes[level]) if sizes[level] > 1 else 0.0,
            "conditional_entropy_bits": joint - previous,
            "unique_prefixes": len(counts),
            "collision_rate": float((counts[inverse.ravel()] > 1).mean()) if n else 0.0,
        })
        previous = joint
    return out


def semantic_id_keys(semantic_ids: np.ndarray, vocab_sizes: Sequence[int]) -> np.ndarray:
    """Packs semantic IDs into one int64 each (mixed radix, first level most significant).

    ``key = ((s_1 * V_2 + s_2) * V_3 + s_3) ...``; distinct IDs inside the vocabularies get
    distinct keys, so a hash table (``tf.lookup.StaticHashTable``) can map keys to items.

    Args:
        semantic_ids: (..., L') ints. vocab_sizes: (L',) vocabulary size of each level.

    Returns:
        (...,) int64 keys; -1 where a code lies outside ``[0, V_l)``.
    """
    ids = np.asarray(semantic_ids, np.int64)
    vocab = np.asarray(vocab_sizes, np.int64)
    if ids.shape[-1] != len(vocab):
        raise ValueError(f"semantic_ids must have {len(vocab)} levels in the last axis, got shape {ids.shape}.")
    if np.log2(np.maximum(vocab, 1)).sum() >= 62:
        raise ValueError(f"vocab_sizes {vocab.tolist()} do not fit one int64 key.")
    keys = np.zeros(ids.shape[:-1], np.int64)
    for level in range(len(vocab)):
        keys = keys * vocab[level] + ids[..., level]
    valid = ((ids >= 0) & (ids < vocab)).all(axis=-1)
    return np.where(valid, keys, -1)


# -- the tokenizer -------------------------------------------------------------------------
class SemanticIDTokenizer:
    """Maps items to semantic IDs of ``num_levels + 1`` tokens and back.

    ``fit`` quantizes the item vectors with L levels of K codes, by balanced residual
    k-means (``"rq_kmeans"``, OneRec's choice and the default) or by an RQ-VAE
    (``"rq_vae"``, trained with ``model.fit``), then appends the collision digit
    (:func:`collision_digits`). Afterwards:

    * ``encode(item_ids)`` -> (..., L + 1) semantic IDs; ``decode(semantic_ids)`` -> item ids.
    * ``quantize(vectors)`` -> (n, L) codes of new vectors (nearest codewords, no digit).
    * ``report`` -> per-level utilisation, entropy, collision rate, reconstruction error.
    * ``lookup_tables()`` -> numpy arrays for a SavedModel (both directions); ``trie()`` ->
      the prefix tree of the IDs as a :class:`~tfrec_onerec.layers.semantic_id_trie.SemanticIDTrie`
      (constrained decoding).
    * ``save(directory)`` / ``SemanticIDTokenizer.load(directory)``; ``get_config``.

    Args:
        num_levels: L, levels of codes before the collision digit. Default 3.
        codebook_size: K codes per level. Default 32.
        method: ``"rq_kmeans"`` (default) or ``"rq_vae"``.
        balanced: equal-size clusters at every level (``rq_kmeans`` only). Default True.
        max_iter: Lloyd iterations per level (``rq_kmeans``). Default 50.
        latent_dim, hidden_units, beta, dead_code_patience: the RQ-VAE's (see
            :class:`~tfrec_onerec.models.generative.rq_vae.RQVAE`). Defaults 32, (128, 64), 0.25, 20.
        epochs, batch_size, learning_rate: RQ-VAE training. Defaults 100, 256, 1e-3.
        seed: seeds the k-means and the RQ-VAE. Default 0.

    Example:
        >>> tokenizer = SemanticIDTokenizer(num_levels=3, codebook_size=32)
        >>> ids = tokenizer.fit(vectors, item_ids)       # (n_items, 4)
        >>> tokenizer.decode(tokenizer.encode([5, 7]))   # array([5, 7])
    """

    def __init__(self, num_levels: int = 3, codebook_size: int = 32, method: str = "rq_kmeans",
                 balanced: bool = True, max_iter: int = 50, latent_dim: int = 32,
                 hidden_units: Sequence[int] = (128, 64), beta: float = 0.25, dead_code_patience: int = 20,
                 epochs: int = 100, batch_size: int = 256, learning_rate: float = 1e-3, seed: int = 0):
        if method not in METHODS:
            raise ValueError(f"SemanticIDTokenizer: method must be one of {METHODS}, got {method!r}.")
        if int(num_levels) < 1 or int(codebook_size) < 2:
            raise ValueError(f"SemanticIDTokenizer: num_levels must be >= 1 and codebook_size >= 2, "
                             f"got {num_levels} and {codebook_size}.")
        self.num_levels = int(num_levels)
        self.codebook_size = int(codebook_size)
        self.method = method
        self.balanced = bool(balanced)
        self.max_iter = int(max_iter)
        self.latent_dim = int(latent_dim)
        self.hidden_units = [int(u) for u in hidden_units]
        self.beta = float(beta)
        self.dead_code_patience = int(dead_code_patience)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.seed = int(seed)
        self.codebooks = None  # rq_kmeans: (L, K, d) float
        self.rqvae = None  # rq_vae: the trained RQVAE
        self.item_ids = None  # (n,) in fitting order
        self.codes = None  # (n, L)
        self.semantic_ids = None  # (n, L + 1)
        self.report = None
        self._item_to_row = None

    # -- configuration ---------------------------------------------------------------------
    def get_config(self) -> dict:
        return {"num_levels": self.num_levels, "codebook_size": self.codebook_size, "method": self.method,
                "balanced": self.balanced, "max_iter": self.max_iter, "latent_dim": self.latent_dim,
                "hidden_units": list(self.hidden_units), "beta": self.beta,
                "dead_code_patience": self.dead_code_patience, "epochs": self.epochs,
                "batch_size": self.batch_size, "learning_rate": self.learning_rate, "seed": self.seed}

    @classmethod
    def from_config(cls, config: dict) -> "SemanticIDTokenizer":
        return cls(**config)

    @property
    def fitted(self) -> bool:
        return self.semantic_ids is not None

    @property
    def num_items(self) -> int:
        self._require_fitted()
        return len(self.item_ids)

    @property
    def vocab_sizes(self) -> list:
        """Vocabulary of each of the L + 1 levels: ``[K] * L + [largest collision group]``."""
        self._require_fitted()
        return [self.codebook_size] * self.num_levels + [int(self.semantic_ids[:, -1].max()) + 1]

    def _require_fitted(self):
        if not self.fitted:
            raise RuntimeError("SemanticIDTokenizer is not fitted: call fit(item_embeddings, item_ids) first.")

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, item_embeddings: np.ndarray, item_ids: np.ndarray | None = None, verbose: int = 0) -> np.ndarray:
        """Learns the codebooks and the semantic ID of every item.

        Args:
            item_embeddings: (n_items, d) float item vectors, finite; n_items >= codebook_size.
            item_ids: (n_items,) distinct non-negative int ids; default ``1..n_items``.
            verbose: Keras verbosity of the RQ-VAE training.

        Returns:
            (n_items, num_levels + 1) int64 semantic IDs, row i for ``item_ids[i]``.
        """
        x = np.asarray(item_embeddings, np.float64)
        if x.ndim != 2 or x.shape[0] < self.codebook_size:
            raise ValueError(f"item_embeddings must be (n_items, d) with n_items >= codebook_size "
                             f"({self.codebook_size}), got shape {x.shape}.")
        if not np.isfinite(x).all():
            raise ValueError("item_embeddings has NaN or infinite values.")
        item_ids = self._check_item_ids(item_ids, x.shape[0])
        if self.method == "rq_kmeans":
            fit = residual_kmeans(x, self.num_levels, self.codebook_size, balanced=self.balanced,
                                  max_iter=self.max_iter, seed=self.seed)
            self.codebooks = np.stack(fit.codebooks)
            codes = fit.codes
        else:
            codes = self._fit_rqvae(x, verbose)
        self._set_codes(codes, item_ids)
        self.report = self._make_report(x)
        return self.semantic_ids

    @classmethod
    def from_codes(cls, codes: np.ndarray, item_ids: np.ndarray | None = None, **config) -> "SemanticIDTokenizer":
        """A tokenizer over given codes (n, L) (e.g. computed elsewhere), with collision digits.

        It encodes and decodes, exports its tables and saves, but has no codebooks, so
        ``quantize`` is unavailable and the report has no reconstruction error.
        """
        codes = np.asarray(codes, np.int64)
        if codes.ndim != 2:
            raise ValueError(f"codes must be (n_items, num_levels), got shape {codes.shape}.")
        config = {"num_levels": codes.shape[1], "codebook_size": max(int(codes.max()) + 1, 2), **config}
        tokenizer = cls(**config)
        if codes.shape[1] != tokenizer.num_levels or codes.min() < 0 or codes.max() >= tokenizer.codebook_size:
            raise ValueError(f"codes must be (n, {tokenizer.num_levels}) in [0, {tokenizer.codebook_size}), "
                             f"got shape {codes.shape}, range [{codes.min()}, {codes.max()}].")
        tokenizer._set_codes(codes, tokenizer._check_item_ids(item_ids, codes.shape[0]))
        tokenizer.report = tokenizer._make_report(None)
        return tokenizer

    @staticmethod
    def _check_item_ids(item_ids, n: int) -> np.ndarray:
        if item_ids is None:
            return np.arange(1, n + 1, dtype=np.int64)
        ids = np.asarray(item_ids)
        if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"item_ids must be ({n},) integers matching the embeddings, got shape {ids.shape}, "
                             f"dtype {ids.dtype}.")
        if (ids < 0).any() or len(np.unique(ids)) != n:
            raise ValueError("item_ids must be distinct and non-negative.")
        return ids.astype(np.int64)

    def _fit_rqvae(self, x: np.ndarray, verbose: int) -> np.ndarray:
        import keras

        model = RQVAE(input_dim=x.shape[1], latent_dim=self.latent_dim, hidden_units=self.hidden_units,
                      num_levels=self.num_levels, codebook_size=self.codebook_size, beta=self.beta,
                      dead_code_patience=self.dead_code_patience, seed=self.seed)
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate))
        data = x.astype(np.float32)
        model.fit(data, batch_size=min(self.batch_size, len(data)), epochs=self.epochs, shuffle=True,
                  verbose=verbose)
        self.rqvae = model
        return model.encode(data).astype(np.int64)

    def _set_codes(self, codes: np.ndarray, item_ids: np.ndarray):
        self.codes = np.asarray(codes, np.int64)
        self.item_ids = item_ids
        self.semantic_ids = np.concatenate([self.codes, collision_digits(self.codes)[:, None]], axis=1)
        self._item_to_row = np.full(int(item_ids.max()) + 1, -1, np.int64)
        self._item_to_row[item_ids] = np.arange(len(item_ids))
        keys = semantic_id_keys(self.semantic_ids, self.vocab_sizes)
        order = np.argsort(keys)
        self._sorted_keys, self._sorted_rows = keys[order], order

    # -- quality report ----------------------------------------------------------------------
    def _make_report(self, x: np.ndarray | None) -> dict:
        levels = level_metrics(self.codes, self.codebook_size)
        report = {"method": self.method, "num_items": int(len(self.item_ids)), "num_levels": self.num_levels,
                  "codebook_size": self.codebook_size, "levels": levels,
                  "collision_rate": levels[-1]["collision_rate"],
                  "max_collision_digit": int(self.semantic_ids[:, -1].max()),
                  "items_with_nonzero_digit": int((self.semantic_ids[:, -1] > 0).sum())}
        if x is None:
            return report
        if self.method == "rq_kmeans":
            space, codebooks = x, self.codebooks
        else:
            space = np.asarray(self.rqvae.encode_latent(x.astype(np.float32)), np.float64)
            codebooks = np.asarray(self.rqvae.quantizer.codebooks.numpy(), np.float64)
            output = self.rqvae(x.astype(np.float32), training=False)["reconstruction"]
            report["decoder_reconstruction_error"] = float(((x - np.asarray(output)) ** 2).sum(1).mean())
        errors = reconstruction_errors(space, self.codes, codebooks)
        scale = float(((space - space.mean(0)) ** 2).sum(1).mean())
        for entry, error in zip(levels, errors):
            entry["reconstruction_error"] = float(error)
            entry["relative_reconstruction_error"] = float(error / scale) if scale > 0 else 0.0
        report["reconstruction_space"] = "item vectors" if self.method == "rq_kmeans" else "RQ-VAE latent"
        return report

    # -- lookups -----------------------------------------------------------------------------
    def encode(self, item_ids, on_unknown: str = "raise") -> np.ndarray:
        """Item ids -> semantic IDs.

        Args:
            item_ids: int array of any shape (...).
            on_unknown: ``"raise"`` (default: ``KeyError`` naming the unknown ids) or
                ``"minus_one"`` (rows of -1 for unknown ids).

        Returns:
            (..., num_levels + 1) int64 semantic IDs.
        """
        self._require_fitted()
        ids = np.asarray(item_ids, np.int64)
        known = (ids >= 0) & (ids < len(self._item_to_row))
        rows = np.where(known, self._item_to_row[np.where(known, ids, 0)], -1)
        missing = rows < 0
        if missing.any() and on_unknown == "raise":
            raise KeyError(f"SemanticIDTokenizer.encode: unknown item ids {np.unique(ids[missing])[:10].tolist()} "
                           f"(the tokenizer was fitted on {len(self.item_ids)} items).")
        if on_unknown not in ("raise", "minus_one"):
            raise ValueError(f"on_unknown must be 'raise' or 'minus_one', got {on_unknown!r}.")
        out = self.semantic_ids[np.maximum(rows, 0)]
        out[missing] = -1
        return out

    def decode(self, semantic_ids, on_unknown: str = "minus_one") -> np.ndarray:
        """Semantic IDs -> item ids.

        Args:
            semantic_ids: (..., num_levels + 1) ints.
            on_unknown: ``"minus_one"`` (default: -1 for an ID that names no item, as an
                unconstrained decoder may write) or ``"raise"`` (``KeyError``).

        Returns:
            (...,) int64 item ids.
        """
        self._require_fitted()
        ids = np.asarray(semantic_ids, np.int64)
        if ids.ndim < 1 or ids.shape[-1] != self.num_levels + 1:
            raise ValueError(f"semantic_ids must have shape (..., {self.num_levels + 1}), got {ids.shape}.")
        if on_unknown not in ("raise", "minus_one"):
            raise ValueError(f"on_unknown must be 'raise' or 'minus_one', got {on_unknown!r}.")
        keys = semantic_id_keys(ids, self.vocab_sizes)
        pos = np.clip(np.searchsorted(self._sorted_keys, keys), 0, len(self._sorted_keys) - 1)
        found = (self._sorted_keys[pos] == keys) & (keys >= 0)
        items = np.where(found, self.item_ids[self._sorted_rows[pos]], -1)
        if on_unknown == "raise" and not found.all():
            raise KeyError(f"SemanticIDTokenizer.decode: {int((~found).sum())} semantic IDs name no item, e.g. "
                           f"{ids[~found][0].tolist()}.")
        return items

    def quantize(self, item_embeddings: np.ndarray) -> np.ndarray:
        """(n, d) vectors (e.g. new items) -> (n, num_levels) codes by the fitted quantizer.

        No collision digit: a new item may share all its codes with a known one.
        """
        self._require_fitted()
        if self.method == "rq_kmeans":
            if self.codebooks is None:
                raise RuntimeError("This tokenizer was built from codes and has no codebooks.")
            return residual_quantize(item_embeddings, list(self.codebooks))
        return self.rqvae.encode(np.asarray(item_embeddings, np.float32)).astype(np.int64)

    def trie(self) -> SemanticIDTrie:
        """The prefix tree of the fitted IDs (collision digit included), for constrained
        decoding; ``trie().children_of(prefix)`` lists the codes that may follow a prefix."""
        self._require_fitted()
        return SemanticIDTrie(self.semantic_ids, self.item_ids)

    def lookup_tables(self) -> dict:
        """The lookups as numpy arrays, for putting into a SavedModel (all int64).

        Returns:
            ``{name: array}`` with

            * ``item_ids`` (n,) and ``semantic_ids`` (n, L + 1): the items in fitting order.
            * ``item_to_semantic_id`` (max item id + 1, L + 1): row = item id; -1 rows for ids
              that are not items (e.g. the padding id 0).
            * ``semantic_id_keys`` (n,) sorted :func:`semantic_id_keys` of the IDs and
              ``semantic_id_key_items`` (n,) their items: semantic ID -> item by search.
            * ``vocab_sizes`` (L + 1,).

            The prefix tree for constrained decoding is :meth:`trie`.
        """
        self._require_fitted()
        table = np.full((len(self._item_to_row), self.num_levels + 1), -1, np.int64)
        table[self.item_ids] = self.semantic_ids
        return {"item_ids": self.item_ids.copy(), "semantic_ids": self.semantic_ids.copy(),
                "item_to_semantic_id": table, "semantic_id_keys": self._sorted_keys.copy(),
                "semantic_id_key_items": self.item_ids[self._sorted_rows],
                "vocab_sizes": np.asarray(self.vocab_sizes, np.int64)}

    # -- persistence -------------------------------------------------------------------------
    def save(self, directory) -> Path:
        """Writes ``tokenizer.json`` (config, report), ``tables.npz`` (ids, codes, codebooks)
        and, for ``rq_vae``, ``rqvae.keras`` into `directory` (created if needed)."""
        self._require_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {"item_ids": self.item_ids, "codes": self.codes}
        if self.codebooks is not None:
            arrays["codebooks"] = self.codebooks
        np.savez(directory / _TABLES_FILE, **arrays)
        if self.rqvae is not None:
            self.rqvae.save(directory / _RQVAE_FILE)
        (directory / _CONFIG_FILE).write_text(json.dumps({"config": self.get_config(), "report": self.report},
                                                         indent=1, default=float))
        return directory

    @classmethod
    def load(cls, directory) -> "SemanticIDTokenizer":
        """Reads a tokenizer written by :meth:`save`."""
        directory = Path(directory)
        if not (directory / _CONFIG_FILE).exists():
            raise FileNotFoundError(f"No {_CONFIG_FILE} in {directory}: not a saved SemanticIDTokenizer.")
        saved = json.loads((directory / _CONFIG_FILE).read_text())
        tokenizer = cls.from_config(saved["config"])
        with np.load(directory / _TABLES_FILE) as arrays:
            tokenizer.codebooks = arrays["codebooks"] if "codebooks" in arrays else None
            tokenizer._set_codes(arrays["codes"], arrays["item_ids"])
        if (directory / _RQVAE_FILE).exists():
            import keras

            tokenizer.rqvae = keras.saving.load_model(directory / _RQVAE_FILE)
        tokenizer.report = saved["report"]
        return tokenizer

"""TiCoSeRec: contrastive sequential recommendation with time-interval aware augmentations
(Dang et al., AAAI 2023), on CoSeRec's objective (Liu et al., 2021).

The encoder is SASRec's (:class:`~tfrec_onerec.models.sequence.sasrec.SASRec`, unchanged at
serving). Training adds a contrastive task: every training sequence is augmented twice by
TiCoSeRec's operators (:func:`tfrec_onerec.data.time_augmentation.augmented_views`: Ti-Crop,
Ti-Reorder, Ti-Mask, Ti-Substitute, Ti-Insert under the paper's control strategy), anew every
epoch, and the encoder must tell each sequence's two views apart from the other views of the
batch::

    loss = next-item full-softmax cross-entropy (SASRec's)
           + contrastive_weight * NT-Xent(z_a, z_b; temperature)

with ``z`` a view's encoder output flattened over every position, (batch, L * d), as the
released code does (padding outputs are zero; the rows are end-aligned first, as the released
code's left padding aligns them, so the two views line up from their most recent item).
NT-Xent (:func:`nt_xent`) is CoSeRec's InfoNCE over the 2B views of a batch: each view's
positive is its twin, the other 2B - 2 views are its negatives, similarity divided by the
temperature. Released defaults: weight 0.1, temperature 1.0, two views, dot-product
similarity. Here the similarity is the cosine by default: on MovieLens-100K, whose windows are
full (50 items), the dot products of two flattened 50 x 64 outputs run into the thousands and
the contrastive term swamps the next-item loss (30 epochs through ``family.fit``, seed 0:
Recall@10 0.021 with the dot product, 0.131 with the dot product at weight 0.01, 0.192 with the
cosine; SASRec 0.202; ``benchmarks/sequence_results.py --models ticoserec,ticoserec-dot``
reruns the first and the third).
``similarity="dot"`` is the released code's.

Where the views come from: the training batches carry each input window's timestamps
(``time_seq`` of the next-item rows); :meth:`TiCoSeRec.training_batches` fits the item
similarity of Ti-Substitute/Ti-Insert (ItemCF-IUF) on the training rows only and maps every
batch to ``{item_seq, item_seq_view_a, item_seq_view_b}``. The family's training (``train``,
the TFX Trainer) calls it; with ``model.fit`` on a
:class:`~tfrec_onerec.data.sequences.NextItemData` use :func:`with_augmented_views`.
``augment=False`` keeps the contrastive task on two dropout passes of the unaugmented
sequence (the ablation "without augmentations"); ``contrastive_weight=0`` is SASRec.

Differences from the released code: training rows are the next-item windows of
:mod:`tfrec_onerec.data.sequences` (a user's items in windows of L, every position a
target) instead of every prefix of every user; item similarity counts co-occurrence within a
training window; the last item of a window has no following interval (the released code uses
the target's time).

Public API: :class:`TiCoSeRec` (registry name ``ticoserec``), :func:`nt_xent`,
:func:`with_augmented_views`.
"""
from __future__ import annotations

from typing import Mapping

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfrec_onerec.data.sequences import SEQUENCE_FEATURE, TIME_FEATURE, training_windows
from tfrec_onerec.data.time_augmentation import ItemSimilarity, augmented_views
from tfrec_onerec.models.base import per_replica
from tfrec_onerec.models.registry import register
from tfrec_onerec.models.sequence.sasrec import SASRec

VIEW_SUFFIXES = ("_view_a", "_view_b")
VIEW_REPRESENTATIONS = ("flatten", "last")
SIMILARITIES = ("dot", "cosine")


def nt_xent(a, b, temperature: float = 1.0, cosine: bool = False):
    """CoSeRec's InfoNCE (NT-Xent) of two views of a batch.

    Args:
        a, b: (B, D) representations; row i of `a` and row i of `b` are views of one sequence.
        temperature: divides the similarities.
        cosine: cosine similarity (SimCLR's) instead of the dot product (the released code's).

    Returns:
        The scalar mean over the 2B views of the cross-entropy of picking a view's twin among
        the 2B - 1 other views (similarity of a view with itself excluded).
    """
    a, b = ops.cast(a, "float32"), ops.cast(b, "float32")
    views = ops.concatenate([a, b], axis=0)  # (2B, D)
    if cosine:
        views = views / ops.maximum(ops.norm(views, axis=-1, keepdims=True), 1e-12)
    logits = ops.matmul(views, ops.transpose(views)) / temperature
    size = ops.shape(views)[0]
    logits = ops.where(ops.eye(size, dtype="bool"), -np.inf, logits)
    half = size // 2
    twins = ops.concatenate([ops.arange(half) + half, ops.arange(half)], axis=0)
    return ops.mean(keras.losses.sparse_categorical_crossentropy(twins, logits, from_logits=True))


def with_augmented_views(batches: tf.data.Dataset, similarity: ItemSimilarity, feature: str = "item_seq",
                         seed: int = 0, threshold: int = 12, rates: Mapping | None = None) -> tf.data.Dataset:
    """Adds two TiCoSeRec views of each sequence to every batch, drawn anew at every pass.

    Args:
        batches: ``({feature: (B, L) ids, "time_seq": (B, L) float}, targets)`` batches (e.g.
            ``NextItemData.train_dataset(with_times=True)``).
        similarity: an :class:`~tfrec_onerec.data.time_augmentation.ItemSimilarity` fitted on
            training sequences only.
        feature: the item sequence feature. seed: seeds the augmentations.
        threshold, rates: as :func:`~tfrec_onerec.data.time_augmentation.augment`.

    Returns:
        ``({feature, feature + "_view_a", feature + "_view_b": (B, L) int64}, targets)`` batches.
    """
    rng = np.random.default_rng(seed)
    rates = dict(rates or {})

    def draw(items, times):
        return augmented_views(items, times, rng, similarity, views=2, threshold=threshold, rates=rates)

    def add_views(features, targets):
        if TIME_FEATURE not in features:
            raise ValueError(f"TiCoSeRec's augmentations need the timestamps {TIME_FEATURE!r} in every training "
                             f"batch; the batches have {sorted(features)}.")
        items = features[feature]
        views = tf.numpy_function(draw, [items, features[TIME_FEATURE]], tf.int64, stateful=True)
        views = tf.ensure_shape(views, [2] + items.shape.as_list())
        return {feature: items, **{feature + s: views[i] for i, s in enumerate(VIEW_SUFFIXES)}}, targets

    return batches.map(add_views)


@register("ticoserec", family="next_item")
class TiCoSeRec(SASRec):
    """SASRec trained with next-item prediction plus contrastive learning between two
    time-interval aware augmentations of each sequence (module docstring).

    Args:
        feature_spec, sequence_feature, num_blocks, num_heads, ffn_dim, dropout, activation,
            l2, top_n: as :class:`~tfrec_onerec.models.sequence.sasrec.SASRec`.
        contrastive_weight: weight of the NT-Xent term. Default 0.1 (released code).
        temperature: NT-Xent temperature. Default 1.0 (released code).
        augment: views are TiCoSeRec augmentations (default); False: both views are the
            sequence itself, differing only by dropout.
        augmentation_threshold: sequences longer than this draw from all five operators,
            shorter ones from Substitute, Insert and Mask. Default 12 (the paper's).
        augmentation_rates: ``{operator: rate}`` overriding the operators' default rates.
        view_representation: what the views compare: ``"flatten"`` (every position's output,
            (B, L * d), the released code's) or ``"last"`` (the output at the last real
            position, the user representation that serving uses).
        similarity: ``"cosine"`` (default) or ``"dot"`` (the released code's; module docstring).

    Fit:
        Batches ``({sequence_feature, sequence_feature + "_view_a", ... + "_view_b": (batch, L)},
        (batch, L) targets)`` (:func:`with_augmented_views`; with ``augment=False`` the views
        may be left out).
    """

    def __init__(self, feature_spec, sequence_feature: str | None = None, contrastive_weight: float = 0.1,
                 temperature: float = 1.0, augment: bool = True, augmentation_threshold: int = 12,
                 augmentation_rates: Mapping | None = None, view_representation: str = "flatten",
                 similarity: str = "cosine", **kwargs):
        super().__init__(feature_spec, sequence_feature, **kwargs)
        if contrastive_weight < 0 or temperature <= 0:
            raise ValueError(f"TiCoSeRec: contrastive_weight must be >= 0 and temperature > 0; got "
                             f"{contrastive_weight} and {temperature}.")
        if view_representation not in VIEW_REPRESENTATIONS or similarity not in SIMILARITIES:
            raise ValueError(f"TiCoSeRec: view_representation must be one of {VIEW_REPRESENTATIONS} and similarity "
                             f"one of {SIMILARITIES}; got {view_representation!r} and {similarity!r}.")
        self.view_representation = view_representation
        self.similarity = similarity
        self.contrastive_weight = float(contrastive_weight)
        self.temperature = float(temperature)
        self.augment = bool(augment)
        self.augmentation_threshold = int(augmentation_threshold)
        self.augmentation_rates = dict(augmentation_rates or {})

    @property
    def view_features(self) -> tuple:
        return tuple(self.sequence_feature + s for s in VIEW_SUFFIXES)

    def contrastive_loss(self, inputs, training=True):
        """NT-Xent between the encoder outputs of the two views in `inputs` (``view_representation``)."""
        if self.augment:
            missing = [name for name in self.view_features if name not in inputs]
            if missing:
                raise ValueError(f"TiCoSeRec: training batches need the augmented views {list(self.view_features)} "
                                 f"(missing {missing}); map the batches with with_augmented_views, or train through "
                                 "the next_item family, which does.")
            views = [inputs[name] for name in self.view_features]
        else:
            views = [self.ids(inputs)] * 2
        if self.view_representation == "last":
            encoded = [self.user_representation({self.sequence_feature: v}, training=training) for v in views]
        else:
            encoded = [ops.reshape(self.end_aligned(v, self({self.sequence_feature: v}, training=training)),
                                   (-1, self.max_len * self.dim)) for v in views]
        return nt_xent(encoded[0], encoded[1], self.temperature, cosine=self.similarity == "cosine")

    def end_aligned(self, ids, hidden):
        """(B, L, d) `hidden` of right-padded (B, L) `ids` rolled so that each row's last real
        position comes last (padding first): the layout of the released code's left padding,
        where the flattened views of a sequence line up from their most recent item."""
        positions = ops.arange(self.max_len, dtype="int32")[None, :]
        last = ops.max(ops.where(ops.not_equal(ids, 0), positions, 0), axis=1, keepdims=True)
        return ops.take_along_axis(hidden, ops.expand_dims((last + 1 + positions) % self.max_len, -1), axis=1)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """SASRec's next-item loss, plus ``contrastive_weight`` times :meth:`contrastive_loss`
        in training (validation reports the next-item loss alone)."""
        loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        if training and self.contrastive_weight:
            loss = loss + per_replica(self.contrastive_weight * self.contrastive_loss(x, training=True))
        return loss

    @classmethod
    def training_batches(cls, batches, data, config, hyperparameters: Mapping) -> tf.data.Dataset:
        """The next-item family's training batches with two augmented views per sequence (the
        family hook of :meth:`tfrec_onerec.families.base.ModelFamily.training_batches`): item
        similarity fitted on the training split's rows (input window and targets) only."""
        if not hyperparameters.get("augment", True):
            return batches
        similarity = ItemSimilarity(data.spec[SEQUENCE_FEATURE].vocab_size).fit(list(training_windows(data)))
        return with_augmented_views(batches, similarity, SEQUENCE_FEATURE, seed=config.seed,
                                    threshold=hyperparameters.get("augmentation_threshold", 12),
                                    rates=hyperparameters.get("augmentation_rates"))

    def get_config(self):
        return {**super().get_config(), "contrastive_weight": self.contrastive_weight,
                "temperature": self.temperature, "augment": self.augment,
                "augmentation_threshold": self.augmentation_threshold,
                "augmentation_rates": self.augmentation_rates, "view_representation": self.view_representation,
                "similarity": self.similarity}

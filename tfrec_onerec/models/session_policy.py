"""What the session-value family's models share: the state they read, the top unshown items,
and the four serving signatures the family's rollouts and TF Serving call.

A session-value model (:mod:`tfrec_onerec.families.session_value`) reads the state features
of :mod:`tfrec_onerec.data.session_steps` (``user_id`` (B,), ``user_history`` (B, H_u),
``session_items`` (B, H_s), ``session_step`` (B,)) and a shown ``item_id`` (B,), and scores
every item of the catalogue from a state with ``item_scores`` (``{"value", "reward", ...:
(B, num_items)}``, column j for item j + 1). :class:`SessionPolicyModel` turns that into the
exported signatures; a subclass sets ``feature_spec``, ``input_names``, ``num_items`` and
``top_n`` and implements ``call`` and ``item_scores``.
"""
from __future__ import annotations

from typing import Mapping

import keras
import numpy as np
import tensorflow as tf

from keras import ops

from tfrec_onerec.data.session_steps import ITEM_FEATURE, SESSION_ITEMS, STATE_FEATURES, STEP_FEATURE, USER_FEATURE
from tfrec_onerec.features.parsing import parse_examples
from tfrec_onerec.features.tfrecord import serialize_rows
from tfrec_onerec.models.base import SpecBuiltModel

PREDICT_SIGNATURE, SCORE_SIGNATURE, RECOMMEND_SIGNATURE = "predict", "score_items", "recommend"
SERVING_SIGNATURE, EXAMPLES_INPUT = "serving_default", "examples"


def next_session_items(items, item_ids):
    """(B, H) the session's items after showing `item_ids`: (B,) appended to (B, H) items
    (oldest first, right-padded with 0), the oldest dropped when all H slots are full."""
    items = ops.convert_to_tensor(items)
    width = items.shape[-1]
    count = ops.sum(ops.cast(items != 0, "int32"), axis=1, keepdims=True)  # (B, 1)
    extended = ops.concatenate([items, ops.zeros_like(items[:, :1])], axis=1)  # (B, H + 1)
    slot = ops.arange(width + 1, dtype="int32")[None, :] == count
    extended = ops.where(slot, ops.cast(item_ids, items.dtype)[:, None], extended)
    return ops.where(count >= width, extended[:, 1:], extended[:, :width])


def shown_items_mask(session_items, num_items: int):
    """(B, num_items) bool: True where item j + 1 is among (B, H) `session_items` (0: padding)."""
    items = tf.cast(session_items, tf.int64)
    return tf.reduce_any(tf.range(1, num_items + 1, dtype=tf.int64)[None, :, None] == items[:, None, :], axis=-1)


def top_unshown(values, session_items, k: int):
    """``(item_ids, values)`` (B, k): the k items of highest (B, num_items) `values` that are
    not among (B, H) `session_items`, best first."""
    hit = shown_items_mask(session_items, values.shape[-1])
    top = tf.math.top_k(tf.where(hit, tf.constant(-np.inf, values.dtype), values), k=k)
    return tf.cast(top.indices, tf.int64) + 1, top.values


class SessionPolicyModel(SpecBuiltModel, keras.Model):
    """Base of the session-value family's models: ``recommend`` and the serving signatures
    from the subclass's ``item_scores`` (module docstring)."""

    def after(self, features, item_ids) -> dict:
        """The state features after showing (B,) `item_ids`: the item appended to the
        session's items (:func:`next_session_items`), the step plus one."""
        return {**features, SESSION_ITEMS: next_session_items(features[SESSION_ITEMS], item_ids),
                STEP_FEATURE: ops.minimum(features[STEP_FEATURE] + 1, self.feature_spec[STEP_FEATURE].vocab_size)}

    def recommend(self, features, top_n=None):
        """``(item_ids, values)`` (B, top_n): the items of highest ``value`` not among the
        session's items (the newest H_s shown)."""
        return top_unshown(self.item_scores(features)["value"], features[SESSION_ITEMS],
                           self.top_n if top_n is None else top_n)

    def input_signature(self, names=None) -> dict:
        spec = self.feature_spec
        return {name: tf.TensorSpec((None,) + spec[name].shape, spec[name].dtype, name=name)
                for name in (names or self.input_names)}

    def serving_endpoints(self) -> dict:
        """``{signature: (function, input signature)}`` for :func:`tfrec_onerec.export.export_saved_model`.

        * ``predict``: the state features and ``item_id`` (B,) -> the model's outputs for
          candidates a caller already has (``value`` (B, 1) among them).
        * ``serving_default``: ``examples`` (B,) serialized tf.Example of the same -> the same.
        * ``score_items``: the state features -> ``item_scores`` (``value``, ``reward``, ...
          (B, num_items)), column j for item j + 1 (what the family's rollouts read).
        * ``recommend``: the state features -> ``item_ids``, ``values`` (B, top_n), best first,
          never an item of ``session_items``.
        """
        self.build()
        state_spec = self.input_signature(list(STATE_FEATURES))
        pair_spec = self.feature_spec.subset(self.input_names)

        def predict(features):
            return self(features, training=False)

        def serve_examples(examples):
            return predict(parse_examples(examples, pair_spec))

        def recommend(features):
            item_ids, values = self.recommend(features)
            return {"item_ids": item_ids, "values": values}

        return {PREDICT_SIGNATURE: (predict, [self.input_signature()]),
                SERVING_SIGNATURE: (serve_examples, [tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)]),
                SCORE_SIGNATURE: (self.item_scores, [state_spec]),
                RECOMMEND_SIGNATURE: (recommend, [state_spec])}

    def warmup_inputs(self) -> dict:
        """One TF Serving warmup request per signature: user 1 at a session's first step."""
        spec = self.feature_spec
        row = {name: np.zeros((1,) + spec[name].shape, np.int64) for name in self.input_names}
        row[USER_FEATURE][:], row[STEP_FEATURE][:], row[ITEM_FEATURE][:] = 1, 1, 1
        state = {name: row[name] for name in STATE_FEATURES}
        examples = serialize_rows(row, spec.subset(self.input_names))
        return {PREDICT_SIGNATURE: row, SERVING_SIGNATURE: {EXAMPLES_INPUT: np.array(examples, dtype=object)},
                SCORE_SIGNATURE: state, RECOMMEND_SIGNATURE: state}

    @classmethod
    def derived_hyperparameters(cls, data, hyperparameters: Mapping) -> dict:
        """``reward_scale`` from the training log's mean reward unless given."""
        return {"reward_scale": float(data.metadata.get("mean_reward") or 1.0), **dict(hyperparameters)}

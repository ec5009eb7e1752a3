"""NeighbourEnhancedDNN: a YouTube-DNN-style ranker whose users and items borrow from their neighbours.

He & Xiao, "Neighbor Based Enhancement for the Long-Tail Ranking Problem in Video Rank
Models" (DLP-KDD 2021, arXiv 2302.08128). A user or item with few interactions has a poorly
trained embedding; its neighbours (users with the same profile or similar interests, items
clicked by the same users or of the same category) are better trained, so the model adds an
attention-weighted summary of them to the ranker's input.

Model (per example)::

    history  = mean of the behaviours' embeddings                 (YouTube-DNN's watch-history pool)
    u_nbr    = NeighbourAttention(user embedding, user neighbours of each user type)
    i_nbr    = NeighbourAttention(item embedding, item neighbours of each item type)
    p(task)  = sigmoid(head_task(MLP([user profile, candidate, context, history, u_nbr, i_nbr])))

:class:`~tfrec_onerec.layers.neighbour_attention.NeighbourAttention` is the paper's node-level
attention within a neighbour type and attention across the types; ``attention=False`` gives
the released code's mean pooling (the released notebook implements the attention but leaves
it switched off). The neighbour sets (:mod:`.neighbours`) are built offline from the training
split's positives by :meth:`NeighbourEnhancedDNN.derived_hyperparameters` (the family hook),
and live in the model as non-trainable id tables, so an export needs only the request's
user and item ids. Neighbours are embedded with the model's own user-id and item-id tables.

Every signal is a switch: ``user_neighbour_types`` and ``item_neighbour_types`` choose the
neighbour sets (empty: none), so ``NeighbourEnhancedDNN(..., user_neighbour_types=(),
item_neighbour_types=())`` is the plain ranker the paper compares against.

Choices where the paper text available here is silent (documented for the model's README entry):

* LeakyReLU slope 0.2 in the node-level scores; no self-loop (the released code counts the
  node among its own neighbours; here its own embedding reaches the MLP directly).
* Type-level attention per example (HAN averages it over all nodes, which would make a
  score depend on the rest of its batch).
* The neighbour vectors are concatenated to the MLP input; the released code adds the
  user's mean neighbour to its mean history instead.
* K = 10 neighbours of each type (the released code's item-CF neighbours are its top 10).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from keras import ops

from tfrec_onerec.layers import SequencePooling
from tfrec_onerec.layers.neighbour_attention import NeighbourAttention
from tfrec_onerec.data.registry import ITEM_ENTITIES_FILE
from tfrec_onerec.models.onerec_series.neighbours import (ITEM_TYPES, OPTIONAL_ITEM_TYPES, USER_TYPES, Interactions,
                                                          build_neighbours)
from tfrec_onerec.models.registry import register
from tfrec_onerec.models.sequence.din import DINBase


def neighbour_roles(spec) -> dict:
    """The spec's columns each neighbour set reads: ``user`` (the user id), ``item`` (the
    candidate id: the first history feature's query), ``category`` (the second history
    feature's query, or None) and ``profile`` (the user's other categorical features)."""
    queries = [f.query for f in spec.group("history") if f.query]
    if not queries:
        raise ValueError("NeighbourEnhancedDNN needs a 'history' feature with a 'query' (the candidate item id).")
    return {"user": spec.user_key, "item": queries[0], "category": queries[1] if len(queries) > 1 else None,
            "profile": [f.name for f in spec.group("user") if f.kind == "categorical" and f.name != spec.user_key]}


@register("neighbour_enhanced_dnn", family="pointwise")
class NeighbourEnhancedDNN(DINBase):
    """YouTube-DNN-style ranker with neighbour-enhanced user and item representations.

    Args:
        feature_spec: the :class:`~tfrec_onerec.features.FeatureSpec`: a user id (``user_key``),
            user profile features, a candidate id and category, and their histories.
        tasks: output tasks; one sigmoid head each. Default ``("click",)``.
        user_neighbour_types: user neighbour sets, from :data:`~.neighbours.USER_TYPES`
            (``"profile"``, ``"interest"``). Default both.
        item_neighbour_types: item neighbour sets, from :data:`~.neighbours.ITEM_TYPES`
            (``"collaborative"``, ``"category"``) and ``"knowledge"`` (knowledge-graph
            neighbours: the data set needs a knowledge graph). Default the first two: on
            MovieLens-100K the knowledge neighbours lower the test AUC (its links are noisy,
            see ``docs/results/onerec_series.md``), so they are a switch, not a default.
        num_neighbours: K, neighbours per type. Default 10.
        neighbours: ``{type: int array (vocab_size + 1, K)}``, the tables of
            :func:`~.neighbours.build_neighbours`; None (a model rebuilt from its config): empty
            tables, filled when its weights are loaded.
        attention: the paper's two attention levels; False: the released code's mean pooling.
        neighbour_units: width of the node-level projection; None: the id embedding width.
        **kwargs: as :class:`~tfrec_onerec.models.sequence.din.DINBase` (``mlp_units``,
            ``activation``, ``dropout``, ``l2``).

    Call:
        inputs: ``{feature: tensor}`` as parsed from the spec.
        Returns ``{task: (batch, 1) probability}``.
    """

    def __init__(self, feature_spec, tasks: Sequence = ("click",), user_neighbour_types: Sequence[str] = USER_TYPES,
                 item_neighbour_types: Sequence[str] = ITEM_TYPES, num_neighbours: int = 10,
                 neighbours: Mapping | None = None, attention: bool = True, neighbour_units: int | None = None,
                 **kwargs):
        super().__init__(feature_spec, tasks, **kwargs)
        self.user_neighbour_types = list(user_neighbour_types)
        self.item_neighbour_types = list(item_neighbour_types)
        self.num_neighbours = int(num_neighbours)
        self.attention = bool(attention)
        self.neighbour_units = neighbour_units
        self.roles = neighbour_roles(self.feature_spec)
        self.sides = {}
        for side, types, known in (("user", self.user_neighbour_types, USER_TYPES),
                                   ("item", self.item_neighbour_types, ITEM_TYPES + OPTIONAL_ITEM_TYPES)):
            unknown = [t for t in types if t not in known]
            if unknown:
                raise ValueError(f"NeighbourEnhancedDNN: unknown {side} neighbour type(s) {unknown}; known: "
                                 f"{list(known)}.")
            if types:
                self.sides[side] = self._neighbour_side(side, types, neighbours or {})

    def _neighbour_side(self, side: str, types: list, given: Mapping) -> dict:
        """The id table (types, vocab + 1, K) and attention layer of one side."""
        rows = self.feature_spec[self.roles[side]].vocab_size + 1
        table = self.add_weight(name=f"{side}_neighbours", shape=(len(types), rows, self.num_neighbours),
                                dtype="int64", trainable=False, initializer="zeros")
        missing = [t for t in types if t not in given]
        if given and missing:
            raise ValueError(f"NeighbourEnhancedDNN: `neighbours` has no table for the {side} type(s) {missing}.")
        if given:
            tables = [np.asarray(given[t], np.int64) for t in types]
            for name, values in zip(types, tables):
                if values.shape != (rows, self.num_neighbours):
                    raise ValueError(f"NeighbourEnhancedDNN: the {name!r} neighbour table must be (vocab_size + 1 = "
                                     f"{rows}, num_neighbours = {self.num_neighbours}); got {values.shape}.")
            table.assign(np.stack(tables))
        attention = NeighbourAttention(len(types), self.neighbour_units, attention=self.attention,
                                       name=f"{side}_neighbour_attention")
        return {"table": table, "attention": attention, "key": self.roles[side]}

    def _make_pooling(self):
        return SequencePooling("mean", name="mean_pooling")

    def neighbours(self, side: str, ids) -> tuple:
        """``(node (batch, d), neighbours (batch, types, K, d), mask (batch, types, K))``: the
        embeddings of (batch,) user or item `ids` on `side` and of their neighbours."""
        entry = self.sides[side]
        table, key = entry["table"], entry["key"]
        rows = ops.convert_to_tensor(ids, "int64")
        rows = ops.where((rows > 0) & (rows < ops.shape(table)[1]), rows, 0)
        neighbour_ids = ops.transpose(ops.take(table, rows, axis=1), (1, 0, 2))  # (batch, types, K)
        return self.embedding.embed(key, ids), self.embedding.embed(key, neighbour_ids), neighbour_ids != 0

    def neighbour_vector(self, side: str, ids):
        """(batch, units) the neighbour summary of (batch,) user or item `ids` on `side`."""
        return self.sides[side]["attention"](*self.neighbours(side, ids))

    def neighbour_type_weights(self, side: str, ids):
        """(batch, types) how much each neighbour type of `side` counts for (batch,) `ids`: the
        type-level attention weights (the uniform mean's without attention); 0 for a type
        without neighbours."""
        node, vectors, mask = self.neighbours(side, ids)
        layer = self.sides[side]["attention"]
        return layer.type_weights(layer.type_vectors(node, vectors, mask), ops.any(mask, axis=-1))

    def call(self, inputs, training=None):
        features = self.checked_inputs(inputs)
        profile, query = self.candidate(features)
        keys, key_mask = self.behaviours(features)
        interests = [self._pool(query, keys, key_mask, training=training)]
        interests += [self.neighbour_vector(side, features[self.roles[side]]) for side in self.sides]
        return self.predict_tasks(profile, interests, training)

    def neighbour_tables(self) -> dict:
        """``{type: (vocab_size + 1, K) numpy table}`` of every neighbour type in use."""
        tables = {}
        for side, types in (("user", self.user_neighbour_types), ("item", self.item_neighbour_types)):
            if side in self.sides:
                tables.update(zip(types, ops.convert_to_numpy(self.sides[side]["table"])))
        return tables

    def get_config(self):
        return {**super().get_config(), "user_neighbour_types": self.user_neighbour_types,
                "item_neighbour_types": self.item_neighbour_types, "num_neighbours": self.num_neighbours,
                "attention": self.attention, "neighbour_units": self.neighbour_units}

    # -- family hook -------------------------------------------------------------------------
    @classmethod
    def derived_hyperparameters(cls, data, hyperparameters: Mapping) -> dict:
        """``neighbours`` built from the training split's positives (``click`` = 1) when not
        given (the family hook of :meth:`tfrec_onerec.families.base.ModelFamily.fit`): no
        validation or test row is read. ``"knowledge"`` neighbours read the data's knowledge
        graph (its ``item_entities.npz``: MovieLens-100K has one)."""
        hyperparameters = dict(hyperparameters)
        if "neighbours" in hyperparameters:
            return hyperparameters
        types = (list(hyperparameters.get("user_neighbour_types", USER_TYPES))
                 + list(hyperparameters.get("item_neighbour_types", ITEM_TYPES)))
        graph = knowledge_graph(data) if "knowledge" in types else None
        if types:
            spec, roles = data.spec, neighbour_roles(data.spec)
            interactions = Interactions(
                data.columns("train"), roles["user"], roles["item"], roles["category"], roles["profile"],
                spec[roles["user"]].vocab_size, spec[roles["item"]].vocab_size,
                spec[roles["category"]].vocab_size if roles["category"] else 0, item_entities=graph)
            hyperparameters["neighbours"] = build_neighbours(
                interactions, types, int(hyperparameters.get("num_neighbours", 10)))
        return hyperparameters


def knowledge_graph(data) -> dict | None:
    """The data's item -> knowledge-graph entity pairs (its ``item_entities.npz`` side file),
    or None when it has none."""
    try:
        return data.load_side_arrays(ITEM_ENTITIES_FILE)
    except FileNotFoundError:
        return None

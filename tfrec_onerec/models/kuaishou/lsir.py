"""LSIR: learning the social graph for inactive-user recommendation (DASFAA 2024, arXiv 2405.05288).

Inactive users have too few interactions for collaborative filtering; their social links
could fill the gap, but observed links are noisy (links to people of other tastes) and
incomplete. LSIR (Liu, Fan, Bai et al.) learns the graph it aggregates over:

* **encoder**: LightGCN on the user-item graph of training interactions (symmetric
  normalisation, no weights, no self-loops; ``num_layers`` layers, the mean of layers
  0..K is ``e``), edges dropped at random in training (kept with ``edge_keep``, rescaled);
  one social step ``s = (e_u + sum_v a_uv e_v) / 2``; the user is ``E_u = W [h_u; e_u; s_u]``
  (``h``: the user's own embedding), an item is its ``e``; scores are dot products.
* **graph structure learning**: a similarity head ``cos(relu(W_n z_u), relu(W_n z_v))``
  scores links.

  - *removal*: a user keeps the top ``floor(n_u (1 - p_del))`` of their ``n_u`` observed
    links, ``p_del = min(max_delete, tanh(d_u / delete_scale))``, ``d_u`` the user's
    number of training interactions (active users' links are pruned more: they need them least);
  - *addition*: a user gains the top ``floor(addition_pool * p_add)`` candidates,
    ``p_add = min(max_add, sigmoid(-d_u / add_scale))``: the less active, the more links;
  - each set's weights are a softmax of its similarities (no temperature), and
    ``a = addition_weight * A_add + (1 - addition_weight) * A_kept`` replaces the raw graph in ``s``;
  - ``refinement_steps`` rounds: the first scores links from ``e``, each later one from the
    previous round's ``E``.

* **mimic learning**: active users are turned into pseudo-inactive ones, and the learned
  graph is trained to serve those: a pseudo user keeps only the first ``inactive_items`` of
  the active user's items (its ``e`` and ``h`` are their mean item embeddings, its activity
  ``inactive_items``), keeps the active user's links, and must still rank the active user's
  items: a BPR loss on its ``E``, weight ``mimic_weight``. Through it the similarity head
  learns which links help a user with little history.

Loss: BPR (``softplus(s_neg - s_pos)``, one uniform negative item per positive) + ``l2`` x
the squared norms of the batch's own embeddings + the mimic loss.

Choices made where the paper's released code (github.com/liun-online/LSIR) and this zoo
differ, and why:

* users and items have id embeddings (the code encodes side features with an MLP; the
  simulator's users have no features worth it);
* added links go to **users** (the most similar of the active users, ``addition_pool``
  candidates' worth), not to the code's 30 precomputed interest-cluster prototypes, so the
  learned graph is a user graph that can be scored against the true friendships;
* the graph is relearned at every training step (the code rebuilds it every 100 epochs
  between alternating encoder and structure phases); here one optimiser trains both on one
  loss, the structure's similarities reading the encoder's embeddings through a stop-gradient
  as the code's structure phase reads them frozen;
* mimic learning as above: the released code's contrastive mimic loss reads only detached
  embeddings, so it trains nothing; this one truncates histories, as the paper describes it.

``learn_graph=False`` keeps the same encoder on the raw observed graph (symmetric
normalisation): the baseline LSIR is compared against.

The graph (training interactions, observed links, candidates) is held in non-trainable
weights: saving the weights saves it, and a model rebuilt from its config has its shape
(counts in the config), filled when the weights load.

Inputs: ``user_id`` (B,) int64 (validation batches also carry ``seen_item_ids``, see
:meth:`LSIR.compute_loss`). Call -> ``{"scores": (B, num_items)}``, column j for item j + 1.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfrec_onerec.models.registry import register

USER_FEATURE, ITEM_FEATURE, SEEN_FEATURE = "user_id", "item_id", "seen_item_ids"
RECOMMEND_SIGNATURE, SCORE_SIGNATURE = "recommend", "score_items"
SERVING_SIGNATURE, EXAMPLES_INPUT = "serving_default", "examples"


def neighbour_table(src, dst, num_users: int, width: int | None = None) -> np.ndarray:
    """(U + 1, D) int64: row u lists u's neighbours of undirected links ``(src, dst)``, 0-padded.

    Args:
        width: D; default the largest degree. A wider row is cut (its first D neighbours).
    """
    src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
    rows, cols = np.concatenate([src, dst]), np.concatenate([dst, src])
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    degree = np.bincount(rows, minlength=num_users + 1)
    width = int(width if width is not None else max(1, degree.max(initial=0)))
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(degree) - degree, degree)
    keep = slot < width
    table = np.zeros((num_users + 1, width), np.int64)
    table[rows[keep], slot[keep]] = cols[keep]
    return table


def first_items(users, items, num_users: int, count: int) -> np.ndarray:
    """(U + 1, count) int64: each user's first `count` items of the (user-grouped, ordered)
    interactions, 0-padded."""
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    degree = np.bincount(users, minlength=num_users + 1)
    start = np.cumsum(degree) - degree
    slot = np.arange(len(users)) - start[users]
    keep = slot < count
    table = np.zeros((num_users + 1, count), np.int64)
    table[users[keep], slot[keep]] = items[keep]
    return table


def masked_softmax(logits, mask):
    """Softmax of (..., n) `logits` over the entries where `mask`; rows without any: zeros."""
    logits = tf.where(mask, logits, tf.fill(tf.shape(logits), -1e9))
    weights = tf.nn.softmax(logits, axis=-1) * tf.cast(mask, logits.dtype)
    return tf.math.divide_no_nan(weights, tf.reduce_sum(weights, axis=-1, keepdims=True))


def top_share_mask(scores, mask, keep_counts):
    """(R, D) bool: per row, the `keep_counts` (R,) highest `scores` among the `mask` entries."""
    ranked = tf.where(mask, scores, tf.fill(tf.shape(scores), -np.inf))
    order = tf.argsort(ranked, axis=-1, direction="DESCENDING", stable=True)
    rank = tf.argsort(order, axis=-1, stable=True)
    return mask & (rank < tf.cast(keep_counts, rank.dtype)[:, None])


def light_gcn(rows, cols, values, embeddings, num_layers: int):
    """(N, d) mean of layers 0..K of LightGCN: ``x_{k+1} = A x_k`` for the sparse (N, N)
    adjacency given by `rows`, `cols`, `values` (E,)."""
    size = tf.shape(embeddings, out_type=tf.int64)[0]
    adjacency = tf.sparse.SparseTensor(tf.stack([rows, cols], axis=1), values, tf.stack([size, size]))
    layers, x = [embeddings], embeddings
    for _ in range(num_layers):
        x = tf.sparse.sparse_dense_matmul(adjacency, x)
        layers.append(x)
    return tf.add_n(layers) / float(num_layers + 1)


@register("lsir", family="social_graph")
class LSIR(keras.Model):
    """LSIR (module docstring): users' scores of every item from a learned social graph.

    Args:
        num_users, num_items: U, I (ids 1..U, 1..I).
        num_interactions: training interactions in the graph.
        neighbour_width: D, the widest row of the observed social graph's neighbour table.
        num_candidates: users links may be added to (the active users).
        graph: ``{"train_users", "train_items", "neighbours", "candidates"}`` arrays that fill
            the graph weights (see :meth:`set_graph`); None: filled by loading weights.
        embedding_dim: d. Default 64.
        num_layers: LightGCN layers. Default 3.
        edge_keep: probability an interaction edge is kept in a training step. Default 0.5.
        learn_graph: learn the social graph (LSIR); False: the raw observed graph. Default True.
        refinement_steps: rounds of graph learning. Default 2.
        delete_scale, max_delete: removal share ``min(max_delete, tanh(d / delete_scale))``.
            Defaults 100, 0.1.
        add_scale, max_add, addition_pool: links added: ``floor(addition_pool * min(max_add,
            sigmoid(-d / add_scale)))``. Defaults 2, 0.1, 30.
        addition_weight: weight of the added links' aggregate. Default 0.5.
        inactive_items: items of a pseudo-inactive user. Default 3.
        mimic_weight: weight of the mimic loss (0: none). Default 0.1.
        l2: weight of the embeddings' squared norms. Default 1e-4.
        top_n: items ``recommend`` returns. Default 10.
    """

    def __init__(self, num_users: int, num_items: int, num_interactions: int, neighbour_width: int,
                 num_candidates: int, graph: dict | None = None, embedding_dim: int = 64, num_layers: int = 3,
                 edge_keep: float = 0.5, learn_graph: bool = True, refinement_steps: int = 2,
                 delete_scale: float = 100.0, max_delete: float = 0.1, add_scale: float = 2.0,
                 max_add: float = 0.1, addition_pool: int = 30, addition_weight: float = 0.5, inactive_items: int = 3,
                 mimic_weight: float = 0.1, l2: float = 1e-4, top_n: int = 10, **kwargs):
        super().__init__(**kwargs)
        sizes = dict(num_users=int(num_users), num_items=int(num_items), num_interactions=int(num_interactions),
                     neighbour_width=int(neighbour_width), num_candidates=int(num_candidates))
        bad = {k: v for k, v in sizes.items() if v < 1}
        if bad:
            raise ValueError(f"LSIR: graph sizes must be >= 1, got {bad}.")
        if not 0 < edge_keep <= 1 or int(refinement_steps) < 1 or not 0 <= addition_weight <= 1:
            raise ValueError(f"LSIR: need 0 < edge_keep <= 1, refinement_steps >= 1, 0 <= addition_weight <= 1; got "
                             f"{edge_keep!r}, {refinement_steps!r}, {addition_weight!r}.")
        self.sizes = sizes
        self.num_users, self.num_items = sizes["num_users"], sizes["num_items"]
        self.hyper = dict(embedding_dim=int(embedding_dim), num_layers=int(num_layers), edge_keep=float(edge_keep),
                          learn_graph=bool(learn_graph), refinement_steps=int(refinement_steps),
                          delete_scale=float(delete_scale), max_delete=float(max_delete), add_scale=float(add_scale),
                          max_add=float(max_add), addition_pool=int(addition_pool), addition_weight=float(addition_weight),
                          inactive_items=int(inactive_items), mimic_weight=float(mimic_weight), l2=float(l2),
                          top_n=int(top_n))
        for name, value in self.hyper.items():
            setattr(self, name, value)
        self.max_added = int(np.floor(self.addition_pool * self.max_add + 1e-9))
        self.input_names = [USER_FEATURE]
        self._graph = graph
        self.combine = keras.layers.Dense(self.embedding_dim, name="combine")
        self.similarity = keras.layers.Dense(self.embedding_dim, activation="relu", name="similarity")
        self.similarity.trainable = self.learn_graph  # unused on the raw graph
        self.bpr_tracker = keras.metrics.Mean(name="bpr_loss")
        self.mimic_tracker = keras.metrics.Mean(name="mimic_loss")
        self.hit_rate_tracker = keras.metrics.Mean(name="hit_rate_at_10")

    # -- weights and graph ---------------------------------------------------------------------
    def build(self, input_shape=None):
        if self.built:
            return
        d, s = self.embedding_dim, self.sizes
        init = keras.initializers.GlorotUniform()
        self.user_embedding = self.add_weight(shape=(s["num_users"] + 1, d), initializer=init, name="user_embedding")
        self.item_embedding = self.add_weight(shape=(s["num_items"] + 1, d), initializer=init, name="item_embedding")

        def graph_weight(name, shape):
            return self.add_weight(shape=shape, initializer="zeros", dtype="int64", trainable=False, name=name)

        self.train_users = graph_weight("train_users", (s["num_interactions"],))
        self.train_items = graph_weight("train_items", (s["num_interactions"],))
        self.neighbours = graph_weight("neighbours", (s["num_users"] + 1, s["neighbour_width"]))
        self.candidates = graph_weight("candidates", (s["num_candidates"],))
        self.first_items = graph_weight("first_items", (s["num_users"] + 1, self.inactive_items))
        self.combine.build((None, 3 * d))
        self.similarity.build((None, d))
        self.built = True
        if self._graph is not None:
            self.set_graph(**self._graph)
            self._graph = None

    def set_graph(self, train_users, train_items, neighbours, candidates):
        """Fills the graph weights.

        Args:
            train_users, train_items: (n,) the training interactions, grouped by user, each
                user's in time order (a pseudo-inactive user keeps the first ones).
            neighbours: (U + 1, D) :func:`neighbour_table` of the observed social graph.
            candidates: (C,) the user ids links may be added to.
        """
        arrays = {"train_users": train_users, "train_items": train_items, "neighbours": neighbours,
                  "candidates": candidates}
        for name, value in arrays.items():
            value = np.asarray(value, np.int64)
            variable = getattr(self, name)
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"LSIR.set_graph: {name} has shape {value.shape}; the model was built for "
                                 f"{tuple(variable.shape)}.")
            variable.assign(value)
        self.first_items.assign(first_items(train_users, train_items, self.num_users, self.inactive_items))

    # -- the encoder ---------------------------------------------------------------------------
    def encode(self, training=False):
        """``(e_users (U + 1, d), e_items (I + 1, d))``: LightGCN over the interaction graph."""
        users, items = self.train_users, self.train_items + self.num_users + 1
        rows, cols = tf.concat([users, items], 0), tf.concat([items, users], 0)
        size = self.num_users + self.num_items + 2
        degree = tf.math.bincount(tf.cast(rows, tf.int32), minlength=size, maxlength=size, dtype=tf.float32)
        values = tf.math.rsqrt(tf.gather(degree, rows) * tf.gather(degree, cols))
        if training and self.edge_keep < 1:
            kept = tf.random.uniform(tf.shape(values)) < self.edge_keep
            rows, cols = tf.boolean_mask(rows, kept), tf.boolean_mask(cols, kept)
            values = tf.boolean_mask(values, kept) / self.edge_keep
        order = tf.argsort(rows * size + cols)
        rows, cols, values = (tf.gather(t, order) for t in (rows, cols, values))
        embeddings = tf.concat([self.user_embedding, self.item_embedding], 0)
        out = light_gcn(rows, cols, values, embeddings, self.num_layers)
        return out[:self.num_users + 1], out[self.num_users + 1:]

    def activity(self):
        """(U + 1,) float32: each user's training interactions."""
        size = self.num_users + 1
        return tf.math.bincount(tf.cast(self.train_users, tf.int32), minlength=size, maxlength=size,
                                dtype=tf.float32)

    # -- the social graph ----------------------------------------------------------------------
    def raw_social(self, neighbours, e_users):
        """(R, d) ``sum_v a_uv e_v`` over the observed links of rows `neighbours` (R, D), ``a``
        symmetric-normalised."""
        degree = tf.reduce_sum(tf.cast(self.neighbours > 0, tf.float32), axis=1)
        mask = neighbours > 0
        row_degree = tf.reduce_sum(tf.cast(mask, tf.float32), axis=1, keepdims=True)
        weights = tf.math.divide_no_nan(tf.cast(mask, tf.float32),
                                        tf.sqrt(row_degree * tf.gather(degree, neighbours)))
        return tf.einsum("rd,rdk->rk", weights, tf.gather(e_users, neighbours))

    def learned_links(self, z_rows, row_ids, neighbours, activity, z_users):
        """The learned links of R rows (users or pseudo users).

        Args:
            z_rows: (R, d) the rows' embeddings the similarities read. row_ids: (R,) their user
                ids (a pseudo user: its active user's; never linked to itself).
            neighbours: (R, D) their observed neighbours. activity: (R,) their interactions.
            z_users: (U + 1, d) every user's embeddings the similarities read.

        Returns:
            ``{"kept": (R, D) bool, "kept_weights": (R, D), "added": (R, A) user ids,
            "added_mask": (R, A) bool, "added_weights": (R, A)}``.
        """
        heads = tf.math.l2_normalize(self.similarity(tf.stop_gradient(z_users)), axis=-1)
        own = tf.math.l2_normalize(self.similarity(tf.stop_gradient(z_rows)), axis=-1)
        mask = neighbours > 0
        scores = tf.einsum("rk,rdk->rd", own, tf.gather(heads, neighbours))
        links = tf.reduce_sum(tf.cast(mask, tf.float32), axis=1)
        remove = tf.minimum(self.max_delete, tf.tanh(activity / self.delete_scale))
        kept = top_share_mask(scores, mask, tf.floor(links * (1.0 - remove) + 1e-6))
        out = {"kept": kept, "kept_weights": masked_softmax(scores, kept)}
        count = min(self.max_added, self.sizes["num_candidates"])
        if count == 0:
            empty = tf.zeros((tf.shape(z_rows)[0], 0))
            return {**out, "added": tf.cast(empty, tf.int64), "added_mask": empty > 0, "added_weights": empty}
        similarity = tf.matmul(own, tf.gather(heads, self.candidates), transpose_b=True)
        similarity = tf.where(self.candidates[None, :] == row_ids[:, None], -np.inf, similarity)
        top = tf.math.top_k(similarity, k=count)
        share = tf.minimum(self.max_add, tf.sigmoid(-activity / self.add_scale))
        budget = tf.floor(self.addition_pool * share + 1e-6)
        added_mask = (tf.range(count, dtype=tf.float32)[None, :] < budget[:, None]) & tf.math.is_finite(top.values)
        return {**out, "added": tf.gather(self.candidates, top.indices), "added_mask": added_mask,
                "added_weights": masked_softmax(top.values, added_mask)}

    def social_step(self, rows, z_rows, z_users, e_users):
        """(R, d) ``E`` of R rows after one round of graph learning (or on the raw graph).

        Args:
            rows: ``{"ids", "h", "e", "neighbours", "activity"}`` of the rows.
            z_rows, z_users: what this round's similarities read (rows', every user's).
            e_users: (U + 1, d) the encoder's user embeddings (what links aggregate).
        """
        if not self.learn_graph:
            social = self.raw_social(rows["neighbours"], e_users)
        else:
            links = self.learned_links(z_rows, rows["ids"], rows["neighbours"], rows["activity"], z_users)
            kept = tf.einsum("rd,rdk->rk", links["kept_weights"], tf.gather(e_users, rows["neighbours"]))
            added = tf.einsum("ra,rak->rk", links["added_weights"], tf.gather(e_users, links["added"]))
            social = self.addition_weight * added + (1.0 - self.addition_weight) * kept
        s = 0.5 * rows["e"] + 0.5 * social
        return self.combine(tf.concat([rows["h"], rows["e"], s], axis=-1))

    def user_rows(self, user_ids, e_users):
        return {"ids": user_ids, "h": tf.gather(self.user_embedding, user_ids), "e": tf.gather(e_users, user_ids),
                "neighbours": tf.gather(self.neighbours, user_ids),
                "activity": tf.gather(self.activity(), user_ids)}

    def represent(self, row_sets, e_users):
        """The final ``E`` of each set of rows in `row_sets` (a list of row dicts), after
        ``refinement_steps`` rounds; every user's ``E`` is refined alongside when a later
        round's similarities read it."""
        steps = self.refinement_steps if self.learn_graph else 1
        if steps > 1:
            everyone = self.user_rows(tf.range(self.num_users + 1, dtype=tf.int64), e_users)
        z_sets, z_users = [rows["e"] for rows in row_sets], e_users
        for step in range(steps):
            z_sets = [self.social_step(rows, z, z_users, e_users) for rows, z in zip(row_sets, z_sets)]
            if step < steps - 1:
                z_users = self.social_step(everyone, z_users, z_users, e_users)
        return z_sets

    # -- calls -----------------------------------------------------------------------------------
    def user_vectors(self, user_ids):
        """``(E (B, d), e_items (I + 1, d))``: the final vectors of `user_ids` (B,) and the items'."""
        e_users, e_items = self.encode()
        user_ids = tf.clip_by_value(tf.cast(tf.reshape(user_ids, [-1]), tf.int64), 0, self.num_users)
        (vectors,) = self.represent([self.user_rows(user_ids, e_users)], e_users)
        return vectors, e_items

    def call(self, inputs, training=None):
        """``{"scores": (B, I)}``; in training also ``"mimic_scores"`` (B, I): the scores of each
        user's pseudo-inactive twin (:meth:`pseudo_inactive_rows`), from the same encoder pass."""
        user_ids = inputs[USER_FEATURE] if isinstance(inputs, dict) else inputs
        user_ids = tf.clip_by_value(tf.cast(tf.reshape(user_ids, [-1]), tf.int64), 0, self.num_users)
        e_users, e_items = self.encode(training=bool(training))
        rows = [self.user_rows(user_ids, e_users)]
        if training and self.uses_mimic:
            rows.append(self.pseudo_inactive_rows(user_ids, e_items))
        vectors = self.represent(rows, e_users)
        out = {"scores": tf.matmul(vectors[0], e_items[1:], transpose_b=True)}
        if len(vectors) > 1:
            out["mimic_scores"] = tf.matmul(vectors[1], e_items[1:], transpose_b=True)
        return out

    @property
    def uses_mimic(self) -> bool:
        return self.mimic_weight > 0 and self.learn_graph

    def pseudo_inactive_rows(self, user_ids, e_items):
        """Rows of pseudo-inactive twins of `user_ids` (B,) (module docstring)."""
        firsts = tf.gather(self.first_items, user_ids)
        mask = tf.cast(firsts > 0, tf.float32)[..., None]
        count = tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
        return {"ids": user_ids, "h": tf.reduce_sum(tf.gather(self.item_embedding, firsts) * mask, 1) / count,
                "e": tf.reduce_sum(tf.gather(e_items, firsts) * mask, 1) / count,
                "neighbours": tf.gather(self.neighbours, user_ids),
                "activity": tf.fill(tf.shape(user_ids), float(self.inactive_items))}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """BPR + l2 + the mimic loss (module docstring), from :meth:`call`'s outputs.

        Args:
            x: ``{"user_id": (B,)}``. y: (B,) the positive item ids. y_pred: :meth:`call`'s outputs.

        In evaluation the BPR term compares the positive with every item instead of one sampled
        negative. ``hit_rate_at_10`` is tracked: the positive among the 10 best-scored items, less
        the ``seen_item_ids`` when `x` has them (validation rows do); on validation, what early
        stopping follows by default.
        """
        if y is None:
            raise ValueError("LSIR: training batches need the positive item (item_id) as the target; "
                             "the social_graph family's dataset provides it.")
        user_ids = tf.clip_by_value(tf.cast(tf.reshape(x[USER_FEATURE], [-1]), tf.int64), 0, self.num_users)
        positives = tf.cast(tf.reshape(y, [-1]), tf.int64)
        negatives = tf.random.uniform(tf.shape(positives), 1, self.num_items + 1, dtype=tf.int64)
        columns = tf.stack([tf.range(tf.shape(positives, out_type=tf.int64)[0]), positives - 1], axis=1)

        def bpr(scores):
            positive = tf.gather_nd(scores, columns)
            if training:
                negative = tf.gather(scores, negatives - 1, batch_dims=1)
                return tf.nn.softplus(negative - positive)
            return tf.reduce_mean(tf.nn.softplus(scores - positive[:, None]), axis=-1)

        scores = y_pred["scores"]
        bpr_loss = tf.reduce_mean(bpr(scores))
        ego = (tf.gather(self.user_embedding, user_ids), tf.gather(self.item_embedding, positives),
               tf.gather(self.item_embedding, negatives))
        total = bpr_loss + self.l2 * tf.add_n([tf.reduce_mean(tf.reduce_sum(t * t, -1)) for t in ego])
        self.bpr_tracker.update_state(bpr_loss)
        if "mimic_scores" in y_pred:
            active = tf.cast(tf.gather(self.activity(), user_ids) > self.inactive_items, tf.float32)
            mimic = tf.math.divide_no_nan(tf.reduce_sum(bpr(y_pred["mimic_scores"]) * active), tf.reduce_sum(active))
            self.mimic_tracker.update_state(mimic)
            total = total + self.mimic_weight * mimic
        ranked = scores
        if SEEN_FEATURE in x:  # validation rows: the user's training items are never recommended
            seen = tf.cast(x[SEEN_FEATURE], tf.int64)
            hidden = tf.reduce_any(tf.one_hot(seen - 1, self.num_items, on_value=True, off_value=False), axis=1)
            ranked = tf.where(hidden, -np.inf, scores)
        better = tf.reduce_sum(tf.cast(ranked > tf.gather_nd(scores, columns)[:, None], tf.float32), axis=1)
        self.hit_rate_tracker.update_state(tf.cast(better < 10, tf.float32))
        return total

    # -- inference and export --------------------------------------------------------------------
    def recommend(self, user_ids, top_n=None):
        """``(item_ids, scores)`` (B, top_n): each user's best items, best first."""
        scores = self({USER_FEATURE: user_ids}, training=False)["scores"]
        top = tf.math.top_k(scores, k=min(int(top_n or self.top_n), self.num_items))
        return tf.cast(top.indices, tf.int64) + 1, top.values

    def graph_after_learning(self) -> dict:
        """The learned graph of every user: ``{"kept": (U + 1, D) bool over the observed
        neighbour table, "added": (U + 1, A) user ids, 0 where none}`` (last refinement round)."""
        e_users, _ = self.encode(training=False)
        everyone = self.user_rows(tf.range(self.num_users + 1, dtype=tf.int64), e_users)
        z = everyone["e"]
        for _ in range(self.refinement_steps - 1):
            z = self.social_step(everyone, z, z, e_users)
        links = self.learned_links(z, everyone["ids"], everyone["neighbours"], everyone["activity"], z)
        added = tf.where(links["added_mask"], links["added"], tf.zeros_like(links["added"]))
        return {"kept": links["kept"].numpy(), "added": added.numpy()}

    def serving_endpoints(self) -> dict:
        """Signatures of the export (every user's vector and the item vectors are computed once,
        at export, and served from constants):

        * ``recommend``: ``user_id`` (B,) int64 -> ``item_ids``, ``scores`` (B, top_n);
        * ``serving_default``: ``examples`` (B,) serialized tf.Example holding ``user_id`` -> as ``recommend``;
        * ``score_items``: ``user_id`` (B,) -> ``scores`` (B, num_items), column j for item j + 1.
        """
        self.build()
        users, items = self.user_vectors(tf.range(self.num_users + 1, dtype=tf.int64))
        users, items = tf.constant(users.numpy()), tf.constant(items[1:].numpy())
        top_n = min(self.top_n, self.num_items)
        num_users = self.num_users

        def score_items(features):
            ids = tf.clip_by_value(tf.cast(features[USER_FEATURE], tf.int64), 0, num_users)
            return {"scores": tf.matmul(tf.gather(users, ids), items, transpose_b=True)}

        def recommend(features):
            top = tf.math.top_k(score_items(features)["scores"], k=top_n)
            return {"item_ids": tf.cast(top.indices, tf.int64) + 1, "scores": top.values}

        def serve_examples(examples):
            parsed = tf.io.parse_example(examples, {USER_FEATURE: tf.io.FixedLenFeature([], tf.int64)})
            return recommend(parsed)

        signature = [{USER_FEATURE: tf.TensorSpec([None], tf.int64, name=USER_FEATURE)}]
        return {RECOMMEND_SIGNATURE: (recommend, signature), SCORE_SIGNATURE: (score_items, signature),
                SERVING_SIGNATURE: (serve_examples, [tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])}

    def warmup_inputs(self) -> dict:
        """One TF Serving warmup request per signature: user 1."""
        row = {USER_FEATURE: np.array([1], np.int64)}
        example = tf.train.Example(features=tf.train.Features(feature={
            USER_FEATURE: tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))})).SerializeToString()
        return {RECOMMEND_SIGNATURE: row, SCORE_SIGNATURE: row,
                SERVING_SIGNATURE: {EXAMPLES_INPUT: np.array([example], dtype=object)}}

    def get_config(self):
        return {**super().get_config(), **self.sizes, **self.hyper}

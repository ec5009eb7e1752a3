"""Session-wise samples of the short-video simulator and their high-quality selection.

OneRec (arXiv 2502.18965) generates a *session*: the next ``m`` videos a user is shown.
This module turns the simulator's exposure log into session samples for the generative
model and its reward model; :mod:`tfrec_onerec.data.simulator_truth` scores any session
with the simulator's ground truth (the expectations of the session labels below, its
Table 1 metrics).

One sample per logged session (in order of its start time):

* **User context at the session's start** (the encoder's pathways in the technical report,
  arXiv 2506.13695, scaled down): the static features ``user_id``, ``age_bucket``,
  ``gender``, ``lifecycle_stage``; the short-term history ``short_item_ids``: the last
  ``short_len`` (10) items the user *clicked* before the session; the positive-feedback
  history ``positive_item_ids``: the last ``positive_len`` (20) items with a *positive
  signal* before the session: a view (watched at least ``view_threshold`` times the
  duration), a like, a follow or a share. Both histories hold ids oldest first, keep the
  most recent, and are right-padded with 0 (the package convention of
  :mod:`tfrec_onerec.features.spec`); they read only events strictly before the session's
  first exposure, so nothing of the target leaks into them.
* **Target session** ``session_item_ids`` (``m = session_len`` ids, right-padded with 0
  when the session has fewer): with ``target="exposed"`` (default) the session's first
  ``m`` *exposures*, clicked or not; with ``target="clicked"`` its first ``m`` *clicked*
  items (sessions without a click are then dropped). The reward model learns what showing
  a session yields, non-clicks included, so it trains on exposed sessions; the generative
  model imitates what users chose, so it trains on clicked, high-quality sessions
  (:class:`SessionQuality`). Items may repeat within a session, as in the log.
* **Per-item labels**, (n, m), 0 at padding: ``item_click``; ``item_watch_time``
  (seconds); ``item_watch_ratio`` = watch time / duration (0 without a click);
  ``item_view`` = 1 when ``watch_time >= view_threshold * duration`` (a complete view at
  the default 1.0; it needs a click); ``item_like``, ``item_follow``, ``item_share``.
* **Session labels**, (n,) float32 in [0, 1], the means over the session's ``k`` real
  (non-padding) items (OneRec's Table 1 quantities):

  - ``swt`` (session watch time): ``(1/k) sum_j watch_time_j / (watch_cap * duration_j)``
    where ``watch_cap`` is the simulator's ``max_watch_ratio`` (no one watches longer), so
    it is the session's watch time normalised per item to [0, 1);
  - ``vtr`` (view-through rate): ``(1/k) sum_j item_view_j``;
  - ``wtr`` (follow rate): ``(1/k) sum_j item_follow_j``;
  - ``ltr`` (like rate): ``(1/k) sum_j item_like_j``;
  - ``ctr`` (click rate, not one of the paper's towers): ``(1/k) sum_j item_click_j``.

* Bookkeeping: ``session_id`` (the log's), ``timestamp`` (the session's first exposure,
  Unix seconds), ``session_length`` (k), ``total_watch_time`` (seconds over the target).

**Splits** are by time: sessions starting at or before the ``split_fractions[0]``
quantile of session start times are ``train``, up to the ``sum(split_fractions)``
quantile ``valid``, the rest ``test`` (the user contexts of later splits include earlier
events, as they would in production).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from tfrec_onerec.data import simulator
from tfrec_onerec.data.samples import SPLITS, history_matrix
from tfrec_onerec.features.spec import Feature, FeatureSpec

USER_FEATURES = ("user_id", "age_bucket", "gender", "lifecycle_stage")
"""Static user features (categorical ids, from the simulator's users table)."""
SHORT_FEATURE = "short_item_ids"
POSITIVE_FEATURE = "positive_item_ids"
SESSION_FEATURE = "session_item_ids"
SESSION_TASKS = ("swt", "vtr", "wtr", "ltr")
"""The reward model's towers (OneRec's Table 1 metrics)."""
SESSION_LABELS = SESSION_TASKS + ("ctr",)
ITEM_LABELS = ("item_click", "item_watch_time", "item_watch_ratio", "item_view", "item_like", "item_follow",
               "item_share")
BOOKKEEPING = ("session_id", "timestamp", "session_length", "total_watch_time")
TARGETS = ("exposed", "clicked")


@dataclasses.dataclass(frozen=True)
class SessionConfig:
    """How session samples are built (see the module docstring).

    Args:
        session_len: m, the items of a target session. Default 3 (the paper's m = 5, scaled down).
        short_len: items of the short-term (clicked) history. Default 10.
        positive_len: items of the positive-feedback history. Default 20.
        target: ``"exposed"`` (default; the first m exposures) or ``"clicked"`` (the first m clicks).
        view_threshold: a view is watching at least this multiple of the duration. Default 1.0.
        split_fractions: (train, valid) fractions of the session start times. Default (0.8, 0.1).
        windows: False (default): one sample per logged session, its first m selected
            exposures. True: one sample per window of m consecutive selected exposures of a
            session (its first m, the next m, ...; the last may hold fewer), each with the
            histories strictly before the window's first selected exposure; the first window
            is the default sample, and every window takes its session's split (quantiles of
            the sessions' start times, as without windows), so the later windows add data
            without moving sessions between splits (about 2x the samples at m = 3 when
            sessions hold about 6.5 exposures).
    """

    session_len: int = 3
    short_len: int = 10
    positive_len: int = 20
    target: str = "exposed"
    view_threshold: float = 1.0
    split_fractions: tuple = (0.8, 0.1)
    windows: bool = False

    def __post_init__(self):
        for name in ("session_len", "short_len", "positive_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"SessionConfig.{name} must be an integer >= 1, got {value!r}.")
        if self.target not in TARGETS:
            raise ValueError(f"SessionConfig.target must be one of {TARGETS}, got {self.target!r}.")
        if not self.view_threshold > 0:
            raise ValueError(f"SessionConfig.view_threshold must be > 0, got {self.view_threshold!r}.")
        if not isinstance(self.windows, (bool, np.bool_)):
            raise ValueError(f"SessionConfig.windows must be True or False, got {self.windows!r}.")
        fractions = tuple(self.split_fractions)
        if len(fractions) != 2 or min(fractions) < 0 or sum(fractions) > 1:
            raise ValueError(f"SessionConfig.split_fractions must be two non-negative fractions summing to at "
                             f"most 1, got {self.split_fractions!r}.")


@dataclasses.dataclass(frozen=True)
class SessionQuality:
    """Which sessions are high-quality (OneRec trains generation on these only).

    The criteria read the *target* session (its m items), each can be switched off:

    Args:
        min_items: at least this many clicked (watched) items. Default 3 (= m; the paper: 5).
        min_watch_time: at least this total watch time in seconds. Default 60.
        require_interaction: at least one like, follow or share. Default True.
    """

    min_items: int = 3
    min_watch_time: float = 60.0
    require_interaction: bool = True

    def __post_init__(self):
        if isinstance(self.min_items, bool) or not isinstance(self.min_items, (int, np.integer)) \
                or self.min_items < 0:
            raise ValueError(f"SessionQuality.min_items must be an integer >= 0, got {self.min_items!r}.")
        if not np.isfinite(self.min_watch_time) or self.min_watch_time < 0:
            raise ValueError(f"SessionQuality.min_watch_time must be a finite number >= 0, "
                             f"got {self.min_watch_time!r}.")

    def mask(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """(n,) bool: which rows of session columns meet every criterion."""
        ok = np.asarray(columns["item_click"]).sum(axis=1) >= self.min_items
        ok &= np.asarray(columns["total_watch_time"]) >= self.min_watch_time
        if self.require_interaction:
            interacted = sum(np.asarray(columns[name]) for name in ("item_like", "item_follow", "item_share"))
            ok &= interacted.sum(axis=1) > 0
        return ok

    def select(self, columns: Mapping[str, np.ndarray]) -> dict:
        """The rows of session columns that meet every criterion (same column names)."""
        keep = self.mask(columns)
        return {name: np.asarray(values)[keep] for name, values in columns.items()}


@dataclasses.dataclass(frozen=True, eq=False)
class SessionData:
    """What :func:`build_sessions` returns.

    Attributes:
        spec: the :class:`~tfrec_onerec.features.FeatureSpec` of the model inputs (user
            features, the two histories, the target session) with the session labels.
        splits: ``{"train" | "valid" | "test": {column: array}}``: the spec's features, the
            session labels, the per-item labels and the bookkeeping columns of the module
            docstring, rows in order of session start.
        config: the :class:`SessionConfig`.
        watch_cap: the simulator's ``max_watch_ratio`` that normalises ``swt``.
    """

    spec: FeatureSpec
    splits: dict
    config: SessionConfig
    watch_cap: float

    def select(self, quality: SessionQuality) -> "SessionData":
        """The same data keeping only the high-quality sessions of every split."""
        return dataclasses.replace(self, splits={name: quality.select(cols) for name, cols in self.splits.items()})

    def features(self, split: str) -> dict:
        """``{feature: array}`` of one split: the model inputs only."""
        return {name: self.splits[split][name] for name in self.spec.names}


def session_spec(num_users: int, num_items: int, config: SessionConfig | None = None,
                 user_embedding_dim: int = 16, item_embedding_dim: int = 32) -> FeatureSpec:
    """The feature spec of session samples.

    Args:
        num_users, num_items: user ids are 1..num_users, item ids 1..num_items.
        config: the :class:`SessionConfig` (lengths). Default ``SessionConfig()``.
        user_embedding_dim: width of the user-id embedding. Default 16.
        item_embedding_dim: width of the item embedding shared by the histories and the
            session. Default 32.
    """
    c = config or SessionConfig()
    item = dict(vocab_size=num_items, embedding_dim=item_embedding_dim, vocab="item")
    return FeatureSpec([
        Feature("user_id", "categorical", vocab_size=num_users, embedding_dim=user_embedding_dim, group="user"),
        Feature("age_bucket", "categorical", vocab_size=7, embedding_dim=4, group="user"),
        Feature("gender", "categorical", vocab_size=2, embedding_dim=4, group="user"),
        Feature("lifecycle_stage", "categorical", vocab_size=len(simulator.STAGES), embedding_dim=4, group="user"),
        Feature(SHORT_FEATURE, "sequence", max_len=c.short_len, group="history", query=SESSION_FEATURE,
                description="items clicked before the session, oldest first", **item),
        Feature(POSITIVE_FEATURE, "sequence", max_len=c.positive_len, group="history", query=SESSION_FEATURE,
                description="items viewed, liked, followed or shared before the session, oldest first", **item),
        Feature(SESSION_FEATURE, "sequence", max_len=c.session_len, group="item",
                description="the target session's items in order, right-padded", **item),
    ], labels=SESSION_LABELS, user_key="user_id")


def _session_rows(session_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first row of each session, session number of each row); sessions must be contiguous."""
    starts = np.flatnonzero(np.r_[True, session_ids[1:] != session_ids[:-1]])
    if len(np.unique(session_ids)) != len(starts):
        raise ValueError("interactions: each session's exposures must be consecutive rows (the log in "
                         "(user_id, timestamp) order).")
    return starts, np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(session_ids)]))


def _split_by_time(timestamps: np.ndarray, fractions, reference: np.ndarray | None = None) -> np.ndarray:
    """(n,) 0 train, 1 valid, 2 test by the quantiles of `reference` (default: the timestamps)."""
    reference = timestamps if reference is None else reference
    if not len(timestamps):
        return np.zeros(0, np.int64)
    train_end, valid_end = np.quantile(reference, np.cumsum(fractions))
    return np.where(timestamps <= train_end, 0, np.where(timestamps <= valid_end, 1, 2))


def build_sessions(data: simulator.SimulatedData, config: SessionConfig | None = None,
                   user_embedding_dim: int = 16, item_embedding_dim: int = 32) -> SessionData:
    """Session samples of a simulated log (see the module docstring).

    Args:
        data: the :class:`~tfrec_onerec.data.simulator.SimulatedData` (its ``interactions``
            in (user_id, timestamp) order, each session's exposures consecutive).
        config: the :class:`SessionConfig`. Default ``SessionConfig()``.
        user_embedding_dim, item_embedding_dim: embedding widths written into the spec.

    Returns:
        A :class:`SessionData`; all sessions (filter with :meth:`SessionData.select`).
    """
    c = config or SessionConfig()
    log = data.interactions
    users, items = log["user_id"].to_numpy(np.int64), log["item_id"].to_numpy(np.int64)
    if len(log) and np.any(np.diff(users) < 0):
        raise ValueError("interactions must be sorted by user_id (then timestamp).")
    duration = data.items["duration"].to_numpy(np.float64)[items - 1]
    click = log["click"].to_numpy() == 1
    watch_time = np.where(click, log["watch_time"].to_numpy(np.float64), 0.0)
    view = click & (watch_time >= c.view_threshold * duration)
    outcome = {"item_click": click, "item_watch_time": watch_time, "item_watch_ratio": watch_time / duration,
               "item_view": view, "item_like": click & (log["like"].to_numpy() == 1),
               "item_follow": click & (log["follow"].to_numpy() == 1),
               "item_share": click & (log["share"].to_numpy() == 1)}
    positive = view | outcome["item_like"] | outcome["item_follow"] | outcome["item_share"]

    starts, session_of = _session_rows(log["session_id"].to_numpy(np.int64))
    selected = np.ones(len(log), bool) if c.target == "exposed" else click
    rank = np.cumsum(selected) - selected  # selected rows before each row, any session
    rank = rank - rank[starts][session_of]  # ... within its session
    if c.windows:  # one sample per window of m selected exposures
        opens = selected & (rank % c.session_len == 0)
        sample_of = np.cumsum(opens) - 1  # the window of each selected row
        # A session's first window reads the session's start (as without windows), a later
        # one its first selected exposure: no selected (hence no history) event lies between.
        anchors = np.where(rank[opens] == 0, starts[session_of[opens]], np.flatnonzero(opens))
        sample_session = session_of[opens]
        keep, rows, slots = selected, sample_of[selected], rank[selected] % c.session_len
    else:  # the first m selected exposures of each session
        anchors, sample_session = starts, np.arange(len(starts))
        keep = selected & (rank < c.session_len)
        rows, slots = session_of[keep], rank[keep]
    # Histories at each sample's anchor: events strictly before it.
    short = history_matrix(users, items, c.short_len, behaviour=click)[anchors]
    positives = history_matrix(users, items, c.positive_len, behaviour=positive)[anchors]

    # The target, scattered into (S, m).
    num_sessions = len(anchors)
    session_items = np.zeros((num_sessions, c.session_len), np.int64)
    session_items[rows, slots] = items[keep]
    item_columns = {}
    for name, values in outcome.items():
        matrix = np.zeros((num_sessions, c.session_len), values.dtype)
        matrix[rows, slots] = values[keep]
        item_columns[name] = matrix.astype(np.float32 if values.dtype == np.float64 else np.int8)

    length = (session_items != 0).sum(axis=1)
    has_target = length > 0
    k = np.maximum(length, 1)
    watch_cap = float(data.config.max_watch_ratio)
    labels = {"swt": item_columns["item_watch_ratio"].sum(axis=1) / watch_cap / k,
              "vtr": item_columns["item_view"].sum(axis=1) / k,
              "wtr": item_columns["item_follow"].sum(axis=1) / k,
              "ltr": item_columns["item_like"].sum(axis=1) / k,
              "ctr": item_columns["item_click"].sum(axis=1) / k}
    user_table = {name: np.r_[0, data.users[name].to_numpy(np.int64)] for name in USER_FEATURES}
    session_user = users[anchors]
    columns = {name: table[session_user] for name, table in user_table.items()}
    columns.update({SHORT_FEATURE: short, POSITIVE_FEATURE: positives, SESSION_FEATURE: session_items})
    columns.update({name: values.astype(np.float32) for name, values in labels.items()})
    columns.update(item_columns)
    timestamps = log["timestamp"].to_numpy(np.int64)
    columns.update(session_id=log["session_id"].to_numpy(np.int64)[anchors],
                   timestamp=timestamps[anchors], session_length=length.astype(np.int64),
                   total_watch_time=item_columns["item_watch_time"].sum(axis=1).astype(np.float32))

    order = np.argsort(columns["timestamp"], kind="stable")
    order = order[has_target[order]]
    columns = {name: values[order] for name, values in columns.items()}
    if c.windows:  # each window takes its session's split: quantiles over sessions with a target
        session_start = timestamps[starts]
        split = _split_by_time(session_start[sample_session[order]], c.split_fractions,
                               reference=session_start[np.unique(sample_session[order])])
    else:
        split = _split_by_time(columns["timestamp"], c.split_fractions)
    splits = {name: {col: values[split == i] for col, values in columns.items()} for i, name in enumerate(SPLITS)}
    spec = session_spec(data.config.num_users, data.config.num_items, c, user_embedding_dim, item_embedding_dim)
    return SessionData(spec, splits, c, watch_cap)


def candidate_sessions(context: Mapping[str, np.ndarray], item_ids) -> dict:
    """Model inputs that pair user contexts with candidate sessions (e.g. generated ones).

    Args:
        context: ``{column: (n, ...) array}``, n user contexts (e.g. a split's columns);
            every column is kept, with ``session_item_ids`` replaced.
        item_ids: (n, m) sessions, one per context, or (n, N, m), N per context; 0 pads.

    Returns:
        ``{column: array}`` with ``n`` rows, or ``n * N`` rows (context ``i``'s candidates
        are rows ``i * N .. i * N + N - 1``).
    """
    item_ids = np.asarray(item_ids)
    n = len(next(iter(context.values())))
    if item_ids.ndim not in (2, 3) or item_ids.shape[0] != n:
        raise ValueError(f"item_ids must have shape (n, m) or (n, N, m) with n = {n} contexts, "
                         f"got {item_ids.shape}.")
    per_context = 1 if item_ids.ndim == 2 else item_ids.shape[1]
    out = {name: np.repeat(np.asarray(values), per_context, axis=0) for name, values in context.items()}
    out[SESSION_FEATURE] = item_ids.reshape(n * per_context, item_ids.shape[-1]).astype(np.int64)
    return out

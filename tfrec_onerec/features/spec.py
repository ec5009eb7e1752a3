"""Feature and task specifications: the one source of truth for a data set's columns.

A :class:`FeatureSpec` is declared once per data set. The TFRecord writer, the tf.Example
parsing spec, the Keras inputs, the embedding tables, the serving signatures and (later)
the TFX schema are all derived from it.

Id and sequence convention (the same everywhere in the package)
----------------------------------------------------------------
* Categorical ids are integers. A vocabulary of size ``V`` owns the raw ids ``1..V``.
  Id ``0`` means *missing / padding*; its embedding row is all zeros and is never trained.
  Any other id (negative, or greater than ``V``) is out of vocabulary and maps to one
  shared OOV row (row ``V + 1``). An embedding table therefore has ``V + 2`` rows.
* A sequence feature holds ids ordered **oldest to newest**. It is cut to its
  ``max_len`` most recent ids (truncation drops the *oldest*, i.e. from the left) and
  padded with ``0`` on the right (post-padding), so position 0 is the oldest kept id.
  The mask is ``ids != 0``. A row may be all padding (no history); every layer of the
  package returns finite values for it (zero vectors for pooled sequences).
* In tf.Example, a sequence is a variable-length int64 list (unpadded); parsing pads and
  truncates it with the rule above. Categorical and numeric features are required.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Iterable, Mapping, Sequence

KINDS = ("categorical", "numeric", "sequence")
PREPROCESSING = ("", "vocabulary", "quantiles")
TASK_KINDS = ("binary", "regression")

PAD_ID = 0


@dataclasses.dataclass(frozen=True)
class Feature:
    """One input column.

    Args:
        name: column name, used as tf.Example key, Keras input name and signature input.
        kind: ``"categorical"`` (one id), ``"numeric"`` (``dim`` floats) or
            ``"sequence"`` (up to ``max_len`` ids, see the module docstring).
        vocab_size: number of known ids (``1..vocab_size``) for id features.
        embedding_dim: width of the embedding of this feature's vocabulary.
        vocab: name of the embedding table. Features with the same ``vocab`` share one
            table (e.g. a candidate item id and the history of item ids); they must agree
            on ``vocab_size`` and ``embedding_dim``. Defaults to ``name``.
        max_len: for sequences, the number of most recent ids kept.
        dim: for numeric features, the number of floats.
        group: what the feature describes: ``"user"``, ``"item"`` (the candidate),
            ``"context"``, ``"history"`` (a behaviour sequence) or ``"target"`` (what a model
            learns or is judged by, never a serving input: e.g. the next items of a
            sequence, a target session, the items seen before a held-out one).
        query: for a history feature, the candidate feature it is compared with by target
            attention (same vocabulary), e.g. ``hist_item_id`` -> ``item_id``.
        description: one line for humans.
        preprocessing: what the TFX Transform (``tfx_pipelines``) does to the raw column
            before the model sees it. ``""`` (default): the raw column already holds ids
            ``1..vocab_size`` (or floats); sequences are only padded/truncated.
            ``"vocabulary"`` (id features): raw ids are arbitrary integers; Transform counts
            them over the training split and assigns ids ``1..vocab_size`` by frequency
            (most frequent first; features sharing ``vocab`` share one vocabulary); rarer
            values go to the OOV id. ``"quantiles"`` (categorical): the raw column is one
            float, bucketized into ``vocab_size`` quantile buckets computed over the
            training split (ids ``1..vocab_size``). The package's own data sets are already
            preprocessed and use ``""``; this is for raw data brought to the pipeline.
    """

    name: str
    kind: str
    vocab_size: int = 0
    embedding_dim: int = 16
    vocab: str = ""
    max_len: int = 0
    dim: int = 1
    group: str = "context"
    query: str = ""
    description: str = ""
    preprocessing: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Feature {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}.")
        if self.kind in ("categorical", "sequence") and self.vocab_size < 1:
            raise ValueError(f"Feature {self.name!r}: an id feature needs vocab_size >= 1, got {self.vocab_size}.")
        if self.kind == "sequence" and self.max_len < 1:
            raise ValueError(f"Feature {self.name!r}: a sequence feature needs max_len >= 1, got {self.max_len}.")
        if self.kind == "numeric" and self.dim < 1:
            raise ValueError(f"Feature {self.name!r}: a numeric feature needs dim >= 1, got {self.dim}.")
        if self.preprocessing not in PREPROCESSING:
            raise ValueError(f"Feature {self.name!r}: preprocessing must be one of {PREPROCESSING}, "
                             f"got {self.preprocessing!r}.")
        if self.preprocessing == "vocabulary" and not self.is_id:
            raise ValueError(f"Feature {self.name!r}: preprocessing 'vocabulary' needs an id feature "
                             f"(categorical or sequence), got kind {self.kind!r}.")
        if self.preprocessing == "quantiles" and self.kind != "categorical":
            raise ValueError(f"Feature {self.name!r}: preprocessing 'quantiles' makes a categorical feature "
                             f"from one float; got kind {self.kind!r}.")
        if not self.vocab:
            object.__setattr__(self, "vocab", self.name)

    @property
    def is_id(self) -> bool:
        return self.kind in ("categorical", "sequence")

    @property
    def oov_id(self) -> int:
        """The row every out-of-vocabulary id maps to."""
        return self.vocab_size + 1

    @property
    def num_rows(self) -> int:
        """Rows of this feature's embedding table: padding, ``vocab_size`` ids, OOV."""
        return self.vocab_size + 2

    @property
    def dtype(self) -> str:
        return "float32" if self.kind == "numeric" else "int64"

    @property
    def raw_dtype(self) -> str:
        """The dtype of the raw column, before the TFX Transform (see ``preprocessing``)."""
        return "float32" if self.kind == "numeric" or self.preprocessing == "quantiles" else "int64"

    @property
    def shape(self) -> tuple:
        """Per-example shape of the parsed (dense) tensor."""
        if self.kind == "sequence":
            return (self.max_len,)
        if self.kind == "numeric":
            return (self.dim,)
        return ()

    def describe(self) -> str:
        """Human-readable expectation, used in error messages."""
        return f"{self.dtype} tensor of shape (batch,{''.join(f' {d},' for d in self.shape)})".replace(",)", ")")


@dataclasses.dataclass(frozen=True)
class Task:
    """One output of a model.

    Args:
        name: output key of the model and of the serving signatures (e.g. ``"click"``).
        label: the label column it is trained on (defaults to ``name``).
        kind: ``"binary"`` (a probability, binary cross-entropy) or ``"regression"``.
        weight: weight of this task's loss in a multi-task sum; 0: an output that is scored
            but not trained directly (e.g. ESMM's CVR, trained through a product).
        sample_space: a binary label column whose 1s mark the examples the task covers: its
            loss and metrics see only those (e.g. ``"click"`` for a conversion-given-click
            task); empty (default): every example.
    """

    name: str
    label: str = ""
    kind: str = "binary"
    weight: float = 1.0
    sample_space: str = ""

    def __post_init__(self):
        if self.kind not in TASK_KINDS:
            raise ValueError(f"Task {self.name!r}: kind must be one of {TASK_KINDS}, got {self.kind!r}.")
        if not self.weight >= 0:
            raise ValueError(f"Task {self.name!r}: weight must be >= 0, got {self.weight!r}.")
        if not self.label:
            object.__setattr__(self, "label", self.name)

    @property
    def columns(self) -> tuple:
        """The label columns the task reads: its label, then its sample space (if any)."""
        return (self.label, self.sample_space) if self.sample_space else (self.label,)


class FeatureSpec:
    """An ordered set of input features plus the data set's label columns.

    Args:
        features: the input :class:`Feature` s.
        labels: names of float label columns (e.g. ``["click", "like", "rating"]``).
        user_key: the feature that identifies a user (for GAUC and per-user metrics).
    """

    def __init__(self, features: Iterable[Feature], labels: Sequence[str] = (), user_key: str = "user_id"):
        self.features = tuple(features)
        self.labels = tuple(labels)
        self.user_key = user_key
        self._by_name = {f.name: f for f in self.features}
        if len(self._by_name) != len(self.features):
            raise ValueError("FeatureSpec: feature names must be unique.")
        clash = set(self._by_name) & set(self.labels)
        if clash:
            raise ValueError(f"FeatureSpec: {sorted(clash)} named both as feature and label.")
        self._check_vocabularies()
        for f in self.features:
            if f.query and (f.query not in self._by_name or self._by_name[f.query].vocab != f.vocab):
                raise ValueError(
                    f"Feature {f.name!r}: query {f.query!r} must be a feature sharing its vocabulary {f.vocab!r}.")

    def _check_vocabularies(self):
        tables = {}
        for f in self.features:
            if not f.is_id:
                continue
            seen = tables.setdefault(f.vocab, f)
            if ((seen.vocab_size, seen.embedding_dim, seen.preprocessing)
                    != (f.vocab_size, f.embedding_dim, f.preprocessing)):
                raise ValueError(
                    f"Features {seen.name!r} and {f.name!r} share vocabulary {f.vocab!r} but disagree on "
                    f"vocab_size/embedding_dim/preprocessing: "
                    f"{(seen.vocab_size, seen.embedding_dim, seen.preprocessing)} vs "
                    f"{(f.vocab_size, f.embedding_dim, f.preprocessing)}.")

    # -- access -------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Feature:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"No feature {name!r} in the spec; features are {sorted(self._by_name)}.") from None

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def __iter__(self):
        return iter(self.features)

    def __len__(self):
        return len(self.features)

    @property
    def names(self) -> tuple:
        return tuple(f.name for f in self.features)

    def group(self, group: str) -> list:
        """The features of one group, in declaration order."""
        return [f for f in self.features if f.group == group]

    def vocabularies(self) -> dict:
        """``{vocab name: first feature using it}``, one entry per embedding table."""
        tables = {}
        for f in self.features:
            if f.is_id:
                tables.setdefault(f.vocab, f)
        return tables

    def subset(self, names: Iterable[str]) -> "FeatureSpec":
        names = set(names)
        return FeatureSpec([f for f in self.features if f.name in names], self.labels, self.user_key)

    # -- serialisation --------------------------------------------------------------------
    def get_config(self) -> dict:
        return {
            "features": [dataclasses.asdict(f) for f in self.features],
            "labels": list(self.labels),
            "user_key": self.user_key,
        }

    @classmethod
    def from_config(cls, config: Mapping) -> "FeatureSpec":
        return cls([Feature(**f) for f in config["features"]], config.get("labels", ()),
                   config.get("user_key", "user_id"))

    def to_json(self) -> str:
        return json.dumps(self.get_config(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "FeatureSpec":
        return cls.from_config(json.loads(text))

    def __eq__(self, other):
        return isinstance(other, FeatureSpec) and self.get_config() == other.get_config()

    def __repr__(self):
        return f"FeatureSpec({', '.join(self.names)}; labels={list(self.labels)})"


def tasks_to_config(tasks: Sequence[Task]) -> list:
    return [dataclasses.asdict(t) for t in tasks]


def tasks_from_config(config: Sequence) -> list:
    return [t if isinstance(t, Task) else Task(**t) for t in config]

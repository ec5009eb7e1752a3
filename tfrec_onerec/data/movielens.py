"""MovieLens-100K, read from the copy that ships inside the ``recbole==1.2.1`` wheel on PyPI.

The wheel's ``recbole/dataset_example/ml-100k/`` holds RecBole's atomic files (tab separated,
typed headers): ratings (``.inter``), users (``.user``), items (``.item``), Freebase triples
(``.kg``) and item -> entity links (``.link``). recbole itself is never installed or imported:
the wheel is a zip file that we read.
"""
from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tfrec_onerec.data.download import PyPIFile, fetch

if TYPE_CHECKING:  # imported lazily at run time: loading the tables needs no TensorFlow
    from tfrec_onerec.data.samples import SampleConfig
    from tfrec_onerec.features import FeatureSpec

RECBOLE_WHEEL = PyPIFile(
    package="recbole",
    version="1.2.1",
    filename="recbole-1.2.1-py3-none-any.whl",
    sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
)
_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.{}"

GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
          "Western", "unknown")
OCCUPATIONS = ("administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
               "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer",
               "retired", "salesman", "scientist", "student", "technician", "writer")
GENDERS = ("F", "M")
# MovieLens-1M's age groups, applied to 100K's exact ages: <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+.
AGE_BUCKET_EDGES = (18, 25, 35, 45, 50, 56)
FIRST_DECADE = 1920  # release decades 1920s..1990s become ids 1..8; an unknown year is 0


@dataclasses.dataclass
class MovieLens100K:
    """The typed tables of MovieLens-100K.

    Attributes:
        ratings: 100,000 rows: ``user_id`` (1..943), ``item_id`` (1..1682), ``rating`` (1..5),
            ``timestamp`` (unix seconds).
        users: 943 rows: ``user_id``, ``age`` (years), ``gender`` (F/M), ``occupation`` (21
            values), ``zip_code`` (string).
        items: 1,682 rows: ``item_id``, ``title``, ``year`` (nullable Int64), ``genres``
            (tuple of genre names, a movie may have several).
        kg: Freebase triples ``head``, ``relation``, ``tail`` (entity ids as strings).
        links: ``item_id`` -> ``entity`` (the movie's Freebase entity).
        source: the file the tables were read from.
    """

    ratings: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    kg: pd.DataFrame
    links: pd.DataFrame
    source: Path

    @property
    def num_users(self) -> int:
        return int(self.users["user_id"].max())

    @property
    def num_items(self) -> int:
        return int(self.items["item_id"].max())


def _read(archive: zipfile.ZipFile, extension: str, names: list, dtypes: dict) -> pd.DataFrame:
    raw = archive.read(_MEMBER.format(extension))
    frame = pd.read_csv(io.BytesIO(raw), sep="\t", header=0, names=names, dtype=dtypes,
                        keep_default_na=False, quoting=3)
    return frame


def load_movielens_100k(path: str | Path | None = None) -> MovieLens100K:
    """Loads MovieLens-100K, fetching and verifying the recbole wheel if needed.

    Args:
        path: an offline copy of ``recbole-1.2.1-py3-none-any.whl`` (the file, or a directory
            holding it). Default: the cache of :mod:`tfrec_onerec.data.download`.

    Returns:
        The typed tables.
    """
    wheel = fetch(RECBOLE_WHEEL, path)
    with zipfile.ZipFile(wheel) as archive:
        ratings = _read(archive, "inter", ["user_id", "item_id", "rating", "timestamp"],
                        {"user_id": np.int64, "item_id": np.int64, "rating": np.int64, "timestamp": np.int64})
        users = _read(archive, "user", ["user_id", "age", "gender", "occupation", "zip_code"],
                      {"user_id": np.int64, "age": np.int64, "gender": str, "occupation": str, "zip_code": str})
        items = _read(archive, "item", ["item_id", "title", "year", "genres"],
                      {"item_id": np.int64, "title": str, "year": str, "genres": str})
        kg = _read(archive, "kg", ["head", "relation", "tail"], {"head": str, "relation": str, "tail": str})
        links = _read(archive, "link", ["item_id", "entity"], {"item_id": np.int64, "entity": str})
    items["year"] = pd.to_numeric(items["year"], errors="coerce").astype("Int64")
    items["genres"] = items["genres"].map(lambda s: tuple(s.split()) if s else ("unknown",))
    for frame in (ratings, users, items):
        frame.sort_values(frame.columns[0], kind="stable", inplace=True, ignore_index=True)
    return MovieLens100K(ratings=ratings, users=users, items=items, kg=kg, links=links, source=wheel)


# -- id encodings shared by the feature spec and the sample builder -----------------------
KNOWLEDGE_RELATIONS = ("film.film.actor", "film.film.directed_by", "film.film.written_by", "film.film.produced_by",
                       "film.film.cinematography", "film.film.production_companies", "film.film.genre",
                       "film.film.subjects", "film.film.sequel", "film.film.prequel")
"""The knowledge-graph relations that describe a movie's content (who made it, who plays in
it, what it is about, its series); awards, language, country and rating are left out (award
categories tie unrelated films that were nominated alike)."""


def item_entities(data: MovieLens100K) -> dict:
    """The knowledge graph around each movie: ``{"item_id", "entity": (n,) int64}`` pairs, one
    per entity the movie's Freebase entity reaches by one of :data:`KNOWLEDGE_RELATIONS`
    (its actors, director, writers, producers, genres, subjects, sequel...), entities numbered
    1..E in sorted order. Items without a link (84 of 1,682) have no pair."""
    film = dict(zip(data.links["entity"], data.links["item_id"]))
    kg = data.kg[data.kg["relation"].isin(KNOWLEDGE_RELATIONS) & data.kg["head"].isin(film)]
    frame = pd.DataFrame({"item_id": kg["head"].map(film).to_numpy(), "entity": kg["tail"].to_numpy()})
    frame = frame.drop_duplicates().sort_values(["item_id", "entity"], ignore_index=True)
    entities = {name: number for number, name in enumerate(sorted(frame["entity"].unique()), start=1)}
    return {"item_id": frame["item_id"].to_numpy(np.int64),
            "entity": frame["entity"].map(entities).to_numpy(np.int64)}


def age_bucket(age: np.ndarray) -> np.ndarray:
    """Ages in years -> ids 1..7 (MovieLens-1M's age groups)."""
    return np.searchsorted(np.asarray(AGE_BUCKET_EDGES), np.asarray(age), side="right") + 1


def encode(values, vocabulary) -> np.ndarray:
    """Strings -> ids 1..len(vocabulary) in vocabulary order; unknown strings -> 0."""
    index = {v: i + 1 for i, v in enumerate(vocabulary)}
    return np.array([index.get(v, 0) for v in values], dtype=np.int64)


def decade_id(year) -> np.ndarray:
    """Release years -> decade ids 1.. (1920s = 1); missing years -> 0."""
    year = pd.Series(year, dtype="Int64")
    ids = ((year - FIRST_DECADE) // 10 + 1).clip(lower=1, upper=8)
    return ids.fillna(0).to_numpy(dtype=np.int64)


# -- the CTR-with-history data set ---------------------------------------------------------
NAME = "movielens-100k"
LABELS = ("click", "like", "rating", "prior_click", "prior_like")
LABEL_DOCS = {
    "click": "1 for a rated movie, 0 for a sampled negative (implicit feedback)",
    "like": "1 when rated >= 4, else 0 (0 for sampled negatives)",
    "rating": "the 1..5 rating, 0 for sampled negatives",
    "prior_click, prior_like": "the user's click / like rate over earlier ratings (0 for the first; a sampled "
                               "negative copies its positive's)",
}


def feature_spec(max_len: int = 50) -> "FeatureSpec":
    """The MovieLens-100K feature specification (user profile, candidate movie, history)."""
    from tfrec_onerec.features import Feature, FeatureSpec

    return FeatureSpec([
        Feature("user_id", "categorical", vocab_size=943, embedding_dim=16, group="user"),
        Feature("gender", "categorical", vocab_size=len(GENDERS), embedding_dim=4, group="user"),
        Feature("age", "categorical", vocab_size=len(AGE_BUCKET_EDGES) + 1, embedding_dim=4, group="user",
                description="age group id 1..7"),
        Feature("occupation", "categorical", vocab_size=len(OCCUPATIONS), embedding_dim=4, group="user"),
        Feature("item_id", "categorical", vocab_size=1682, embedding_dim=16, vocab="item", group="item"),
        Feature("item_genre", "categorical", vocab_size=len(GENRES), embedding_dim=8, vocab="genre",
                group="item", description="the movie's first listed genre"),
        Feature("item_decade", "categorical", vocab_size=8, embedding_dim=4, group="item",
                description="release decade, 1920s = 1"),
        Feature("hist_item_id", "sequence", vocab_size=1682, embedding_dim=16, vocab="item", max_len=max_len,
                group="history", query="item_id", description="movies rated before, oldest first"),
        Feature("hist_item_genre", "sequence", vocab_size=len(GENRES), embedding_dim=8, vocab="genre",
                max_len=max_len, group="history", query="item_genre"),
    ], labels=LABELS, user_key="user_id")


def item_table(data: MovieLens100K) -> dict:
    """``{item feature: (num_items + 1,) ids}`` indexed by item id (index 0 is padding)."""
    n = data.num_items + 1
    genre = np.zeros(n, np.int64)
    decade = np.zeros(n, np.int64)
    ids = data.items["item_id"].to_numpy()
    genre[ids] = encode([g[0] for g in data.items["genres"]], GENRES)
    decade[ids] = decade_id(data.items["year"])
    return {"item_genre": genre, "item_decade": decade}


def user_table(data: MovieLens100K) -> dict:
    """``{user feature: (num_users + 1,) ids}`` indexed by user id."""
    n = data.num_users + 1
    ids = data.users["user_id"].to_numpy()
    table = {name: np.zeros(n, np.int64) for name in ("gender", "age", "occupation")}
    table["gender"][ids] = encode(data.users["gender"], GENDERS)
    table["age"][ids] = age_bucket(data.users["age"].to_numpy())
    table["occupation"][ids] = encode(data.users["occupation"], OCCUPATIONS)
    return table


def build_samples(data: MovieLens100K, config: "SampleConfig | None" = None) -> dict:
    """The CTR-with-history samples of every split (see :mod:`tfrec_onerec.data.samples`).

    Returns:
        ``{split: columns}`` with the columns of :func:`feature_spec` plus the labels
        ``click``, ``like``, ``rating``, ``prior_click``, ``prior_like`` (see ``LABEL_DOCS``) and
        ``timestamp``.
    """
    from tfrec_onerec.data import samples

    config = config or samples.SampleConfig()
    events = samples.order_events(data.ratings)
    ratings = events["rating"].to_numpy()
    labels = {"click": np.ones(len(events)), "like": (ratings >= 4).astype(np.float32), "rating": ratings}
    return samples.build_samples(
        events, data.num_items, user_table(data), item_table(data),
        history_of={"hist_item_id": "item_id", "hist_item_genre": "item_genre"},
        labels=labels, config=config, prior_means_of=("click", "like"))


def candidate_columns(data: MovieLens100K, user_id: int, max_len: int = 50) -> dict:
    """Features for scoring every movie `user_id` has not rated, given their full history.

    Returns:
        Columns of :func:`feature_spec` (one row per unrated movie, ordered by item id).
    """
    from tfrec_onerec.data import samples

    events = samples.order_events(data.ratings[data.ratings["user_id"] == user_id])
    if events.empty:
        raise KeyError(f"User {user_id} has no ratings in MovieLens-100K (user ids are 1..{data.num_users}).")
    seen = set(events["item_id"])
    candidates = np.array([i for i in data.items["item_id"] if i not in seen], dtype=np.int64)
    n = len(candidates)
    items, users = item_table(data), user_table(data)
    history = events["item_id"].to_numpy()[-max_len:]
    hist = np.zeros((n, max_len), np.int64)
    hist[:, :len(history)] = history
    columns = {name: np.full(n, table[user_id]) for name, table in users.items()}
    columns.update({name: table[candidates] for name, table in items.items()})
    columns.update(user_id=np.full(n, user_id, np.int64), item_id=candidates, hist_item_id=hist,
                   hist_item_genre=items["item_genre"][hist])
    return columns

"""MovieLens-100K: the checksummed fetch, the typed tables, the CTR samples."""
import shutil

import numpy as np
import pytest

from tfrec_onerec.data import download, movielens
from tfrec_onerec.data.samples import SampleConfig


@pytest.fixture(scope="module")
def ml():
    return movielens.load_movielens_100k()


def test_tables_have_the_documented_sizes_and_types(ml):
    assert len(ml.ratings) == 100_000 and len(ml.users) == 943 and len(ml.items) == 1682
    assert ml.ratings["rating"].between(1, 5).all()
    assert ml.ratings["user_id"].nunique() == 943 and ml.ratings["item_id"].nunique() == 1682
    assert set(ml.users["gender"]) == {"F", "M"} and ml.users["occupation"].nunique() == 21
    toy_story = ml.items.set_index("item_id").loc[1]
    assert (toy_story["title"], toy_story["year"]) == ("Toy Story", 1995)
    assert toy_story["genres"] == ("Animation", "Children's", "Comedy")
    assert len(ml.kg) == 91_631 and list(ml.kg.columns) == ["head", "relation", "tail"]
    assert len(ml.links) == 1598 and ml.links["item_id"].between(1, 1682).all()


def test_item_entities_are_the_content_relations_of_linked_movies(ml):
    pairs = movielens.item_entities(ml)
    items, entities = pairs["item_id"], pairs["entity"]
    assert len(np.unique(items)) == len(ml.links) == 1598  # every linked movie, no other
    assert len(set(zip(items.tolist(), entities.tolist()))) == len(items)  # no duplicate pair
    assert entities.min() == 1 and entities.max() == len(np.unique(entities))  # numbered 1..E
    # Toy Story: its director and its genres (content relations), not its awards or language
    film = ml.links.loc[ml.links["item_id"] == 1, "entity"].iloc[0]
    own = ml.kg[ml.kg["head"] == film]
    content = own[own["relation"].isin(movielens.KNOWLEDGE_RELATIONS)]["tail"].nunique()
    assert (items == 1).sum() == content and content < own["tail"].nunique()


def test_encodings(ml):
    np.testing.assert_array_equal(movielens.age_bucket(np.array([7, 18, 24, 25, 49, 50, 56, 73])),
                                  [1, 2, 2, 3, 5, 6, 7, 7])
    np.testing.assert_array_equal(movielens.decade_id([1922, 1995, None, 1930]), [1, 8, 0, 2])
    users = movielens.user_table(ml)
    assert users["gender"][1:].min() >= 1 and users["occupation"][1:].max() == 21


def test_samples_match_the_spec_and_labels_are_derived(ml):
    splits = movielens.build_samples(ml, SampleConfig(num_negatives=1, eval_negatives=4))
    spec = movielens.feature_spec()
    train, test = splits["train"], splits["test"]
    assert len(test["click"]) == 943 * 5 and test["click"].sum() == 943
    assert len(train["click"]) == 2 * (100_000 - 2 * 943)
    positives = train["click"] == 1
    assert set(np.unique(train["like"][positives])) == {0.0, 1.0}
    assert (train["like"][~positives] == 0).all() and (train["rating"][~positives] == 0).all()
    assert ((train["rating"][positives] >= 4) == (train["like"][positives] == 1)).all()
    for f in spec:
        column = train[f.name]
        assert column.shape[1:] == f.shape
        if f.is_id:
            assert column.min() >= 0 and column.max() <= f.vocab_size, f.name


def test_corrupted_cache_is_fetched_again(monkeypatch, tmp_path, ml):
    monkeypatch.setenv(download.DATA_DIR_VARIABLE, str(tmp_path))
    cached = tmp_path / movielens.RECBOLE_WHEEL.filename
    shutil.copy(ml.source, cached)
    cached.write_bytes(cached.read_bytes()[:1000])  # truncated
    fetched = []
    monkeypatch.setattr(download.subprocess, "run", lambda cmd, **kw: fetched.append(cmd) or _fake_pip(cmd, ml.source))
    path = download.fetch(movielens.RECBOLE_WHEEL)
    assert fetched and path == cached and download.sha256_of(path) == movielens.RECBOLE_WHEEL.sha256


def _fake_pip(cmd, source):
    target = cmd[cmd.index("-d") + 1]
    shutil.copy(source, f"{target}/{movielens.RECBOLE_WHEEL.filename}")
    return type("Done", (), {"returncode": 0, "stderr": "", "stdout": ""})()


def test_bad_download_is_deleted_not_parsed(monkeypatch, tmp_path):
    monkeypatch.setenv(download.DATA_DIR_VARIABLE, str(tmp_path))

    def corrupt_pip(cmd, **kw):
        target = cmd[cmd.index("-d") + 1]
        open(f"{target}/{movielens.RECBOLE_WHEEL.filename}", "wb").write(b"not a wheel")
        return type("Done", (), {"returncode": 0, "stderr": "", "stdout": ""})()

    monkeypatch.setattr(download.subprocess, "run", corrupt_pip)
    with pytest.raises(download.ChecksumError, match="deleted and not parsed"):
        movielens.load_movielens_100k()
    assert not (tmp_path / movielens.RECBOLE_WHEEL.filename).exists()


def test_no_network_message_names_the_variable_and_path(monkeypatch, tmp_path):
    monkeypatch.setenv(download.DATA_DIR_VARIABLE, str(tmp_path))
    monkeypatch.setattr(download.subprocess, "run", lambda cmd, **kw: type(
        "Failed", (), {"returncode": 1, "stderr": "ERROR: Could not find a version (network unreachable)",
                       "stdout": ""})())
    with pytest.raises(download.DataUnavailableError, match="TFREC_ONEREC_DATA_DIR.*`path` argument"):
        movielens.load_movielens_100k()


def test_offline_copy_by_path(ml, tmp_path):
    shutil.copy(ml.source, tmp_path)
    assert movielens.load_movielens_100k(tmp_path).ratings.equals(ml.ratings)
    bad = tmp_path / "copy" / movielens.RECBOLE_WHEEL.filename
    bad.parent.mkdir()
    bad.write_bytes(b"x")
    with pytest.raises(download.ChecksumError, match="does not match"):
        movielens.load_movielens_100k(bad)

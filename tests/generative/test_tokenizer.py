"""The semantic-ID tokenizer and the item vectors it quantizes."""
import json

import numpy as np
import pytest

from tfrec_onerec.data import item_embeddings as ie
from tfrec_onerec.data import movielens
from tfrec_onerec.data.simulator import SimulatorConfig, simulate
from tfrec_onerec.models.generative.tokenizer import (SemanticIDTokenizer, collision_digits, level_metrics,
                                                      semantic_id_keys)


def clustered_vectors(n_clusters=12, per=20, dim=16, noise=0.25, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    labels = np.repeat(np.arange(n_clusters), per)
    return (centres[labels] + noise * rng.normal(size=(len(labels), dim))), labels


@pytest.fixture(scope="module")
def fitted():
    x, _ = clustered_vectors()
    item_ids = np.arange(240) * 3 + 7  # sparse, non-contiguous ids
    tokenizer = SemanticIDTokenizer(num_levels=2, codebook_size=8, seed=0)
    return tokenizer, tokenizer.fit(x, item_ids), x, item_ids


# -- collision digits and metrics, by hand -----------------------------------------------------
def test_collision_digit_appears_exactly_where_codes_collide():
    codes = np.array([[0, 1], [0, 1], [1, 0], [0, 1], [1, 0], [2, 2]])
    np.testing.assert_array_equal(collision_digits(codes), [0, 1, 0, 2, 1, 0])
    tokenizer = SemanticIDTokenizer.from_codes(codes, item_ids=np.array([10, 11, 12, 13, 14, 15]), codebook_size=4)
    np.testing.assert_array_equal(tokenizer.semantic_ids,
                                  [[0, 1, 0], [0, 1, 1], [1, 0, 0], [0, 1, 2], [1, 0, 1], [2, 2, 0]])
    assert tokenizer.vocab_sizes == [4, 4, 3]
    assert tokenizer.report["collision_rate"] == pytest.approx(5 / 6)
    assert tokenizer.report["max_collision_digit"] == 2 and tokenizer.report["items_with_nonzero_digit"] == 3
    np.testing.assert_array_equal(collision_digits(np.array([[0, 0], [0, 1], [1, 0]])), [0, 0, 0])


def test_level_metrics_by_hand():
    # 4 items; level 1 uses codes 0, 0, 1, 1 of K = 4; level 2 codes 0, 1, 0, 0.
    codes = np.array([[0, 0], [0, 1], [1, 0], [1, 0]])
    first, second = level_metrics(codes, 4)
    assert first["codes_used"] == 2 and first["utilisation"] == 0.5
    assert first["entropy_bits"] == pytest.approx(1.0) and first["normalised_entropy"] == pytest.approx(0.5)
    assert first["collision_rate"] == 1.0 and first["unique_prefixes"] == 2
    h = -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25))
    assert second["entropy_bits"] == pytest.approx(h)
    # Prefixes (0,0), (0,1), (1,0), (1,0): H = 1.5 bits, minus the first level's 1 bit.
    assert second["conditional_entropy_bits"] == pytest.approx(0.5)
    assert second["collision_rate"] == 0.5 and second["unique_prefixes"] == 3


def test_semantic_id_keys_are_mixed_radix():
    keys = semantic_id_keys(np.array([[1, 2, 0], [0, 0, 1], [3, 3, 1], [4, 0, 0]]), [4, 4, 2])
    np.testing.assert_array_equal(keys, [(1 * 4 + 2) * 2 + 0, 1, (3 * 4 + 3) * 2 + 1, -1])  # 4 is out of range


# -- a fitted tokenizer ----------------------------------------------------------------------
def test_every_item_gets_a_unique_id_and_lookups_round_trip(fitted):
    tokenizer, ids, _, item_ids = fitted
    assert ids.shape == (240, 3)
    assert len(np.unique(ids, axis=0)) == 240
    np.testing.assert_array_equal(tokenizer.encode(item_ids), ids)
    np.testing.assert_array_equal(tokenizer.decode(ids), item_ids)
    batch = item_ids[[[5, 1], [7, 7]]]
    assert tokenizer.encode(batch).shape == (2, 2, 3)
    np.testing.assert_array_equal(tokenizer.decode(tokenizer.encode(batch)), batch)
    # Balanced residual k-means: 240 items over 8 codes, 30 per code at every level.
    for level in range(2):
        np.testing.assert_array_equal(np.bincount(ids[:, level], minlength=8), np.full(8, 30))


def test_unknown_items_and_ids(fitted):
    tokenizer, ids, _, item_ids = fitted
    with pytest.raises(KeyError, match=r"unknown item ids \[0, 8\]"):
        tokenizer.encode([item_ids[0], 0, 8])
    np.testing.assert_array_equal(tokenizer.encode([0, 10_000], on_unknown="minus_one"), -np.ones((2, 3)))
    bad = np.array([[9, 0, 0], [ids[0, 0], ids[0, 1], tokenizer.vocab_sizes[-1]]])
    np.testing.assert_array_equal(tokenizer.decode(bad), [-1, -1])
    with pytest.raises(KeyError, match="name no item"):
        tokenizer.decode(bad, on_unknown="raise")
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3\)"):
        tokenizer.decode(np.zeros((2, 2), int))


def test_report_levels(fitted):
    tokenizer, ids, x, _ = fitted
    report = tokenizer.report
    levels = report["levels"]
    assert [entry["level"] for entry in levels] == [1, 2]
    assert all(entry["utilisation"] == 1.0 for entry in levels)
    assert levels[0]["normalised_entropy"] == pytest.approx(1.0)  # equal-size clusters
    errors = [entry["reconstruction_error"] for entry in levels]
    assert errors[1] < errors[0] < ((x - x.mean(0)) ** 2).sum(1).mean()
    expected = ((x - tokenizer.codebooks[0][ids[:, 0]] - tokenizer.codebooks[1][ids[:, 1]]) ** 2).sum(1).mean()
    assert errors[1] == pytest.approx(expected)
    assert report["collision_rate"] == levels[-1]["collision_rate"]
    assert report["items_with_nonzero_digit"] == int((ids[:, -1] > 0).sum())


def test_lookup_tables_map_both_ways(fitted):
    tokenizer, ids, _, item_ids = fitted
    tables = tokenizer.lookup_tables()
    np.testing.assert_array_equal(tables["item_to_semantic_id"][item_ids], ids)
    others = np.setdiff1d(np.arange(len(tables["item_to_semantic_id"])), item_ids)
    assert (tables["item_to_semantic_id"][others] == -1).all()
    keys = tables["semantic_id_keys"]
    assert (np.diff(keys) > 0).all()
    np.testing.assert_array_equal(tables["semantic_id_key_items"][np.searchsorted(keys, semantic_id_keys(
        ids, tables["vocab_sizes"]))], item_ids)


def test_trie_lists_exactly_the_existing_prefixes(fitted):
    tokenizer, ids, _, item_ids = fitted
    trie = tokenizer.trie()
    for t in range(ids.shape[1]):
        for prefix in {tuple(row) for row in ids[:, :t]}:
            expected = np.unique(ids[(ids[:, :t] == prefix).all(axis=1), t])
            np.testing.assert_array_equal(trie.children_of(prefix), expected)
    assert len(trie.children_of(tuple(ids[0]))) == 0
    np.testing.assert_array_equal(trie.lookup_items(ids), item_ids)


def test_save_load_round_trip(fitted, tmp_path):
    tokenizer, ids, x, item_ids = fitted
    tokenizer.save(tmp_path / "tok")
    loaded = SemanticIDTokenizer.load(tmp_path / "tok")
    assert loaded.get_config() == tokenizer.get_config()
    np.testing.assert_array_equal(loaded.encode(item_ids), ids)
    np.testing.assert_array_equal(loaded.quantize(x), tokenizer.quantize(x))
    for name, table in tokenizer.lookup_tables().items():
        np.testing.assert_array_equal(loaded.lookup_tables()[name], table, err_msg=name)
    assert json.loads(json.dumps(loaded.report)) == json.loads(json.dumps(tokenizer.report, default=float))
    with pytest.raises(FileNotFoundError, match="not a saved SemanticIDTokenizer"):
        SemanticIDTokenizer.load(tmp_path / "missing")


def test_quantize_new_vectors_takes_the_nearest_codewords(fitted):
    tokenizer, ids, x, _ = fitted
    codes = tokenizer.quantize(x)
    assert codes.shape == (240, 2)
    first = np.argmin(((x[:, None] - tokenizer.codebooks[0][None]) ** 2).sum(-1), axis=1)
    residual = x - tokenizer.codebooks[0][first]
    second = np.argmin(((residual[:, None] - tokenizer.codebooks[1][None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(codes, np.stack([first, second], 1))
    # Balanced fitting moved some items off their nearest code (12 blobs of 20 into 8 codes of 30).
    assert 0.5 < (codes[:, 0] == ids[:, 0]).mean() < 1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        SemanticIDTokenizer(method="vq")
    with pytest.raises(RuntimeError, match="not fitted"):
        SemanticIDTokenizer().encode([1])
    with pytest.raises(ValueError, match="n_items >= codebook_size"):
        SemanticIDTokenizer(codebook_size=32).fit(np.zeros((10, 4)))
    with pytest.raises(ValueError, match="item_ids must be distinct"):
        SemanticIDTokenizer(codebook_size=2).fit(np.random.default_rng(0).normal(size=(4, 2)), [1, 1, 2, 3])


def test_rq_vae_method(tmp_path):
    x, labels = clustered_vectors(n_clusters=8, per=30, dim=12)
    tokenizer = SemanticIDTokenizer(num_levels=2, codebook_size=8, method="rq_vae", latent_dim=8, hidden_units=(32,),
                                    epochs=15, batch_size=64, learning_rate=3e-3, seed=0)
    ids = tokenizer.fit(x.astype(np.float32))
    assert len(np.unique(ids, axis=0)) == len(x)
    np.testing.assert_array_equal(tokenizer.decode(ids), np.arange(1, len(x) + 1))
    report = tokenizer.report
    assert report["reconstruction_space"] == "RQ-VAE latent"
    assert report["decoder_reconstruction_error"] < 0.5 * ((x - x.mean(0)) ** 2).sum(1).mean()
    assert report["levels"][0]["codes_used"] >= 6
    tokenizer.save(tmp_path / "vae")
    loaded = SemanticIDTokenizer.load(tmp_path / "vae")
    np.testing.assert_array_equal(loaded.encode(np.arange(1, len(x) + 1)), ids)
    np.testing.assert_array_equal(loaded.quantize(x), tokenizer.quantize(x))


# -- item vectors -----------------------------------------------------------------------------
def test_hashed_bag_by_hand():
    bag = ie.hashed_bag([["a", "b"], ["a"], ["a", "c", "c"], ["c"]], num_buckets=64)
    # "a": 3 of 4 rows, idf log(4/3); "c": 2 rows, idf log 2, counted twice in row 3; "b": one row, dropped.
    assert np.count_nonzero(bag[0]) == 1 and np.abs(bag[0]).sum() == pytest.approx(np.log(4 / 3))
    assert np.abs(bag[3]).sum() == pytest.approx(np.log(2))
    assert np.abs(bag[2]).sum() == pytest.approx(np.log(4 / 3) + 2 * np.log(2))


def test_ppmi_by_hand():
    counts = np.array([[0, 2, 0], [2, 0, 1], [0, 1, 0]], float)
    # T = 6, marginals 2, 3, 1: PMI(0,1) = log(2 * 6 / 6) = log 2, PMI(1,2) = log(6 / 3) = log 2.
    np.testing.assert_allclose(ie.ppmi(counts), [[0, np.log(2), 0], [np.log(2), 0, np.log(2)], [0, np.log(2), 0]])
    np.testing.assert_array_equal(ie.cooccurrence_counts([1, 1, 2, 2, 2], [1, 2, 1, 2, 3], 3),
                                  [[0, 2, 1], [2, 0, 1], [1, 1, 0]])


@pytest.fixture(scope="module")
def movielens_data():
    return movielens.load_movielens_100k()


@pytest.fixture(scope="module")
def movielens_vectors(movielens_data):
    return ie.movielens_item_vectors(movielens_data)


def test_movielens_item_vectors_are_unit_rows_where_shared_genres_are_closer(movielens_data, movielens_vectors):
    vectors = movielens_vectors.vectors
    assert vectors.shape == (1682, 64) and vectors.dtype == np.float32
    np.testing.assert_array_equal(movielens_vectors.item_ids, np.arange(1, 1683))
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert set(movielens_vectors.blocks) == {"genres", "year", "title", "kg", "collaborative"}
    genres = np.zeros((1682, len(movielens.GENRES)), bool)
    for row, names in enumerate(movielens_data.items["genres"]):
        genres[row, [movielens.GENRES.index(g) for g in names]] = True
    same = (genres.astype(int) @ genres.T.astype(int)) > 0
    similarity = vectors @ vectors.T
    off_diagonal = ~np.eye(1682, dtype=bool)
    assert similarity[same & off_diagonal].mean() > similarity[~same].mean() + 0.15
    # Sequels share KG entities, titles and audiences: each Star Wars film's
    # ten nearest neighbours (of 1,681) include the others (ids 50, 172, 181).
    for item in (50, 172, 181):
        nearest = set(np.argsort(-similarity[item - 1])[1:11] + 1)
        assert {50, 172, 181} - {item} <= nearest, (item, nearest)


def test_simulator_item_vectors_put_a_category_together():
    sim = simulate(SimulatorConfig(num_users=300, num_items=200, num_categories=5, sessions_per_user=4))
    first = ie.simulator_item_vectors(sim, dim=16)
    np.testing.assert_array_equal(ie.simulator_item_vectors(sim, dim=16).vectors, first.vectors)  # deterministic
    assert first.vectors.shape == (200, 16) and first.blocks == {"content": 32, "collaborative": 32}
    np.testing.assert_allclose(np.linalg.norm(first.vectors, axis=1), 1.0, atol=1e-5)
    category = sim.items["category"].to_numpy()
    similarity = first.vectors @ first.vectors.T
    same = (category[:, None] == category[None, :]) & ~np.eye(200, dtype=bool)
    assert similarity[same].mean() > similarity[category[:, None] != category[None, :]].mean() + 0.3


def test_mix_item_vectors_weights_and_errors():
    a, b = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[3.0], [3.0]])
    mixed = ie.mix_item_vectors({"a": a, "b": b}, {"a": 3.0, "b": 1.0}, dim=None)
    # Cosine of the two rows = 0.75 * cos_a + 0.25 * cos_b = 0.75 * 0 + 0.25 * 1.
    assert float(mixed[0] @ mixed[1]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"no weight for blocks \['b'\]"):
        ie.mix_item_vectors({"a": a, "b": b}, {"a": 1.0})


def test_movielens_semantic_ids_with_default_settings(movielens_vectors):
    """End to end: 1,682 movies, 3 levels x 32 codes, balanced residual k-means."""
    tokenizer = SemanticIDTokenizer()
    ids = tokenizer.fit(movielens_vectors.vectors, movielens_vectors.item_ids)
    report = tokenizer.report
    print(json.dumps(report, indent=1, default=float))
    assert ids.shape == (1682, 4) and len(np.unique(ids, axis=0)) == 1682
    np.testing.assert_array_equal(tokenizer.decode(tokenizer.encode(np.arange(1, 1683))), np.arange(1, 1683))
    levels = report["levels"]
    assert all(level["utilisation"] == 1.0 for level in levels)
    assert all(level["normalised_entropy"] > 0.99 for level in levels)  # balanced: 1682 / 32 = 52 or 53 per code
    assert [level["unique_prefixes"] for level in levels][0] == 32
    errors = [level["reconstruction_error"] for level in levels]
    assert errors[0] > errors[1] > errors[2]
    assert report["collision_rate"] < 0.5

"""The OneRec training path: next-item ranking from beam lists, and the tokenizer CLI step."""
import numpy as np
import pytest

from tfrec_onerec import cli, generative_training
from tfrec_onerec.data.sessions import POSITIVE_FEATURE, SESSION_FEATURE, SHORT_FEATURE
from tfrec_onerec.models.generative.onerec import OneRec


def test_next_item_ranking_drops_history_items_and_counts_misses(monkeypatch):
    lists = np.array([[5, 7, 9, 11],     # target 9; 7 is in the history -> rank 2
                      [3, 4, 6, 8],      # target 2 not in the list -> a miss
                      [2, 2, 0, 0]])     # target 2 first -> rank 1
    monkeypatch.setattr(generative_training, "ranked_items", lambda model, columns, beam_size: lists)
    columns = {SESSION_FEATURE: np.array([[9, 0], [2, 0], [2, 0]]),
               SHORT_FEATURE: np.array([[7, 1], [1, 0], [0, 0]])}
    found = generative_training.next_item_ranking(None, columns, ks=(1, 2))
    assert found["recall@1"] == pytest.approx(1 / 3) and found["recall@2"] == pytest.approx(2 / 3)
    assert found["ndcg@2"] == pytest.approx((1 / np.log2(3) + 1) / 3)
    assert found["users"] == 3


def test_tokenizer_fit_command_reports_and_saves(tmp_path, capsys):
    cli.main(["tokenizer", "fit", "--dataset", "movielens-100k", "--out", str(tmp_path / "tok"), "--codes", "16"])
    out = capsys.readouterr().out
    # MovieLens-100K's default levels (DATASET_DEFAULTS: 2) with the 16 codes asked for
    assert "2 levels + collision digit, vocab sizes [16, 16," in out and "level 2: utilisation" in out
    assert "level 3" not in out and "collision rate" in out
    from tfrec_onerec.models.generative.tokenizer import SemanticIDTokenizer

    tokenizer = SemanticIDTokenizer.load(tmp_path / "tok")
    assert len(tokenizer.item_ids) == 1682 and len(np.unique(tokenizer.semantic_ids, axis=0)) == 1682


def test_next_item_ranking_drops_every_seen_item_when_the_columns_list_them(monkeypatch):
    from tfrec_onerec.data.movielens_sessions import SEEN_FEATURE

    lists = np.array([[5, 7, 9, 11]])
    monkeypatch.setattr(generative_training, "ranked_items", lambda model, columns, beam_size: lists)
    columns = {SESSION_FEATURE: np.array([[9, 0]]), SHORT_FEATURE: np.array([[7, 0]])}
    assert generative_training.next_item_ranking(None, columns, ks=(1, 2))["recall@2"] == 1.0  # rank 2
    # 5 was seen long ago (not in the short history): removing it too puts 9 first.
    columns[SEEN_FEATURE] = np.array([[5, 7, 0]])
    found = generative_training.next_item_ranking(None, columns, ks=(1, 2))
    assert found["recall@1"] == 1.0 and found["ndcg@1"] == 1.0


def test_learning_rate_warms_up_then_decays_by_cosine():
    schedule = generative_training.learning_rate_schedule(1e-3, 110, warmup_fraction=10 / 110, final_fraction=0.1)
    rates = [float(schedule(step)) for step in (0, 5, 10, 60, 110)]
    # linear warmup over 10 steps, then 1e-4 + 0.9e-3 * (1 + cos(pi * t / 100)) / 2
    np.testing.assert_allclose(rates, [0.0, 5e-4, 1e-3, 1e-4 + 0.9e-3 * 0.5, 1e-4], rtol=1e-4, atol=1e-9)
    assert generative_training.learning_rate_schedule(1e-3, 110, warmup_fraction=None) == 1e-3
    with pytest.raises(ValueError, match="warmup_fraction"):
        generative_training.learning_rate_schedule(1e-3, 110, warmup_fraction=1.0)


def test_fit_onerec_takes_pathway_lengths_from_the_data_and_dataset_defaults():
    rng = np.random.default_rng(0)
    n, items = 64, np.arange(1, 17)
    columns = {"user_id": rng.integers(1, 50, n), SHORT_FEATURE: rng.integers(0, 17, (n, 6)),
               POSITIVE_FEATURE: rng.integers(0, 17, (n, 5)), SESSION_FEATURE: rng.integers(1, 17, (n, 2))}
    codes = np.stack([(items - 1) // 4, (items - 1) % 4], axis=1)
    data = generative_training.GenerativeData("movielens-100k", {"train": columns, "valid": columns}, {},
                                              items, codes.astype(np.float32))
    tokenizer = type("Fitted", (), {"semantic_ids": codes, "item_ids": items})()
    model, history, tokens_per_s = generative_training.fit_onerec(
        data, tokenizer, epochs=1, batch_size=32, verbose=0, dim=16, num_heads=2, ffn_dim=16,
        num_encoder_layers=1, num_decoder_layers=1, beam_size=4, num_results=2)
    assert (model.short_len, model.positive_len, model.session_len) == (6, 5, 2)
    assert model.item_id_embedding is generative_training.DATASET_DEFAULTS["movielens-100k"]["model"]["item_id_embedding"]
    assert np.isfinite(history.history["loss"][0]) and tokens_per_s > 0
    with pytest.raises(ValueError, match="Unknown dataset 'nope'"):
        generative_training.load_generative_data("nope")


def test_the_reports_smallest_configuration_has_its_parameter_count():
    """The report's smallest model (0.015B) in our blocks: 13.8M parameters besides the
    user- and item-id tables (which scale with the catalogue)."""
    config = generative_training.PAPER_CONFIGURATIONS["onerec-report-0.015b"]
    rng = np.random.default_rng(0)
    k = config["tokenizer"]["codebook_size"]
    semantic_ids = np.stack([np.arange(2000), rng.integers(0, k, 2000), rng.integers(0, k, 2000),
                             np.zeros(2000, np.int64)], axis=1)  # distinct; no collision digit needed
    model = OneRec(semantic_ids, np.arange(1, 2001), vocab_sizes=[k, k, k, 1],
                   static_features={"gender": 2, "age": 7}, **config["sessions"], **config["model"])
    batch = {"user_id": np.zeros(1, np.int64), "gender": np.zeros(1, np.int64), "age": np.zeros(1, np.int64),
             SHORT_FEATURE: np.ones((1, 20), np.int64), POSITIVE_FEATURE: np.ones((1, 256), np.int64),
             SESSION_FEATURE: np.ones((1, 1), np.int64)}
    model(batch)
    id_tables = {id(model.user_embedding.embeddings), id(model.item_embedding.embeddings)}
    count = sum(int(np.prod(w.shape)) for w in model.trainable_weights if id(w) not in id_tables)

    # The count by hand, from the architecture (d = 128, 4 heads of 32, FFN 256, 24 experts):
    d, ffn_dim, experts, layers = 128, 256, 24, 4
    vocab = 2 + 3 * 8192 + 1                       # padding, BOS, 3 levels x 8192 codes, 1 collision code
    attention = 4 * (d * d + d)                    # query, key, value and output projections, with biases
    norm = 2 * d                                   # LayerNorm scale and offset
    ffn = (d * ffn_dim + ffn_dim) + (ffn_dim * d + d)  # two dense layers
    encoder_block = norm + attention + norm + ffn  # self-attention, dense FFN
    decoder_block = 3 * norm + 2 * attention + d * experts + experts * ffn  # self- and cross-attention, router, MoE
    embeddings = (vocab * d                        # code tokens (shared by encoder items and decoder inputs)
                  + (2 + 1) * d + (7 + 1) * d      # static features gender, age (vocab + 1 rows)
                  + 3 * d                          # pathway: static / short / positive
                  + (20 + 256 + 1 * (4 + 1)) * d)  # positions: short, positive, decoder (m x (L + 1) tokens)
    output = d * vocab + vocab
    expected = embeddings + layers * encoder_block + layers * decoder_block + 2 * norm + output

    def trainable(layer):
        return sum(int(np.prod(w.shape)) for w in layer.trainable_weights)

    assert [trainable(b) for b in model.encoder_blocks] == [encoder_block] * layers
    assert [trainable(b) for b in model.decoder_blocks] == [decoder_block] * layers
    assert trainable(model.token_embedding) == vocab * d and trainable(model.output_projection) == output
    assert count == expected
    # The report's 0.015B: the same order (it does not say whether its count includes id tables).
    assert abs(count - 0.015e9) < 0.1 * 0.015e9

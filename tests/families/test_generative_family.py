"""The generative family's pieces: next-item ranking from beam lists, the learning-rate schedule,
per-data-set model defaults, the paper-scale configuration, a small fit, and the tokenizer CLI step."""
import time

import keras
import numpy as np
import pytest

from tfrec_onerec import cli
from tfrec_onerec.data.sessions import POSITIVE_FEATURE, SESSION_FEATURE, SHORT_FEATURE
from tfrec_onerec.families import FamilyData, UnsupportedOption
from tfrec_onerec.families import generative
from tfrec_onerec.models.generative.onerec import OneRec
from tfrec_onerec.training import learning_rate_schedule


# -- ranking_from_lists -------------------------------------------------------------------------------
def test_ranking_from_lists_drops_seen_items_and_counts_misses():
    lists = np.array([[5, 7, 9, 11],     # target 9; 7 was seen -> rank 2
                      [3, 4, 6, 8],      # target 2 not in the list -> a miss
                      [2, 2, 0, 0]])     # target 2 first -> rank 1
    targets = np.array([9, 2, 2])
    seen = np.array([[7, 1], [1, 0], [0, 0]])
    found = generative.ranking_from_lists(lists, targets, seen, ks=(1, 2))
    assert found["recall@1"] == pytest.approx(1 / 3) and found["recall@2"] == pytest.approx(2 / 3)
    assert found["ndcg@2"] == pytest.approx((1 / np.log2(3) + 1) / 3)
    assert found["mrr"] == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert found["users"] == 3


def test_ranking_from_lists_removes_every_seen_item_but_never_the_target():
    lists = np.array([[5, 7, 9, 11]])
    targets = np.array([9])
    # only 7 seen: 9 is second
    assert generative.ranking_from_lists(lists, targets, np.array([[7, 0, 0]]), ks=(1, 2))["recall@1"] == 0.0
    assert generative.ranking_from_lists(lists, targets, np.array([[7, 0, 0]]), ks=(1, 2))["recall@2"] == 1.0
    # 5 was seen long ago too: removing it puts 9 first
    found = generative.ranking_from_lists(lists, targets, np.array([[5, 7, 0]]), ks=(1, 2))
    assert found["recall@1"] == 1.0 and found["ndcg@1"] == 1.0
    # a target listed among the seen items (seen before, and again now) is kept
    found = generative.ranking_from_lists(lists, targets, np.array([[5, 7, 9]]), ks=(1, 2))
    assert found["recall@1"] == 1.0
    # no seen items at all (S = 0 columns)
    assert generative.ranking_from_lists(lists, targets, np.zeros((1, 0), np.int64), ks=(3,))["recall@3"] == 1.0


# -- learning-rate schedule ---------------------------------------------------------------------------
def test_learning_rate_warms_up_then_decays_by_cosine():
    schedule = learning_rate_schedule(1e-3, 110, warmup_fraction=10 / 110, final_fraction=0.1)
    rates = [float(schedule(step)) for step in (0, 5, 10, 60, 110)]
    # linear warmup over 10 steps, then 1e-4 + 0.9e-3 * (1 + cos(pi * t / 100)) / 2
    np.testing.assert_allclose(rates, [0.0, 5e-4, 1e-3, 1e-4 + 0.9e-3 * 0.5, 1e-4], rtol=1e-4, atol=1e-9)
    assert learning_rate_schedule(1e-3, 110, warmup_fraction=None) == 1e-3
    with pytest.raises(ValueError, match="warmup_fraction"):
        learning_rate_schedule(1e-3, 110, warmup_fraction=1.0)


def test_the_generative_family_trains_with_warmup_by_default():
    config = generative.FAMILY.train_config(OneRec)
    assert config.warmup_fraction == 0.05 and config.learning_rate == 1e-3


# -- build_model: lengths from the spec, DATASET_DEFAULTS of the data set -----------------------------
def _tiny_data(dataset: str) -> FamilyData:
    spec = generative.generative_spec({"gender": 2}, num_users=50, num_items=16, short_len=6, positive_len=5,
                                      session_len=2, seen_len=0)
    return FamilyData(spec, {"dataset": dataset, "options": {"seed": 0}}, files={})


def _tiny_tokenizer():
    items = np.arange(1, 17)
    codes = np.stack([(items - 1) // 4, (items - 1) % 4], axis=1)
    return type("Fitted", (), {"semantic_ids": codes, "item_ids": items})()


def test_build_model_takes_pathway_lengths_from_the_spec_and_dataset_defaults(monkeypatch):
    family = generative.FAMILY
    small = dict(dim=16, num_heads=2, ffn_dim=16, num_encoder_layers=1, num_decoder_layers=1, beam_size=4,
                 num_results=2)
    built = {"tokenizer": _tiny_tokenizer()}
    model = family.build_model(OneRec, _tiny_data("movielens-100k"), small, built=built)
    assert (model.short_len, model.positive_len, model.session_len) == (6, 5, 2)
    assert model.static_features == {"gender": 2} and model.num_levels == 2
    assert model.item_id_embedding is generative.DATASET_DEFAULTS["movielens-100k"]["model"]["item_id_embedding"]
    # The data set's defaults are read when the model is built, and hyperparameters override them.
    monkeypatch.setitem(generative.DATASET_DEFAULTS["movielens-100k"], "model", {"item_id_embedding": False,
                                                                                 "dropout": 0.3})
    model = family.build_model(OneRec, _tiny_data("movielens-100k"), small, built=built)
    assert model.item_id_embedding is False and model.dropout == pytest.approx(0.3)
    model = family.build_model(OneRec, _tiny_data("movielens-100k"), {**small, "dropout": 0.0}, built=built)
    assert model.dropout == 0.0
    # Another data set does not take them.
    model = family.build_model(OneRec, _tiny_data("simulator"), small, built=built)
    assert model.item_id_embedding is True and model.dropout == pytest.approx(0.1)


def test_fit_tokenizer_takes_levels_and_codes_from_dataset_defaults():
    rng = np.random.default_rng(0)
    vectors = {"item_ids": np.arange(1, 201), "vectors": rng.normal(size=(200, 8)).astype(np.float32)}
    tokenizer = generative.fit_tokenizer(vectors, "simulator")
    defaults = generative.DATASET_DEFAULTS["simulator"]["tokenizer"]
    assert tokenizer.num_levels == defaults["num_levels"]
    assert tokenizer.vocab_sizes[:defaults["num_levels"]] == [defaults["codebook_size"]] * defaults["num_levels"]
    assert generative.fit_tokenizer(vectors, "simulator", num_levels=2, codebook_size=4).vocab_sizes[:2] == [4, 4]


def test_an_unknown_dataset_is_refused():
    with pytest.raises(UnsupportedOption, match="not 'nope'"):
        generative.FAMILY.prepare("nope")


# -- the report's smallest configuration ----------------------------------------------------------------
def test_the_reports_smallest_configuration_has_its_parameter_count():
    """The report's smallest model (0.015B) in our blocks: 13.8M parameters besides the
    user- and item-id tables (which scale with the catalogue)."""
    config = generative.PAPER_CONFIGURATIONS["onerec-report-0.015b"]
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


# -- a small fit ------------------------------------------------------------------------------------
class SlowValidation(keras.callbacks.Callback):
    """Sleeps before each validation pass and at each epoch's end: time that is no training step."""

    PAUSE = 1.0

    def on_test_begin(self, logs=None):
        time.sleep(self.PAUSE)

    def on_epoch_end(self, epoch, logs=None):
        time.sleep(self.PAUSE)


@pytest.fixture(scope="module")
def tiny_simulator(tmp_path_factory):
    return generative.FAMILY.prepare("simulator", {"simulator_users": 300, "simulator_items": 60, "seed": 0},
                                     directory=tmp_path_factory.mktemp("generative-simulator"))


def test_fit_on_a_tiny_simulator_reports_target_tokens_per_second_of_training_steps(tiny_simulator):
    family, data = generative.FAMILY, tiny_simulator
    batch_size = 16
    config = family.train_config(OneRec, {"epochs": 1, "batch_size": batch_size, "verbose": 0})
    result = family.fit("onerec", data, config=config, callbacks=[SlowValidation()],
                        hyperparameters=dict(dim=32, num_heads=2, ffn_dim=32, num_encoder_layers=1,
                                             num_decoder_layers=1, beam_size=4, num_results=2))
    info, model = result.info, result.model
    assert np.isfinite(result.history.history["loss"][0]) and "val_loss" in result.history.history
    assert info["target_tokens_per_second"] > 0
    assert model.num_levels == info["tokenizer"].num_levels + 1  # + the collision digit
    assert len(info["expert_load"]) == 1

    # From the training steps alone: every target token of an epoch over (median step time x steps),
    # not the wall time of fit (which holds the validation pass, tracing and the pauses above).
    sessions = data.columns("train")[SESSION_FEATURE]
    steps = -(-len(sessions) // batch_size)
    assert steps >= 3  # the first step of an epoch is not timed
    tokens = np.count_nonzero(sessions) * model.num_levels
    assert info["target_tokens_per_second"] == pytest.approx(tokens / (info["seconds_per_step"] * steps), rel=1e-6)
    assert info["seconds_per_step"] < SlowValidation.PAUSE


# -- the tokenizer CLI step ----------------------------------------------------------------------------
def test_tokenizer_fit_command_reports_and_saves(tmp_path, capsys):
    cli.main(["tokenizer", "fit", "--dataset", "movielens-100k", "--out", str(tmp_path / "tok"), "--codes", "16"])
    out = capsys.readouterr().out
    # MovieLens-100K's default levels (DATASET_DEFAULTS: 2) with the 16 codes asked for
    assert "2 levels + collision digit, vocab sizes [16, 16," in out and "level 2: utilisation" in out
    assert "level 3" not in out and "collision rate" in out
    from tfrec_onerec.models.generative.tokenizer import SemanticIDTokenizer

    tokenizer = SemanticIDTokenizer.load(tmp_path / "tok")
    assert len(tokenizer.item_ids) == 1682 and len(np.unique(tokenizer.semantic_ids, axis=0)) == 1682

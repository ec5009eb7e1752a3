"""STAMP: every prefix's representation against the paper's equations, STMP, learning a known
answer, round trips and an export that serves without the package."""
import keras
import numpy as np
import pytest

from tfrec_onerec import models
from tfrec_onerec.data import sequences

from successor_world import (MAX_LEN, NUM_ITEMS, check_saved_and_served, full_ranking_and_popularity,
                             successor_split)


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture(scope="module")
def successor_data():
    return successor_split(300)


@pytest.fixture(scope="module")
def trained(successor_data):
    keras.utils.set_random_seed(0)
    model = models.get("stamp")(successor_data.spec(embedding_dim=32))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(successor_data.train_dataset(batch_size=64), epochs=8, verbose=0, shuffle=False)
    return model, history.history["loss"]


def reference(model, ids):
    """The paper's equations, one prefix at a time, with the model's weights (numpy)."""
    table = numpy(model.embedding.table("item"))
    weights = {layer.name: [numpy(w) for w in layer.weights] for layer in model.layers if layer.weights}
    (w_s, b_s), (w_t, b_t) = weights["general_interest"], weights["current_interest"]
    out = np.zeros(ids.shape + (model.dim,))
    for row, sequence in enumerate(ids):
        for t in range(int((sequence != 0).sum())):
            x = table[sequence[:t + 1]]  # the prefix's item embeddings
            m_s, x_t = x.mean(axis=0), x[-1]
            if model.attention:
                (w1,), (w2,), (w3, b_a), (w0,) = (weights[n] for n in ("w1", "w2", "w3", "w0"))
                alpha = sigmoid(x @ w1 + x_t @ w2 + m_s @ w3 + b_a) @ w0  # (t + 1, 1)
                memory = (alpha * x).sum(axis=0)
            else:
                memory = m_s
            out[row, t] = np.tanh(memory @ w_s + b_s) * np.tanh(x_t @ w_t + b_t)
    return out


@pytest.mark.parametrize("attention", [True, False])
def test_every_prefix_follows_the_papers_equations(attention):
    keras.utils.set_random_seed(1)
    model = models.get("stamp")(sequences.next_item_spec(NUM_ITEMS, MAX_LEN, embedding_dim=8), attention=attention)
    ids = np.zeros((3, MAX_LEN), np.int64)
    ids[0, :5] = [3, 9, 9, 41, 7]
    ids[1, :1] = [60]
    ids[2, :] = np.arange(1, MAX_LEN + 1)
    hidden = numpy(model({"item_seq": ids}))
    np.testing.assert_allclose(hidden, reference(model, ids), rtol=1e-4, atol=1e-6)
    # the score of item i at position t is the trilinear product <h_s, h_t, x_i>
    scores = numpy(model.item_scores({"item_seq": ids}))
    np.testing.assert_allclose(scores[0], hidden[0, 4] @ numpy(model.item_embeddings()).T, rtol=1e-4, atol=1e-6)


def test_learns_successors_and_beats_popularity(trained, successor_data):
    model, losses = trained
    assert losses[-1] < losses[0] / 3
    test, popularity = full_ranking_and_popularity(model, successor_data)
    assert test["recall@10"] > 0.95 and popularity["recall@10"] < 0.35
    assert test["mrr"] > 0.8


def test_round_trips_and_serves_without_the_package(trained, successor_data, tmp_path):
    model, _ = trained
    histories = successor_data.inputs("test")[:4]
    clone = type(model).from_config(model.get_config())
    clone.build()
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(numpy(clone.item_scores({"item_seq": histories})),
                               numpy(model.item_scores({"item_seq": histories})), rtol=1e-5, atol=1e-5)
    assert check_saved_and_served(model, histories, tmp_path).attention

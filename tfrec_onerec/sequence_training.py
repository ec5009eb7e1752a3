"""Next-item training of SASRec: leave-one-out sequences, ``model.fit``, full-ranking evaluation.

``tfrec-onerec train --model sasrec --dataset movielens-100k|simulator`` runs these steps:

1. :func:`load_next_item_data`: each user's items in time order, split leave-one-out
   (:mod:`tfrec_onerec.data.sequences`; MovieLens-100K: every rating; the simulator:
   the clicked items of a simulated log);
2. :func:`fit_sasrec`: :class:`~tfrec_onerec.models.sequence.sasrec.SASRec` trained with
   its full-softmax next-item loss on the training windows;
3. :func:`evaluate_next_item`: the held-out item ranked among all items the user has not
   seen (Recall@K, NDCG@K, MRR), next to the popularity baseline on the same users.
"""
from __future__ import annotations

from typing import Sequence

import keras

from tfrec_onerec.data import movielens
from tfrec_onerec.data.sequences import NextItemData, movielens_next_item, simulator_next_item
from tfrec_onerec.data.simulator import SimulatorConfig, simulate
from tfrec_onerec.models.sequence.sasrec import SASRec, evaluate_full_ranking
from tfrec_onerec.training import resolve_verbosity

DATASETS = (movielens.NAME, "simulator")


def load_next_item_data(dataset: str, max_len: int = 50, data_path=None,
                        simulator_config: SimulatorConfig | None = None) -> NextItemData:
    """The leave-one-out next-item split of ``movielens-100k`` or ``simulator``.

    Args:
        dataset: ``"movielens-100k"`` or ``"simulator"``.
        max_len: L, the history length kept. Default 50.
        data_path: MovieLens: an offline copy of the source data (see
            :func:`~tfrec_onerec.data.movielens.load_movielens_100k`).
        simulator_config: the simulated world; default ``SimulatorConfig()``.

    Raises:
        ValueError: an unknown dataset.
    """
    if dataset == movielens.NAME:
        return movielens_next_item(movielens.load_movielens_100k(data_path), max_len)
    if dataset == "simulator":
        return simulator_next_item(simulate(simulator_config or SimulatorConfig()), max_len)
    raise ValueError(f"Unknown dataset {dataset!r} for next-item training; use one of {DATASETS}.")


def fit_sasrec(data: NextItemData, epochs: int = 30, batch_size: int = 128, learning_rate: float = 2e-3,
               embedding_dim: int = 64, seed: int = 0, verbose="auto", **hyperparameters):
    """Builds SASRec for `data` and trains it on the training windows.

    Args:
        data: the :class:`~tfrec_onerec.data.sequences.NextItemData`.
        epochs, batch_size, learning_rate: ``model.fit`` with Adam. Defaults: 30, 128, 2e-3
            (MovieLens-100K: Recall@10 about 0.20 after 30 epochs, see ``tests/models/test_sasrec.py``).
        embedding_dim: d, the item embedding and model width. Default 64.
        seed: the window shuffle seed.
        verbose: Keras verbosity; ``"auto"``: a progress bar on a terminal, a line per epoch otherwise.
        **hyperparameters: more :class:`SASRec` arguments (``num_blocks``, ``dropout``, ``top_n``...).

    Returns:
        ``(model, history)``.
    """
    model = SASRec(data.spec(embedding_dim=embedding_dim), **hyperparameters)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    history = model.fit(data.train_dataset(batch_size=batch_size, seed=seed), epochs=epochs, shuffle=False,
                        verbose=resolve_verbosity(verbose))
    return model, history


def evaluate_next_item(model: SASRec, data: NextItemData, split: str = "test", ks: Sequence[int] = (10, 20)) -> dict:
    """Full-ranking metrics of `model` and of the popularity baseline on one split.

    Returns:
        ``{"sasrec": metrics, "popularity": metrics}``, each the dictionary of
        :func:`~tfrec_onerec.models.sequence.sasrec.evaluate_full_ranking` (``recall@k``,
        ``ndcg@k``, ``mrr``, ``users``): the held-out item ranked among the items the user
        has not seen before it.
    """
    return {"sasrec": evaluate_full_ranking(model.score_items(data.inputs(split)), data, split, ks),
            "popularity": evaluate_full_ranking(data.item_counts, data, split, ks)}

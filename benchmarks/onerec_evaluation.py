"""Generative OneRec on the short-video simulator: the paper's Table 1, with ground truth.

For the test users' contexts, each method writes one session of m items; the simulator's
ground truth gives its *expected* session watch time (swt), view (vtr), follow (wtr) and
like (ltr) rates (:func:`tfrec_onerec.data.simulator_truth.evaluate_sessions`), reported as the
mean over users and the mean of each user's best of the returned sessions ("max"):

* ``logged``: the sessions the simulator's logging policy showed (first m exposures);
* ``SASRec``: the m highest-scored unseen items of a SASRec trained on clicked sequences;
* ``TIGER-style``: a point-wise ablation: the same encoder, one item per target (m = 1), one
  dense expert, trained on the same target tokens with the same number of steps (batch
  m times larger); the session is the top-m distinct items of the same constrained beam;
* ``OneRec``: session-wise generation (m items per target), sparse MoE decoder;
* ``OneRec + IPA k``: after k iterations of preference alignment with the reward model
  (one row per kept iteration).

OneRec and the ablation are trained by the generative family (:mod:`tfrec_onerec.families.generative`;
batches of 128, no early stopping), the ablation on a prepared copy of the family's data whose
sessions are split into one-item sessions, both with the same tokenizer (3 levels x 8 codes).
The reward model trains on the exposed sessions split into windows of m exposures
(``SessionConfig(windows=True)``: about 2.4x the samples of first-m sessions), with early
stopping on the validation windows; the script prints its test AUCs next to the AUCs of the
simulator's own expected labels (the ceiling). Alignment's early-stopping proxy is the
reward on validation users (never the ground truth, which is only reported). Run::

    python benchmarks/onerec_evaluation.py [--users 3000] [--items 400] [--epochs 8] [--quick]
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

import tfrec_onerec  # noqa: F401  (environment first)
from tfrec_onerec import families
from tfrec_onerec import metrics as metrics_lib
from tfrec_onerec.data import sequences, sessions
from tfrec_onerec.data.prepared import load_prepared, write_prepared
from tfrec_onerec.data.simulator import session_world, simulate
from tfrec_onerec.data.simulator_truth import evaluate_sessions, true_session_metrics
from tfrec_onerec.families import FamilyData, generative
from tfrec_onerec.features import FeatureSpec
from tfrec_onerec.models.generative.alignment import AlignmentConfig, align, rewards_of, top_sessions
from tfrec_onerec.models.generative.onerec import OneRec
from tfrec_onerec.models.generative.reward import OneRecRewardModel
from tfrec_onerec.models.sequence.sasrec import SASRec

METRICS = ("swt", "vtr", "wtr", "ltr")


def pointwise(columns: dict) -> dict:
    """Session rows -> one row per real target item (the point-wise ablation's training data)."""
    m = columns[sessions.SESSION_FEATURE].shape[1]
    targets = columns[sessions.SESSION_FEATURE].reshape(-1)
    keep = targets > 0
    out = {k: np.repeat(np.asarray(v), m, axis=0)[keep] for k, v in columns.items() if k != sessions.SESSION_FEATURE}
    out[sessions.SESSION_FEATURE] = targets[keep][:, None]
    return out


def pointwise_data(data: FamilyData, directory: Path) -> FamilyData:
    """`data` with every session split into one-item sessions (:func:`pointwise`), written as a
    prepared data set of the generative family (the same spec with m = 1, the same item vectors)."""
    spec = FeatureSpec([dataclasses.replace(f, max_len=1) if f.name == sessions.SESSION_FEATURE else f
                        for f in data.spec], data.spec.labels, data.spec.user_key)
    splits = {split: pointwise(data.columns(split)) for split in ("train", "valid", "test")}
    metadata = {k: v for k, v in data.metadata.items() if k != "examples"}
    metadata["options"] = {**metadata["options"], "session_len": 1}
    write_prepared(directory, spec, splits, metadata, progress=False)
    shutil.copy(data.side_file(generative.ITEM_VECTORS_FILE), directory / generative.ITEM_VECTORS_FILE)
    return FamilyData.from_prepared(load_prepared(directory))


def distinct_top(items: np.ndarray, m: int) -> np.ndarray:
    """(n, N, 1) ranked single items -> (n, m) sessions of the first m distinct valid ones."""
    out = np.zeros((len(items), m), np.int64)
    for row, ranked in enumerate(items[:, :, 0]):
        chosen = list(dict.fromkeys(int(i) for i in ranked if i > 0))[:m]
        out[row, :len(chosen)] = chosen
    return out


def table(rows: dict) -> str:
    head = "method            " + "  ".join(f"{m}_mean  {m}_max " for m in METRICS) + "  reward"
    lines = [head]
    for name, (metrics, reward) in rows.items():
        cells = "  ".join(f"{metrics[f'{m}_mean']:7.4f}  {metrics[f'{m}_max']:6.4f}" for m in METRICS)
        lines.append(f"{name:<16}  {cells}  {reward:6.4f}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--test-users", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer users and epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ipa-iterations", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        args.users, args.items, args.epochs, args.test_users = 800, 200, 2, 100
    keras.utils.set_random_seed(args.seed)
    m = 3
    started = time.perf_counter()

    start = time.perf_counter()
    family = families.get("generative")
    data = family.prepare("simulator", {"session_len": m, "simulator_users": args.users,
                                        "simulator_items": args.items, "seed": args.seed})
    sim = simulate(session_world(args.users, args.items, args.seed))  # the family's world, rebuilt from its seed
    exposed = sessions.build_sessions(sim, sessions.SessionConfig(session_len=m, target="exposed"))
    train_hq = data.columns("train")
    print(f"simulated {sim.num_interactions:,} interactions; sessions: {len(exposed.splits['train'][sessions.SESSION_FEATURE]):,} "
          f"train (exposed), {len(train_hq[sessions.SESSION_FEATURE]):,} high-quality clicked ({time.perf_counter() - start:.1f} s)")

    start = time.perf_counter()
    tokenizer = generative.fit_tokenizer(data.load_side_arrays(generative.ITEM_VECTORS_FILE), "simulator",
                                         num_levels=3, codebook_size=8, seed=args.seed)
    print(f"tokenizer fit: {time.perf_counter() - start:.2f} s; vocab sizes {tokenizer.vocab_sizes}")
    for level in tokenizer.report["levels"]:
        print("   ", level)

    decoding = {"beam_size": 20, "num_results": 10}
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_dir = str(tokenizer.save(Path(tmp) / "tokenizer"))  # both models share the semantic IDs

        def fit(training_data, batch_size, **hyperparameters):
            config = family.train_config(OneRec, {"epochs": args.epochs, "batch_size": batch_size, "verbose": 2,
                                                  "early_stopping_patience": None, "seed": args.seed})
            return family.fit("onerec", training_data, config=config, hyperparameters={**decoding, **hyperparameters},
                              tokenizer=tokenizer_dir)

        trained = fit(data, 128)
        onerec = trained.model
        ablation = fit(pointwise_data(data, Path(tmp) / "pointwise"), 128 * m, num_experts=1, top_k=1)  # same steps
        tiger = ablation.model                                                                            # and tokens
    print(f"OneRec training: {trained.info['target_tokens_per_second']:,.0f} target tokens/s; TIGER-style: "
          f"{ablation.info['target_tokens_per_second']:,.0f} target tokens/s (steady training steps)")
    print("expert load per decoder layer:", trained.info["expert_load"])

    windows = sessions.build_sessions(sim, sessions.SessionConfig(session_len=m, target="exposed", windows=True))
    reward = OneRecRewardModel(exposed.spec, model_dim=32)
    reward.compile(optimizer=keras.optimizers.Adam(2e-3), loss="binary_crossentropy")
    labels = {split: {t: windows.splits[split][t] for t in sessions.SESSION_TASKS} for split in ("train", "valid")}
    reward.fit(windows.features("train"), labels["train"], validation_data=(windows.features("valid"), labels["valid"]),
               batch_size=256, epochs=max(2, args.epochs + 4), verbose=2,
               callbacks=[keras.callbacks.EarlyStopping(patience=2, restore_best_weights=True)])
    test_sessions = exposed.splits["test"]
    predicted = reward.predict(exposed.features("test"), batch_size=2048, verbose=0)
    expected = true_session_metrics(sim, test_sessions["user_id"], test_sessions[sessions.SESSION_FEATURE])
    print("reward model test AUC (first-m exposed sessions): " + ", ".join(
        f"{t} {metrics_lib.auc(test_sessions[t] > 0, np.asarray(predicted[t])[:, 0]):.3f} "
        f"(simulator {metrics_lib.auc(test_sessions[t] > 0, expected[t]):.3f})" for t in sessions.SESSION_TASKS))

    sequence_data = sequences.simulator_next_item(sim, max_len=10)
    sasrec = SASRec(sequence_data.spec(embedding_dim=64))
    sasrec.compile(optimizer=keras.optimizers.Adam(1e-3))
    sasrec.fit(sequence_data.train_dataset(batch_size=128), epochs=args.epochs, verbose=2)

    test = exposed.splits["test"]
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(len(test["user_id"]), size=min(args.test_users, len(test["user_id"])), replace=False)
    contexts = {k: np.asarray(v)[pick] for k, v in test.items()}
    users = contexts["user_id"]

    def evaluate(generated):
        generated = np.where(generated < 0, 0, generated)
        metrics = evaluate_sessions(sim, users, generated)
        return metrics, float(np.mean(rewards_of(reward, contexts, generated[:, None, :])))

    history = contexts[sessions.SHORT_FEATURE]
    scores = np.asarray(sasrec.score_items(history))
    seen = np.zeros((len(users), sim.items.shape[0] + 1), bool)
    np.put_along_axis(seen, history, True, axis=1)
    scores = np.where(seen[:, 1:], -np.inf, scores)
    sasrec_sessions = np.argsort(-scores, axis=1)[:, :m] + 1

    rows = {"logged": evaluate(contexts[sessions.SESSION_FEATURE]),
            "SASRec": evaluate(sasrec_sessions),
            "TIGER-style": evaluate(distinct_top(top_sessions(tiger, contexts, 20, 20), m)),
            "OneRec": evaluate(top_sessions(onerec, contexts, 20, 1)[:, 0, :])}
    valid = exposed.splits["valid"]
    held_out = rng.choice(len(valid["user_id"]), size=min(args.test_users, len(valid["user_id"])), replace=False)
    report = {k: np.asarray(v)[held_out] for k, v in valid.items()}

    def after_iteration(iteration, model):
        rows[f"OneRec + IPA {iteration}"] = evaluate(top_sessions(model, contexts, 20, 1)[:, 0, :])
        return {}

    alignment = align(onerec, reward, train_hq, report,
                      AlignmentConfig(iterations=args.ipa_iterations, user_fraction=0.2, num_candidates=16, epochs=2),
                      callback=after_iteration)
    print("\nAlignment iterations (proxy: reward model's mean reward of the top session of held-out valid users):")
    for record in alignment:
        print(f"   iteration {record['iteration']}: {record['reward_before']:.4f} -> {record['reward_after']:.4f} "
              f"({record['pairs']} pairs; chosen {record['chosen_reward']:.4f}, rejected "
              f"{record['rejected_reward']:.4f}; DPO loss {record.get('dpo_loss', float('nan')):.4f}; "
              f"kept {record['kept']})")
    print(f"\nTrue expected session metrics of one generated session per test user ({len(users)} users, m={m}; "
          f"max = the best user's; reward = the reward model's mean score):")
    print(table(rows))
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

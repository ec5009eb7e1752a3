"""The command line: help, listings, errors, and one end-to-end train/export/evaluate."""
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfrec_onerec import cli

from fresh_process import run_fresh


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "tfrec_onerec.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("command", [[], ["models"], ["data", "prepare"], ["train"], ["evaluate"], ["demo"],
                                     ["pipeline"], ["pipeline", "run"], ["pipeline", "compile"],
                                     ["pipeline", "lineage"], ["serve"], ["query"], ["tokenizer"],
                                     ["tokenizer", "fit"]])
def test_help_of_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(command + ["--help"])
    assert exit_info.value.code == 0
    assert "usage: tfrec-onerec" in capsys.readouterr().out


def test_models_lists_the_registry(capsys):
    cli.main(["models"])
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"din", "din_base"} <= set(names)


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "dinn", "--dataset", "movielens-100k"], "unknown model 'dinn'; valid models: din, din_base"),
    (["train", "--model", "din", "--dataset", "ml-1m"], "unknown dataset 'ml-1m'; valid datasets: movielens-100k"),
    (["data", "prepare", "--dataset", "nope", "--out", "x"], "unknown dataset 'nope'"),
    (["pipeline", "run", "--model", "dinn"], "unknown model 'dinn'; valid models: din, din_base"),
    (["train", "--model", "onerec_reward", "--dataset", "movielens-100k"],
     "onerec_reward learns session outcomes .* that only the simulator logs; use --dataset simulator"),
])
def test_unknown_names_list_the_valid_ones(argv, message):
    with pytest.raises(SystemExit, match=message):
        cli.main(argv)


def test_prepare_train_export_evaluate_end_to_end(tmp_path):
    data_dir, export_dir = tmp_path / "ml", tmp_path / "models" / "din_base"
    prepared = run_cli("data", "prepare", "--dataset", "movielens-100k", "--out", str(data_dir), "--max-len", "20")
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    assert {"spec.json", "metadata.json", "train.tfrecord", "valid.tfrecord", "test.tfrecord"} <= \
        {p.name for p in data_dir.iterdir()}
    trained = run_cli("train", "--model", "din_base", "--dataset", "movielens-100k", "--data-dir", str(data_dir),
                      "--epochs", "1", "--batch-size", "1024", "--export", str(export_dir), "--verbose", "2")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "Test metrics of din_base" in trained.stdout and (export_dir / "1" / "saved_model.pb").is_file()
    auc_line = [l for l in trained.stdout.splitlines() if l.startswith("click")][0]
    trained_auc = float(auc_line.split()[1])
    assert trained_auc > 0.75  # random scores give 0.5; one epoch on the real data clears 0.8
    evaluated = run_cli("evaluate", "--model-dir", str(export_dir), "--dataset", "movielens-100k",
                        "--data-dir", str(data_dir))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    evaluated_auc = float([l for l in evaluated.stdout.splitlines() if l.startswith("click")][0].split()[1])
    assert evaluated_auc == pytest.approx(trained_auc, abs=1e-4)  # the SavedModel scores as the Keras model did


def train_in_process(argv):
    """Runs `tfrec-onerec train ...` here (no second TensorFlow start-up); returns (model, results)."""
    args = cli.build_parser().parse_args(["train", *argv])
    return args.func(args), args


def warmup_signatures(version_dir):
    from tensorflow_serving.apis import prediction_log_pb2

    records = tf.data.TFRecordDataset(str(version_dir / "assets.extra" / "tf_serving_warmup_requests"))
    return sorted(prediction_log_pb2.PredictionLog.FromString(r.numpy()).predict_log.request.model_spec.signature_name
                  for r in records)


def test_train_sasrec_prints_full_ranking_and_exports_recommend(tmp_path, capsys):
    export_dir, metrics_out = tmp_path / "sasrec", tmp_path / "metrics.json"
    (model, results), _ = train_in_process(["--model", "sasrec", "--dataset", "movielens-100k", "--epochs", "1",
                                            "--max-len", "20", "--batch-size", "512", "--verbose", "0",
                                            "--export", str(export_dir), "--metrics-out", str(metrics_out)])
    out = capsys.readouterr().out
    assert "5,299 training windows of 20 steps, 943 evaluated users, 1,682 items" in out
    assert "Next-item full ranking on movielens-100k's test split (943 users" in out
    line = [l for l in out.splitlines() if l.strip().startswith("sasrec ")][0]
    assert f"recall@10 {results['sasrec']['recall@10']:.4f}" in line and "ndcg@10" in line
    # The printed metrics, recomputed here from the ranks: the test item sorted (score descending, then
    # item id) among the items not in the user's history; Recall@k = [rank <= k], NDCG@k = that / log2(rank + 1).
    from tfrec_onerec import sequence_training

    data = sequence_training.load_next_item_data("movielens-100k", max_len=20)
    targets, seen = data.targets("test"), data.seen_mask("test")
    item_scores = {"sasrec": np.asarray(model.score_items(data.inputs("test")), np.float64),
                   "popularity": np.broadcast_to(data.item_counts, seen.shape)}
    for name, scores in item_scores.items():
        ranks = []
        for row in range(len(targets)):
            candidates = np.flatnonzero(~seen[row]) + 1  # item ids
            ordered = candidates[np.lexsort((candidates, -scores[row, candidates - 1]))]
            ranks.append(int(np.flatnonzero(ordered == targets[row])[0]) + 1)
        ranks = np.array(ranks)
        r = results[name]
        assert r["users"] == len(ranks) == 943
        for k in (10, 20):
            assert r[f"recall@{k}"] == pytest.approx(np.mean(ranks <= k), abs=1e-9)
            assert r[f"ndcg@{k}"] == pytest.approx(np.mean(np.where(ranks <= k, 1 / np.log2(ranks + 1), 0)), abs=1e-9)
        assert r["mrr"] == pytest.approx(np.mean(1 / ranks), abs=1e-9)
    assert results["sasrec"]["recall@10"] > 0.02  # random: about 10 / 1,600 = 0.006; one epoch learns popularity
    assert json.loads(metrics_out.read_text())["test"] == results
    version = export_dir / "1"
    assert warmup_signatures(version) == ["recommend", "serving_default"]
    histories = np.array([[1, 2, 3] + [0] * 17, [50] * 20], np.int64)
    expected = np.asarray(model.recommend({"item_seq": histories})[0])
    served = run_fresh("""
        import json, sys
        import tensorflow as tf
        payload = json.loads(sys.stdin.read())
        loaded = tf.saved_model.load(payload["path"])
        out = loaded.signatures["recommend"](item_seq=tf.constant(payload["histories"], tf.int64))
        print(json.dumps({"signatures": sorted(loaded.signatures), "ids": out["item_ids"].numpy().tolist()}))
    """, {"path": str(version), "histories": histories.tolist()})
    assert served["signatures"] == ["recommend", "serving_default"]
    np.testing.assert_array_equal(served["ids"], expected)


def test_train_sasrec_on_a_small_simulator(capsys):
    (model, results), _ = train_in_process(["--model", "sasrec", "--dataset", "simulator", "--simulator-users", "300",
                                            "--simulator-items", "60", "--epochs", "1", "--max-len", "10",
                                            "--verbose", "0", "--hparams", '{"embedding_dim": 16, "top_n": 5}'])
    out = capsys.readouterr().out
    assert "Next-item data of simulator (leave-one-out)" in out and ", 60 items" in out
    assert model.num_items == 60 and model.dim == 16 and model.top_n == 5
    assert 0 < results["sasrec"]["users"] <= 300 and results["popularity"]["users"] == results["sasrec"]["users"]


def test_train_onerec_reward_prints_task_aucs_and_exports(tmp_path, capsys):
    from tfrec_onerec import reward_training
    from tfrec_onerec.data.sessions import SessionConfig

    export_dir = tmp_path / "reward"
    (model, results), args = train_in_process([
        "--model", "onerec_reward", "--dataset", "simulator", "--simulator-users", "1000", "--simulator-items", "100",
        "--epochs", "3", "--learning-rate", "5e-3", "--verbose", "0", "--export", str(export_dir),
        "--hparams", '{"model_dim": 32, "tower_units": [32]}'])
    out = capsys.readouterr().out
    assert "Session samples of the simulator: " in out and "Test AUC of onerec_reward per task" in out
    assert sorted(results["tasks"]) == ["ltr", "swt", "vtr", "wtr"]
    for task, r in results["tasks"].items():
        assert f"{task:<10}{r['auc']:>8.4f}{r['oracle_auc']:>8.4f}" in out
        assert r["auc"] <= r["oracle_auc"] + 0.02, task  # the simulator's expectation bounds any model
        assert 0 < r["positives"] < r["sessions"]
    # three epochs on 1,000 users already rank sessions better than chance (measured: mean AUC 0.56,
    # correlation 0.25; the oracle's mean AUC 0.76)
    assert np.mean([r["auc"] for r in results["tasks"].values()]) > 0.52
    assert results["reward_value_correlation"] > 0.1
    # the export serves the same scores in a process without tfrec_onerec
    _, data = reward_training.load_reward_data(cli._simulator_config(args), SessionConfig(session_len=3))
    batch = {k: v[:8] for k, v in data.features("test").items() if k in model.input_names}
    expected = {k: np.asarray(v) for k, v in model(batch).items()}
    served = run_fresh("""
        import json, sys
        import tensorflow as tf
        payload = json.loads(sys.stdin.read())
        loaded = tf.saved_model.load(payload["path"])
        out = loaded.signatures["predict"](**{k: tf.constant(v, tf.int64) for k, v in payload["batch"].items()})
        print(json.dumps({"signatures": sorted(loaded.signatures),
                          "out": {k: v.numpy().tolist() for k, v in out.items()}}))
    """, {"path": str(export_dir / "1"), "batch": {k: v.tolist() for k, v in batch.items()}})
    assert served["signatures"] == ["predict", "serving_default"]
    assert sorted(served["out"]) == sorted(expected)
    for task, value in expected.items():
        np.testing.assert_allclose(served["out"][task], value, rtol=1e-5, atol=1e-6)

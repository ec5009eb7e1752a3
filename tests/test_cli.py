"""The command line: help, listings, errors and refusals, and every family trained, exported and evaluated.

One trained model per family is shared by the module's tests (module-scoped fixtures, tiny data,
one epoch). Every run is in-process (``args.func(args)``) except one end-to-end ``train`` of
din_base in a subprocess through ``python -m tfrec_onerec.cli``; the exports are then loaded in
one fresh process without tfrec_onerec, as TF Serving would.
"""
import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from tfrec_onerec import cli, families, models
from tfrec_onerec.data.download import DATA_DIR_VARIABLE, default_cache_dir

from fresh_process import run_fresh

SOURCE_CACHE = default_cache_dir()
"""Where the MovieLens-100K wheel is cached before this module points the data cache elsewhere."""
SIMULATOR = ["--dataset", "simulator", "--simulator-users", "300", "--simulator-items", "60"]
TINY = ["--epochs", "1", "--progress", "0"]


@pytest.fixture(scope="module", autouse=True)
def private_data_cache(tmp_path_factory):
    """Prepared data of this module goes to its own cache (not the user's, not other tests')."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DATA_DIR_VARIABLE, str(tmp_path_factory.mktemp("data_cache")))
        yield


@pytest.fixture(autouse=True)
def keep_pytest_logging(monkeypatch):
    """`cli.main` configures the process's console output; not pytest's process."""
    monkeypatch.setattr(cli, "_configure_output", lambda verbose: None)


def movielens_source() -> list:
    """``--data-path`` of the cached MovieLens-100K wheel when there is one (else it is fetched)."""
    return ["--data-path", str(SOURCE_CACHE)] if list(SOURCE_CACHE.glob("recbole-*.whl")) else []


def run_in_process(verb: str, argv: list):
    """``tfrec-onerec VERB ...`` in this process; returns (what the handler returns, stdout, args)."""
    args = cli.build_parser().parse_args([verb, *argv])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        returned = args.func(args)
    return returned, out.getvalue(), args


def train(tmp_path_factory, name: str, argv: list):
    export = tmp_path_factory.mktemp(name) / "export"
    (model, results), out, args = run_in_process("train", ["--model", name, *argv, *TINY, "--export", str(export)])
    return SimpleNamespace(model=model, results=results, out=out, args=args, export=export, dataset=args.dataset)


def export_info(export: Path) -> dict:
    return families.read_export_info(export / "1")


def warmup_signatures(version_dir):
    from tensorflow_serving.apis import prediction_log_pb2

    records = tf.data.TFRecordDataset(str(version_dir / "assets.extra" / "tf_serving_warmup_requests"))
    return sorted(prediction_log_pb2.PredictionLog.FromString(r.numpy()).predict_log.request.model_spec.signature_name
                  for r in records)


# -- trained models, one per family -----------------------------------------------------------
@pytest.fixture(scope="module")
def din_base_run(tmp_path_factory):
    """din_base on MovieLens-100K: `data prepare` here, `train` end to end in a subprocess."""
    root = tmp_path_factory.mktemp("din_base")
    data_dir, export, metrics_out = root / "ml", root / "models" / "din_base", root / "metrics.json"
    cli.main(["data", "prepare", "--dataset", "movielens-100k", "--out", str(data_dir), "--max-len", "10",
              *movielens_source()])
    trained = subprocess.run(
        [sys.executable, "-m", "tfrec_onerec.cli", "train", "--model", "din_base", "--dataset", "movielens-100k",
         "--data-dir", str(data_dir), "--epochs", "1", "--batch-size", "1024", "--progress", "2",
         "--export", str(export), "--metrics-out", str(metrics_out)],
        capture_output=True, text=True, timeout=900)
    assert trained.returncode == 0, trained.stderr[-3000:]
    return SimpleNamespace(data_dir=data_dir, export=export, out=trained.stdout, err=trained.stderr,
                           results=json.loads(metrics_out.read_text())["test"], dataset="movielens-100k")


@pytest.fixture(scope="module")
def sasrec_run(tmp_path_factory):
    return train(tmp_path_factory, "sasrec", [*SIMULATOR, "--max-len", "10", "--hparams", '{"embedding_dim": 16}'])


@pytest.fixture(scope="module")
def onerec_run(tmp_path_factory):
    return train(tmp_path_factory, "onerec", [
        *SIMULATOR, "--hparams", '{"dim": 32, "beam_size": 8, "num_results": 4, "rank_size": 8, '
                                 '"num_encoder_layers": 1, "num_decoder_layers": 1}'])


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory):
    return train(tmp_path_factory, "onerec_reward", [*SIMULATOR, "--hparams", '{"model_dim": 32, "tower_units": [32]}'])


RUNS = {"din_base": "din_base_run", "sasrec": "sasrec_run", "onerec": "onerec_run", "onerec_reward": "reward_run"}


# -- help, listings, errors -------------------------------------------------------------------
@pytest.mark.parametrize("command", [[], ["models"], ["data", "prepare"], ["train"], ["evaluate"], ["demo"],
                                     ["pipeline"], ["pipeline", "run"], ["pipeline", "compile"],
                                     ["pipeline", "lineage"], ["serve"], ["query"], ["tokenizer"],
                                     ["tokenizer", "fit"]])
def test_help_of_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(command + ["--help"])
    assert exit_info.value.code == 0
    assert "usage: tfrec-onerec" in capsys.readouterr().out


def test_train_help_names_progress_and_verbose(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    for flag in ("--epochs", "--batch-size", "--learning-rate", "--patience", "--checkpoint-dir", "--strategy",
                 "--jit-compile", "--progress", "--seed", "--verbose"):
        assert flag in out, flag


def test_the_help_lists_every_data_set_without_loading_tensorflow():
    """The parser is built before the console is configured, so building it must not load
    TensorFlow (whose start-up lines would then reach the console unfiltered)."""
    from tfrec_onerec.data import names

    probe = subprocess.run([sys.executable, "-c", "import sys; from tfrec_onerec import cli; cli.build_parser(); "
                            "print(sorted(m for m in ('tensorflow', 'keras', 'tfx') if m in sys.modules))"],
                           capture_output=True, text=True, timeout=120)
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr
    help_run = subprocess.run([sys.executable, "-m", "tfrec_onerec.cli", "train", "--help"],
                              capture_output=True, text=True, timeout=120)
    assert help_run.returncode == 0 and not help_run.stderr.strip(), help_run.stderr
    for name in names():
        assert name in " ".join(help_run.stdout.split()), name


def test_models_lists_the_registry_with_families_and_data_sets(capsys):
    cli.main(["models"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["model", "family", "data", "sets"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert sorted(rows) == models.list() and {"din", "din_base", "sasrec", "onerec", "onerec_reward"} <= set(rows)
    expected_family = {"din": "pointwise", "din_base": "pointwise", "sasrec": "next_item", "onerec": "generative",
                       "onerec_reward": "session_outcome"}
    for name, line in rows.items():
        family = families.for_model(name)
        assert line.split()[1] == family.name
        assert ", ".join(family.datasets) in line
        if name in expected_family:
            assert family.name == expected_family[name]
    assert "movielens-100k" not in rows["onerec_reward"] and "simulator" in rows["onerec_reward"]


VALID_MODELS = ", ".join(models.list())


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "dinn", "--dataset", "movielens-100k"], f"unknown model 'dinn'; valid models: {VALID_MODELS}"),
    (["train", "--model", "din", "--dataset", "ml-1m"],
     "The pointwise family reads the data sets movielens-100k, simulator, simulator-lifelong; not 'ml-1m'"),
    (["data", "prepare", "--dataset", "nope", "--out", "x"],
     "The pointwise family reads the data sets movielens-100k, simulator, simulator-lifelong; not 'nope'"),
    (["data", "prepare", "--dataset", "simulator", "--family", "nope", "--out", "x"],
     "Unknown model family 'nope'; families: ensemble_ranking, generative, next_item, pointwise, session_outcome, session_value"),
    (["pipeline", "run", "--model", "dinn"], f"unknown model 'dinn'; valid models: {VALID_MODELS}"),
])
def test_unknown_names_list_the_valid_ones(argv, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        cli.main(argv)


def test_evaluate_of_a_missing_export_fails_with_a_message(tmp_path):
    with pytest.raises(SystemExit, match="tfrec-onerec: No SavedModel version under"):
        cli.main(["evaluate", "--model-dir", str(tmp_path / "nothing"), "--dataset", "simulator"])


@pytest.mark.parametrize("argv, message", [
    (["--model", "sasrec", "--dataset", "simulator", "--task", "like"], "--task: the next_item family"),
    (["--model", "sasrec", "--dataset", "simulator", "--negatives", "2"],
     "--negatives: not an option of the next_item family"),
    (["--model", "sasrec", "--dataset", "movielens-100k", "--session-len", "2"],
     "--session-len: not an option of the next_item family"),
    (["--model", "din", "--dataset", "movielens-100k", "--tokenizer", "some/tokenizer"],
     "--tokenizer: not an option of the pointwise family"),
    (["--model", "din", "--dataset", "simulator", "--simulator-users", "300"],
     "--simulator-users: not an option of the pointwise family"),
    (["--model", "onerec", "--dataset", "simulator", "--max-len", "10"], "--max-len: not an option of the generative family"),
    (["--model", "onerec", "--dataset", "simulator", "--task", "click"], "--task: the generative family"),
    (["--model", "onerec_reward", "--dataset", "movielens-100k"],
     "The session_outcome family reads the data sets simulator; not 'movielens-100k'"),
    (["--model", "onerec_reward", "--dataset", "simulator", "--negatives", "1"],
     "--negatives: not an option of the session_outcome family"),
])
def test_train_refuses_flags_the_family_cannot_honour_before_preparing_data(argv, message, tmp_path, monkeypatch,
                                                                          capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv(DATA_DIR_VARIABLE, str(cache))
    with pytest.raises(SystemExit, match=re.escape(f"tfrec-onerec: {message}")):
        cli.main(["train", *argv, "--epochs", "1"])
    assert "Preparing" not in capsys.readouterr().err
    assert not cache.exists()  # nothing prepared, nothing downloaded


def test_sasrec_trains_30_epochs_unless_told():
    family, model_class = families.for_model("sasrec"), models.get("sasrec")
    args = cli.build_parser().parse_args(["train", "--model", "sasrec", "--dataset", "simulator"])
    assert args.epochs is None and args.progress is None
    given = {field: getattr(args, flag) for flag, field in cli.TRAIN_FLAGS.items()}
    assert family.train_config(model_class, given).epochs == 30
    assert family.train_config(model_class, {**given, "epochs": 2}).epochs == 2
    args = cli.build_parser().parse_args(["train", "--model", "sasrec", "--dataset", "simulator", "--progress", "2",
                                          "--patience", "4", "--seed", "3", "--jit-compile"])
    config = family.train_config(model_class, {field: getattr(args, flag) for flag, field in cli.TRAIN_FLAGS.items()})
    assert (config.verbose, config.early_stopping_patience, config.seed, config.jit_compile) == (2, 4, 3, True)


# -- din_base end to end ----------------------------------------------------------------------
def test_prepare_train_export_evaluate_end_to_end(din_base_run, capsys):
    run = din_base_run
    assert {"spec.json", "metadata.json", "train.tfrecord", "valid.tfrecord", "test.tfrecord"} <= \
        {p.name for p in run.data_dir.iterdir()}
    assert "Test metrics of din_base on movielens-100k (pointwise family)" in run.out
    assert (run.export / "1" / "saved_model.pb").is_file()
    auc_line = [line for line in run.out.splitlines() if line.startswith("click")][0]
    assert float(auc_line.split()[1]) == pytest.approx(run.results["click"]["auc"], abs=5e-5)
    assert run.results["click"]["auc"] > 0.75  # random scores give 0.5; one epoch on the real data clears it
    info = export_info(run.export)
    assert info["model"] == "din_base" and info["family"] == "pointwise" and info["dataset"] == "movielens-100k"
    assert [t["name"] for t in info["tasks"]] == ["click"] and info["data_options"]["max_len"] == 10
    # `evaluate` here scores the subprocess's export exactly as `train` scored the Keras model
    results, out, _ = run_in_process("evaluate", ["--model-dir", str(run.export), "--dataset", "movielens-100k",
                                                  "--data-dir", str(run.data_dir)])
    assert results == run.results
    assert auc_line in out


# -- the other families -----------------------------------------------------------------------
def test_sasrec_prints_full_ranking_recomputed_by_hand(sasrec_run):
    run, results = sasrec_run, sasrec_run.results
    assert "Test metrics of sasrec on simulator (next_item family)" in run.out
    line = [line for line in run.out.splitlines() if line.strip().startswith("model ")][0]
    assert f"recall@10 {results['model']['recall@10']:.4f}" in line and "ndcg@10" in line
    assert run.model.num_items == 60 and run.model.dim == 16
    # The metrics, recomputed here from the ranks: the test item sorted (score descending, then
    # item id) among the items not in the user's history (the target itself stays a candidate);
    # Recall@k = [rank <= k], NDCG@k = that / log2(rank + 1), MRR = 1 / rank.
    data = families.get("next_item").prepare("simulator", {"simulator_users": 300, "simulator_items": 60,
                                                           "max_len": 10})
    test = data.columns("test")
    lengths = (test["next_item_seq"] != 0).sum(axis=1)
    targets = test["next_item_seq"][np.arange(len(lengths)), lengths - 1]
    item_scores = {"model": np.asarray(run.model.score_items(test["item_seq"]), np.float64),
                   "popularity": np.broadcast_to(np.asarray(data.metadata["item_counts"], np.float64),
                                                 (len(targets), 60))}
    for name, scores in item_scores.items():
        ranks = []
        for row, target in enumerate(targets):
            seen = set(test["seen_item_ids"][row].tolist()) - {0, int(target)}
            candidates = np.array([item for item in range(1, 61) if item not in seen])
            ordered = candidates[np.lexsort((candidates, -scores[row, candidates - 1]))]
            ranks.append(int(np.flatnonzero(ordered == target)[0]) + 1)
        ranks = np.array(ranks)
        r = results[name]
        assert r["users"] == len(ranks) == data.examples("test") > 0
        for k in (10, 20):
            assert r[f"recall@{k}"] == pytest.approx(np.mean(ranks <= k), abs=1e-9)
            assert r[f"ndcg@{k}"] == pytest.approx(np.mean(np.where(ranks <= k, 1 / np.log2(ranks + 1), 0)), abs=1e-9)
        assert r["mrr"] == pytest.approx(np.mean(1 / ranks), abs=1e-9)


def test_sasrec_export_records_its_family_and_signatures(sasrec_run):
    info = export_info(sasrec_run.export)
    assert (info["model"], info["family"], info["tasks"], info["dataset"]) == ("sasrec", "next_item", None, "simulator")
    assert info["data_options"] == {"max_len": 10, "simulator_users": 300, "simulator_items": 60, "seed": 0}
    assert set(warmup_signatures(sasrec_run.export / "1")) <= {"recommend", "serving_default", "score_items", "retrieve"}


def test_onerec_reward_prints_task_aucs_and_exports(reward_run):
    run, results = reward_run, reward_run.results
    assert "Test metrics of onerec_reward on simulator (session_outcome family)" in run.out
    assert sorted(results["tasks"]) == ["ltr", "swt", "vtr", "wtr"]
    for task, r in results["tasks"].items():
        assert f"{task:<10}{r['auc']:>8.4f}{r['oracle_auc']:>8.4f}" in run.out
        assert 0 < r["positives"] < r["sessions"]
        assert r["oracle_auc"] > 0.6, task  # the simulator's expectation tells sessions apart
    assert f"{results['reward_value_correlation']:.4f}" in run.out
    info = export_info(run.export)
    assert (info["model"], info["family"]) == ("onerec_reward", "session_outcome")
    assert sorted(t["name"] for t in info["tasks"]) == ["ltr", "swt", "vtr", "wtr"]
    assert info["reward_weights"] == {k: float(v) for k, v in run.model.reward_weights.items()}


def test_onerec_on_a_tiny_simulator(onerec_run):
    run, results = onerec_run, onerec_run.results
    assert "Test metrics of onerec on simulator (generative family)" in run.out
    assert "Semantic IDs: 3 levels + collision digit" in run.out and "target tokens/s" in run.out
    assert "True expected metrics of the top generated session" in run.out
    assert results["users"] > 0 and {"swt_mean", "ctr_mean", "value_mean"} <= set(results["sessions"])
    info = export_info(run.export)
    assert (info["model"], info["family"], info["dataset"]) == ("onerec", "generative", "simulator")
    assert info["data_options"]["simulator_users"] == 300 and info["data_options"]["session_len"] == 3


@pytest.mark.parametrize("model_name", list(RUNS))
def test_evaluate_of_the_export_gives_the_test_metrics_of_train(model_name, request):
    """`evaluate --model-dir` scores each family's export by its protocol (the data options come
    from the export) with exactly the numbers `train` printed for the Keras model."""
    run = request.getfixturevalue(RUNS[model_name])
    argv = ["--model-dir", str(run.export), "--dataset", run.dataset]
    if model_name == "din_base":
        argv += ["--data-dir", str(run.data_dir)]
    results, out, _ = run_in_process("evaluate", argv)
    assert results == run.results
    assert out.strip() and families.for_model(model_name).format_results(results).strip() in out


def test_exports_serve_without_the_package(sasrec_run, reward_run, onerec_run):
    """The exports load and answer in a process without tfrec_onerec, as TF Serving runs them."""
    histories = np.array([[1, 2, 3] + [0] * 7, [50] * 10], np.int64)
    recommended = np.asarray(sasrec_run.model.recommend({"item_seq": histories})[0])
    reward = families.get("session_outcome").prepare("simulator", {"simulator_users": 300, "simulator_items": 60})
    batch = {k: v[:8] for k, v in reward.columns("test").items() if k in reward_run.model.input_names}
    rewards = {k: np.asarray(v) for k, v in reward_run.model(batch).items()}
    served = run_fresh("""
        import json, sys
        import tensorflow as tf
        payload = json.loads(sys.stdin.read())
        sasrec, reward, onerec = (tf.saved_model.load(payload[name]) for name in ("sasrec", "reward", "onerec"))
        ids = sasrec.signatures["recommend"](item_seq=tf.constant(payload["histories"], tf.int64))["item_ids"]
        batch = {k: tf.constant(values, dtype) for k, (values, dtype) in payload["batch"].items()}
        out = reward.signatures["predict"](**batch)
        print(json.dumps({"signatures": {name: sorted(m.signatures) for name, m in
                                         (("sasrec", sasrec), ("reward", reward), ("onerec", onerec))},
                          "ids": ids.numpy().tolist(), "reward": {k: v.numpy().tolist() for k, v in out.items()}}))
    """, {"sasrec": str(sasrec_run.export / "1"), "reward": str(reward_run.export / "1"),
          "onerec": str(onerec_run.export / "1"), "histories": histories.tolist(),
          "batch": {k: [v.tolist(), v.dtype.name] for k, v in batch.items()}})
    assert served["signatures"] == {"sasrec": ["recommend", "retrieve", "score_items", "serving_default"],
                                    "reward": ["predict", "serving_default"],
                                    "onerec": ["next_items", "recommend", "serving_default"]}
    np.testing.assert_array_equal(served["ids"], recommended)
    assert sorted(served["reward"]) == sorted(rewards)
    for task, value in rewards.items():
        np.testing.assert_allclose(served["reward"][task], value, rtol=1e-5, atol=1e-6)


# -- a pointwise model trained on a renamed label ----------------------------------------------
def test_din_trained_on_a_renamed_label_is_scored_on_that_label(din_base_run, tmp_path):
    """DIN's task ``click`` trained on the ``like`` column: the export records the label and
    evaluation scores the ``click`` output against ``like``, not against the ``click`` column."""
    import dataclasses

    from tfrec_onerec.features.spec import Task
    from tfrec_onerec.metrics import auc

    family = families.get("pointwise")
    data = family.load(din_base_run.data_dir)
    examples = data.metadata["examples"]  # train on the small validation split: scoring is what is tested
    small = dataclasses.replace(data, files={**data.files, "train": data.files["valid"]},
                                metadata={**data.metadata, "examples": {**examples, "train": examples["valid"]}})
    config = family.train_config(models.get("din"), {"epochs": 1, "verbose": 0, "batch_size": 512})
    trained = family.fit("din", small, config, tasks=[Task("click", label="like")])
    family.export(trained.model, tmp_path, small, model_name="din")
    info = families.read_export_info(tmp_path / "1")
    assert [(t["name"], t["label"]) for t in info["tasks"]] == [("click", "like")]
    results = family.evaluate_export(tmp_path, data)
    assert results == family.evaluate(trained.model, data)
    # by hand: the export's `click` output on the test split against each label column
    predict = tf.saved_model.load(str(tmp_path / "1")).signatures["predict"]
    names = set(predict.structured_input_signature[1])
    scores, labels = [], {"click": [], "like": []}
    for features, targets in data.records("test", data.spec, data.spec.labels, 4096):
        scores.append(predict(**{k: v for k, v in features.items() if k in names})["click"].numpy().reshape(-1))
        for label in labels:
            labels[label].append(targets[label].numpy())
    scores = np.concatenate(scores)
    like, click = (np.concatenate(labels[name]) for name in ("like", "click"))
    assert not np.array_equal(like, click)
    assert results["click"]["auc"] == pytest.approx(auc(like, scores), abs=1e-12)
    assert results["click"]["auc"] != pytest.approx(auc(click, scores), abs=1e-3)
    assert results["click"]["examples"] == len(like)

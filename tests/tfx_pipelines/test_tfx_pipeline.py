"""The TFX pipeline end to end on a small data set: quiet output, push, serve, cache, blessing,
resume, anomalies.

The first run (`tfrec-onerec pipeline run`, as a user starts it: BeamDagRunner, DirectRunner
with 2 worker processes, quiet console) pushes version 1 and is what the output, push,
Transform, Evaluator and lineage tests read. The cache, blessing and resume tests share a second
pipeline root, run in one process with Beam in memory (worker processes would only add their
start-up to every rerun; the Beam arguments are part of TFX's cache key, so the reruns keep
them), in file order: its first run pushes version 1, later runs reuse its cache.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tfx  # noqa: F401  (before TFDV/TFMA, see docs/STACK.md)

from fresh_process import run_fresh
from known_answer import known_answer_columns, known_answer_spec
from pipeline_output import ABSL_INFO, COMPONENTS, log_files, progress_lines
from tfrec_onerec.data.prepared import write_prepared
from tfrec_onerec.export import versions
from tfrec_onerec.features.datasets import tfrecord_dataset
from tfrec_onerec.features.parsing import parse_examples
from tfx_pipelines import run_report
from tfx_pipelines.lineage import model_lineage
from tfx_pipelines.pipeline import DIRECT_MULTIPROCESSING, PipelineConfig
from tfx_pipelines.runners import run_pipeline

UPSTREAM_OF_TRAINER = ("ImportExampleGen", "StatisticsGen", "SchemaGen", "ImportSchemaGen", "SchemaAgreement",
                       "ExampleValidator", "DataGate", "Transform")


def write_data(directory, seed=0):
    spec = known_answer_spec()
    return write_prepared(directory, spec, {"train": known_answer_columns(2000, seed),
                                            "valid": known_answer_columns(500, seed + 1),
                                            "test": known_answer_columns(100, seed + 2)},
                          {"name": "known-answer"}, progress=False)


IN_MEMORY = ("--direct_running_mode=in_memory",)


def cli_args(config):
    """`tfrec-onerec pipeline run` arguments equivalent to `config` (the CLI's defaults)."""
    argv = [sys.executable, "-m", "tfrec_onerec.cli", "pipeline", "run", "--model", config.model,
            "--data-dir", config.data, "--pipeline-root", config.pipeline_root, "--serving-dir", config.serving_dir,
            "--epochs", str(config.epochs), "--batch-size", str(config.batch_size), "--runner", "local", "--min-auc", str(config.threshold),
            "--max-auc-drop", str(config.max_drop), "--strategy", config.strategy]
    if tuple(config.beam_args) != DIRECT_MULTIPROCESSING:
        argv += [f"--beam-arg={arg}" for arg in config.beam_args]
    return argv


def last_run_states(config) -> dict:
    return run_report.states(Path(config.pipeline_root) / "metadata.sqlite")


@pytest.fixture(scope="module")
def first_cli_run(tmp_path_factory):
    """``(config, completed process)`` of the first run, started with the CLI (quiet)."""
    base = tmp_path_factory.mktemp("pipeline")
    data = write_data(base / "data")
    config = PipelineConfig(model="din", data=str(data.directory), pipeline_root=str(base / "root"),
                            serving_dir=str(base / "serving"), epochs=3, batch_size=64, slices=("item_cat",))
    argv = cli_args(config)
    argv[argv.index("--runner") + 1] = "beam"
    result = subprocess.run(argv + ["--slice", "item_cat"], capture_output=True, text=True, timeout=900, cwd=base)
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    return config, result


@pytest.fixture(scope="module")
def first_run(first_cli_run):
    return first_cli_run[0]


@pytest.fixture(scope="module")
def rerun_base(tmp_path_factory):
    """The config of the cache, blessing and resume tests, after its first run (in one process,
    Beam in memory), which pushed version 1."""
    base = tmp_path_factory.mktemp("reruns")
    data = write_data(base / "data")
    config = PipelineConfig(model="din", data=str(data.directory), pipeline_root=str(base / "root"),
                            serving_dir=str(base / "serving"), epochs=3, batch_size=64, beam_args=IN_MEMORY)
    run_pipeline(config, "local")
    assert versions(config.model_serving_dir) == [1]
    return config


def test_quiet_run_prints_a_line_per_component_and_no_framework_logs(first_cli_run):
    config, result = first_cli_run
    output = result.stdout + result.stderr
    states = progress_lines(output)
    assert set(COMPONENTS) <= set(states), output
    assert {states[c] for c in COMPONENTS} <= {"complete"}, states
    assert len(output.splitlines()) < 60, output
    assert not ABSL_INFO.search(output), output
    for noise in ("INFO:absl", "INFO absl", "absl::InitializeLog", "cudart_stub", "cuInit", "cpu_feature_guard",
                  "oneDNN", "beam_executable_spec", "Worker: severity", "Discarding unparseable args"):
        assert noise not in output, (noise, output)
    assert f"full logs in {log_files(config)[0]}" in result.stdout


def test_log_file_keeps_the_info_records_of_tfx_beam_and_the_workers(first_cli_run):
    config, _ = first_cli_run
    text = log_files(config)[0].read_text()
    assert "INFO absl: node Trainer is finished." in text
    assert "Using deployment config" in text  # the pipeline IR dump
    assert "apache_beam" in text  # Beam's records, the workers' forwarded ones included
    assert "Pipeline tfrec-onerec-din finished in" in text
    assert len(text.splitlines()) > 500


@pytest.mark.slow  # a second pipeline run (mostly cached: about a minute on an idle machine)
def test_verbose_rerun_shows_the_logs_and_reports_cached_components(first_cli_run):
    config, _ = first_cli_run
    argv = cli_args(config)
    argv[argv.index("--runner") + 1] = "beam"
    result = subprocess.run(argv + ["--slice", "item_cat", "--verbose"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    states = progress_lines(output)
    # Data-side components are cached; Transform and Trainer are too unless the package's
    # source changed in between (their cache key has its fingerprint).
    assert states["ImportExampleGen"] == states["StatisticsGen"] == "cached", states
    assert set(COMPONENTS) <= set(states), output
    assert "INFO absl: node Trainer is finished." in output
    assert len(output.splitlines()) > 200
    assert len(log_files(config)) == 2  # a log file per run


def artifact_dir(config, component, output):
    found = sorted(Path(config.pipeline_root, component, output).iterdir(), key=lambda p: int(p.name))
    return found[-1]


def test_pushes_a_blessed_model_that_serves_raw_examples_without_the_package(first_run):
    config = first_run
    assert versions(config.model_serving_dir) == [1]
    pushed = Path(config.model_serving_dir) / "1"
    raw = [r.numpy() for r in tf.data.TFRecordDataset(str(Path(config.data) / "valid.tfrecord")).take(64)]
    served = run_fresh("""
        import json, sys
        import tensorflow as tf
        payload = json.loads(sys.stdin.read())
        model = tf.saved_model.load(payload["path"])
        examples = tf.constant([bytes.fromhex(h) for h in payload["examples"]])
        out = model.signatures["serving_default"](examples=examples)["click"].numpy().ravel().tolist()
        print(json.dumps({"click": out}))
    """, {"path": str(pushed), "examples": [r.hex() for r in raw]},
        forbidden=("tfrec_onerec", "tfx_pipelines", "tensorflow_transform", "tfx"))
    loaded = tf.saved_model.load(str(pushed))
    features = parse_examples(tf.constant(raw), known_answer_spec())
    expected = loaded.signatures["predict"](**features)["click"].numpy().ravel()
    np.testing.assert_allclose(served["click"], expected, rtol=1e-5, atol=1e-6)
    assert 0 < np.std(expected)


def rows(dataset) -> list:
    """Every row of a dataset of (features, labels) as a sortable tuple."""
    out = []
    for features, labels in dataset:
        columns = {**features, **labels}
        names = sorted(columns)
        for i in range(len(columns[names[0]])):
            out.append(tuple(tuple(np.ravel(columns[n][i].numpy()).tolist()) for n in names))
    return sorted(out)


def test_transform_output_equals_the_library_parsing_of_the_same_rows(first_run):
    spec = known_answer_spec()
    transformed = artifact_dir(first_run, "Transform", "transformed_examples") / "Split-eval"
    ours = tfrecord_dataset(str(Path(first_run.data) / "valid.tfrecord"), spec, ["click"], 128)
    theirs = tfrecord_dataset(str(transformed / "*"), spec, ["click"], 128, compression_type="GZIP")
    mine, transform = rows(ours), rows(theirs)
    assert len(mine) == 500 and mine == transform


def test_evaluator_reports_auc_calibration_count_and_slices(first_run):
    import tensorflow_model_analysis as tfma

    result = tfma.load_eval_result(str(artifact_dir(first_run, "Evaluator", "evaluation")))
    overall = result.get_metrics_for_slice()
    assert overall["example_count"]["doubleValue"] == 500
    assert overall["auc"]["doubleValue"] > first_run.threshold
    assert 0.5 < overall["calibration"]["doubleValue"] < 2.0
    slices = {s for s, _ in result.slicing_metrics}
    assert {(("item_cat", c),) for c in (1, 2, 3, 4)} <= slices
    assert (Path(artifact_dir(first_run, "Evaluator", "blessing")) / "BLESSED").exists()


def test_lineage_names_the_examples_schema_and_transform_of_the_pushed_model(first_run):
    entries = model_lineage(Path(first_run.pipeline_root) / "metadata.sqlite",
                            Path(first_run.model_serving_dir) / "1")
    produced = {(e.artifact_type, e.component): e.uri for e in entries}
    assert ("PushedModel", "Pusher") in produced and ("Model", "Trainer") in produced
    assert produced[("Examples", "ImportExampleGen")] == str(artifact_dir(first_run, "ImportExampleGen", "examples"))
    assert ("Schema", "ImportSchemaGen") in produced and ("TransformGraph", "Transform") in produced


def test_rerun_with_unchanged_inputs_reuses_cached_outputs_and_pushes_nothing_new(rerun_base):
    run_pipeline(rerun_base, "local")
    states = last_run_states(rerun_base)
    assert {states[c] for c in UPSTREAM_OF_TRAINER + ("Trainer",)} == {"CACHED"}, states
    # The Evaluator runs again: its baseline input changed (the first run's model is now the
    # latest blessed one). It blesses the same model, which is already served: no new version.
    assert versions(rerun_base.model_serving_dir) == [1]


def test_model_below_the_blessing_threshold_is_not_pushed(rerun_base):
    import dataclasses

    pushed = Path(rerun_base.model_serving_dir) / "1" / "saved_model.pb"
    stamp = pushed.stat().st_mtime_ns
    run_pipeline(dataclasses.replace(rerun_base, min_value=0.999), "local")
    states = last_run_states(rerun_base)
    assert states["Trainer"] == "CACHED" and states["Evaluator"] == "COMPLETE", states
    assert (artifact_dir(rerun_base, "Evaluator", "blessing") / "NOT_BLESSED").exists()
    assert versions(rerun_base.model_serving_dir) == [1] and pushed.stat().st_mtime_ns == stamp


def test_run_killed_during_the_trainer_completes_on_rerun(rerun_base):
    import dataclasses

    # A changed Trainer (more epochs, under a MirroredStrategy) so the Trainer runs again.
    config = dataclasses.replace(rerun_base, epochs=4, strategy="mirrored", min_value=0.0, max_drop=1.0)
    models = Path(config.pipeline_root, "Trainer", "model")
    before = len(list(models.iterdir()))
    process = subprocess.Popen(cli_args(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 300
    while len(list(models.iterdir())) == before and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # let the Trainer get into model.fit
    assert process.poll() is None, "the run ended before it could be killed during the Trainer"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert last_run_states(config)["Trainer"] == "RUNNING"

    result = subprocess.run(cli_args(config), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    states = last_run_states(config)
    assert {states[c] for c in UPSTREAM_OF_TRAINER} == {"CACHED"}, states
    assert states["Trainer"] == states["Evaluator"] == states["Pusher"] == "COMPLETE", states
    assert versions(config.model_serving_dir) == [1, 2]


def test_anomalous_data_stops_the_pipeline_before_the_trainer_naming_each_feature(tmp_path):
    data = write_data(tmp_path / "data", seed=5)
    for split, edit in (("train", "drop_and_range"), ("valid", "float_user")):
        path = data.directory / f"{split}.tfrecord"
        examples = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]
        for i, example in enumerate(examples):
            features = example.features.feature
            if edit == "drop_and_range":
                if i % 3 == 0:
                    del features["item_cat"]          # missing from a third of the rows
                if i % 50 == 0:
                    features["item_id"].int64_list.value[:] = [777]  # outside the domain 0..40
            else:
                user = features["user_id"].int64_list.value[0]
                features["user_id"].Clear()
                features["user_id"].float_list.value.append(float(user))  # wrong type
        with tf.io.TFRecordWriter(str(path)) as writer:
            for example in examples:
                writer.write(example.SerializeToString())
    config = PipelineConfig(model="din", data=str(data.directory), pipeline_root=str(tmp_path / "root"),
                            serving_dir=str(tmp_path / "serving"), beam_args=IN_MEMORY)
    with pytest.raises(Exception) as failure:
        run_pipeline(config, "local")
    message = str(failure.value)
    assert "split 'train': feature 'item_cat'" in message and "split 'train': feature 'item_id'" in message
    assert "split 'eval': feature 'user_id'" in message
    assert not Path(config.pipeline_root, "Trainer").exists() and versions(config.model_serving_dir) == []


def test_rerun_after_the_serving_directory_was_wiped_pushes_the_model_again(rerun_base):
    import dataclasses
    import shutil

    # Blessed whatever the baseline; a first run settles the Evaluator's cache for this config.
    config = dataclasses.replace(rerun_base, min_value=0.0, max_drop=1.0)
    run_pipeline(config, "local")
    assert versions(config.model_serving_dir)
    shutil.rmtree(config.model_serving_dir)
    run_pipeline(config, "local")
    states = last_run_states(config)
    # Trainer, Evaluator and so the Pusher's inputs are all cached: only the Pusher's own
    # check of its destination finds the model missing and pushes it again.
    assert states["Trainer"] == states["Evaluator"] == "CACHED", states
    assert states["Pusher"] == "COMPLETE", states
    assert versions(config.model_serving_dir) == [1]
    assert (Path(config.model_serving_dir) / "1" / "saved_model.pb").is_file()

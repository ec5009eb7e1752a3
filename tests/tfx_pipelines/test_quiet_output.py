"""Quiet console by default: `tfrec-onerec pipeline run` prints a line per component, not the
TFX/Beam/TensorFlow logs (of the main process or the Beam workers); `--verbose` shows them;
the run's log file under the pipeline root keeps them either way."""
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from known_answer import known_answer_columns, known_answer_spec
from tfrec_onerec import console
from tfrec_onerec.data.prepared import write_prepared

ABSL_INFO = re.compile(r"^I\d{4} [\d:.]+\s+\d+ \S+:\d+\] ", re.MULTILINE)  # "I1206 11:05:17.1234  6144 x.py:12] "
COMPONENTS = ("ImportExampleGen", "StatisticsGen", "SchemaGen", "ImportSchemaGen", "SchemaAgreement",
              "ExampleValidator", "DataGate", "Transform", "Trainer", "Evaluator", "Pusher")


def run_cli(base: Path, mode: str = "quiet") -> subprocess.CompletedProcess:
    """`tfrec-onerec pipeline run [--verbose]` (Beam runner: components' Beam steps on the DirectRunner
    with 2 worker processes)."""
    argv = [sys.executable, "-m", "tfrec_onerec.cli", "pipeline", "run", "--model", "din", "--data-dir",
            str(base / "data"), "--pipeline-root", str(base / "root"), "--serving-dir", str(base / "serving"),
            "--epochs", "1", "--batch-size", "64", "--runner", "beam"] + (["--verbose"] if mode == "verbose" else [])
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=base)
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    return result


def progress_lines(output: str) -> dict:
    """{component: state} of the progress lines ("  [ 3/12] StatisticsGen   complete   1.2 s")."""
    found = re.findall(r"^  \[\s*\d+/\d+\] (\S+)\s+(complete|cached|skipped|failed)\s+[\d.]+ s", output, re.MULTILINE)
    return dict(found)


def log_files(base: Path) -> list:
    return sorted((base / "root" / "logs").glob("run-*.log"))


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("quiet")
    write_prepared(base / "data", known_answer_spec(), {"train": known_answer_columns(600, 0),
                                                        "valid": known_answer_columns(200, 1),
                                                        "test": known_answer_columns(50, 2)},
                   {"name": "known-answer"}, progress=False)
    return base, run_cli(base)


def test_quiet_run_prints_a_line_per_component_and_no_framework_logs(quiet_run):
    base, result = quiet_run
    output = result.stdout + result.stderr
    states = progress_lines(output)
    assert set(COMPONENTS) <= set(states), output
    assert {states[c] for c in COMPONENTS} <= {"complete"}, states
    lines = output.splitlines()
    assert len(lines) < 60, output
    assert not ABSL_INFO.search(output), output
    for noise in ("INFO:absl", "INFO absl", "absl::InitializeLog", "cudart_stub", "cuInit", "cpu_feature_guard",
                  "oneDNN", "beam_executable_spec", "Worker: severity", "Discarding unparseable args"):
        assert noise not in output, (noise, output)
    assert f"full logs in {log_files(base)[0]}" in result.stdout


def test_log_file_keeps_the_info_records_of_tfx_beam_and_the_workers(quiet_run):
    base, _ = quiet_run
    [log] = log_files(base)
    text = log.read_text()
    assert "INFO absl: node Trainer is finished." in text
    assert "Using deployment config" in text  # the pipeline IR dump
    assert "apache_beam" in text  # Beam's records, the workers' forwarded ones included
    assert "Pipeline tfrec-onerec-din finished in" in text
    assert len(text.splitlines()) > 500


@pytest.mark.slow  # a second pipeline run (mostly cached: about a minute on an idle machine)
def test_verbose_rerun_shows_the_logs_and_reports_cached_components(quiet_run):
    base, _ = quiet_run
    result = run_cli(base, "verbose")
    output = result.stdout + result.stderr
    states = progress_lines(output)
    # Data-side components are cached; Transform and Trainer are too unless the package's
    # source changed in between (their cache key has its fingerprint).
    assert states["ImportExampleGen"] == states["StatisticsGen"] == "cached", states
    assert set(COMPONENTS) <= set(states), output
    assert "INFO absl: node Trainer is finished." in output
    assert len(output.splitlines()) > 200
    assert len(log_files(base)) == 2  # a log file per run


def test_native_filter_hides_framework_lines_and_keeps_the_rest():
    noise = [b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
             b"I0000 00:00:1796554917.986252    6144 cudart_stub.cc:31] Could not find cuda drivers on your machine\n",
             b"E0000 00:00:1796555407.288502   11550 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n",
             b"W1206 11:05:17.123456  6144 file.py:12] a framework warning\n",
             b"INFO:absl:MetadataStore with DB connection initialized\n"]
    kept = [b"Traceback (most recent call last):\n", b"ValueError: bad input\n",
            b"E1206 11:05:17.123456  6144 op_kernel.cc:12] a real error\n", b"Epoch 1/2\n"]
    assert all(console.is_native_noise(line) for line in noise)
    assert not any(console.is_native_noise(line) for line in kept)


def test_output_session_restores_the_logging_set_up(tmp_path):
    root, absl_logger = logging.getLogger(), logging.getLogger("absl")
    original_absl_level = absl_logger.level
    absl_logger.setLevel(logging.WARNING)  # as earlier code in a process may leave it
    try:
        before = (list(root.handlers), root.level, absl_logger.level)
        log_file = tmp_path / "logs" / "run.log"
        with console.output_session(False, log_file):
            logging.getLogger("absl").info("framework detail")
            logging.getLogger("tfx_pipelines.x").warning("our warning")
            console.file_only("file only")
        assert (list(root.handlers), root.level, absl_logger.level) == before
    finally:
        absl_logger.setLevel(original_absl_level)
    text = log_file.read_text()
    assert "INFO absl: framework detail" in text and "our warning" in text and "file only" in text

"""Quiet console: the filter of framework lines and the logging set-up of one job. A whole
quiet run (a line per component, no framework logs, the log file keeping them) is checked on
the first run of ``test_tfx_pipeline.py``, the verbose rerun beside it."""
import logging

from tfrec_onerec import console


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

"""Reading what a `tfrec-onerec pipeline run` printed and logged (shared by the pipeline tests)."""
import re
from pathlib import Path

ABSL_INFO = re.compile(r"^I\d{4} [\d:.]+\s+\d+ \S+:\d+\] ", re.MULTILINE)  # "I1206 11:05:17.1234  6144 x.py:12] "
COMPONENTS = ("ImportExampleGen", "StatisticsGen", "SchemaGen", "ImportSchemaGen", "SchemaAgreement",
              "ExampleValidator", "DataGate", "Transform", "Trainer", "Evaluator", "Pusher")


def progress_lines(output: str) -> dict:
    """{component: state} of the progress lines ("  [ 3/12] StatisticsGen   complete   1.2 s")."""
    found = re.findall(r"^  \[\s*\d+/\d+\] (\S+)\s+(complete|cached|skipped|failed)\s+[\d.]+ s", output, re.MULTILINE)
    return dict(found)


def log_files(config) -> list:
    """The run log files under a pipeline's root, oldest first."""
    return sorted((Path(config.pipeline_root) / "logs").glob("run-*.log"))

"""What a pipeline run did, per component: state and wall time.

* :func:`last_run` reads the newest run from ML Metadata. A component's wall time is its
  execution's last update minus its creation (as MLMD records them, in milliseconds): for a
  cached component, the time to look the cache up.
* :class:`ComponentProgress` reports a running pipeline live, one line per component as it
  finishes (``complete``, ``cached``, ``skipped`` or ``failed``, wall time), from the records
  TFX's runners and launcher log (LocalDagRunner and BeamDagRunner of TFX 1.21).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time

from ml_metadata.proto import metadata_store_pb2

from tfx_pipelines.lineage import open_store

_STATE = metadata_store_pb2.Execution.State


@dataclasses.dataclass(frozen=True)
class ComponentRun:
    component: str
    state: str       # COMPLETE, CACHED, RUNNING (killed or still running), FAILED, ...
    seconds: float


def last_run(metadata_path: str | os.PathLike) -> list:
    """The :class:`ComponentRun` s of the newest pipeline run, in execution order."""
    store = open_store(metadata_path)
    runs = store.get_contexts_by_type("pipeline_run")
    if not runs:
        raise LookupError(f"No pipeline run is recorded in {metadata_path}.")
    newest = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
    node_type = store.get_context_type("node").id
    report = []
    for execution in sorted(store.get_executions_by_context(newest.id), key=lambda e: e.id):
        nodes = [c.name for c in store.get_contexts_by_execution(execution.id) if c.type_id == node_type]
        seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000
        report.append(ComponentRun(nodes[0].rsplit(".", 1)[-1] if nodes else "?",
                                   _STATE.Name(execution.last_known_state), seconds))
    return report


def states(metadata_path: str | os.PathLike) -> dict:
    """``{component: state}`` of the newest run."""
    return {r.component: r.state for r in last_run(metadata_path)}


def format_report(report: list) -> str:
    """A table: component, state, seconds."""
    width = max(len(r.component) for r in report)
    lines = [f"{'component':<{width}}  {'state':<9}  seconds"]
    lines += [f"{r.component:<{width}}  {r.state:<9}  {r.seconds:7.1f}" for r in report]
    return "\n".join(lines)


def format_progress(run: ComponentRun, index: int | None = None, total: int | None = None, width: int = 30) -> str:
    """One progress line: ``  [ 3/12] StatisticsGen   complete   32.6 s``."""
    counter = f"[{index:>{len(str(total))}}/{total}] " if index is not None and total else ""
    state = run.state.lower()
    note = "  (outputs of an earlier run reused)" if state == "cached" else ""
    return f"  {counter}{run.component:<{width}} {state:<8} {run.seconds:7.1f} s{note}"


class ComponentProgress(logging.Handler):
    """A logging handler that prints a line per pipeline component as it finishes.

    It watches the ``absl`` records of TFX's runners ("node X is running/finished",
    "Component X is running/finished") and launcher ("A cached execution N is used",
    "Execution N failed", "Skipping execution for X"), per thread (BeamDagRunner may run
    components in several threads). Use it as a context manager around ``runner.run``;
    :meth:`fail_unfinished` reports the components still running when the run raised.

    Args:
        total: the number of components (for the ``[i/total]`` counter).
        stream: where the lines go; default ``sys.stdout`` at the time of printing.
    """

    _RUNNING = ("node %s is running.", "Component %s is running.")
    _FINISHED = ("node %s is finished.", "Component %s is finished.")

    def __init__(self, total: int | None = None, stream=None):
        super().__init__(logging.INFO)
        self.total = total
        self.stream = stream
        self.runs: list = []  # the ComponentRun s reported, in order
        self._active: dict = {}  # thread id -> [component, start, state]
        self._guard = threading.Lock()
        self._logger = logging.getLogger("absl")

    def __enter__(self):
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self._logger.removeHandler(self)
        return False

    def emit(self, record: logging.LogRecord):
        try:
            self._observe(record)
        except Exception:  # noqa: BLE001  (progress lines must never break a run)
            pass

    def _observe(self, record: logging.LogRecord):
        msg, args = record.msg, record.args if isinstance(record.args, tuple) else ()
        with self._guard:
            if msg in self._RUNNING and args:
                self._active[record.thread] = [str(args[0]), record.created, "COMPLETE"]
                return
            active = self._active.get(record.thread)
            if active is None:
                return
            if msg == "A cached execution %d is used.":
                active[2] = "CACHED"
            elif msg == "Skipping execution for %s":
                active[2] = "SKIPPED"
            elif msg == "Execution %d failed.":
                active[2] = "FAILED"
                del self._active[record.thread]
                self._report(active, record.created)
            elif msg in self._FINISHED:
                del self._active[record.thread]
                self._report(active, record.created)

    def _report(self, active, end: float):
        component, start, state = active
        run = ComponentRun(component, state, max(0.0, end - start))
        self.runs.append(run)
        stream = self.stream or sys.stdout
        print(format_progress(run, len(self.runs), self.total), file=stream, flush=True)

    def fail_unfinished(self):
        """Reports every component still running as ``failed`` (the run raised)."""
        with self._guard:
            active, self._active = list(self._active.values()), {}
            now = time.time()
            for entry in active:
                entry[2] = "FAILED"
                self._report(entry, now)

    def summary(self) -> str:
        """``9 complete, 3 cached`` (counts of the reported states)."""
        counts: dict = {}
        for run in self.runs:
            counts[run.state.lower()] = counts.get(run.state.lower(), 0) + 1
        return ", ".join(f"{n} {state}" for state, n in counts.items())

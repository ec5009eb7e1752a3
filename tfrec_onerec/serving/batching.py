"""Server-side batching with TF Serving's parameters: concurrent requests merged into one call.

TF Serving (``--enable_batching --batching_parameters_file=...``) queues the requests of a
model version's signature and runs them together: a batch closes when it holds
``max_batch_size`` rows or when its oldest request has waited ``batch_timeout_micros``; it is
padded up to the smallest of ``allowed_batch_sizes`` that fits, run on one of
``num_batch_threads`` threads, and each request gets its own rows of the outputs. Beyond
``max_enqueued_batches`` full batches waiting, a request is refused (UNAVAILABLE). The same
``batching_parameters.txt`` configures :class:`Batcher` here.

A request is merged only with requests of the same signature whose inputs have the same
dtypes and the same shapes past the batch dimension; a request larger than
``max_execution_batch_size`` runs on its own (TF Serving splits it). Signatures whose outputs
do not keep the batch dimension run unbatched.
"""
from __future__ import annotations

import dataclasses
import re
import threading
import time
from concurrent import futures
from typing import Callable

import numpy as np

from tfrec_onerec.serving.status import ServingError


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's ``BatchingParameters`` (the fields this server uses).

    Attributes:
        max_batch_size: rows merged into one call at most.
        batch_timeout_s: the longest a request waits for others (``batch_timeout_micros``).
        num_batch_threads: calls running at once.
        max_enqueued_batches: full batches that may wait; beyond, UNAVAILABLE.
        allowed_batch_sizes: sizes a merged batch is padded up to (empty: no padding).
        max_execution_batch_size: requests with more rows run alone.
    """

    max_batch_size: int = 1000
    batch_timeout_s: float = 0.0
    num_batch_threads: int = 4
    max_enqueued_batches: int = 100
    allowed_batch_sizes: tuple = ()
    max_execution_batch_size: int | None = None

    def __post_init__(self):
        sizes = self.allowed_batch_sizes
        if sizes and (list(sizes) != sorted(set(sizes)) or sizes[-1] != self.max_batch_size):
            raise ValueError(f"allowed_batch_sizes {list(sizes)} must increase and end with max_batch_size "
                             f"{self.max_batch_size} (TF Serving's rule).")

    @property
    def largest_request(self) -> int:
        return self.max_execution_batch_size or self.max_batch_size


_SCALAR_FIELDS = {"max_batch_size": int, "batch_timeout_micros": int, "num_batch_threads": int,
                  "max_enqueued_batches": int, "max_execution_batch_size": int,
                  "enable_large_batch_splitting": str, "thread_pool_name": str}


def parse_batching_parameters(text: str, source: str = "batching parameters") -> BatchingParameters:
    """A :class:`BatchingParameters` from TF Serving's text protobuf (``name { value: X }``
    fields, repeated ``allowed_batch_sizes: N``); unknown fields raise a ValueError naming them."""
    text = re.sub(r"#[^\n]*", "", text)
    values, sizes = {}, []
    for match in re.finditer(r"(\w+)\s*(?:\{\s*value\s*:\s*([^\s}]+)\s*\}|:\s*([^\s]+))", text):
        name, wrapped, plain = match.groups()
        if name == "allowed_batch_sizes":
            sizes.append(int(plain or wrapped))
        elif name == "pad_variable_length_inputs":
            if (plain or wrapped) == "true":
                raise ValueError(f"{source}: pad_variable_length_inputs is not supported.")
        elif name in _SCALAR_FIELDS:
            values[name] = _SCALAR_FIELDS[name]((wrapped or plain).strip('"'))
        else:
            raise ValueError(f"{source}: unknown batching parameter {name!r}.")
    leftover = re.sub(r"(\w+)\s*(?:\{\s*value\s*:\s*([^\s}]+)\s*\}|:\s*([^\s]+))", "", text).strip()
    if leftover:
        raise ValueError(f"{source}: cannot read {leftover[:80]!r}.")
    return BatchingParameters(
        max_batch_size=values.get("max_batch_size", 1000),
        batch_timeout_s=values.get("batch_timeout_micros", 0) / 1e6,
        num_batch_threads=values.get("num_batch_threads", 4),
        max_enqueued_batches=values.get("max_enqueued_batches", 100),
        allowed_batch_sizes=tuple(sizes),
        max_execution_batch_size=values.get("max_execution_batch_size"))


def load_batching_parameters(path) -> BatchingParameters:
    """:func:`parse_batching_parameters` of a file."""
    with open(path) as handle:
        return parse_batching_parameters(handle.read(), str(path))


def _batch_rows(feeds: dict) -> int | None:
    """The shared first dimension of the inputs, or None if they have none in common."""
    sizes = {np.shape(v)[0] if np.ndim(v) else None for v in feeds.values()}
    return sizes.pop() if len(sizes) == 1 and None not in sizes else None


@dataclasses.dataclass
class _Task:
    feeds: dict
    rows: int
    future: futures.Future
    enqueued: float


class Batcher:
    """Merges concurrent calls of one model version's signatures (TF Serving's batching).

    Args:
        run: ``(signature, {input: array}) -> {output: array}``, the unbatched call.
        parameters: the :class:`BatchingParameters`.
        on_batch: called with each merged batch's real and padded row counts (metrics).
    """

    def __init__(self, run: Callable, parameters: BatchingParameters, on_batch: Callable | None = None):
        self._run = run
        self.parameters = parameters
        self._on_batch = on_batch
        self._queues: dict = {}  # (signature, shapes) -> [Task]
        self._queued_rows = 0
        self._condition = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._loop, name=f"batch-{i}", daemon=True)
                         for i in range(parameters.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def run(self, signature: str, feeds: dict) -> dict:
        """The signature's outputs for `feeds`, computed in a merged batch when possible."""
        rows = _batch_rows(feeds)
        if rows is None or rows == 0 or rows > self.parameters.largest_request:
            return self._run(signature, feeds)
        key = (signature, tuple(sorted((k, np.asarray(v).dtype.str, np.shape(v)[1:]) for k, v in feeds.items())))
        task = _Task(feeds, rows, futures.Future(), time.monotonic())
        with self._condition:
            limit = self.parameters.max_enqueued_batches * self.parameters.max_batch_size
            if self._queued_rows + rows > limit:
                raise ServingError("UNAVAILABLE", "The batch scheduling queue to which this task was submitted is "
                                                  "full")
            self._queues.setdefault(key, []).append(task)
            self._queued_rows += rows
            self._condition.notify()
        return task.future.result()

    def close(self):
        """Stops the batch threads once the queued requests are served."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join()

    # -- batch threads -------------------------------------------------------------------------------
    def _take(self):
        """The next batch ``(signature, [Task])``, waiting as the timeout allows; None once closed."""
        timeout = self.parameters.batch_timeout_s
        with self._condition:
            while True:
                ready, wait = None, None
                for key, tasks in self._queues.items():
                    if not tasks:
                        continue
                    rows = sum(t.rows for t in tasks)
                    due = tasks[0].enqueued + timeout - time.monotonic()
                    if rows >= self.parameters.max_batch_size or due <= 0 or self._closed:
                        ready = key
                        break
                    wait = due if wait is None else min(wait, due)
                if ready is not None:
                    return ready[0], self._pop(ready)
                if self._closed:
                    return None
                self._condition.wait(wait)

    def _pop(self, key) -> list:
        tasks, taken, rows = self._queues[key], [], 0
        while tasks and rows + tasks[0].rows <= self.parameters.max_batch_size:
            task = tasks.pop(0)
            taken.append(task)
            rows += task.rows
        self._queued_rows -= rows
        return taken

    def _loop(self):
        while True:
            batch = self._take()
            if batch is None:
                return
            signature, tasks = batch
            try:
                self._execute(signature, tasks)
            except BaseException as error:  # every waiting request gets the error
                for task in tasks:
                    if not task.future.done():
                        task.future.set_exception(error)

    def _padded_size(self, rows: int) -> int:
        return next((size for size in self.parameters.allowed_batch_sizes if size >= rows), rows)

    def _execute(self, signature: str, tasks: list):
        if len(tasks) == 1 and not self.parameters.allowed_batch_sizes:
            tasks[0].future.set_result(self._run(signature, tasks[0].feeds))
            return
        rows = sum(t.rows for t in tasks)
        padded = self._padded_size(rows)
        merged = {}
        for name in tasks[0].feeds:
            parts = [np.asarray(t.feeds[name]) for t in tasks]
            if padded > rows:  # repeat the last row: its outputs are dropped
                parts.append(np.repeat(parts[-1][-1:], padded - rows, axis=0))
            merged[name] = np.concatenate(parts, axis=0)
        try:
            outputs = self._run(signature, merged)
        except ServingError:  # one request's bad input fails the batch: each request gets its own answer
            self._run_alone(signature, tasks)
            return
        if self._on_batch is not None:
            self._on_batch(rows, padded)
        if any(np.ndim(v) == 0 or np.shape(v)[0] != padded for v in outputs.values()):
            self._run_alone(signature, tasks)  # outputs without the batch dimension cannot be split
            return
        start = 0
        for task in tasks:
            task.future.set_result({k: v[start:start + task.rows] for k, v in outputs.items()})
            start += task.rows

    def _run_alone(self, signature: str, tasks: list):
        for task in tasks:
            try:
                task.future.set_result(self._run(signature, task.feeds))
            except BaseException as error:
                task.future.set_exception(error)

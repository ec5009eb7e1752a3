"""Server-side batching: TF Serving's parameters file, merged calls that give each request its own
rows, padding to allowed sizes, a bad request failing alone, a full queue, and the served model's
outputs unchanged by batching."""
import threading
import time
from concurrent import futures
from pathlib import Path

import numpy as np
import pytest

from tfrec_onerec.serving import Client, Server
from tfrec_onerec.serving.batching import BatchingParameters, Batcher, parse_batching_parameters, \
    load_batching_parameters
from tfrec_onerec.serving.status import ServingError, invalid_argument

from serving_helpers import assert_same

DEPLOY = Path(__file__).parents[2] / "deploy"


def test_the_deploy_parameters_file_parses_and_bad_ones_are_named():
    parameters = load_batching_parameters(DEPLOY / "batching_parameters.txt")
    assert parameters == BatchingParameters(max_batch_size=1024, batch_timeout_s=0.002, num_batch_threads=4,
                                            max_enqueued_batches=128, allowed_batch_sizes=(64, 128, 256, 512, 1024),
                                            max_execution_batch_size=1024)
    with pytest.raises(ValueError, match="unknown batching parameter 'max_batch_sise'"):
        parse_batching_parameters("max_batch_sise { value: 8 }")
    with pytest.raises(ValueError, match=r"allowed_batch_sizes \[4, 16\] must increase and end with max_batch_size 8"):
        parse_batching_parameters("max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 16")
    with pytest.raises(ValueError, match="pad_variable_length_inputs is not supported"):
        parse_batching_parameters("pad_variable_length_inputs: true")


class Recorder:
    """A signature that doubles ``x``, remembers the rows of each call, and refuses negative inputs."""

    def __init__(self, block: threading.Event | None = None):
        self.calls, self.block = [], block

    def __call__(self, signature, feeds):
        if self.block is not None:
            self.block.wait(10)
        self.calls.append(len(feeds["x"]))
        if (feeds["x"] < 0).any():
            raise invalid_argument("x must not be negative")
        return {"y": feeds["x"] * 2.0, "rows": np.arange(len(feeds["x"]))}


def concurrently(batcher, requests):
    with futures.ThreadPoolExecutor(len(requests)) as pool:
        jobs = [pool.submit(batcher.run, "serving_default", {"x": x}) for x in requests]
        return [job.exception() or job.result() for job in jobs]


def test_concurrent_requests_are_merged_padded_and_answered_with_their_own_rows():
    recorder = Recorder()
    batcher = Batcher(recorder, BatchingParameters(max_batch_size=8, batch_timeout_s=0.2, num_batch_threads=1,
                                                   allowed_batch_sizes=(4, 8)))
    requests = [np.full((1 + i % 2, 3), float(i)) for i in range(5)]  # 7 rows
    answers = concurrently(batcher, requests)
    batcher.close()
    for x, answer in zip(requests, answers):
        np.testing.assert_array_equal(answer["y"], x * 2.0)
    assert sum(recorder.calls) in (8, 12) and max(recorder.calls) > 2  # merged, padded to 4 or 8 rows
    assert all(rows in (4, 8) for rows in recorder.calls)


def test_a_bad_request_fails_alone_and_a_full_queue_refuses():
    recorder = Recorder()
    batcher = Batcher(recorder, BatchingParameters(max_batch_size=8, batch_timeout_s=0.2, num_batch_threads=1))
    answers = concurrently(batcher, [np.ones((1, 2)), -np.ones((1, 2)), np.ones((2, 2))])
    batcher.close()
    assert isinstance(answers[1], ServingError) and answers[1].code == "INVALID_ARGUMENT"
    np.testing.assert_array_equal(answers[0]["y"], np.full((1, 2), 2.0))
    np.testing.assert_array_equal(answers[2]["y"], np.full((2, 2), 2.0))

    release = threading.Event()
    blocked = Batcher(Recorder(release), BatchingParameters(max_batch_size=2, batch_timeout_s=0.0, num_batch_threads=1,
                                                            max_enqueued_batches=1))
    with futures.ThreadPoolExecutor(4) as pool:
        running = pool.submit(blocked.run, "s", {"x": np.ones((2, 1))})  # taken by the one thread, which blocks
        time.sleep(0.2)
        queued = pool.submit(blocked.run, "s", {"x": np.ones((2, 1))})  # one full batch waits
        time.sleep(0.2)
        with pytest.raises(ServingError, match="batch scheduling queue .* is full") as info:
            blocked.run("s", {"x": np.ones((1, 1))})
        assert info.value.code == "UNAVAILABLE"
        release.set()
        assert running.result()["y"].shape == queued.result()["y"].shape == (2, 1)
    blocked.close()


def test_batched_serving_gives_the_unbatched_outputs(exported):
    parameters = BatchingParameters(max_batch_size=32, batch_timeout_s=0.005, num_batch_threads=2,
                                    allowed_batch_sizes=(8, 16, 32))
    with Server(exported.base, port=0, rest_port=None, poll_interval_s=0, batching=parameters,
                max_workers=16) as server:
        with Client(server.target, "din", spec=exported.spec) as client:
            def one(row):
                return client.predict({k: v[row:row + 1] for k, v in exported.batch.items()}, signature="predict")

            with futures.ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(one, range(16)))
        sizes = server.manager.metrics.input_batch_size.value(("din",))
    expected = exported.expected(1, signature="predict")
    for row, answer in enumerate(answers):
        assert_same(answer, {k: v[row:row + 1] for k, v in expected.items()})
    _, total_rows, batches = sizes
    assert total_rows >= 16 and batches < 16  # some requests shared a call

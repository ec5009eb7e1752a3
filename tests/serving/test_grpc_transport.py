"""The gRPC transport: slow clients hold no worker, a receive deadline, the in-flight byte and
request budgets, and messages that do not parse answered INVALID_ARGUMENT."""
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from tfrec_onerec.serving import Server
from tfrec_onerec.serving.grpc_transport import GrpcServer

TIMEOUT = 30
ECHO = "/echo.Echo/Say"


@pytest.fixture(scope="module")
def small_server(exported):
    """Two workers, the REST port off."""
    with Server(exported.base, port=0, rest_port=None, poll_interval_s=0, max_workers=2) as server:
        yield server


def predict_request(exported, rows=2) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="din"))
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto(np.array(exported.examples[:rows], dtype=object)))
    return request


def no_message(until: threading.Event):
    """A client stream that sends nothing until `until` is set, then ends."""
    until.wait(TIMEOUT)
    yield from ()


class Echo:
    """A bytes-in, bytes-out method whose calls can be held on their worker until released."""

    def __init__(self):
        self.release = threading.Event()
        self.serving = threading.Semaphore(0)

    def say(self, request: bytes, context) -> bytes:
        self.serving.release()
        self.release.wait(TIMEOUT)
        if request == b"abort":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "asked to abort")
        return request[::-1]

    def add_to(self, _, server):
        handlers = {"Say": grpc.unary_unary_rpc_method_handler(self.say)}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("echo.Echo", handlers),))


@pytest.fixture
def echo():
    """An echo transport: one worker, two requests pending at most, 1 MiB messages and a
    1.5 MiB budget, a message due 0.5 s after its call starts."""
    service = Echo()
    transport = GrpcServer([(service.add_to, None)], "127.0.0.1", 0, workers=1, max_pending=2,
                           max_message_bytes=1 << 20, max_inflight_bytes=3 << 19, request_timeout_s=0.5).start()
    with grpc.insecure_channel(f"127.0.0.1:{transport.port}") as channel:
        yield service, transport, channel.unary_unary(ECHO), channel
    service.release.set()
    transport.stop(grace_s=0)


def test_50_slow_clients_do_not_keep_a_good_client_waiting(small_server, exported):
    """Calls that open, send their headers and never their message hold no worker: on a
    server with two, a well-behaved client is answered at once."""
    never = threading.Event()
    with grpc.insecure_channel(small_server.target) as slow_channel:
        hang = slow_channel.stream_unary("/tensorflow.serving.PredictionService/Predict",
                                         request_serializer=lambda r: r)
        slow = [hang.future(no_message(never)) for _ in range(50)]
        try:
            time.sleep(1.0)  # every slow call has started
            with grpc.insecure_channel(small_server.target) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                start = time.monotonic()
                response = stub.Predict(predict_request(exported), timeout=5)
                assert tf.make_ndarray(response.outputs["click"]).shape == (2, 1)
                assert time.monotonic() - start < 5
        finally:
            never.set()
            for call in slow:
                call.cancel()


def test_a_message_that_does_not_arrive_in_time_ends_the_call(echo):
    service, transport, _, channel = echo
    hang = channel.stream_unary(ECHO)
    never = threading.Event()
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as error:
        hang(no_message(never), timeout=TIMEOUT)
    never.set()
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "did not arrive within 0.5 s" in error.value.details()
    assert time.monotonic() - start < 5
    assert transport._pending == 0 and transport._inflight_bytes == 0


def test_requests_beyond_the_byte_budget_are_refused_and_the_budget_comes_back(echo):
    service, transport, say, _ = echo
    first = say.future(b"x" * (1 << 20), timeout=TIMEOUT)  # 1 MiB held on the only worker
    assert service.serving.acquire(timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError) as error:
        say(b"y" * (1 << 19) + b"z", timeout=TIMEOUT)  # 1 MiB + 512 KiB + 1 byte > 1.5 MiB
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"serving {1 << 20} bytes of requests (limit {3 << 19})" in error.value.details()
    service.release.set()
    assert first.result() == b"x" * (1 << 20)
    assert say(b"y" * (1 << 19), timeout=TIMEOUT) == b"y" * (1 << 19)
    assert transport._pending == 0 and transport._inflight_bytes == 0


def test_requests_beyond_the_pending_bound_are_refused(echo):
    service, transport, say, _ = echo
    held = [say.future(b"a", timeout=TIMEOUT), say.future(b"b", timeout=TIMEOUT)]  # one served, one queued
    assert service.serving.acquire(timeout=TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while transport._pending < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(grpc.RpcError) as error:
        say(b"c", timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Too many requests in flight" in error.value.details()
    service.release.set()
    assert sorted(call.result() for call in held) == [b"a", b"b"]


def test_abort_on_a_worker_thread_answers_its_status(echo):
    service, _, say, _ = echo
    service.release.set()
    with pytest.raises(grpc.RpcError) as error:
        say(b"abort", timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.value.details() == "asked to abort"


def test_bytes_that_are_not_a_request_message_are_invalid_argument(small_server, exported):
    with grpc.insecure_channel(small_server.target) as channel:
        raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        with pytest.raises(grpc.RpcError) as error:
            raw(b"\xff\xff\xff not a protobuf", timeout=TIMEOUT)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid Predict request message" in error.value.details()
        # the server serves on
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert tf.make_ndarray(stub.Predict(predict_request(exported), timeout=TIMEOUT).outputs["click"]).shape == (2, 1)


def test_the_threaded_transport_serves_the_same_answers(exported, small_server):
    with Server(exported.base, port=0, rest_port=None, poll_interval_s=0, grpc_transport="threaded") as threaded:
        answers = []
        for target in (small_server.target, threaded.target):
            with grpc.insecure_channel(target) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                answers.append(tf.make_ndarray(stub.Predict(predict_request(exported, 4), timeout=TIMEOUT)
                                               .outputs["click"]))
        np.testing.assert_array_equal(*answers)
    with pytest.raises(ValueError, match="grpc_transport must be one of async, threaded, not 'fast'"):
        Server(exported.base, grpc_transport="fast")

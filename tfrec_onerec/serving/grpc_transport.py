"""gRPC on an asyncio loop (``grpc.aio``) whose unary handlers run on a bounded thread pool.

The loop receives every request message whole before a worker thread sees it, so a client
that opens a call and sends its message slowly, or never, holds a coroutine and its
connection, never a worker: the pool only runs complete requests. (``grpc.server`` receives
a unary request inside the pool thread that then serves it, with no deadline of its own.)
Limits, each answered with a status rather than a stall:

* a call's request message must arrive within ``request_timeout_s`` of the call's start
  (DEADLINE_EXCEEDED otherwise; the client's own deadline still applies when shorter);
* a message over ``max_message_bytes`` is refused by gRPC itself (RESOURCE_EXHAUSTED);
* the messages being served or waiting for a worker may not exceed ``max_inflight_bytes``
  together, nor number more than ``max_pending`` (RESOURCE_EXHAUSTED beyond either, checked
  before a message is parsed), so many large requests at once cannot exhaust memory;
* bytes that do not parse as the method's request message get INVALID_ARGUMENT.

The servicers are tensorflow-serving-api's synchronous ones: each unary method is received
on the loop and then run on a worker with a context whose ``abort`` works from that thread.
:meth:`GrpcServer.stop` stops accepting, gives the calls in flight a grace period and then
cancels what is left.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent import futures
from typing import Callable, Sequence

import grpc

from tfrec_onerec.serving.loop_thread import LoopThread


class _Refused:
    """What the deserializer hands over instead of a request it refused: ``(code, message)``."""

    def __init__(self, code: grpc.StatusCode, message: str):
        self.code, self.message = code, message


class _WorkerContext:
    """A ``grpc.aio.ServicerContext`` as a synchronous handler on a worker thread uses it."""

    def __init__(self, context, loop):
        self._context, self._loop = context, loop

    def abort(self, code, details: str = ""):
        """Ends the call with `code`; raises (as ``grpc.ServicerContext.abort`` does)."""
        asyncio.run_coroutine_threadsafe(self._context.abort(code, details), self._loop).result()

    def __getattr__(self, name):  # time_remaining, invocation_metadata, peer, set_code, ...
        return getattr(self._context, name)


class _ReceiveBeforeServing(grpc.aio.ServerInterceptor):
    """Turns every unary-unary handler into one that receives on the loop (within the
    transport's limits) and serves on the pool."""

    def __init__(self, transport: "GrpcServer"):
        self.transport = transport
        self._bounded = {}  # method -> its bounded handler, built on its first call

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        bounded = self._bounded.get(method)
        if bounded is not None:
            return bounded
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        bounded = self._bounded[method] = self.transport.bounded_handler(handler, method)
        return bounded


def _options(max_message_bytes: int) -> list:
    return [("grpc.max_receive_message_length", max_message_bytes), ("grpc.so_reuseport", 0)]


def _bind(server, servicers, host: str, port: int) -> int:
    """Adds the servicers and a listening port to `server`; returns the port bound."""
    for add_to_server, servicer in servicers:
        add_to_server(servicer, server)
    address = f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"Cannot listen for gRPC on {address}: {error}") from None
    if not bound:
        raise OSError(f"Cannot listen for gRPC on {address} (is the port in use?).")
    return bound


class GrpcServer:
    """gRPC servicers on a ``grpc.aio`` server (its own thread and loop), served on `workers` threads.

    Args:
        servicers: ``(add_servicer_to_server, servicer)`` pairs, as tensorflow-serving-api's
            ``add_*Servicer_to_server`` functions take them.
        host, port: where to listen (port 0: any free port; see :attr:`port`).
        workers: threads running the handlers.
        max_pending: requests served or waiting for a thread at most.
        max_message_bytes: the largest request message accepted.
        max_inflight_bytes: the request messages served or waiting at once, in bytes;
            default twice `max_message_bytes`.
        request_timeout_s: seconds from a call's start for its request message to arrive.
    """

    def __init__(self, servicers: Sequence[tuple[Callable, object]], host: str, port: int, workers: int,
                 max_pending: int, max_message_bytes: int, max_inflight_bytes: int | None = None,
                 request_timeout_s: float = 30.0):
        self.servicers = list(servicers)
        self.host, self._requested_port = host, port
        self.max_pending = max_pending
        self.max_message_bytes = max_message_bytes
        self.max_inflight_bytes = max_inflight_bytes or 2 * max_message_bytes
        self.request_timeout_s = request_timeout_s
        self.port: int | None = None
        self._pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc-serving")
        self._pending = 0          # requests served or queued (touched on the loop's thread only)
        self._inflight_bytes = 0   # their messages' bytes
        self._loop: LoopThread | None = None
        self._server = None

    # -- life cycle ----------------------------------------------------------------------------------
    def start(self) -> "GrpcServer":
        """Binds and starts serving; raises OSError if the address cannot be bound."""
        self._loop = LoopThread.opened_with("grpc-receive", self._open())
        return self

    async def _open(self):
        self._server = grpc.aio.server(interceptors=[_ReceiveBeforeServing(self)],
                                       options=_options(self.max_message_bytes))
        self.port = _bind(self._server, self.servicers, self.host, self._requested_port)
        await self._server.start()

    def begin_stop(self, grace_s: float = 10.0) -> futures.Future:
        """Stops accepting; the calls in flight get `grace_s`, then are cancelled. Returns a
        future done when they have ended; :meth:`close` then frees the loop."""
        return self._loop.submit(self._server.stop(grace_s))

    def close(self, stopping: futures.Future | None = None):
        """Waits for `stopping` (from :meth:`begin_stop`), then ends the loop and the pool."""
        if self._loop is None:
            return
        if stopping is not None:
            stopping.result()
        self._close_loop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def stop(self, grace_s: float = 10.0):
        self.close(self.begin_stop(grace_s) if self._server is not None else None)

    def _close_loop(self):
        self._loop.close()
        self._loop = None

    # -- calls ---------------------------------------------------------------------------------------
    def bounded_handler(self, handler, method: str):
        """A stream-unary handler serving `handler`'s unary behaviour (of `method`, e.g.
        ``/tensorflow.serving.PredictionService/Predict``) within the limits."""
        behavior, parse = handler.unary_unary, handler.request_deserializer
        handler_name = method.rsplit("/", 1)[-1] + " request"

        def admit(raw: bytes):  # runs on the loop as the message arrives, before it is parsed
            if self._pending >= self.max_pending:
                return _Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "Too many requests in flight; retry later.")
            if self._inflight_bytes and self._inflight_bytes + len(raw) > self.max_inflight_bytes:
                return _Refused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"The server is serving {self._inflight_bytes} bytes of requests "
                                f"(limit {self.max_inflight_bytes}); retry later.")
            try:
                request = parse(raw) if parse is not None else raw
            except Exception as error:  # not a message of the method's type
                return _Refused(grpc.StatusCode.INVALID_ARGUMENT,
                                f"The request is not a valid {handler_name} message ({type(error).__name__}).")
            self._pending += 1
            self._inflight_bytes += len(raw)
            return len(raw), request

        async def serve(requests, context):
            try:
                async with asyncio.timeout(self._receive_timeout(context)):
                    received = await context.read()
            except TimeoutError:
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                    f"The request message did not arrive within {self.request_timeout_s:g} s.")
            if received is grpc.aio.EOF:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "The call ended without a request message.")
            if isinstance(received, _Refused):
                await context.abort(received.code, received.message)
            size, request = received
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    self._pool, behavior, request, _WorkerContext(context, self._loop.loop))
            finally:
                self._pending -= 1
                self._inflight_bytes -= size

        return grpc.stream_unary_rpc_method_handler(serve, request_deserializer=admit,
                                                    response_serializer=handler.response_serializer)

    def _receive_timeout(self, context) -> float:
        remaining = context.time_remaining()
        return self.request_timeout_s if remaining is None else max(0.0, min(self.request_timeout_s, remaining))


class ThreadedGrpcServer:
    """The same servicers on ``grpc.server``: a pool thread receives each request and serves it.

    About 0.3 ms faster per call than :class:`GrpcServer` at batch 1, with twice the calls
    per second on an echo method (``benchmarks/serving_benchmark.py``), but a call whose
    message is slow to arrive holds its thread with no deadline of the server's and the
    byte budget is not kept: for a port only trusted clients, or a proxy that buffers whole
    requests, can reach. Same arguments and methods as :class:`GrpcServer` (without
    `max_inflight_bytes` and `request_timeout_s`); `max_pending` counts calls from their start.
    """

    def __init__(self, servicers: Sequence[tuple[Callable, object]], host: str, port: int, workers: int,
                 max_pending: int, max_message_bytes: int):
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc-serving"),
                                   maximum_concurrent_rpcs=max_pending, options=_options(max_message_bytes))
        self._binding = (servicers, host, port)
        self.port: int | None = None

    def start(self) -> "ThreadedGrpcServer":
        self.port = _bind(self._server, *self._binding)
        self._server.start()
        return self

    def begin_stop(self, grace_s: float = 10.0) -> threading.Event:
        return self._server.stop(grace_s)

    def close(self, stopping: threading.Event | None = None):
        if stopping is not None:
            stopping.wait()

    def stop(self, grace_s: float = 10.0):
        self.close(self.begin_stop(grace_s))

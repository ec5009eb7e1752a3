"""An HTTP/1.1 server on asyncio whose handler runs on a bounded thread pool.

The event loop reads every request whole (request line, headers, body) before a worker
thread sees it, so a client that sends slowly (a "slow loris") holds a socket and a
coroutine, never a worker: the pool only runs complete requests. Limits, each answered
with a status rather than a stall:

* a request must arrive within ``request_timeout_s`` (its head) and its body within
  ``request_timeout_s`` more; a kept-alive connection may idle ``idle_timeout_s`` between
  requests; otherwise the connection is closed;
* a body over ``max_body_bytes`` gets 413 without being read; the bodies of all requests
  being read or served may not exceed ``max_inflight_bytes`` together (429 beyond, so many
  large bodies at once cannot exhaust memory);
* requests being served or waiting for a worker are at most ``max_pending`` (503 beyond);
* the listen backlog is at least ``max_pending``.

HTTP/1.1 keep-alive (HTTP/1.0 with ``Connection: keep-alive``), ``Expect: 100-continue``
(answered once the body's size is accepted) and chunked request bodies are supported.
:meth:`HttpServer.stop` stops accepting, gives requests in flight a grace period and then
closes every connection.
"""
from __future__ import annotations

import asyncio
import http
import json
import logging
from concurrent import futures
from typing import Callable

from tfrec_onerec.serving.loop_thread import LoopThread

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 << 10  # request line and headers
MAX_CHUNK_LINE_BYTES = 1 << 10
JSON_TYPE = "application/json"


class _Refusal(Exception):
    """A request answered by the transport itself: ``(status, message, close)``."""

    def __init__(self, status: int, message: str, close: bool = True):
        super().__init__(message)
        self.status, self.message, self.close = status, message, close


def _response(status: int, content_type: str, data: bytes, keep_alive: bool) -> bytes:
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(data)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\nServer: tfrec-onerec-serving\r\n\r\n")
    return head.encode("latin-1") + data


def _parse_head(head: bytes) -> tuple:
    """``(method, target, version, {lower-case name: value})`` of a request head."""
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _Refusal(400, f"Malformed request line {lines[0][:100]!r}.")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise _Refusal(400, f"Malformed header line {line[:100]!r}.")
        headers[name.lower()] = value.strip()
    return parts[0].upper(), parts[1], parts[2], headers


class HttpServer:
    """HTTP/1.1 on an asyncio loop (its own thread); `handler` runs on `workers` threads.

    Args:
        handler: ``(method, target, body bytes or None) -> (status, content type, bytes)``.
        host, port: where to listen (port 0: any free port; see :attr:`port`).
        workers: threads running `handler`.
        max_pending: requests served or waiting for a thread at most (503 beyond).
        max_body_bytes: the largest body accepted (413 beyond).
        max_inflight_bytes: the bodies being read or served at once, in bytes (429 beyond);
            default twice `max_body_bytes`.
        request_timeout_s: seconds for a request's head, and again for its body.
        idle_timeout_s: seconds a kept-alive connection may wait for its next request.
    """

    def __init__(self, handler: Callable, host: str, port: int, workers: int, max_pending: int, max_body_bytes: int,
                 max_inflight_bytes: int | None = None, request_timeout_s: float = 30.0, idle_timeout_s: float = 30.0):
        self.handler = handler
        self.host, self._requested_port = host, port
        self.max_pending = max_pending
        self.max_body_bytes = max_body_bytes
        self.max_inflight_bytes = max_inflight_bytes or 2 * max_body_bytes
        self.request_timeout_s, self.idle_timeout_s = request_timeout_s, idle_timeout_s
        self.port: int | None = None
        self._pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rest-serving")
        self._pending = 0          # requests served or queued (touched on the loop's thread only)
        self._inflight_bytes = 0   # bodies being read or served
        self._connections: set = set()
        self._loop: LoopThread | None = None
        self._server = None

    # -- life cycle ----------------------------------------------------------------------------------
    def start(self) -> "HttpServer":
        """Binds and starts serving; raises OSError if the address cannot be bound."""
        self._loop = LoopThread.opened_with("rest-accept", self._open())
        return self

    async def _open(self):
        self._server = await asyncio.start_server(self._serve_connection, self.host, self._requested_port,
                                                  backlog=max(128, self.max_pending), limit=MAX_HEAD_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self, grace_s: float = 10.0):
        """Stops accepting, waits up to `grace_s` for the requests being served, closes all
        connections; a handler still running after that finishes on its own."""
        if self._loop is None:
            return

        async def close():
            self._server.close()
            loop = asyncio.get_running_loop()
            end = loop.time() + grace_s
            while self._pending and loop.time() < end:
                await asyncio.sleep(0.02)
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)

        self._loop.run(close())
        self._close_loop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _close_loop(self):
        self._loop.close()
        self._loop = None

    # -- connections ---------------------------------------------------------------------------------
    async def _serve_connection(self, reader, writer):
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            timeout = self.request_timeout_s
            while await self._serve_request(reader, writer, timeout):
                timeout = self.idle_timeout_s
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                asyncio.CancelledError):
            pass  # a client too slow, gone, or a server closing: the connection ends
        except Exception:  # a transport bug must not end the loop
            log.exception("REST connection failed")
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve_request(self, reader, writer, head_timeout: float) -> bool:
        """Reads, serves and answers one request; True to keep the connection for another."""
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), head_timeout)
        reserved = 0
        try:  # the body's share of the in-flight budget is returned however the request ends
            try:
                method, target, version, headers = _parse_head(head)
                connection = headers.get("connection", "").lower()
                keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
                if self._pending >= self.max_pending:
                    raise _Refusal(503, "Too many requests in flight; retry later.")
                reserved = self._reserve(method, headers)
                if headers.get("expect", "").lower() == "100-continue" and version == "HTTP/1.1":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = await self._read_body(reader, headers, reserved)
            except _Refusal as refusal:
                data = json.dumps({"error": refusal.message}).encode()
                writer.write(_response(refusal.status, JSON_TYPE, data, keep_alive=not refusal.close))
                await asyncio.wait_for(writer.drain(), self.request_timeout_s)
                return not refusal.close
            self._pending += 1
            try:
                status, content_type, data = await asyncio.get_running_loop().run_in_executor(
                    self._pool, self.handler, method, target, body)
            finally:
                self._pending -= 1
        finally:
            self._release(reserved)
        writer.write(_response(status, content_type, data, keep_alive))
        await asyncio.wait_for(writer.drain(), self.request_timeout_s)
        return keep_alive

    def _reserve(self, method: str, headers: dict) -> int:
        """Bytes of the in-flight budget the request's body takes (checked against the limits)."""
        if "transfer-encoding" in headers:
            if headers["transfer-encoding"].lower() != "chunked":
                raise _Refusal(501, f"Transfer-Encoding {headers['transfer-encoding']!r} is not supported.")
            length = self.max_body_bytes  # unknown until read: reserve the most it may be
        elif "content-length" in headers:
            if not headers["content-length"].isdigit():
                raise _Refusal(400, "Content-Length must be a number of bytes.")
            length = int(headers["content-length"])
        elif method == "POST":
            raise _Refusal(400, "A POST needs a Content-Length header.")
        else:
            return 0
        if length > self.max_body_bytes:
            raise _Refusal(413, f"Request body of {length} bytes is larger than the limit of "
                                f"{self.max_body_bytes} bytes.")
        if self._inflight_bytes and self._inflight_bytes + length > self.max_inflight_bytes:
            raise _Refusal(429, f"The server is reading or serving {self._inflight_bytes} bytes of requests "
                                f"(limit {self.max_inflight_bytes}); retry later.")
        self._inflight_bytes += length
        return length

    def _release(self, reserved: int):
        self._inflight_bytes -= reserved

    async def _read_body(self, reader, headers: dict, reserved: int) -> bytes | None:
        deadline = asyncio.get_running_loop().time() + self.request_timeout_s

        def remaining():
            return max(0.0, deadline - asyncio.get_running_loop().time())

        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks, size = [], 0
            while True:
                line = await asyncio.wait_for(reader.readuntil(b"\r\n"), remaining())
                if len(line) > MAX_CHUNK_LINE_BYTES:
                    raise _Refusal(400, "Malformed chunked body.")
                try:
                    chunk = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise _Refusal(400, "Malformed chunked body.") from None
                if chunk == 0:
                    while (await asyncio.wait_for(reader.readuntil(b"\r\n"), remaining())) != b"\r\n":
                        pass  # trailers, ignored
                    return b"".join(chunks)
                size += chunk
                if size > reserved:
                    raise _Refusal(413, f"Request body is larger than the limit of {self.max_body_bytes} bytes.")
                data = await asyncio.wait_for(reader.readexactly(chunk + 2), remaining())
                chunks.append(data[:-2])
        if not reserved:
            return None
        return await asyncio.wait_for(reader.readexactly(reserved), remaining())

"""The REST transport: slow clients hold no worker, keep-alive, 100-continue, chunked bodies, the
in-flight byte budget, and answers instead of stalls."""
import base64
import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from tfrec_onerec.serving import Server

TIMEOUT = 30


@pytest.fixture(scope="module")
def small_server(exported):
    """Two workers, a 1 MiB body limit (so a 2 MiB in-flight budget)."""
    with Server(exported.base, port=0, rest_port=0, poll_interval_s=0, max_workers=2,
                max_request_bytes=1 << 20) as server:
        yield server


def predict_body(exported, rows=2) -> bytes:
    return json.dumps({"instances": [{"b64": base64.b64encode(e).decode()} for e in exported.examples[:rows]]}).encode()


def request_head(length: int, *extra: str) -> bytes:
    lines = ["POST /v1/models/din:predict HTTP/1.1", "Host: x", f"Content-Length: {length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock) -> tuple:
    """``(status, headers, body)`` of one HTTP response on a raw socket."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, dict(response.getheaders()), response.read()


def test_50_slow_clients_do_not_keep_a_good_client_waiting(small_server, exported):
    stop = threading.Event()
    slow = [socket.create_connection(("127.0.0.1", small_server.rest_port)) for _ in range(50)]

    def trickle():  # one byte at a time, never a whole request
        head = request_head(100)
        for i in range(len(head) - 1):
            if stop.wait(0.2):
                return
            for sock in slow:
                try:
                    sock.send(head[i:i + 1])
                except OSError:
                    pass

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        time.sleep(1.0)  # every slow client has begun its request
        connection = http.client.HTTPConnection("127.0.0.1", small_server.rest_port, timeout=5)
        start = time.monotonic()
        connection.request("POST", "/v1/models/din:predict", predict_body(exported))
        answer = connection.getresponse()
        assert answer.status == 200 and len(json.loads(answer.read())["predictions"]) == 2
        assert time.monotonic() - start < 5
    finally:
        stop.set()
        thread.join()
        for sock in slow:
            sock.close()


def test_keep_alive_serves_many_requests_on_one_connection(small_server, exported):
    connection = http.client.HTTPConnection("127.0.0.1", small_server.rest_port, timeout=TIMEOUT)
    connection.connect()
    first_socket = connection.sock
    for _ in range(5):
        connection.request("POST", "/v1/models/din:predict", predict_body(exported))
        answer = connection.getresponse()
        assert answer.status == 200 and answer.getheader("Connection") == "keep-alive"
        answer.read()
        connection.request("GET", "/v1/models/din")
        answer = connection.getresponse()
        assert answer.status == 200
        answer.read()
    assert connection.sock is first_socket  # never reconnected
    connection.close()


def test_expect_100_continue_and_chunked_bodies(small_server, exported):
    body = predict_body(exported)
    with socket.create_connection(("127.0.0.1", small_server.rest_port), timeout=TIMEOUT) as sock:
        sock.sendall(request_head(len(body), "Expect: 100-continue"))
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        status, _, answer = read_response(sock)
        assert status == 200 and len(json.loads(answer)["predictions"]) == 2
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:])) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", small_server.rest_port), timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /v1/models/din:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
        status, _, answer = read_response(sock)
        assert status == 200 and len(json.loads(answer)["predictions"]) == 2
    with socket.create_connection(("127.0.0.1", small_server.rest_port), timeout=TIMEOUT) as sock:
        sock.sendall(request_head(2 << 20, "Expect: 100-continue"))  # over the limit: refused before the body
        status, headers, answer = read_response(sock)
        assert status == 413 and headers["Connection"] == "close"
        assert "larger than the limit of 1048576 bytes" in json.loads(answer)["error"]


def test_bodies_in_flight_are_bounded_in_bytes(small_server, exported):
    """Two unfinished 0.9 MiB bodies take most of the 2 MiB budget: a third is refused (429), and
    once they are gone requests are served again."""
    partial = []
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", small_server.rest_port), timeout=TIMEOUT)
        sock.sendall(request_head(900 << 10) + b'{"instances": [')
        partial.append(sock)
    time.sleep(0.3)
    connection = http.client.HTTPConnection("127.0.0.1", small_server.rest_port, timeout=TIMEOUT)
    connection.request("POST", "/v1/models/din:predict", b" " * (300 << 10))
    answer = connection.getresponse()
    assert answer.status == 429 and "retry later" in json.loads(answer.read())["error"]
    for sock in partial:
        sock.close()
    time.sleep(0.3)
    assert small_server._rest._inflight_bytes == 0  # abandoned bodies gave their share back
    connection = http.client.HTTPConnection("127.0.0.1", small_server.rest_port, timeout=TIMEOUT)
    connection.request("POST", "/v1/models/din:predict", b" " * (1000 << 10))  # fits only if nothing leaked
    assert connection.getresponse().status == 400


def test_malformed_heads_and_unknown_methods_get_answers(small_server):
    with socket.create_connection(("127.0.0.1", small_server.rest_port), timeout=TIMEOUT) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        status, _, answer = read_response(sock)
        assert status == 400 and "Malformed request line" in json.loads(answer)["error"]
    with socket.create_connection(("127.0.0.1", small_server.rest_port), timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /v1/models/din:predict HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, answer = read_response(sock)
        assert status == 400 and json.loads(answer)["error"] == "A POST needs a Content-Length header."
    connection = http.client.HTTPConnection("127.0.0.1", small_server.rest_port, timeout=TIMEOUT)
    connection.request("DELETE", "/v1/models/din")
    answer = connection.getresponse()
    assert answer.status == 501 and "Unsupported method DELETE" in json.loads(answer.read())["error"]


def test_32_concurrent_60_mib_bodies_keep_the_servers_memory_bounded(exported):
    """The in-flight budget (twice the 64 MiB body limit) admits two bodies at a time and refuses
    the rest with 429, so the server's peak RSS grows by the two bodies and their parsed JSON
    (measured: +526 MiB over a 692 MiB server), not by 32 of them (1.9 GiB of raw bytes alone)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tfrec_onerec.serving", "serve", "--model-base", str(exported.base), "--port", "0",
         "--rest-port", "0", "--poll-interval", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        match = re.search(r"REST on [\d.]+:(\d+)", process.stdout.readline())
        assert match, f"the server did not start (exit code {process.poll()})"
        port = int(match.group(1))
        body = ('{"signature_name": "predict", "instances": [[' + "0.125, " * ((60 << 20) // 7) + '0.5]]}').encode()
        before = memory_mib(process.pid, "VmRSS")
        statuses = []

        def send():
            with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
                try:
                    sock.sendall(request_head(len(body)) + body)
                except OSError:  # refused before the body was read: the server closed the connection
                    pass
                answer = http.client.HTTPResponse(sock)
                answer.begin()
                statuses.append(answer.status)

        threads = [threading.Thread(target=send) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        peak = memory_mib(process.pid, "VmHWM")
    finally:
        process.kill()
        process.wait()
    assert len(statuses) == 32 and statuses.count(429) >= 28, statuses  # (the admitted ones: 400, bad shape)
    assert peak - before < 800, (before, peak)


def memory_mib(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(rf"{field}:\s+(\d+) kB", status.read()).group(1)) / 1024

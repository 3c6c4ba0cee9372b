"""The byte relay through the real CLI (forward listeners, no eBPF needed)."""

from __future__ import annotations

import concurrent.futures
import os
import socket
import threading

import pytest

from tests.support.proc import EchoServer, forward_proxy, stop
from tests.support.services import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, params=["uvloop", "asyncio"])
def loop(request, monkeypatch):
    """Every relay test on both event loops: uvloop, the default, and the stdlib's
    (``TRPROXY_LOOP=asyncio``), the reference. ``on_loop`` checks the proxy ran on it."""
    monkeypatch.setenv("TRPROXY_LOOP", request.param)
    return request.param


def on_loop(proc, loop: str) -> None:
    """The running proxy ``proc`` runs on ``loop`` (uvloop's extension is mapped or not)."""
    maps = open(f"/proc/{proc.pid}/maps").read()
    assert ("uvloop/loop." in maps) == (loop == "uvloop"), loop


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


def _roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)  # half-close: the echo must still come back
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
        return b"".join(chunks)


def test_200_concurrent_connections(echo, loop):
    proc, port = forward_proxy(echo.port)
    try:
        on_loop(proc, loop)
        payloads = [os.urandom(1000 + i) for i in range(200)]
        with concurrent.futures.ThreadPoolExecutor(200) as pool:
            results = list(pool.map(lambda p: _roundtrip(port, p), payloads))
        assert results == payloads
    finally:
        stop(proc)


def test_100_mb_each_way_with_bounded_memory(echo):
    proc, port = forward_proxy(echo.port)
    size = 100 * 1024 * 1024
    block = os.urandom(1024 * 1024)
    received = 0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            def send() -> None:
                for _ in range(size // len(block)):
                    s.sendall(block)
                s.shutdown(socket.SHUT_WR)

            sender = threading.Thread(target=send)
            sender.start()
            while data := s.recv(1 << 20):
                received += len(data)
            sender.join()
        status = open(f"/proc/{proc.pid}/status").read()
        hwm_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    finally:
        stop(proc)
    assert received == size
    # the proxy never holds more than a few chunks per direction
    assert hwm_kb < 150 * 1024, f"proxy peak RSS {hwm_kb} kB for 2 x 100 MB"


def test_half_close_keeps_the_other_direction_open():
    """The server answers only after the client's FIN; the answer must arrive."""
    listener = socket.create_server(("127.0.0.1", 0))
    upstream_port = listener.getsockname()[1]

    def serve() -> None:
        while True:  # the first connection is the readiness probe
            conn, _ = listener.accept()
            with conn:
                got = b""
                while data := conn.recv(4096):
                    got += data
                conn.sendall(b"after-fin:" + got)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    proc, port = forward_proxy(upstream_port)
    try:
        assert _roundtrip(port, b"hello") == b"after-fin:hello"
    finally:
        stop(proc)
        listener.close()


def test_refused_upstream_is_a_reset_not_a_hang():
    dead_port = free_port()  # nothing listens there
    proc, port = forward_proxy(dead_port)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.settimeout(10)
            with pytest.raises(ConnectionResetError):
                s.sendall(b"x")
                s.recv(10)
    finally:
        stop(proc)


@pytest.fixture
def stdlib_http_server():
    """Python's own http.server: a header line over 65536 bytes gets 431 and the server
    hangs up without reading the rest, so its kernel resets the connection."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode", ["passthrough", "record"])
def test_a_servers_last_bytes_before_its_reset_reach_a_client_still_sending(
        stdlib_http_server, mode, tmp_path):
    """The 431 case: the server answers a 1 MiB request head early and resets; the client,
    still sending, must read the 431 as it does direct (not a bare reset)."""
    import requests

    big = {"X-Big": "a" * (1 << 20)}
    direct = requests.get(f"http://127.0.0.1:{stdlib_http_server}/", headers=big, timeout=30)
    assert direct.status_code == 431
    proc, port = forward_proxy(stdlib_http_server, "--dir", str(tmp_path), mode=mode)
    try:
        for _ in range(5):  # a race when it fails: try it a few times
            got = requests.get(f"http://127.0.0.1:{port}/", headers=big, timeout=30)
            assert got.status_code == 431
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=30).text == "ok"
    finally:
        stop(proc)

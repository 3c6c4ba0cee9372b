"""The byte relay through the real CLI (forward listeners, no eBPF needed)."""

from __future__ import annotations

import concurrent.futures
import os
import socket
import struct
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


def _rss_kb(pid: int) -> int:
    status = open(f"/proc/{pid}/status").read()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))


def test_a_server_that_does_not_read_stops_the_client_not_the_proxys_memory():
    """Backpressure: while the server reads nothing, the client's sends block once the
    kernel's buffers and one bounded buffer of the proxy are full; all 64 MiB arrive
    once it reads."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    reading = threading.Event()
    got = []

    def serve() -> None:
        listener.accept()[0].close()  # the readiness probe
        conn, _ = listener.accept()
        accepted.append(conn)
        reading.wait(60)
        total = 0
        while data := conn.recv(1 << 20):
            total += len(data)
        got.append(total)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    proc, port = forward_proxy(listener.getsockname()[1])
    size, sent = 64 << 20, 0
    try:
        before = _rss_kb(proc.pid)
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            s.setblocking(False)
            block = os.urandom(1 << 20)
            stalled = 0
            while sent < size and stalled < 50:  # 0.5 s without room: the proxy stopped reading
                try:
                    sent += s.send(block[: size - sent if size - sent < len(block) else len(block)])
                    stalled = 0
                except BlockingIOError:
                    stalled += 1
                    threading.Event().wait(0.01)
            assert sent < size // 2, f"the proxy took {sent} bytes the server did not read"
            grown = _rss_kb(proc.pid) - before
            reading.set()
            s.setblocking(True)
            s.sendall(os.urandom(size - sent))
            s.shutdown(socket.SHUT_WR)
            assert s.recv(1) == b""  # the server closes once it read everything
        assert got == [size]
        assert grown < 16 * 1024, f"the proxy grew {grown} kB holding what the server did not read"
    finally:
        stop(proc)
        listener.close()
        for conn in accepted:
            conn.close()


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


def _abort(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST, not FIN


@pytest.mark.parametrize("who", ["server", "client"])
def test_a_reset_reaches_the_other_side_as_a_reset_after_the_bytes_before_it(who):
    """Either peer resets after sending a few bytes: the other reads those bytes, then a
    reset (as it would direct), not an orderly end and not a hang."""
    listener = socket.create_server(("127.0.0.1", 0))
    outcome: list[object] = []

    def serve() -> None:
        listener.accept()[0].close()  # the readiness probe
        conn, _ = listener.accept()
        conn.settimeout(20)
        assert conn.recv(5) == b"hello"
        if who == "server":
            conn.sendall(b"last words")
            _abort(conn)
            return
        conn.sendall(b"ready")
        try:
            outcome.append(conn.recv(100))
            outcome.append(conn.recv(100))
        except ConnectionResetError as exc:
            outcome.append(exc)
        conn.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    proc, port = forward_proxy(listener.getsockname()[1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(b"hello")
            if who == "server":
                got = b""
                with pytest.raises(ConnectionResetError):
                    while chunk := s.recv(100):  # an orderly end fails the test
                        got += chunk
                assert got == b"last words"
            else:
                assert s.recv(5) == b"ready"
                s.sendall(b"bye")
                threading.Event().wait(0.2)  # "bye" on its way before the reset
                _abort(s)
        server.join(20)
        if who == "client":
            assert outcome[0] == b"bye" and isinstance(outcome[-1], ConnectionResetError), outcome
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

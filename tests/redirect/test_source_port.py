"""The original destination goes only to the connection the run made: keyed by the full
4-tuple, taken once at accept, dropped when a connect fails, checked against the run."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.redirect.conftest import (
    EchoServer,
    RelayProxy,
    bind_pair,
    free_port,
    require_root,
    run_client,
    try_connect,
)
from trproxy.redirect import Redirector

pytestmark = pytest.mark.root

APP = r"""
import socket, struct, sys
sport, port = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", sport))
s.connect(("127.0.0.1", port))
s.sendall(b"app\n")
print(s.makefile("rb").readline().decode(), end="", flush=True)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset: no TIME_WAIT
s.close()
"""

# Run as another user: binds the app's source port and connects straight to the proxy.
ATTACK = r"""
import os, socket, sys
sport, proxy_port = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", sport))
s.settimeout(10)
s.connect(("127.0.0.1", proxy_port))
s.sendall(b"attack\n")
try:
    print(os.getuid(), s.makefile("rb").readline().decode(), end="", flush=True)
except ConnectionResetError:
    print(os.getuid(), "reset")
"""


def _wait_accepts(proxy: RelayProxy, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(proxy.accepted) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(proxy.accepted) == n, proxy.accepted


def test_source_port_reuse_by_another_user_gets_nothing(
    redirected: Redirector, proxy: RelayProxy, echo: EchoServer
) -> None:
    sport = free_port()
    app = subprocess.run(
        [sys.executable, "-c", APP, str(sport), str(echo.port)],
        preexec_fn=redirected.enter, capture_output=True, text=True, timeout=30, check=True,
    )
    assert app.stdout == f"echo {echo.port} app\n"  # relayed to the real destination
    _wait_accepts(proxy, 1)
    assert proxy.accepted[0].original == ("127.0.0.1", echo.port)
    assert proxy.accepted[0].peer[1] == sport

    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    attack = subprocess.run(
        [python, "-I", "-c", ATTACK, str(sport), str(proxy.port)],
        user="nobody", capture_output=True, text=True, timeout=30, check=True,
    )
    uid, answer = attack.stdout.split(" ", 1)
    assert int(uid) != 0
    assert answer == "direct\n"  # the test proxy's answer to a connection it cannot place
    _wait_accepts(proxy, 2)
    assert proxy.accepted[1].peer[1] == sport  # the same source port ...
    assert proxy.accepted[1].original is None  # ... but no destination for it


def test_the_destination_is_given_once(
    redirected: Redirector, proxy: RelayProxy, echo: EchoServer
) -> None:
    out = run_client("127.0.0.1", echo.port, "v4", preexec=redirected.enter)
    assert out["reply"] == f"echo {echo.port} hello\n"
    _wait_accepts(proxy, 1)
    acc = proxy.accepted[0]
    assert acc.original == ("127.0.0.1", echo.port)
    assert redirected.original_destination(acc.peer, ("127.0.0.1", proxy.port)) is None
    assert redirected._maps.run_entries(redirected.cgroup_id)["trp_orig"] == 0


def test_failed_connects_leave_no_entry(echo: EchoServer) -> None:
    """A connect the proxy never sees (refused: nothing listens on the proxy port here)
    takes its entry back when it closes from SYN_SENT."""
    require_root()
    with Redirector.create(free_port()) as r:
        for host in ("127.0.0.1", "::1"):
            assert try_connect(host, echo.port, r.enter) == "ECONNREFUSED"
        assert r._maps.run_entries(r.cgroup_id)["trp_orig"] == 0


def test_a_client_that_closes_before_the_accept_is_served(echo: EchoServer) -> None:
    """Connect, send, close, and only then the proxy accepts: the connection waited in the
    accept queue, and its destination with it."""
    require_root()
    s4, s6 = bind_pair()
    try:
        with Redirector.create(s4.getsockname()[1]) as r:
            sent = subprocess.run(
                [sys.executable, "-c", "import socket,sys; s=socket.create_connection(('127.0.0.1', "
                 "int(sys.argv[1]))); s.sendall(b'bye\\n'); s.close()", str(echo.port)],
                preexec_fn=r.enter, timeout=30, check=True,
            )
            assert sent.returncode == 0
            conn, peer = s4.accept()  # the client is gone by now
            with conn:
                assert r.original_destination(peer, conn.getsockname()) == ("127.0.0.1", echo.port)
                assert conn.makefile("rb").read() == b"bye\n"
    finally:
        s4.close()
        s6.close()


def test_an_entry_of_another_run_is_not_served(echo: EchoServer) -> None:
    """Two runs with one proxy port (a port reused by a later run): each gets only its own."""
    require_root()
    proxy = RelayProxy.start()
    mine = Redirector.create(proxy.port)
    other = Redirector.create(proxy.port)
    proxy.redirector = other
    try:
        assert try_connect("127.0.0.1", echo.port, mine.enter) == "connected"
        _wait_accepts(proxy, 1)
        assert proxy.accepted[0].original is None
    finally:
        mine.close()
        other.close()
        proxy.close()


def test_asyncio_peername_of_a_dual_stack_listener(echo: EchoServer) -> None:
    """A listener on :: shows IPv4 peers and its own address as ::ffff:a.b.c.d."""
    require_root()
    listener = socket.socket(socket.AF_INET6)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::", 0))
    listener.listen()
    port = listener.getsockname()[1]
    got: list[object] = []

    def accept() -> None:
        conn, peer = listener.accept()
        with conn:
            got.append(r.original_destination(peer, conn.getsockname()))

    try:
        with Redirector.create(port) as r:
            t = threading.Thread(target=accept)
            t.start()
            assert try_connect("127.0.0.1", echo.port, r.enter) == "connected"
            t.join(10)
        assert got == [("127.0.0.1", echo.port)]
    finally:
        listener.close()

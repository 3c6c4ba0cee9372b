"""Per-run refused destinations and the allowlist, with real clients and servers: a refused
destination fails at connect with ECONNREFUSED, and the run counts it. So does a local port
nothing listens on, left to the kernel with ``pass_closed`` (record, passthrough)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.redirect.conftest import RelayProxy, free_port, try_connect
from tests.support.services import wait_port
from trproxy.redirect import Redirector

pytestmark = [pytest.mark.root, pytest.mark.slow]

REDIS_PING = r"""
import sys, redis
from redis.backoff import NoBackoff
from redis.retry import Retry
client = redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), socket_timeout=10,
                     retry=Retry(NoBackoff(), 0))  # one connect per ping: counts are exact
try:
    print(client.ping())
except redis.ConnectionError as e:
    print(e)
"""


@pytest.fixture
def http_server(tmp_path) -> Iterator[int]:
    (tmp_path / "hello.txt").write_text("hello\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "::",
                             "--directory", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port("127.0.0.1", port, proc=proc)
        yield port
    finally:
        proc.kill()
        proc.wait()


def _in(r: Redirector, *cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, preexec_fn=r.enter, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **(env or {})), check=False)


def _redis(r: Redirector, host: str, port: int) -> str:
    return _in(r, sys.executable, "-c", REDIS_PING, host, str(port)).stdout.strip()


def _psql(r: Redirector, pg, host: str) -> subprocess.CompletedProcess:
    return _in(r, "psql", "-X", "-A", "-t", "-h", host, "-p", str(pg.port), "-U", pg.user,
               "-d", pg.dbname, "-c", "select 40 + 2", env={"PGPASSWORD": pg.password})


def _curl(r: Redirector, host: str, port: int) -> subprocess.CompletedProcess:
    return _in(r, "curl", "-sS", "-v", f"http://{host}:{port}/hello.txt")


def test_refused_destinations_fail_at_connect(
    redirected: Redirector, proxy: RelayProxy, redis_server, postgres_server
) -> None:
    port = redis_server.port
    assert _redis(redirected, "127.0.0.1", port) == "True"  # through the proxy to the server
    redirected.refuse([("127.0.0.1", port)])
    # Loopback is one place: refusing 127.0.0.1:P refuses ::1:P and localhost:P too, and
    # the unspecified addresses, which connect to loopback.
    for host in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::"):
        assert "Error 111 connecting" in _redis(redirected, host, port), host
    cli = _in(redirected, "redis-cli", "-h", "::1", "-p", str(port), "ping")
    assert "Connection refused" in cli.stdout + cli.stderr
    # Other destinations are untouched.
    assert _psql(redirected, postgres_server, "127.0.0.1").stdout == "42\n"
    before = redirected.refused()
    assert set(before) == {("127.0.0.1", port), ("::1", port), ("0.0.0.0", port), ("::", port)}
    for host in ("127.0.0.1", "::ffff:127.0.0.1", "::1"):
        assert try_connect(host, port, redirected.enter) == "ECONNREFUSED"
    after = redirected.refused()
    assert after[("127.0.0.1", port)] - before[("127.0.0.1", port)] == 2
    assert after[("::1", port)] - before[("::1", port)] == 1


def test_allow_only_refuses_everything_else(
    redirected: Redirector, proxy: RelayProxy, redis_server, postgres_server, http_server
) -> None:
    redirected.allow_only([("::1", redis_server.port)])  # recorded as ::1 ...
    assert _redis(redirected, "127.0.0.1", redis_server.port) == "True"  # ... dialed as 127.0.0.1
    assert _redis(redirected, "::1", redis_server.port) == "True"
    assert _redis(redirected, "0.0.0.0", redis_server.port) == "True"  # connects to loopback
    pg = _psql(redirected, postgres_server, "127.0.0.1")
    assert pg.returncode != 0 and "Connection refused" in pg.stderr, pg.stderr
    curl = _curl(redirected, "127.0.0.1", http_server)
    assert curl.returncode == 7 and "Connection refused" in curl.stderr, curl.stderr
    assert redirected.refused() == {("127.0.0.1", postgres_server.port): 1, ("127.0.0.1", http_server): 1}
    # More allowed destinations can be added; refuse() wins over allow_only().
    redirected.allow_only([("127.0.0.1", http_server), ("127.0.0.1", postgres_server.port)])
    assert _curl(redirected, "localhost", http_server).stdout == "hello\n"
    redirected.refuse([("127.0.0.1", postgres_server.port)])
    redirected.allow_only([("127.0.0.1", postgres_server.port)])
    assert "Connection refused" in _psql(redirected, postgres_server, "::1").stderr
    assert redirected.refused()[("::1", postgres_server.port)] == 1
    # The run's own servers are not redirected, so never refused.
    own = _in(redirected, sys.executable, "-c",
              "import socket; s=socket.create_server(('127.0.0.1', 0)); "
              "socket.create_connection(s.getsockname()); print('own ok')")
    assert own.stdout == "own ok\n", own.stderr


def test_refusals_are_per_run(redirected: Redirector, proxy: RelayProxy, redis_server) -> None:
    redirected.refuse([("127.0.0.1", redis_server.port)])
    other_proxy = RelayProxy.start()
    try:
        with Redirector.create(other_proxy.port) as other:
            other_proxy.redirector = other
            assert _redis(other, "127.0.0.1", redis_server.port) == "True"
            assert "Error 111 connecting" in _redis(redirected, "127.0.0.1", redis_server.port)
            assert other.refused() == {}
            assert redirected.refused() == {("127.0.0.1", redis_server.port): 1}
    finally:
        other_proxy.close()


@pytest.fixture
def passing_closed(proxy: RelayProxy) -> Iterator[Redirector]:
    """A Redirector for ``proxy`` that leaves local ports nothing listens on to the kernel."""
    r = Redirector.create(proxy.port, pass_closed=True)
    proxy.redirector = r
    yield r
    r.close()


LOCAL = ("127.0.0.1", "127.0.0.5", "::1", "::ffff:127.0.0.1", "0.0.0.0", "::")


def _accepted(proxy: RelayProxy, n: int) -> list[tuple[str, int] | None]:
    """The original destinations of the proxy's first ``n`` connections, once it has
    accepted them (a connect completes before the proxy's accept)."""
    deadline = time.monotonic() + 20
    while len(proxy.accepted) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return [a.original for a in proxy.accepted]


def _listener(host: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(8)
    return s


def test_closed_local_ports_refuse_as_direct(
    passing_closed: Redirector, proxy: RelayProxy, redis_server
) -> None:
    """A local port nothing listens on refuses as without trproxy (no connection reaches
    the proxy); once something listens, the connect is redirected as usual. Every outcome
    equals the direct one, address and family included."""
    r, port = passing_closed, free_port()
    for host in LOCAL:
        assert try_connect(host, port) == "ECONNREFUSED"
        assert try_connect(host, port, r.enter) == "ECONNREFUSED", host
    assert proxy.accepted == []
    # per peer the kernel connected: 0.0.0.0 and :: connect to loopback, mapped is IPv4
    assert r.closed() == {("127.0.0.1", port): 3, ("127.0.0.5", port): 1, ("::1", port): 2}
    assert r.reached() == {} and r.refused() == {}
    cli = _in(r, "redis-cli", "-p", str(port), "ping")
    assert "Connection refused" in cli.stdout + cli.stderr
    assert "Error 111 connecting" in _redis(r, "localhost", port)
    before = r.closed()
    with _listener("127.0.0.1", port):  # only there: the others still refuse, as direct
        for host in LOCAL:
            expected = "ECONNREFUSED" if host in ("127.0.0.5", "::1", "::") else "connected"
            assert try_connect(host, port) == expected
            assert try_connect(host, port, r.enter) == expected, host
    with _listener("::", port):  # dual-stack: every local address
        for host in LOCAL:
            assert try_connect(host, port, r.enter) == "connected", host
    assert _accepted(proxy, 3 + len(LOCAL)) == [
        ("127.0.0.1", port), ("127.0.0.1", port), ("0.0.0.0", port),
        *((host.removeprefix("::ffff:"), port) for host in LOCAL)]
    after = r.closed()
    assert {d: after[d] - before.get(d, 0) for d in after if after[d] != before.get(d)} == {
        ("127.0.0.5", port): 1, ("::1", port): 2}
    assert r.reached() == {}
    assert _redis(r, "127.0.0.1", redis_server.port) == "True"  # listening: redirected


def test_closed_ports_reach_the_proxy_without_the_flag(
    redirected: Redirector, proxy: RelayProxy
) -> None:
    """Replay's redirect (no ``pass_closed``): nothing listens by design, the proxy
    answers every destination."""
    port = free_port()
    assert try_connect("127.0.0.1", port, redirected.enter) == "connected"
    assert _accepted(proxy, 1) == [("127.0.0.1", port)]
    assert redirected.closed() == {}

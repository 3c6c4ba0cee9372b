"""Per-run refused destinations and the allowlist, with real clients and servers: a refused
destination fails at connect with ECONNREFUSED, and the run counts it."""

from __future__ import annotations

import os
import subprocess
import sys
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
    # Loopback is one place: refusing 127.0.0.1:P refuses ::1:P and localhost:P too.
    for host in ("127.0.0.1", "::1", "localhost"):
        assert "Error 111 connecting" in _redis(redirected, host, port), host
    cli = _in(redirected, "redis-cli", "-h", "::1", "-p", str(port), "ping")
    assert "Connection refused" in cli.stdout + cli.stderr
    # Other destinations are untouched.
    assert _psql(redirected, postgres_server, "127.0.0.1").stdout == "42\n"
    before = redirected.refused()
    assert set(before) == {("127.0.0.1", port), ("::1", port)}  # as dialed (mapped as IPv4)
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

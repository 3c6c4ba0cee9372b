"""Postgres clients that ask for TLS (SSLRequest) against a real server that has TLS.

With TLS interception on (the default), record mode forwards the SSLRequest; when the
server says 'S', trproxy answers 'S', terminates TLS with the client (our CA, trusted
through the ``PGSSLROOTCERT`` trproxy puts in the child's environment), speaks TLS to
the server, and records the plaintext inside (``metadata.tls``). Replay answers 'S'
itself when the recording was TLS and serves the plaintext inside TLS, else 'N' as the
server did. With ``--no-tls`` the SSLRequest is answered 'N' as before.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.proc import run_trproxy
from tests.support.services import PostgresServer
from trproxy.tls.ca import trproxy_home

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)

PASSWORD = "s3cret-pw"
ENV = {"PGPASSWORD": PASSWORD}
# the server's own view: is TLS on, and did *this* connection arrive over TLS
CHECKS = ["-c", "select 'plain' || 'text', current_setting('ssl')",
          "-c", "select ssl from pg_stat_ssl where pid = pg_backend_pid()"]
OVER_TLS = ["plaintext|on", "t"]

ASYNCPG = """
import asyncio, sys, asyncpg
async def main():
    conn = await asyncpg.connect(sys.argv[1], ssl="require")
    row = await conn.fetchrow("select current_setting('ssl') as setting, (select ssl from pg_stat_ssl "
                              "where pid = pg_backend_pid()) as tls, $1::int + 1 as n", 41)
    print(dict(row))  # ssl="require": no TLS, no connection
    await conn.close()
asyncio.run(main())
"""

PSYCOPG = """
import sys, psycopg
with psycopg.connect(sys.argv[1]) as conn:
    row = conn.execute("select current_setting('ssl'), (select ssl from pg_stat_ssl "
                       "where pid = pg_backend_pid())").fetchone()
    print(row, conn.pgconn.ssl_in_use)
"""


@pytest.fixture
def server():
    server = PostgresServer(ssl=True, password=PASSWORD).start()
    yield server
    server.destroy()


def psql(server: PostgresServer, sslmode: str, host: str = "127.0.0.1", extra: str = "") -> list[str]:
    dsn = f"host={host} port={server.port} user=trproxy dbname=trproxy sslmode={sslmode} {extra}"
    return ["psql", "-X", "-A", "-t", dsn.strip(), *CHECKS]


def record(tmp_path: Path, cmd: list[str], *options: str) -> subprocess.CompletedProcess:
    return run_trproxy("record", "--dir", str(tmp_path), *options, "--", *cmd, env=ENV)


def replay(tmp_path: Path, cmd: list[str], *options: str) -> subprocess.CompletedProcess:
    return run_trproxy("replay", "--dir", str(tmp_path), *options, "--", *cmd, env=ENV)


def assert_replays_the_same(tmp_path: Path, cmd: list[str],
                            recorded: subprocess.CompletedProcess) -> None:
    """Replay ``cmd`` (the server is gone): the same output, and nothing missed."""
    replayed = replay(tmp_path, cmd)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == recorded.stdout
    assert "trproxy: 0 misses" in replayed.stderr


def mocks(tmp_path: Path) -> str:
    return (tmp_path / "test-set-0" / "mocks.yaml").read_text()


def requests(tmp_path: Path) -> list:
    return [(d["spec"]["summary"], d["spec"]["request"]) for d in yaml.safe_load_all(mocks(tmp_path)) if d]


def test_prefer_client_gets_tls_end_to_end_and_is_recorded_in_plaintext(tmp_path, server):
    cmd = psql(server, "prefer")
    direct = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **ENV))
    assert direct.stdout.split() == OVER_TLS, direct.stderr
    recorded = record(tmp_path, cmd)
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout.split() == OVER_TLS  # the server saw TLS, from trproxy
    text = mocks(tmp_path)
    assert "plain' || 'text" in text and PASSWORD not in text and "SSLRequest" not in text
    server.destroy()
    assert_replays_the_same(tmp_path, cmd, recorded)


def test_without_tls_interception_ssl_requests_are_declined(tmp_path, server):
    prefer = record(tmp_path, psql(server, "prefer"), "--no-tls")
    assert prefer.returncode == 0, prefer.stderr
    assert prefer.stdout.split() == ["plaintext|on", "f"]  # plaintext through trproxy
    require = record(tmp_path / "require", psql(server, "require"), "--no-tls")
    assert require.returncode != 0
    assert "server does not support SSL, but SSL was required" in require.stderr
    server.destroy()
    replayed = replay(tmp_path, psql(server, "prefer"), "--no-tls")
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == prefer.stdout
    assert "trproxy: 0 misses" in replayed.stderr


def test_psql_sslmode_require_is_recorded_inside_tls_and_replayed(tmp_path, server):
    cmd = [*psql(server, "require"), "-c", r"\conninfo"]  # \conninfo: the client's TLS, client-side
    recorded = record(tmp_path / "tls", cmd)
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout.split("\n")[:2] == OVER_TLS
    assert "SSL connection (protocol: TLSv1.3" in recorded.stdout
    plaintext = record(tmp_path / "plain", psql(server, "prefer"), "--no-tls")
    assert plaintext.returncode == 0, plaintext.stderr
    # the same exchanges as a plaintext session: TLS leaves no trace in the recording
    assert requests(tmp_path / "tls") == requests(tmp_path / "plain")
    assert PASSWORD not in mocks(tmp_path / "tls")
    assert "tls: true" in mocks(tmp_path / "tls") and "tls: true" not in mocks(tmp_path / "plain")
    server.destroy()
    assert_replays_the_same(tmp_path / "tls", cmd, recorded)  # the client had TLS in replay too


def test_a_server_without_tls_is_replayed_without_tls(tmp_path):
    """Replay answers an SSLRequest as the recorded server did: 'N' when the recording
    was plaintext (a prefer client stays in plaintext, a require client is refused)."""
    plain = PostgresServer(password=PASSWORD).start()
    try:
        cmd = [*psql(plain, "prefer"), "-c", r"\conninfo"]
        recorded = record(tmp_path, cmd)
        assert recorded.returncode == 0, recorded.stderr
        assert recorded.stdout.split("\n")[:2] == ["plaintext|off", "f"]  # no TLS at the server
    finally:
        plain.destroy()
    assert "tls: true" not in mocks(tmp_path)
    replayed = replay(tmp_path, cmd)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == recorded.stdout and "SSL connection" not in replayed.stdout
    require = replay(tmp_path, psql(plain, "require"))
    assert require.returncode != 0
    assert "server does not support SSL, but SSL was required" in require.stderr


def test_asyncpg_ssl_require_is_recorded_and_replayed(tmp_path, server):
    cmd = [sys.executable, "-c", ASYNCPG, f"postgresql://trproxy:{PASSWORD}@127.0.0.1:{server.port}/trproxy"]
    recorded = record(tmp_path, cmd)
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout == "{'setting': 'on', 'tls': True, 'n': 42}\n"
    assert PASSWORD not in mocks(tmp_path)
    server.destroy()
    assert_replays_the_same(tmp_path, cmd, recorded)


@pytest.mark.parametrize("client", ["psql, host=localhost", "psycopg, host=127.0.0.1"])
def test_verify_full_clients_trust_our_ca_through_the_environment(tmp_path, server, client):
    """The certificate carries the name the client checks: the SNI (localhost), else the
    destination IP (libpq matches IP SANs); the root is trproxy's PGSSLROOTCERT."""
    if client.startswith("psql"):
        cmd, expected = psql(server, "verify-full", host="localhost"), "plaintext|on\nt\n"
    else:
        dsn = f"host=127.0.0.1 port={server.port} user=trproxy dbname=trproxy sslmode=verify-full"
        cmd, expected = [sys.executable, "-c", PSYCOPG, dsn], "('on', True) True\n"
    ours = str(trproxy_home() / "trproxy-ca-cert.pem")  # what trproxy's environment points at
    direct = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **ENV, PGSSLROOTCERT=ours))
    assert direct.returncode != 0 and "certificate verify failed" in direct.stderr  # it does verify
    recorded = record(tmp_path, cmd)
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout == expected
    server.destroy()
    assert_replays_the_same(tmp_path, cmd, recorded)


def test_a_client_refusing_our_certificate_is_reported(tmp_path, server):
    own_root = f"sslrootcert={server.datadir / 'data' / 'server.crt'}"  # trusts the real server only
    recorded = record(tmp_path, psql(server, "verify-ca", extra=own_root))
    assert recorded.returncode == 2  # psql's status: it could not connect
    assert "certificate verify failed" in recorded.stderr
    assert "note: 127.0.0.1 refused our certificate" in recorded.stderr


def test_upstream_certificate_is_verified_against_tls_ca_only(tmp_path, server):
    cmd = psql(server, "require", host="localhost")  # SNI localhost: the server's CN
    trusted = record(tmp_path / "trusted", cmd, "--tls-ca", str(server.datadir / "data" / "server.crt"))
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout.split() == OVER_TLS
    other = tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=other", "-keyout", tmp_path / "other.key", "-out", other], check=True, capture_output=True)
    refused = record(tmp_path / "refused", cmd, "--tls-ca", str(other))
    assert refused.returncode != 0
    assert f"note: TLS to 127.0.0.1:{server.port} failed" in refused.stderr \
        or f"note: TLS to [::1]:{server.port} failed" in refused.stderr, refused.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr


def test_direct_tls_clients_are_replayed(tmp_path, server):
    """libpq 17+ ``sslnegotiation=direct``: a ClientHello with ALPN "postgresql" and no
    SSLRequest. PostgreSQL 15 cannot accept it (so recording it fails, reported); a
    recording made with SSLRequest replays to it: the plaintext inside is the same."""
    dsn = f"host=127.0.0.1 port={server.port} user=trproxy dbname=trproxy sslmode=require"
    command = [sys.executable, "-c", PSYCOPG]
    recorded = record(tmp_path, [*command, dsn + " sslnegotiation=postgres"])
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout == "('on', True) True\n"
    direct = record(tmp_path / "direct", [*command, dsn + " sslnegotiation=direct"])
    assert direct.returncode != 0
    assert f"note: TLS to 127.0.0.1:{server.port} failed" in direct.stderr
    server.destroy()
    assert_replays_the_same(tmp_path, [*command, dsn + " sslnegotiation=direct"], recorded)

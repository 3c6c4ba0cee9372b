"""PostgreSQL through the real CLI: ``trproxy record`` real clients against a real server,
stop the server, ``trproxy replay`` the same programs, and compare what they printed.

Clients (``tests/protocols/postgres/pg_scenario.py``): psycopg 3 (pipeline, COPY, binary,
prepared), asyncpg (prepared statements, binary codecs, type introspection, COPY, a
cursor, a pool), psycopg2, SQLAlchemy, and psql. Each runs with the eBPF redirect (root;
CI requires it) and with the documented no-eBPF fallback (``--no-redirect --forward``).
"""

from __future__ import annotations

import os
import sys

import pytest
import yaml

from tests.support.proc import record_then_replay
from tests.support.services import PostgresServer

pytestmark = pytest.mark.slow

ROOT_ONLY = [pytest.mark.root,
             pytest.mark.skipif(os.geteuid() != 0, reason="the eBPF redirect needs root")]
MODES = [pytest.param("ebpf", marks=ROOT_ONLY), "forward"]


def scenario(client: str, password: str = "trproxy"):  # type: ignore[no-untyped-def]
    return lambda port: [sys.executable, "-m", "tests.protocols.postgres.pg_scenario", client,
                         "127.0.0.1", str(port), password]


def documents(mocks: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(mocks) if d]


@pytest.mark.parametrize("client", ["psycopg", "asyncpg", "psycopg2", "sqlalchemy"])
@pytest.mark.parametrize("mode", MODES)
def test_clients_replay_what_they_recorded(tmp_path, postgres_server, mode: str, client: str) -> None:
    recorded, replayed, mocks = record_then_replay(tmp_path, postgres_server, scenario(client), mode)
    assert recorded.stdout.strip(), recorded.stderr
    assert replayed.stdout == recorded.stdout
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr
    docs = documents(mocks)
    assert {d["kind"] for d in docs} == {"postgres"}
    startups = [d for d in docs if d["spec"]["summary"].startswith("startup")]
    assert startups and all(d["spec"]["lifetime"] == "session" for d in startups)
    assert "<redacted>" in mocks and "c=biws" not in mocks  # SCRAM never reaches disk
    if client == "psycopg":
        assert "error 42P01" in recorded.stdout
        assert "CopyData" in mocks and "CopyInResponse" in mocks and "CopyOutResponse" in mocks
    if client == "asyncpg":
        assert "typeinfo_tree" in mocks  # the enum made asyncpg introspect its types
        assert "binary: int4" in mocks


PSQL = """
CREATE TABLE t (i int, s varchar);
INSERT INTO t VALUES (42, 'forty-two'), (86, 'eighty-six');
SELECT * FROM t ORDER BY i;
INSERT INTO t VALUES (now());
COPY t TO STDOUT;
SELECT count(*) FROM t;
"""


@pytest.mark.parametrize("mode", MODES)
def test_psql_replays_what_it_recorded(tmp_path, postgres_server, mode: str) -> None:
    script = tmp_path / "script.sql"
    script.write_text(PSQL)

    def command(port: int) -> list[str]:  # one Query per statement; psql goes on after errors
        return ["psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(port), "-U", "trproxy",
                "-d", "trproxy", "-f", str(script)]

    env = {"PGPASSWORD": "trproxy", "PGSSLMODE": "prefer"}  # SSLRequest: trproxy says N
    recorded, replayed, mocks = record_then_replay(tmp_path, postgres_server, command, mode, env=env)
    assert "42|forty-two" in recorded.stdout and "ERROR:" in recorded.stderr
    assert "86\teighty-six" in recorded.stdout and recorded.stdout.rstrip().endswith("2")
    assert replayed.stdout == recorded.stdout
    assert replayed.stderr.count("ERROR:") == recorded.stderr.count("ERROR:") == 1
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr
    # record mode declines the SSLRequest itself (so a TLS-offering server stays
    # recordable) and replay does the same: it never reaches the recording
    assert "SSLRequest" not in mocks and "startup trproxy@trproxy" in mocks


def test_passwords_stay_out_and_replay_takes_any(tmp_path) -> None:
    server = PostgresServer(password="e2e-Secret-pw").start()
    try:
        recorded, replayed, mocks = record_then_replay(
            tmp_path, server, scenario("psycopg2", "e2e-Secret-pw"), "forward",
            replay_command=scenario("psycopg2", "another-password"))
    finally:
        server.destroy()
    assert recorded.stdout == replayed.stdout == "[('a', 1), ('b', 2)]\n"
    assert "e2e-Secret-pw" not in mocks
    assert "<redacted>" in mocks


def test_a_miss_is_a_postgres_error_and_the_connection_stays_usable(tmp_path, postgres_server) -> None:
    def recorded_cmd(port: int) -> list[str]:
        return [sys.executable, "-c", "import psycopg, sys; c = psycopg.connect(sys.argv[1], "
                "autocommit=True); print(c.execute('SELECT 40 + 2').fetchone())",
                f"postgresql://trproxy:trproxy@127.0.0.1:{port}/trproxy"]

    recorded, replayed, _ = record_then_replay(tmp_path, postgres_server, recorded_cmd, "forward",
                                               replay_command=scenario("miss"))
    assert recorded.stdout == "(42,)\n"
    lines = replayed.stdout.splitlines()
    assert lines[0].startswith("error XX000 trproxy: no recording for Query SELECT 'this was never")
    assert lines[1] == "(42,)"
    assert "trproxy: 1 misses" in replayed.stderr, replayed.stderr

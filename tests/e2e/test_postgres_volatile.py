"""Values the app generates in SQL (issue 12), with real PostgreSQL and clients: a uuid4
primary key in Bind parameters and a SQL literal, returned by ``INSERT ... RETURNING``
(DataRow rewritten with the live id), a random token and an epoch; asyncpg's savepoint
names, whose counter differs between runs. Recorded, replayed with the server stopped:
the same output, 0 misses. An ordinary value that differs still misses, the diff
showing what was masked."""

from __future__ import annotations

import sys

import pytest

from tests.e2e.test_postgres import record_then_replay
from tests.e2e.test_redis_volatile import misses
from tests.support.proc import run_trproxy
from tests.support.services import free_port

pytestmark = pytest.mark.slow


def app(scenario: str, *args: str):  # type: ignore[no-untyped-def]
    return lambda port: [sys.executable, "-m", "tests.e2e.apps.pg_volatile", scenario, "127.0.0.1",
                         str(port), *args]


def test_a_uuid_primary_key_returned_and_selected(tmp_path, postgres_server) -> None:
    recorded, replayed, mocks = record_then_replay(tmp_path, postgres_server, app("psycopg"), "forward")
    assert recorded.stdout.splitlines() == ["returned True UUID", "selected apple True True", "literal 1"]
    assert "volatile:" in mocks
    assert replayed.stdout == recorded.stdout, replayed.stderr
    assert misses(replayed.stderr) == 0, replayed.stderr


def test_a_registration_with_a_salted_password_hash_then_a_login(tmp_path, postgres_server) -> None:
    recorded, replayed, mocks = record_then_replay(tmp_path, postgres_server, app("register"), "forward")
    assert recorded.stdout == "login True False\n", recorded.stderr
    assert "volatile: ['scrypt:32768:8:1$" in mocks or "- scrypt:32768:8:1$" in mocks
    assert replayed.stdout == recorded.stdout, replayed.stderr
    assert misses(replayed.stderr) == 0, replayed.stderr


def test_asyncpg_savepoints_whose_counter_moved(tmp_path, postgres_server) -> None:
    recorded, replayed, mocks = record_then_replay(tmp_path, postgres_server, app("asyncpg", "0"), "forward",
                                                   replay_command=app("asyncpg", "5"))
    assert recorded.stdout.splitlines() == ["returned True", "rolled back to the savepoint", "n 1"]
    assert "__asyncpg_savepoint_" in mocks
    assert replayed.stdout == recorded.stdout, replayed.stderr
    assert misses(replayed.stderr) == 0, replayed.stderr


def test_an_ordinary_value_that_differs_still_misses(tmp_path, postgres_server) -> None:
    port, recording = free_port(), tmp_path / "rec"
    forward = ["--no-redirect", "--forward", f"127.0.0.1:{port}=127.0.0.1:{postgres_server.port}"]
    recorded = run_trproxy("record", "--dir", str(recording), *forward, "--", *app("psycopg")(port))
    postgres_server.stop()
    assert recorded.returncode == 0, recorded.stderr
    replayed = run_trproxy("replay", "--dir", str(recording), *forward, "--", *app("psycopg", "pear")(port))
    assert replayed.returncode != 0 and "no recording for Execute INSERT" in replayed.stderr
    assert misses(replayed.stderr) == 1
    diff = replayed.stderr[replayed.stderr.index("closest to"):]
    assert "-    - apple\n" in diff and "+    - pear\n" in diff, diff  # what differs
    assert "value: <volatile>" in diff, diff  # the uuid (a binary parameter), masked

"""PostgreSQL replay fidelity through the real CLI, with real servers and clients
(``tests/e2e/apps/pg_fidelity.py``): backend identity (psycopg, asyncpg), startup
settings reported back, more than 32,767 parameters, logins matched on credentials
(cleartext and MD5: hashed, never in clear on disk), passwords in SQL redacted.
"""

from __future__ import annotations

import re
import sys

import pytest

from tests.e2e.test_postgres import MODES, documents, record_then_replay
from tests.support.proc import run_trproxy
from tests.support.services import PostgresServer, free_port

pytestmark = pytest.mark.slow


def app(scenario: str, *args: str):  # type: ignore[no-untyped-def]
    return lambda port: [sys.executable, "-m", "tests.e2e.apps.pg_fidelity", scenario, "127.0.0.1",
                         str(port), *args]


def misses(stderr: str) -> int:
    found = re.findall(r"^trproxy: (\d+) misses", stderr, re.MULTILINE)
    assert len(found) == 1, stderr
    return int(found[0])


@pytest.mark.parametrize("mode", MODES)
def test_a_backend_terminated_by_its_pid_however_connections_are_ordered(tmp_path, postgres_server, mode):
    """psycopg: the victim's pid (BackendKeyData, pg_backend_pid(), its NOTIFY) is one pid;
    another connection terminates it; replayed with the connections opened the other way
    round, so each live connection starts as the other recorded backend."""
    recorded, replayed, mocks = record_then_replay(
        tmp_path, postgres_server, app("kill-psycopg", "trproxy", "victim-first"), mode,
        replay_command=app("kill-psycopg", "trproxy", "killer-first"))
    assert recorded.stdout.splitlines() == [
        "BackendKeyData agrees with pg_backend_pid(): True", "terminated: True",
        "heard the victim: [('jobs', 'bye', True)]", "victim: AdminShutdown 57P01"]
    assert replayed.stdout == recorded.stdout
    assert misses(replayed.stderr) == 0
    keys = [r["BackendKeyData"] for d in documents(mocks) for r in d["spec"]["responses"]
            if "BackendKeyData" in r]
    assert len(keys) == 2 and {k["secret_key"] for k in keys} == {"<redacted>"}


def test_a_backend_that_terminates_itself_hangs_up_at_replay_too(tmp_path, postgres_server):
    """The server answers FATAL without ReadyForQuery and closes: replay closes too (libpq
    would wait for ReadyForQuery forever), and PQreset logs in again."""
    recorded, replayed, _ = record_then_replay(tmp_path, postgres_server, app("suicide", "trproxy"), "forward")
    assert recorded.stdout.splitlines() == ["FATAL_ERROR None BAD", "after reset OK b'42'"]
    assert replayed.stdout == recorded.stdout
    assert misses(replayed.stderr) == 0


def test_asyncpg_pool_reports_one_pid_per_connection_and_terminates_by_it(tmp_path, postgres_server):
    recorded, replayed, _ = record_then_replay(tmp_path, postgres_server, app("kill-asyncpg", "trproxy"),
                                               "forward")
    assert recorded.stdout.splitlines() == ["get_server_pid() agrees with pg_backend_pid(): True"] * 2 + [
        "terminated: True"]
    assert replayed.stdout == recorded.stdout
    assert misses(replayed.stderr) == 0


def test_startup_settings_are_reported_as_the_server_would(tmp_path, postgres_server):
    """Recorded with some settings, replayed with others: the replay reports what the real
    server reported to those others (asked of it directly before it stopped)."""
    live = app("settings", "trproxy", "replayed app", "SQL,DMY", "Europe/Paris", "LATIN1")
    direct = run_trproxy("run", "--", *live(postgres_server.port))  # passthrough: the server itself
    assert direct.returncode == 0, direct.stderr
    recorded, replayed, _ = record_then_replay(
        tmp_path, postgres_server, app("settings", "trproxy", "recorded app", "ISO", "UTC", "UTF8"),
        "forward", replay_command=live)
    assert "asyncpg ['recorded app', 'ISO, MDY', 'UTC', 'UTF8'" in recorded.stdout
    assert "psycopg ['replayed app', 'SQL, DMY'" in direct.stdout and "'LATIN1'" in direct.stdout
    assert "asyncpg ['replayed app', 'SQL, DMY', 'Europe/Paris'" in direct.stdout
    assert replayed.stdout == direct.stdout
    assert misses(replayed.stderr) == 0


def test_more_than_32767_parameters(tmp_path, postgres_server):
    recorded, replayed, mocks = record_then_replay(tmp_path, postgres_server, app("big-bind", "trproxy"),
                                                   "forward")
    assert recorded.stdout.splitlines() == ["matched (32800,)", "parameters described COMMAND_OK 32800"]
    assert replayed.stdout == recorded.stdout
    assert misses(replayed.stderr) == 0 and "capture stopped" not in recorded.stderr
    described = [r["ParameterDescription"] for d in documents(mocks) for r in d["spec"]["responses"]
                 if "ParameterDescription" in r]
    assert [len(d) for d in described] == [32800]


@pytest.mark.parametrize("auth", ["password", "md5"])
def test_logins_are_matched_on_their_credentials(tmp_path, auth):
    """A recorded failed login is served to the same wrong password, the recorded login to
    the right one; a password nobody recorded is refused (and reported). The passwords are
    on disk only as scrypt hashes."""
    server = PostgresServer(auth=auth, password="Right-pw-1").start()
    try:
        if auth == "md5":  # the stored password must be MD5 for the server to ask MD5
            server.psql("SET password_encryption = 'md5'; ALTER ROLE trproxy PASSWORD 'Right-pw-1'")
        recording = tmp_path / "rec"
        port = free_port()
        forward = ["--no-redirect", "--forward", f"127.0.0.1:{port}=127.0.0.1:{server.port}"]
        recorded = run_trproxy("record", "--dir", str(recording), *forward, "--",
                               *app("logins", "Wrong-pw-0", "Right-pw-1")(port))
        assert recorded.stdout.splitlines() == ["refused 28P01", "ok (42,)"], recorded.stderr
    finally:
        server.destroy()
    mocks = (recording / "test-set-0" / "mocks.yaml").read_text()
    assert "Right-pw-1" not in mocks and "Wrong-pw-0" not in mocks
    assert not re.search(r"md5[0-9a-f]{32}", mocks)
    requests = [item for d in documents(mocks) for item in d["spec"].get("request") or []]  # events have none
    hashes = [i["PasswordMessage"] for i in requests if "PasswordMessage" in i]
    assert len(hashes) == 2 and all(h.startswith("<redacted:scrypt:") for h in hashes)
    asked = "AuthenticationMD5Password" if auth == "md5" else "AuthenticationCleartextPassword"
    assert sum(asked in r for d in documents(mocks) for r in d["spec"]["responses"]) == 2

    def replay(*passwords: str):  # type: ignore[no-untyped-def]
        return run_trproxy("replay", "--dir", str(recording), *forward, "--", *app("logins", *passwords)(port))

    same = replay("Wrong-pw-0", "Right-pw-1")
    assert same.stdout == recorded.stdout and misses(same.stderr) == 0, same.stderr
    other = replay("Other-pw-2")
    assert other.stdout == "refused 28P01\n" and misses(other.stderr) == 1
    assert "password trproxy@trproxy" in other.stderr
    if auth == "password":  # MD5 answers depend on the salt the connection was asked with
        swapped = replay("Right-pw-1", "Wrong-pw-0")
        assert swapped.stdout == "ok (42,)\nrefused 28P01\n" and misses(swapped.stderr) == 0


def test_passwords_set_in_sql_stay_out_and_any_new_one_replays(tmp_path, postgres_server):
    recorded, replayed, mocks = record_then_replay(
        tmp_path, postgres_server, app("set-passwords", "trproxy", "New-Secret"), "forward",
        replay_command=app("set-passwords", "trproxy", "Another-Secret"))
    assert recorded.stdout == replayed.stdout == "roles (1,)\n"
    assert misses(replayed.stderr) == 0
    assert "New-Secret" not in mocks and "SCRAM-SHA-256$" not in mocks
    assert "ALTER USER app PASSWORD '<redacted>'" in mocks
    assert "password '<redacted>')" in mocks


def test_psql_passwords_in_scripts(tmp_path, postgres_server):
    port_literal = str(postgres_server.port)
    script = tmp_path / "script.sql"
    script.write_text(
        "CREATE ROLE reader LOGIN PASSWORD 'Psql-Secret-1';\n"
        "CREATE EXTENSION IF NOT EXISTS dblink;\n"
        f"SELECT dblink_connect('c', 'host=127.0.0.1 port={port_literal} dbname=trproxy user=trproxy "
        "password=trproxy');\n"
        "SELECT * FROM dblink('c', 'SELECT 6 * 7') AS t(n int);\n")

    def psql(port: int) -> list[str]:
        return ["psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(port), "-U", "trproxy", "-d",
                "trproxy", "-f", str(script)]

    recorded, replayed, mocks = record_then_replay(tmp_path, postgres_server, psql, "forward",
                                                   env={"PGPASSWORD": "trproxy"})
    assert recorded.stdout.splitlines()[-1] == "42" and replayed.stdout == recorded.stdout
    assert misses(replayed.stderr) == 0
    assert "Psql-Secret-1" not in mocks and "password=trproxy" not in mocks
    assert "password=<redacted>" in mocks


def test_scram_logins_replay_as_password_logins(tmp_path, postgres_server):
    """SCRAM cannot be replayed; replay asks for the password in cleartext: any password
    logs in (nothing recorded can check it), a client without one fails as against the
    server, and libpq reports the password as used."""
    def psql(port: int) -> list[str]:
        return ["psql", "-X", "-A", "-t", "-w", "-h", "127.0.0.1", "-p", str(port), "-U", "trproxy",
                "-d", "trproxy", "-c", "SELECT 6 * 7"]

    recording, port = tmp_path / "rec", free_port()
    forward = ["--no-redirect", "--forward", f"127.0.0.1:{port}=127.0.0.1:{postgres_server.port}"]
    recorded = run_trproxy("record", "--dir", str(recording), *forward, "--", *psql(port),
                           env={"PGPASSWORD": "trproxy"})
    assert recorded.stdout == "42\n", recorded.stderr
    postgres_server.stop()
    other = run_trproxy("replay", "--dir", str(recording), *forward, "--", *psql(port),
                        env={"PGPASSWORD": "not-the-recorded-one"})
    assert other.stdout == "42\n" and misses(other.stderr) == 0
    none = run_trproxy("replay", "--dir", str(recording), *forward, "--", *psql(port), env={"PGPASSWORD": ""})
    assert none.returncode != 0 and "no password supplied" in none.stderr, none.stderr

"""MySQL/MariaDB through the real CLI: ``trproxy record`` real clients against a real
MariaDB, stop the server, ``trproxy replay`` the same programs, and compare what they
printed (``tests/protocols/mysql/my_scenario.py``: PyMySQL, mysqlclient,
mysql-connector-python with server-side prepared statements, SQLAlchemy with a pool),
and the ``mysql`` command-line client.
"""

from __future__ import annotations

import os
import sys

import pytest
import yaml

from tests.support.proc import record_then_replay as replay_twice
from tests.support.proc import run_trproxy
from tests.support.services import MariaDBServer, free_port

pytestmark = pytest.mark.slow

ROOT_ONLY = [pytest.mark.root,
             pytest.mark.skipif(os.geteuid() != 0, reason="the eBPF redirect needs root")]


def record_then_replay(tmp_path, server: MariaDBServer, command, mode: str = "forward"):  # type: ignore[no-untyped-def]
    """``tests.support.proc.record_then_replay``, the session's server started again
    afterwards for the next test; also the recorded documents."""
    try:
        recorded, replayed, mocks = replay_twice(tmp_path, server, command, mode)
    finally:
        server.start()
    return recorded, replayed, [d for d in yaml.safe_load_all(mocks) if d], mocks


def scenario(client: str):  # type: ignore[no-untyped-def]
    return lambda port: [sys.executable, "-m", "tests.protocols.mysql.my_scenario", client,
                         "127.0.0.1", str(port)]


@pytest.mark.parametrize("client", ["pymysql", "mysqlclient", "connector", "sqlalchemy"])
def test_clients_replay_what_they_recorded(tmp_path, mariadb_server, client: str) -> None:
    recorded, replayed, docs, mocks = record_then_replay(tmp_path, mariadb_server, scenario(client))
    assert recorded.stdout.strip(), recorded.stderr
    assert replayed.stdout == recorded.stdout
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr
    assert {d["kind"] for d in docs} == {"mysql"}
    logins = [d for d in docs if d["spec"]["summary"].startswith("login")]
    assert logins and all(d["spec"]["lifetime"] == "session" for d in logins)
    assert "auth_response: <redacted>" in mocks
    if client == "connector":  # server-side prepared statements: the binary protocol
        assert "COM_STMT_EXECUTE" in mocks and "binary: true" in mocks
        assert "'binary rows'" in recorded.stdout
    if client in ("pymysql", "mysqlclient"):
        assert "'error' 1146" in recorded.stdout and "code: 1146" in mocks
        assert "'multi' [((1,),)" in recorded.stdout  # three results of one COM_QUERY


def test_a_fresh_uuid_each_run_is_paired_with_the_recorded_one(tmp_path, mariadb_server) -> None:
    recorded, replayed, docs, _mocks = record_then_replay(tmp_path, mariadb_server, scenario("volatile"))
    assert recorded.stdout == replayed.stdout == "'same key back' True 7\n"
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr
    assert any(d["spec"].get("volatile") for d in docs)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="the eBPF redirect needs root")
def test_pymysql_with_the_ebpf_redirect(tmp_path, mariadb_server) -> None:
    recorded, replayed, _docs, _mocks = record_then_replay(tmp_path, mariadb_server,
                                                           scenario("pymysql"), mode="ebpf")
    assert replayed.stdout == recorded.stdout and recorded.stdout.strip()
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr


CLI_SQL = ("CREATE TABLE IF NOT EXISTS t_cli (i INT, s VARCHAR(20)); DELETE FROM t_cli; "
           "INSERT INTO t_cli VALUES (42, 'forty-two'), (86, NULL); "
           "SELECT * FROM t_cli ORDER BY i; SELECT @@version IS NOT NULL AS v;")


def test_mysql_command_line_client(tmp_path, mariadb_server) -> None:
    def command(port: int) -> list[str]:
        return ["mysql", "--no-defaults", "--protocol=TCP", "-h127.0.0.1", f"-P{port}",
                "-utrproxy", "-ptrproxy", "trproxy", "-e", CLI_SQL]

    recorded, replayed, docs, _mocks = record_then_replay(tmp_path, mariadb_server, command)
    assert "forty-two" in recorded.stdout and "NULL" in recorded.stdout
    # the mariadb CLI asks for TLS when the server offers it: intercepted both times
    assert docs and all(d["spec"]["metadata"].get("tls") for d in docs)
    assert replayed.stdout == recorded.stdout
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr


def test_an_injected_deadlock_reaches_the_mysql_client(tmp_path, mariadb_server) -> None:
    port = free_port()
    options = ["--no-redirect", "--forward", f"127.0.0.1:{port}=127.0.0.1:{mariadb_server.port}"]
    command = ["mysql", "--no-defaults", "--protocol=TCP", "-h127.0.0.1", f"-P{port}", "-utrproxy",
               "-ptrproxy", "trproxy", "-e", "SELECT 6 * 7"]
    recorded = run_trproxy("record", "--dir", str(tmp_path), *options, "--", *command)
    assert recorded.returncode == 0 and "42" in recorded.stdout, recorded.stderr
    replayed = run_trproxy("replay", "--dir", str(tmp_path), *options,
                           "--fault", "mysql error=1213 match=SELECT", "--", *command)
    assert replayed.returncode != 0
    assert "ERROR 1213 (40001)" in replayed.stderr and "Deadlock found" in replayed.stderr
    assert "1 faults injected:" in replayed.stderr


def test_a_query_never_recorded_gets_an_error_and_a_report_line(tmp_path, mariadb_server) -> None:
    def command(port: int) -> list[str]:
        sql = "SELECT 1" if not (tmp_path / "rec").exists() else "SELECT 2"
        return ["mysql", "--no-defaults", "--protocol=TCP", "-h127.0.0.1", f"-P{port}",
                "-utrproxy", "-ptrproxy", "trproxy", "-e", sql]

    recording = tmp_path / "rec"
    port = free_port()
    options = ["--no-redirect", "--forward", f"127.0.0.1:{port}=127.0.0.1:{mariadb_server.port}"]
    recorded = run_trproxy("record", "--dir", str(recording), *options, "--", *command(port))
    assert recorded.returncode == 0, recorded.stderr
    replayed = run_trproxy("replay", "--dir", str(recording), *options, "--", *command(port))
    assert replayed.returncode != 0
    assert "1105" in replayed.stderr and "trproxy: no recording for Query SELECT 2" in replayed.stderr
    assert "1 miss" in replayed.stderr and "SELECT 1" in replayed.stderr  # the nearest candidate


def test_tls_asked_for_after_the_greeting_is_intercepted_and_recorded(tmp_path, mariadb_server) -> None:
    """A client that requires TLS (SSLRequest) of a server that has it: record mode forwards
    the request and intercepts the TLS on both sides, recording the plaintext inside;
    replay's greeting offers TLS because the recording was TLS, and replay intercepts it."""
    recorded, replayed, docs, mocks = record_then_replay(tmp_path, mariadb_server, scenario("pymysql_tls"))
    assert "'tls' [('Ssl_version', True)]" in recorded.stdout  # the server saw TLS
    assert replayed.stdout == recorded.stdout
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr
    assert all(d["spec"]["metadata"].get("tls") for d in docs if d["kind"] == "mysql")
    assert "SELECT 40 + 2 AS n" in mocks

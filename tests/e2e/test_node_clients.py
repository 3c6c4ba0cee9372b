"""Clients trproxy's authors did not write, in another language: Node.js programs
(``tests/node/*.js``, the packages ``package-lock.json`` pins, installed by ``make setup``)
with node-postgres (a Pool; over TLS too), ioredis (RESP2 and RESP3), kafkajs (a consumer group) and
mysql2 (prepared statements). Each program runs against the real server, then under
``trproxy record``, then, the server stopped, under ``trproxy replay``: it prints the same
JSON lines all three times, and replay is ``--strict``: no miss, no recording left unused,
no answer out of its recorded order, and the program exits 0 each time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.support.kafka_broker import KafkaBroker
from tests.support.proc import ROOT, record_then_replay, run_trproxy
from tests.support.services import MariaDBServer, PostgresServer

pytestmark = pytest.mark.slow

NODE_DIR = ROOT / "tests" / "node"
ROOT_ONLY = [pytest.mark.root,
             pytest.mark.skipif(os.geteuid() != 0, reason="the eBPF redirect needs root")]
MODES = [pytest.param("ebpf", marks=ROOT_ONLY), "forward"]


@pytest.fixture(autouse=True)
def _node_clients() -> None:
    """The Node packages are there (``make setup`` runs ``npm ci``): a clear failure if not.
    Per test, not per module: a module fixture would keep the tests on one xdist worker."""
    assert shutil.which("node"), "node not found: run `make setup`"
    for package in ("pg", "ioredis", "kafkajs", "mysql2"):
        assert (NODE_DIR / "node_modules" / package).is_dir(), f"{package} missing: run `make setup`"


def node(script: str, *args: str) -> list[str]:
    return ["node", str(NODE_DIR / script), *args]


def direct(command: list[str], env: dict | None = None) -> str:
    """The program against the real server, without trproxy: what it prints."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **(env or {})))
    assert done.returncode == 0, done.stderr
    return done.stdout


def results(stdout: str) -> list[list]:
    return [json.loads(line) for line in stdout.splitlines()]


def same_three_times(tmp_path, server, command, mode: str,  # type: ignore[no-untyped-def]
                     strict: tuple[str, ...] = ("--strict",)) -> tuple[list[list], str]:
    """Direct, recorded, replayed: the same lines; replay ``--strict`` (it fails on a miss,
    a recording never used, an answer out of its recorded order); the results."""
    alone = direct(command(server.port))
    recorded, replayed, mocks = record_then_replay(tmp_path, server, command, mode,
                                                   replay_options=strict)
    assert recorded.stdout == alone, recorded.stderr
    assert replayed.stdout == recorded.stdout, replayed.stderr
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr
    assert "raw bytes" not in recorded.stderr + replayed.stderr
    return results(recorded.stdout), mocks


@pytest.mark.parametrize("mode", MODES)
def test_node_postgres_pool(tmp_path, postgres_server, mode: str) -> None:
    # not --strict: the Pool lends its connections in another order at replay now and
    # then, and a transaction's BEGIN is then reported served out of its recorded order
    # (the answers are the same); a matcher rule that swapped them broke psycopg's suite
    got, mocks = same_three_times(tmp_path, postgres_server,
                                  lambda port: node("pg_app.js", "127.0.0.1", str(port)), mode, strict=())
    by_name = {line[0]: line[1:] for line in got}
    assert by_name["unique"][0]["code"] == "23505" and by_name["in tx"][0]["code"] == "22012"
    assert by_name["types"][0]["b"] == "000102feff" and by_name["types"][0]["bi"] == "9007199254740993"
    assert by_name["notify"] == [["node_events", "item added"]]
    assert "kind: postgres" in mocks and "summary: Execute SELECT price FROM node_items" in mocks
    assert "event: push" in mocks  # the NotificationResponse, replayed after the pg_notify


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="the eBPF redirect needs root")
def test_node_postgres_over_tls_trusts_trproxys_ca(tmp_path) -> None:
    """node-postgres with ``ssl: true`` verifies the server's certificate: recording, it
    gets trproxy's, trusted through the ``NODE_EXTRA_CA_CERTS`` trproxy gives the app, and
    replay serves the plaintext recorded inside TLS, inside TLS again."""
    server = PostgresServer(ssl=True).start()
    try:
        alone = direct(node("pg_app.js", "127.0.0.1", str(server.port)), env={"PG_TLS": "any"})
        env = {"PG_TLS": "verify", "TRPROXY_HOME": str(tmp_path / "home")}
        recorded, replayed, mocks = record_then_replay(
            tmp_path, server, lambda port: node("pg_app.js", "127.0.0.1", str(port)), "ebpf",
            env=env)  # not --strict: see test_node_postgres_pool
    finally:
        server.destroy()
    assert recorded.stdout == alone, recorded.stderr
    assert replayed.stdout == recorded.stdout, replayed.stderr
    assert "tls: true" in mocks and "startup trproxy@trproxy" in mocks


@pytest.mark.parametrize("protocol", ["2", "3"])
@pytest.mark.parametrize("mode", MODES)
def test_ioredis(tmp_path, redis_server, mode: str, protocol: str) -> None:
    got, mocks = same_three_times(tmp_path, redis_server,
                                  lambda port: node("redis_app.js", "127.0.0.1", str(port), protocol), mode)
    assert got[0] == ["set", "OK", "hello", None] and got[-1] == ["quit", "OK"]
    assert ["message", ["news", "hi"]] in got and ["pmessage", ["n*", "nation", "hey"]] in got
    assert ["lua", 52, 54] in got
    assert "request: [evalsha," in mocks and "request: [eval," in mocks  # defineCommand, eval
    assert ("request: [hello, '3']" in mocks) == (protocol == "3")


def test_mysql2(tmp_path, mariadb_server: MariaDBServer) -> None:
    try:
        got, mocks = same_three_times(tmp_path, mariadb_server,
                                      lambda port: node("mysql_app.js", "127.0.0.1", str(port)), "forward")
    finally:
        mariadb_server.start()  # the session's server, for the next test
    by_name = {line[0]: line[1:] for line in got}
    assert by_name["duplicate"][:3] == ["ER_DUP_ENTRY", 1062, "23000"]
    assert by_name["missing table"][:2] == ["ER_NO_SUCH_TABLE", 1146]
    assert "COM_STMT_EXECUTE" in mocks


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="the eBPF redirect needs root")
def test_kafkajs_producer_and_consumer_group(tmp_path) -> None:
    """The mock broker cannot come back on its port: the direct run and the recording
    each use a topic and group of their own (``tag``), and replay runs the recorded one."""
    recording = tmp_path / "rec"
    broker = KafkaBroker().start()
    try:
        alone = direct(node("kafka_app.js", broker.bootstrap, "direct"))
        command = node("kafka_app.js", broker.bootstrap, "rec")
        recorded = run_trproxy("record", "--dir", str(recording), "--", *command, timeout=180)
    finally:
        broker.stop()
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout == alone.replace("node-direct", "node-rec"), recorded.stderr
    got = results(recorded.stdout)
    assert [line[:4] for line in got[:3]] == [["ack", "node-rec", 0, str(i)] for i in range(3)]
    assert [line[:3] for line in got[3:6]] == [["consumed", 0, str(i)] for i in range(3)]
    replayed = run_trproxy("replay", "--dir", str(recording), "--strict", "--", *command, timeout=180)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == recorded.stdout
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr
    assert "raw bytes" not in recorded.stderr + replayed.stderr
    mocks = (recording / "test-set-0" / "mocks.yaml").read_text()
    for api in ("Produce", "JoinGroup", "SyncGroup", "Fetch", "OffsetCommit", "LeaveGroup"):
        assert f"api: {api}" in mocks, api

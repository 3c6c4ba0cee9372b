"""Fault injection through the real CLI: record a retrying client against its real server,
stop the server, replay with ``--fault``: the client meets the failure its library retries
on (psycopg on 40001, redis-py on LOADING, aiokafka on NOT_LEADER_OR_FOLLOWER, urllib3 on
503 with Retry-After), retries, and ends with the output it had against the real server;
the run's summary and report list the fault.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.kafka_broker import KafkaBroker
from tests.support.proc import ROOT, run_trproxy
from tests.support.services import free_port, wait_port

pytestmark = [pytest.mark.slow, pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="the eBPF redirect needs root")]

APP = [sys.executable, str(ROOT / "tests" / "e2e" / "apps" / "retrying_clients.py")]


def attempts(stderr: str) -> int:
    return int(next(line for line in stderr.splitlines() if line.startswith("attempts: "))
               .split()[1])


def record_then_fault(tmp_path, protocol: str, address: str, stop, *faults: str):  # type: ignore[no-untyped-def]
    recording = tmp_path / "rec"
    try:
        recorded = run_trproxy("record", "--dir", str(recording), "--", *APP, protocol, address,
                               timeout=180)
    finally:
        stop()
    assert recorded.returncode == 0, recorded.stderr
    assert attempts(recorded.stderr) in (0, 1)
    options = [option for rule in faults for option in ("--fault", rule)]
    replayed = run_trproxy("replay", "--dir", str(recording), *options, "--", *APP, protocol,
                           address, timeout=180)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == recorded.stdout  # recovered: the same result as unfailed
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr
    report = json.loads(json.dumps(_report(recording)))
    return recorded, replayed, report


def _report(recording) -> dict:  # type: ignore[no-untyped-def]
    import yaml

    path = sorted((recording / "reports").glob("run-*-replay.yaml"))[-1]
    return yaml.safe_load(path.read_text())


def test_psycopg_retries_a_serialization_failure(tmp_path, postgres_server):
    _, replayed, report = record_then_fault(
        tmp_path, "postgres", f"127.0.0.1:{postgres_server.port}", postgres_server.stop,
        "postgres error=40001 match='SELECT 40' first=1")
    assert replayed.stdout == "42\n"
    assert attempts(replayed.stderr) == 2
    assert "1 faults injected:" in replayed.stderr
    assert [(f["protocol"], f["fault"]) for f in report["faults"]] == [("postgres", "error 40001")]


def test_redis_py_retries_loading(tmp_path, redis_server):
    _, replayed, report = record_then_fault(
        tmp_path, "redis", f"127.0.0.1:{redis_server.port}", redis_server.stop,
        "redis error=LOADING match=GET first=2")
    assert replayed.stdout == "value-1\n"
    assert attempts(replayed.stderr) == 3
    assert [f["fault"] for f in report["faults"]] == ["error LOADING"] * 2


def test_aiokafka_retries_not_leader(tmp_path):
    broker = KafkaBroker().start()
    _, replayed, report = record_then_fault(
        tmp_path, "kafka", broker.bootstrap, broker.stop,
        "kafka error=NOT_LEADER_OR_FOLLOWER match=Produce first=1")
    assert replayed.stdout == "faults 0 0\n"
    assert [(f["request"], f["fault"]) for f in report["faults"]] == [
        ("Produce faults", "error NOT_LEADER_OR_FOLLOWER")]


def test_urllib3_retries_503_after_retry_after(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "answer").write_text("forty-two\n")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", "-b", "127.0.0.1", "-d",
                               str(site), str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    wait_port("127.0.0.1", port, proc=server)

    def stop() -> None:
        server.terminate()
        server.wait(10)

    _, replayed, report = record_then_fault(tmp_path, "http", f"127.0.0.1:{port}", stop,
                                            "http error=503 retry_after=1 first=1")
    assert replayed.stdout == "200 forty-two\n"
    assert attempts(replayed.stderr) == 2
    assert [f["fault"] for f in report["faults"]] == ["error 503"]


def test_a_postgres_hang_is_released_by_the_clients_cancel(tmp_path, postgres_server):
    """``hang`` never answers, as a stuck server; psycopg's ``cancel()`` (a CancelRequest
    on a new connection) ends it with 57014, as the server would, and the connection goes
    on with its recorded answers."""
    app = [sys.executable, str(ROOT / "tests" / "e2e" / "apps" / "pg_cancel.py"), postgres_server.dsn, "2"]
    recording = tmp_path / "rec"
    try:
        recorded = run_trproxy("record", "--dir", str(recording), "--", *app, timeout=180)
    finally:
        postgres_server.stop()
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout.splitlines() == ["(1,)", "('slow', '')", "(2,)"]
    replayed = run_trproxy("replay", "--dir", str(recording), "--fault", "postgres hang match=slow",
                           "--", *app, timeout=120)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.splitlines() == ["(1,)", "canceled: 57014", "(2,)"]
    assert "1 faults injected" in replayed.stderr and "trproxy: 0 misses" in replayed.stderr, replayed.stderr

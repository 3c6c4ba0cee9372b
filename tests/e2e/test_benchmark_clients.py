"""Load generators as apps: ``redis-benchmark`` and ``pgbench`` recorded with the eBPF
redirect against real servers, the servers stopped, then replayed with no misses.

They are the clients ``make bench`` drives, and good stress for matching: thousands of
identical requests (``SET key:__rand_int__``) over several connections, counters read
in order (``INCR``), pgbench's random account ids (made repeatable by ``--random-seed``)
and its ``BEGIN``/``END`` pairs spread over concurrent connections.
"""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess

import pytest

from tests.support.proc import run_trproxy
from tests.support.services import PostgresServer, RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"
REDIS_TESTS = ["SET", "GET", "INCR", "LPUSH"]


def misses(stderr: str) -> int:
    """The number in the run summary's ``trproxy: N misses`` line (exactly one such line)."""
    found = re.findall(r"^trproxy: (\d+) misses", stderr, re.MULTILINE)
    assert len(found) == 1, stderr
    return int(found[0])


def counted(stderr: str, verb: str, protocol: str) -> int:
    """``trproxy: recorded N postgres`` / ``trproxy: served N postgres from M mocks``."""
    found = re.search(rf"^trproxy: {verb} (\d+) {protocol}\b", stderr, re.MULTILINE)
    assert found, stderr
    return int(found.group(1))


def test_redis_benchmark_replays_without_the_server(tmp_path, redis_server: RedisServer) -> None:
    recording = str(tmp_path / "rec")
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(redis_server.port), "-n", "2000",
           "-c", "5", "-t", "set,get,incr,lpush", "--csv"]

    recorded = run_trproxy("record", "--dir", recording, "--", *cmd)
    assert recorded.returncode == 0, recorded.stderr
    assert misses(recorded.stderr) == 0
    assert redis_server.cli("llen", "mylist").strip() == "2000"  # it really reached the server
    redis_server.stop()

    replayed = run_trproxy("replay", "--dir", recording, "--", *cmd)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert misses(replayed.stderr) == 0, replayed.stderr
    rows = {r[0]: float(r[1]) for r in csv.reader(io.StringIO(replayed.stdout)) if r and r[0] != "test"}
    assert sorted(rows) == sorted(REDIS_TESTS), replayed.stdout
    assert all(rps > 0 for rps in rows.values()), replayed.stdout
    # every command of the 4 x 2000 was answered from the recording (plus CONFIG GETs)
    assert counted(replayed.stderr, "served", "redis") >= 4 * 2000
    assert counted(replayed.stderr, "served", "redis") == counted(recorded.stderr, "recorded", "redis")


@pytest.mark.parametrize("workload", [["-S"], ["-c", "2"]], ids=["select-only", "tpcb-like"])
def test_pgbench_replays_without_the_server(tmp_path, postgres_server: PostgresServer,
                                            workload: list[str]) -> None:
    env = {"PGPASSWORD": postgres_server.password}
    conn = ["-h", "127.0.0.1", "-p", str(postgres_server.port), "-U", postgres_server.user]
    init = subprocess.run([PGBENCH, "-i", "-q", *conn, postgres_server.dbname], capture_output=True,
                          text=True, env=dict(os.environ, **env), timeout=120)
    assert init.returncode == 0, init.stderr
    recording = str(tmp_path / "rec")
    # the seed makes pgbench draw the same account ids, so it sends the same statements
    cmd = [PGBENCH, *workload, "-t", "200", "--random-seed=7", *conn, postgres_server.dbname]

    recorded = run_trproxy("record", "--dir", recording, "--", *cmd, env=env)
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    assert misses(recorded.stderr) == 0
    clients = 2 if "-c" in workload else 1
    processed = f"number of transactions actually processed: {200 * clients}/{200 * clients}"
    assert processed in recorded.stdout, recorded.stdout
    postgres_server.stop()

    replayed = run_trproxy("replay", "--dir", recording, "--", *cmd, env=env)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert misses(replayed.stderr) == 0, replayed.stderr
    assert processed in replayed.stdout, replayed.stdout
    assert "number of failed transactions: 0 " in replayed.stdout, replayed.stdout
    assert counted(replayed.stderr, "served", "postgres") == counted(recorded.stderr, "recorded", "postgres")

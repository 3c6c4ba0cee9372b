"""Per-test scoping through the real CLI: ``trproxy record -- pytest`` a whole suite
(``tests/e2e/apps/scoped_suite.py``: redis-py and psycopg against real servers, every test
with the same keys and SQL and values of its own), stop the servers, and replay parts of
it (``-k``) and the whole in reverse order. The pytest plugin tells the proxy where each
test starts and ends; without it (``-p no:trproxy``) a subset gets other tests' answers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.proc import run_trproxy, suite_dir

# the eBPF redirect, as `trproxy replay -- pytest` runs (the control channel does not depend
# on it; one mode keeps this test short: it runs pytest under trproxy five times)
pytestmark = [pytest.mark.slow, pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="the eBPF redirect needs root")]
SUITE = Path(__file__).parent / "apps" / "scoped_suite.py"


def test_a_recorded_suite_replays_in_parts_and_in_any_order(tmp_path, redis_server, postgres_server) -> None:
    suite = suite_dir(tmp_path, SUITE, "test_scoped.py")
    recording = tmp_path / "rec"
    pg = postgres_server
    env = {"REDIS_PORT": str(redis_server.port), "PG_DSN": pg.dsn}

    def trproxy(mode: str, *pytest_args: str, **extra: str):  # type: ignore[no-untyped-def]
        return run_trproxy(mode, "--dir", str(recording), "--", sys.executable, "-m", "pytest",
                           "-p", "no:cacheprovider", "-v", *pytest_args, cwd=suite, env={**env, **extra})

    recorded = trproxy("record")
    redis_server.stop()
    postgres_server.stop()
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    assert "6 passed" in recorded.stdout

    docs = [d for d in yaml.safe_load_all((recording / "test-set-0" / "mocks.yaml").read_text()) if d]
    tags = {tuple(d["spec"]["metadata"].get("tests", [])): d for d in docs}
    assert ("pytest:test_scoped.py::test_redis[blue-3]",) in tags
    assert ("pytest:test_scoped.py::test_postgres[plum-9]",) in tags
    assert ("pytest-fixture:r",) in tags and ("pytest-fixture:test_scoped.py::db",) in tags
    untagged = [d["spec"]["request"] for d in docs if not d["spec"]["metadata"].get("tests")]
    assert ["INCRBY", "suite:imports", "1"] in untagged  # at collection, outside any test

    runs = {
        "whole, reversed": trproxy("replay", SUITE_REVERSED="1"),
        "subset, reversed": trproxy("replay", "-k", "blue or plum", SUITE_REVERSED="1"),
    }
    for name, run in runs.items():
        assert run.returncode == 0, f"{name}:\n{run.stdout}{run.stderr}"
        assert "trproxy: 0 misses" in run.stderr, f"{name}: {run.stderr}"
    passed = {name: [line.split()[0].split("::")[1] for line in run.stdout.splitlines() if " PASSED" in line]
              for name, run in runs.items()}
    assert passed == {  # the last recorded test runs first
        "whole, reversed": ["test_postgres[plum-9]", "test_postgres[pear-7]", "test_postgres[apple-5]",
                            "test_redis[blue-3]", "test_redis[green-2]", "test_redis[red-1]"],
        "subset, reversed": ["test_postgres[plum-9]", "test_redis[blue-3]"]}

    # the same subset without the plugin: one pool, and the first recordings go to the wrong tests
    unscoped = trproxy("replay", "-k", "blue or plum", "-p", "no:trproxy")
    assert unscoped.returncode == 1, unscoped.stdout
    assert "2 failed" in unscoped.stdout and "trproxy: 0 misses" in unscoped.stderr
    assert "assert [1, 1, 2] == [1, 2, 3]" in unscoped.stdout  # red's and green's INCRs
    assert "assert [('apple', 5)] == [('plum', 9)]" in unscoped.stdout

    # a test asking for what its recordings do not have: a miss reported under that test
    skewed = trproxy("replay", "-k", "plum", SUITE_SKEW="1")
    assert skewed.returncode == 1
    assert "[pytest:test_scoped.py::test_postgres[plum-9]] postgres" in skewed.stderr, skewed.stderr
    report = sorted((recording / "reports").glob("run-*-replay.yaml"))[-1]
    per_test = yaml.safe_load(report.read_text())["misses_per_test"]
    assert list(per_test) == ["pytest:test_scoped.py::test_postgres[plum-9]"], per_test

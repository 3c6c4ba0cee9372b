"""No silent wrong answers, end to end (real redis-server, real clients, real CLI through
eBPF): the report lists recordings never used and answers served out of their recorded
order, ``--strict`` fails such runs, a malformed recording gets a protocol-native error
and a reported miss, and the search for a big miss's nearest recordings is bounded."""

from __future__ import annotations

import os
import sys

import pytest
import yaml

from tests.support.proc import run_trproxy

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)


def _redis_py(port: int, *commands: str) -> list[str]:
    """One redis-py connection running ``commands`` (``execute_command`` arguments; an
    argument ``@N...`` is N times "v" then the rest: values too big for a command line)."""
    script = ("import redis, sys\n"
              "r = redis.Redis(port=int(sys.argv[1]), protocol=2)\n"
              "def arg(a):\n"
              "    if not a.startswith('@'):\n"
              "        return a\n"
              "    n = a[1:].rstrip('abcdefghijklmnopqrstuvwxyz')\n"
              "    return 'v' * int(n) + a[1 + len(n):]\n"
              "for c in sys.argv[2:]:\n"
              "    try:\n"
              "        print(str(r.execute_command(*map(arg, c.split())))[:80])\n"
              "    except redis.ResponseError as e:\n"
              "        print('error:', str(e)[:200])\n")
    return [sys.executable, "-c", script, str(port), *commands]


def _record(tmp_path, server, *commands: str):  # type: ignore[no-untyped-def]
    out = run_trproxy("record", "--dir", str(tmp_path), "--", *_redis_py(server.port, *commands))
    assert out.returncode == 0, out.stderr
    return out


def test_unused_recordings_and_answers_out_of_order_are_reported_and_fail_strict(tmp_path,
                                                                                 redis_server):
    recorded = _record(tmp_path, redis_server, "SET a 1", "SET b 2", "INCR n", "GET a")
    redis_server.stop()
    # the app skipped INCR n, then asked GET a: no miss, but not what it did recording
    replay = ["replay", "--dir", str(tmp_path), "--"]
    skipped = run_trproxy(*replay, *_redis_py(redis_server.port, "SET a 1", "SET b 2", "GET a"))
    assert skipped.returncode == 0, skipped.stderr  # without --strict: reported only
    assert skipped.stdout.split() == ["True", "True", "b'1'"]
    assert "trproxy: 0 misses" in skipped.stderr
    assert "1 recordings never used:" in skipped.stderr and "INCR" in skipped.stderr
    assert "1 answers out of recorded order:" in skipped.stderr
    assert "GET served before INCR" in skipped.stderr
    report = yaml.safe_load(sorted((tmp_path / "reports").glob("run-*-replay.yaml"))[-1].read_text())
    assert [u["request"] for u in report["unused"]] == ["INCR"]
    assert report["out_of_order"][0]["skipped"][0]["request"] == "INCR"

    strict = run_trproxy("replay", "--strict", "--dir", str(tmp_path), "--",
                         *_redis_py(redis_server.port, "SET a 1", "SET b 2", "GET a"))
    assert strict.returncode == 1 and strict.stdout == skipped.stdout
    assert "--strict: the run fails: 1 recordings never used, 1 answers out of order" in strict.stderr

    same = run_trproxy("replay", "--strict", "--dir", str(tmp_path), "--",
                       *_redis_py(redis_server.port, "SET a 1", "SET b 2", "INCR n", "GET a"))
    assert same.returncode == 0, same.stderr
    assert same.stdout == recorded.stdout
    assert "never used" not in same.stderr and "out of recorded order" not in same.stderr

    missed = run_trproxy("run", "--mode", "replay", "--strict", "--dir", str(tmp_path), "--",
                         *_redis_py(redis_server.port, "SET a 1", "SET b 2", "INCR n", "GET zz"))
    assert missed.returncode == 1 and "1 misses" in missed.stderr


def test_a_malformed_recording_is_a_reported_miss_with_a_native_error(tmp_path, redis_server):
    _record(tmp_path, redis_server, "SET a 1", "GET a", "INCR n")
    redis_server.stop()
    mocks = tmp_path / "test-set-0" / "mocks.yaml"
    docs = list(yaml.safe_load_all(mocks.read_text()))
    by_summary = {d["spec"]["summary"]: d for d in docs}
    by_summary["GET"]["spec"]["responses"] = [{"int": "not a number"}]  # a wrong-typed field
    by_summary["INCR"]["spec"]["responses"] = [["x", {"map": 3}]]  # wrong-typed, nested
    mocks.write_text("".join("---\n" + yaml.safe_dump(d) for d in docs))
    out = run_trproxy("replay", "--dir", str(tmp_path), "--",
                      *_redis_py(redis_server.port, "SET a 1", "GET a", "INCR n"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "True"
    assert lines[1].startswith("error: trproxy: no recording for GET a: the recorded answer "
                               "cannot be replayed")
    assert lines[2].startswith("error: trproxy: no recording for INCR n: the recorded answer")
    assert "trproxy: 2 misses" in out.stderr
    # nested beyond any use: the loader refuses it (store/yamlio.py, MAX_DEPTH) with one
    # line naming the document, before anything is replayed
    by_summary["INCR"]["spec"]["responses"] = ["DEEP"]
    text = "".join("---\n" + yaml.safe_dump(d) for d in docs)
    mocks.write_text(text.replace("- DEEP", "- " + "[" * 990 + "x" + "]" * 990))
    deep = run_trproxy("replay", "--dir", str(tmp_path), "--",
                       *_redis_py(redis_server.port, "SET a 1", "GET a", "INCR n"))
    assert deep.returncode == 2 and deep.stdout == ""
    assert deep.stderr.strip().count("\n") == 0 and "nested deeper than" in deep.stderr \
        and "document 5" in deep.stderr


def test_a_big_request_that_misses_gets_a_bounded_nearest_search(tmp_path, redis_server):
    """A 1 MiB value that matches nothing: answered with the native error at once, the
    report names the nearest recording with a diff cut to a few KB, and the other
    requests of the run are served (the search runs off the event loop, with a deadline)."""
    _record(tmp_path, redis_server, f"SET big @{1 << 20}", "GET small")
    redis_server.stop()
    out = run_trproxy("replay", "--dir", str(tmp_path), "--",
                      *_redis_py(redis_server.port, f"SET big @{1 << 20}w", "GET small"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("error: trproxy: no recording for SET big")
    assert out.stdout.splitlines()[1] == "None"
    report = yaml.safe_load(sorted((tmp_path / "reports").glob("run-*-replay.yaml"))[-1].read_text())
    [miss] = report["misses"]
    assert miss["nearest"] and miss["nearest"][0].startswith("SET")
    assert len("".join(miss["nearest"])) < 50_000

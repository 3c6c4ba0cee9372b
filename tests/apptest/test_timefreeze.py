"""Time freezing with libfaketime, verified on a real Python child and its own children."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from trproxy.apptest.timefreeze import TimeFreeze, find_libfaketime

pytestmark = pytest.mark.skipif(find_libfaketime() is None, reason="libfaketime missing: make setup")

# The child answers each line on stdin with its clocks; "sleep" first sleeps 0.3 s.
CHILD = r"""
import datetime, json, subprocess, sys, threading, time
for line in sys.stdin:
    cmd = line.strip()
    out = {}
    if cmd == "sleep":
        m0, w0 = time.monotonic(), time.time()
        time.sleep(0.3)
        threading.Event().wait(0.1)
        out["slept_monotonic"], out["slept_wall"] = time.monotonic() - m0, time.time() - w0
    if cmd == "date":
        out["date"] = int(subprocess.run(["date", "+%s"], capture_output=True, text=True).stdout)
    out.update(time=time.time(), now=datetime.datetime.now(datetime.UTC).isoformat(),
               monotonic=time.monotonic())
    print(json.dumps(out), flush=True)
"""


class Child:
    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ask(self, cmd: str = "clock") -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"child died with {self.proc.poll()}"
        return json.loads(line)

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(10)


@pytest.fixture
def freeze(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return TimeFreeze(tmp_path / "state")


def test_wall_clock_follows_the_file_and_monotonic_runs_on(freeze):
    child = Child(freeze.child_env())
    try:
        real = child.ask()
        assert abs(real["time"] - time.time()) < 5  # offset 0 until a test sets it
        recorded = datetime(2001, 2, 3, 4, 5, 6, 250000, tzinfo=UTC)
        freeze.set_time(recorded)
        a = child.ask()
        assert abs(a["time"] - recorded.timestamp()) < 1.0
        assert a["now"].startswith("2001-02-03T04:05:0")
        assert 0 <= a["monotonic"] - real["monotonic"] < 5  # monotonic did not jump back 25 years
        time.sleep(0.5)
        b = child.ask()
        assert 0.45 < b["time"] - a["time"] < 1.5  # the faked clock advances in real time
        assert 0.45 < b["monotonic"] - a["monotonic"] < 1.5
        later = datetime(2030, 1, 1, tzinfo=UTC)
        freeze.set_time(later)  # the next test: a jump forward, monotonic unaffected
        c = child.ask()
        assert abs(c["time"] - later.timestamp()) < 1.0
        assert 0 <= c["monotonic"] - b["monotonic"] < 5
        freeze.set_time(None)
        assert abs(child.ask()["time"] - time.time()) < 5
    finally:
        child.close()


def test_sleep_threads_and_grandchildren_under_a_past_time(freeze):
    assert freeze.shim is not None, "the machine has a C compiler (clang from make setup)"
    freeze.set_time(datetime.now(UTC) - timedelta(days=400))
    child = Child(freeze.child_env())
    try:
        out = child.ask("sleep")
        assert 0.39 < out["slept_monotonic"] < 2 and 0.39 < out["slept_wall"] < 2
        out = child.ask("date")  # `date` run by the app sees the app's time (dynamic binary)
        assert abs(out["date"] - (time.time() - 400 * 86400)) < 5
    finally:
        child.close()


def test_without_the_shim_python_sleep_hits_the_libfaketime_bug(tmp_path):
    """Documents why the shim exists (libfaketime 0.9.10, wolfcw/libfaketime#426).
    If this starts failing, the installed libfaketime is fixed and the shim is optional."""
    freeze = TimeFreeze(tmp_path, fix_sleep=False)
    r = subprocess.run([sys.executable, "-c", "import time; time.sleep(0.01)"],
                       env=freeze.child_env(), capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "Invalid argument" in r.stderr
    assert any("EINVAL" in note for note in freeze.limits())


def test_env_drops_faketime_and_keeps_existing_preloads(freeze, tmp_path):
    env = freeze.child_env({"FAKETIME": "+1d", "PATH": "/usr/bin:/bin", "LD_PRELOAD": "/x/a.so"})
    assert "FAKETIME" not in env and env["FAKETIME_DONT_FAKE_MONOTONIC"] == "1"
    assert env["LD_PRELOAD"].split(":")[-2:] == [str(freeze.library), "/x/a.so"]
    assert freeze.env({})["LD_PRELOAD"].endswith("libfaketime.so.1")
    assert env["FAKETIME_TIMESTAMP_FILE"] == str(freeze.file)
    freeze.set_time(datetime(2020, 1, 1))  # naive means UTC
    offset = float(freeze.file.read_text())
    assert abs(offset - (datetime(2020, 1, 1, tzinfo=UTC) - datetime.now(UTC)).total_seconds()) < 5
    assert not list(freeze.file.parent.glob("*.tmp"))

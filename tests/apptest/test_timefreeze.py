"""Time freezing with the clock shim, verified on a real Python child and its own children."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from trproxy.apptest.timefreeze import ENV_FILE, TimeFreeze, TimeFreezeError, build_shim

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
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # built afresh from the source
    freeze = TimeFreeze(tmp_path / "state")
    yield freeze
    freeze.close()


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
    freeze.set_time(datetime.now(UTC) - timedelta(days=400))
    child = Child(freeze.child_env())
    try:
        out = child.ask("sleep")  # time.sleep, Event.wait: monotonic deadlines, untouched
        assert 0.39 < out["slept_monotonic"] < 2 and 0.39 < out["slept_wall"] < 2
        out = child.ask("date")  # `date` run by the app sees the app's time (dynamic binary)
        assert abs(out["date"] - (time.time() - 400 * 86400)) < 5
    finally:
        child.close()


# C clients of every entry point: the faked readings agree, and an absolute realtime sleep
# computed from the faked clock ends when it should (shifted back to the real clock)
C_CLIENT = r"""
#include <stdio.h>
#include <sys/time.h>
#include <time.h>
int main(void) {
    struct timespec rt, coarse, tai, got, mono0, mono1, deadline;
    struct timeval tv;
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_REALTIME_COARSE, &coarse);
    clock_gettime(CLOCK_TAI, &tai);
    timespec_get(&got, TIME_UTC);
    gettimeofday(&tv, NULL);
    time_t t = time(NULL);
    clock_gettime(CLOCK_MONOTONIC, &mono0);
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_nsec += 200000000;
    if (deadline.tv_nsec >= 1000000000) { deadline.tv_sec++; deadline.tv_nsec -= 1000000000; }
    clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &deadline, NULL);
    clock_gettime(CLOCK_MONOTONIC, &mono1);
    printf("%ld %ld %ld %ld %ld %ld %.3f\n", (long)rt.tv_sec, (long)coarse.tv_sec, (long)tai.tv_sec,
           (long)got.tv_sec, (long)tv.tv_sec, (long)t,
           (mono1.tv_sec - mono0.tv_sec) + (mono1.tv_nsec - mono0.tv_nsec) / 1e9);
    return 0;
}
"""


def test_every_realtime_entry_point_is_shifted_and_absolute_sleeps_end_on_time(freeze, tmp_path):
    exe = tmp_path / "client"
    subprocess.run(["cc", "-O1", "-x", "c", "-", "-o", str(exe)], input=C_CLIENT.encode(), check=True)
    native = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    assert abs(int(native[0]) - time.time()) < 5
    recorded = datetime(2003, 4, 5, 6, 7, 8, tzinfo=UTC)
    freeze.set_time(recorded)
    out = subprocess.run([str(exe)], env=freeze.child_env(), capture_output=True, text=True, check=True).stdout.split()
    rt, coarse, tai, got, tv, t = (int(v) for v in out[:6])
    for value in (rt, coarse, got, tv, t):
        assert abs(value - recorded.timestamp()) < 3, out
    assert abs(tai - recorded.timestamp()) < 60  # TAI runs ahead of UTC by the leap seconds
    assert 0.15 < float(out[6]) < 2, out  # slept 0.2 s, not 23 years (nor returned at once)


def test_offset_page_is_what_the_shim_reads(freeze):
    env = freeze.child_env({"PATH": "/usr/bin:/bin", "LD_PRELOAD": "/x/a.so"})
    assert env["LD_PRELOAD"].split(":") == [str(freeze.library), "/x/a.so"]
    assert freeze.env({})["LD_PRELOAD"] == str(freeze.library)
    assert env[ENV_FILE] == str(freeze.file)
    freeze.set_time(datetime(2020, 1, 1))  # naive means UTC
    expected = (datetime(2020, 1, 1, tzinfo=UTC) - datetime.now(UTC)).total_seconds()
    on_disk = int.from_bytes(freeze.file.read_bytes()[:8], "little", signed=True)
    assert on_disk == freeze.offset_ns and abs(on_disk / 1e9 - expected) < 5
    freeze.set_time(None)
    assert int.from_bytes(freeze.file.read_bytes()[:8], "little", signed=True) == 0


def test_the_clock_never_goes_back_between_tests(freeze):
    """Tests recorded 10 ms apart and replayed slower: the second starts at the clock the
    first left, not 0.5 s before it; a new run (reset) may go anywhere."""
    t1 = datetime.now(UTC) - timedelta(days=3)
    freeze.set_time(t1)
    first = freeze.offset_ns
    time.sleep(1.2)  # the first test took longer than the recorded gap
    freeze.set_time(t1 + timedelta(milliseconds=10))
    assert freeze.offset_ns == first  # not 1 s back
    freeze.set_time(t1 + timedelta(minutes=5))  # forward jumps are taken
    assert freeze.offset_ns > first + 250 * 10**9
    freeze.reset()
    freeze.set_time(t1)
    assert abs(freeze.offset_ns - first) <= 2 * 10**9


def test_no_compiler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, gcc or clang
    with pytest.raises(TimeFreezeError, match="no C compiler"):
        build_shim()

"""The benchmarks' command runner: every wait is bounded and a failure says what failed.

``python -m benchmarks proxy`` once sat until an outer 900 s timeout: a command that
does not end, or that leaves a process holding its output pipe, must not hold it up."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest

from benchmarks.common import BenchError, check, run


def test_a_process_left_behind_does_not_hold_up_the_run():
    start = time.monotonic()
    done = run(["sh", "-c", "sleep 120 & echo $!; echo done >&2"], timeout=60)
    left = int(done.stdout.split()[0])
    try:
        assert done.returncode == 0 and done.stderr == "done\n"
        assert time.monotonic() - start < 60  # it did not wait for the sleep holding stdout
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(left, signal.SIGKILL)


def test_a_command_that_does_not_end_is_stopped_and_named():
    with pytest.raises(BenchError, match=r"`sleep 120` exited -15: \(timed out after 1 s\)"):
        check(["sleep", "120"], timeout=1)


def test_a_failing_command_is_named_with_its_stderr():
    with pytest.raises(BenchError, match=r"`sh -c echo no-such-thing >&2; exit 3` exited 3: no-such-thing"):
        check(["sh", "-c", "echo no-such-thing >&2; exit 3"])
    assert check(["cat"], input="in\n").stdout == "in\n"

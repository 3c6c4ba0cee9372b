"""The app trproxy starts dies with trproxy (PR_SET_PDEATHSIG), and is spawned only from the
main thread (the signal follows the thread that forked)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.proc import alive
from trproxy.proxy import runner

ROOT = str(Path(__file__).resolve().parents[2])

PARENT = r"""
import subprocess, sys, time
from trproxy.proxy.runner import dies_with_us
child = subprocess.Popen(["sleep", "60"], preexec_fn=dies_with_us())
print(child.pid, flush=True)
time.sleep(60)
"""


def test_the_child_dies_with_its_parent() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=ROOT))
    assert parent.stdout
    child = int(parent.stdout.readline())
    try:
        assert alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 20
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(child)
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


def test_the_app_is_spawned_from_the_main_thread_only() -> None:
    errors: list[BaseException] = []

    def spawn() -> None:
        try:
            asyncio.run(runner._run_child(runner.RunOptions(command=["true"]), None))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)

    t = threading.Thread(target=spawn)
    t.start()
    t.join(30)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert "main thread" in str(errors[0])


def test_a_failed_recording_of_nothing_leaves_no_test_set(tmp_path: Path) -> None:
    """`record` of a command that does not exist (or an attach that fails) must not leave an
    empty newest test set for the next replay; a failed run that recorded keeps its set."""
    def record(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "trproxy.cli", "record", "--dir", str(tmp_path),
                               "--no-redirect", "--", *args], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)

    missing = record("/nonexistent/command")
    assert missing.returncode == 127, missing.stderr
    assert "recorded nothing" in missing.stderr and not (tmp_path / "test-set-0").exists()
    ok = record("true")
    assert ok.returncode == 0 and (tmp_path / "test-set-0" / "mocks.yaml").is_file(), ok.stderr

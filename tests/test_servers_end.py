"""Servers the tests start end with the test process (tests/support/services.ends_with_tests):
a pytest killed mid-run (a CI timeout, Ctrl-C twice) leaves no server or dockerd running."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

START = r"""
import sys, time
from tests.support import services
server = getattr(services, sys.argv[1])().start()
print(server.proc.pid, flush=True)
time.sleep(120)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.parametrize("server", ["RedisServer", "PostgresServer"])
def test_a_killed_test_process_leaves_no_server_running(server: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", START, server], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout
        pid = int(proc.stdout.readline())
        assert _running(pid)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(pid), f"{server} (pid {pid}) outlived the process that started it"

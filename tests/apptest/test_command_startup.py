"""`trproxy test` starts the app before it loads the recording (the app imports its own
modules meanwhile), and stops it whatever happens next: a run whose app never listens, and
one whose recording cannot be read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support.services import free_port
from trproxy.apptest import command
from trproxy.store.errors import FormatError

pytestmark = [pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)

TEST = """---
version: trproxy/v1
kind: http-test
name: test-1
spec:
  request: {{method: GET, url: 'http://127.0.0.1:{port}/health', http_version: HTTP/1.1, headers: [], body: ''}}
  response: {{status: 200, reason: OK, http_version: HTTP/1.1, headers: [], body: ''}}
  noise: []
  created: '2026-12-03T11:27:55.994467+00:00'
  port: {port}
"""
NEVER_LISTENS = [sys.executable, "-c", "import time; time.sleep(60)"]


def _recording(tmp_path: Path, mocks: str | None) -> Path:
    tests = tmp_path / "rec" / "test-set-0" / "tests"
    tests.mkdir(parents=True)
    (tests / "test-1.yaml").write_text(TEST.format(port=free_port()))
    if mocks is not None:
        (tests.parent / "mocks.yaml").write_text(mocks)
    return tmp_path / "rec"


def _watch(monkeypatch) -> tuple[list[str], list[subprocess.Popen]]:
    """What happens in which order: the app's start, the recording's load."""
    order: list[str] = []
    apps: list[subprocess.Popen] = []

    def popen(*args, **kwargs) -> subprocess.Popen:
        order.append("app started")
        apps.append(subprocess.Popen(*args, **kwargs))
        return apps[-1]

    build = command.build_context

    def build_context(*args, **kwargs):  # type: ignore[no-untyped-def]
        order.append("recording loaded")
        return build(*args, **kwargs)

    monkeypatch.setattr(command, "subprocess", SimpleNamespace(Popen=popen))
    monkeypatch.setattr(command, "build_context", build_context)
    return order, apps


def test_the_app_starts_before_the_recording_is_loaded_and_is_stopped_after(tmp_path, monkeypatch):
    rec = _recording(tmp_path, mocks=None)
    order, apps = _watch(monkeypatch)
    opts = command.TestOptions(command=NEVER_LISTENS, root=rec, startup_timeout=1, freeze_time=False)
    assert command.run_test_command(opts) == 1  # the app never listened: the test is an error
    assert order == ["app started", "recording loaded"]
    assert apps[0].returncode == -15  # SIGTERM'd, and reaped


def test_a_recording_that_cannot_be_read_fails_the_run_and_stops_the_app(tmp_path, monkeypatch):
    rec = _recording(tmp_path, mocks="---\nversion: trproxy/v1\nkind: [not, a, kind\n")
    order, apps = _watch(monkeypatch)
    opts = command.TestOptions(command=NEVER_LISTENS, root=rec, freeze_time=False)
    with pytest.raises(FormatError, match="mocks.yaml"):  # the CLI prints it on one line
        command.run_test_command(opts)
    assert order == ["app started", "recording loaded"]
    assert apps[0].returncode == -15

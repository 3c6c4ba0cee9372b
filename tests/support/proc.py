"""Running the real ``trproxy`` CLI in tests, and servers that tests talk through it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from .services import free_port, wait_port

TRPROXY = [sys.executable, "-m", "trproxy.cli"]
ROOT = Path(__file__).resolve().parents[2]
# a conftest.py for a suite under test: SUITE_REVERSED=1 runs its tests in reverse order
REVERSE = """
import os

def pytest_collection_modifyitems(items):
    if os.environ.get("SUITE_REVERSED"):
        items.reverse()
"""


def suite_dir(where: Path, module: Path, name: str) -> Path:
    """A pytest suite of its own in ``where/suite``: ``module`` as ``name``, the ``REVERSE``
    conftest and an empty pytest.ini (nothing of this repository's configuration)."""
    suite = where / "suite"
    suite.mkdir()
    (suite / name).write_bytes(module.read_bytes())
    (suite / "conftest.py").write_text(REVERSE)
    (suite / "pytest.ini").write_text("[pytest]\n")
    return suite


def trproxy(*args: str, **kw) -> subprocess.Popen:
    """Start ``trproxy ARGS`` (stdout/stderr captured unless given)."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("text", True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), **kw.pop("env", {}))
    return subprocess.Popen([*TRPROXY, *args], cwd=kw.pop("cwd", ROOT), env=env, **kw)


def run_trproxy(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    proc = trproxy(*args, **kw)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"trproxy {args} timed out\nstdout:\n{out}\nstderr:\n{err}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (to end what a SIGKILLed trproxy left running)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def alive(pid: int) -> bool:
    """Running: a zombie waiting to be reaped counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def kill_all(pids: list[int]) -> None:
    """SIGKILL each of ``pids`` and wait (10 s at most) until it is gone or a zombie."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.01)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """``sig``, then SIGKILL if ``proc`` has not ended ``timeout`` seconds later."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.request.recv(65536):
                self.request.sendall(data)


class EchoServer(socketserver.ThreadingTCPServer):
    """Echoes every byte; the connection ends when the client half-closes."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, host: str = "127.0.0.1") -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, 0), _Echo)
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def forward_proxy(upstream_port: int, *extra: str, mode: str = "passthrough",
                  upstream_host: str = "127.0.0.1") -> tuple[subprocess.Popen, int]:
    """``trproxy run --no-redirect --forward`` around ``sleep``; returns (proc, listen port)."""
    port = free_port()
    proc = trproxy("run", "--mode", mode, "--no-redirect", "--forward",
                   f"127.0.0.1:{port}={upstream_host}:{upstream_port}", *extra, "--", "sleep", "600")
    wait_port("127.0.0.1", port, proc=proc)
    return proc, port


def run_test(rec: Path, cmd: list[str], env: dict | None = None, *extra: str,  # type: ignore[no-untyped-def]
             timeout: float = 90):
    """``trproxy test``; returns (process, JSON report or None, JUnit root or None).

    stderr goes to a file: app processes left behind must not hold a pipe open."""
    reports = rec / "reports"
    before = set(reports.glob("test-*.xml")) if reports.exists() else set()
    log = rec.parent / f"{rec.name}-test.log"
    with log.open("w") as err:
        proc = trproxy("test", "--dir", str(rec), *extra, "--", *cmd, env=env or {}, stdout=err, stderr=err)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"trproxy test timed out\n{log.read_text()}") from None
    out = subprocess.CompletedProcess(proc.args, proc.returncode, "", log.read_text())
    new = sorted(set(reports.glob("test-*.xml")) - before) if reports.exists() else []
    assert len(new) <= 1
    if not new:
        return out, None, None
    return out, json.loads(new[0].with_suffix(".json").read_text()), ET.parse(new[0]).getroot()


def record_then_replay(tmp_path: Path, server, command, mode: str,  # type: ignore[no-untyped-def]
                       replay_command=None, env: dict | None = None, replay_options: tuple[str, ...] = ()):
    """Run ``command(port)`` under ``trproxy record``, stop ``server``, run it (or
    ``replay_command(port)``) again under replay (with ``replay_options``: ``--strict``):
    (recorded, replayed, mocks.yaml text). ``mode`` "forward": the app is pointed at the
    proxy's listener instead of the eBPF redirect."""
    recording = tmp_path / "rec"
    options: list[str] = []
    port = server.port
    if mode == "forward":
        port = free_port()
        options = ["--no-redirect", "--forward", f"127.0.0.1:{port}=127.0.0.1:{server.port}"]
    recorded = run_trproxy("record", "--dir", str(recording), *options, "--", *command(port),
                           env=env or {})
    server.stop()
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    replayed = run_trproxy("replay", "--dir", str(recording), *options, *replay_options, "--",
                           *(replay_command or command)(port), env=env or {})
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    return recorded, replayed, (recording / "test-set-0" / "mocks.yaml").read_text()

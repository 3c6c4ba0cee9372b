"""What the benchmarks share: the repository root on sys.path, the trproxy command, and
running a (wrapped) command to the end with a timeout that stops it cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TRPROXY = [sys.executable, "-m", "trproxy.cli"]
# as in a user's shell: Python caches bytecode (a CI or sandbox setting that turns that off
# would make every run of trproxy and of the app compile their sources again, and the
# short cells measure that compile)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"PYTHONPATH": str(ROOT)}


class BenchError(RuntimeError):
    """A benchmark's command failed or did not end in time (one line, then its stderr)."""


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 600,
        input: str | None = None) -> subprocess.CompletedProcess:
    """Run to the end, at most ``timeout`` s: then SIGTERM (trproxy forwards it to the
    command it wraps), SIGKILL 15 s later, and ``(timed out after N s)`` at the end of
    stderr. Output goes through files, not pipes: a process the command left running
    cannot keep this waiting for the pipes' end."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env,
                                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
        timed_out = False
        try:
            if input is not None:
                assert proc.stdin
                proc.stdin.write(input.encode())
                proc.stdin.close()
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _end(proc)
        finally:
            if proc.poll() is None:  # interrupted (KeyboardInterrupt): nothing left behind
                _end(proc)
        out.seek(0)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
        if timed_out:
            stderr += f"\n(timed out after {timeout:.0f} s)"
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read().decode(errors="replace"),
                                           stderr)


def _end(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(15)


def check(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 600,
          input: str | None = None) -> subprocess.CompletedProcess:
    """``run``, raising BenchError when the command fails or times out."""
    done = run(cmd, env, timeout, input)
    if done.returncode != 0:
        name = " ".join(cmd[:8]) + (" ..." if len(cmd) > 8 else "")
        raise BenchError(f"`{name}` exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done

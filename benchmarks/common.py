"""What the benchmarks share: the repository root on sys.path, the trproxy command, and
running a (wrapped) command to the end with a timeout that stops it cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TRPROXY = [sys.executable, "-m", "trproxy.cli"]


def run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run to the end; on timeout SIGTERM first (trproxy forwards it to the command it wraps)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        err += f"\n(timed out after {timeout:.0f} s)"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

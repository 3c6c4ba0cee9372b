"""``MockWriter`` in a child process, so that writing the YAML is off the relay's loop.

Why: turning each exchange into YAML cost a quarter of the proxy's CPU recording
redis-benchmark -c 50 (py-spy). The proxy now only packs each document (msgpack, C)
and writes it to a pipe; the child (``python -m trproxy.store.offload``) unpacks it
and appends it with the same ``MockWriter``, on another core, so the files are the same
bytes as before. A full pipe blocks the proxy, as a slow disk did (backpressure).

The child ignores SIGINT/SIGTERM (a terminal's Ctrl-C, a test killing the process
group) and ends at end of input: when ``close`` closes the pipe, or when the proxy dies,
so what was written is published either way. Opening the file is confirmed before the
proxy starts, so an unsafe or unwritable directory is the same one-line error.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack

from .errors import StoreError
from .model import Exchange

_PIPE_SIZE = 1 << 20  # F_SETPIPE_SZ: room for bursts before the proxy waits for the child
_F_SETPIPE_SZ = 1031


class MockWriterProcess:
    """What the runner needs of a ``MockWriter`` (``write``, ``close``, ``count``)."""

    def __init__(self, path: Path, header: list[Any] | None = None, root: Path | None = None) -> None:
        self.path = path
        self.count = 0
        root = path.parent.parent if root is None else root
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "trproxy.store.offload", str(path), str(root)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, close_fds=True)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        ready = self._proc.stdout.readline().decode("utf-8", "replace").strip()
        if ready != "ok":
            self._proc.stdin.close()
            self._proc.wait()
            raise StoreError(ready.removeprefix("error: ") or f"the recording writer exited ({self._proc.returncode})")
        self._fd: int | None = self._proc.stdin.fileno()
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._fd, _F_SETPIPE_SZ, _PIPE_SIZE)
        self._packer = msgpack.Packer(use_bin_type=True)
        for doc in header or []:
            self.append(doc)

    def append(self, doc: Any) -> None:
        if self._fd is None:
            raise ValueError("writer is closed")
        view = memoryview(self._packer.pack(doc))
        while view:
            view = view[os.write(self._fd, view):]
        self.count += 1

    def write(self, exchange: Exchange) -> None:
        self.append(exchange.to_doc())

    def close(self) -> Path:
        if self._fd is not None:
            self._fd = None
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self._proc.stdin.close()
            outcome = self._proc.stdout.read().decode("utf-8", "replace").strip()
            if self._proc.wait() != 0 or outcome != "closed":
                raise StoreError(outcome.removeprefix("error: ") or
                                 f"the recording writer failed (exit {self._proc.returncode})")
        return self.path


def main(argv: list[str]) -> int:
    """The child: documents from stdin to ``MockWriter``; says ``ok``, then ``closed``."""
    from .recording import MockWriter

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = sys.stdout
    try:
        writer = MockWriter(Path(argv[0]), root=Path(argv[1]))
    except (StoreError, OSError) as exc:
        print(f"error: {exc}", file=out, flush=True)
        return 1
    print("ok", file=out, flush=True)
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=1 << 30)
    try:
        while data := os.read(0, _PIPE_SIZE):
            unpacker.feed(data)
            for doc in unpacker:
                writer.append(doc)
        writer.close()
    except (StoreError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=out, flush=True)
        return 1
    print("closed", file=out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

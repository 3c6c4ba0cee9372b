"""``MockWriter`` in a child process, so that writing the YAML is off the relay's loop.

Why: turning each exchange into YAML cost a quarter of the proxy's CPU recording
redis-benchmark -c 50 (py-spy). The proxy now only packs each document (msgpack, C)
and writes it to a pipe; the child (``python -m trproxy.store.offload``) unpacks it
and appends it with the same ``MockWriter``, on another core, so the files are the same
bytes as before.

The proxy never blocks on the pipe: a blocking write to a full pipe stopped every
connection until the child had turned a whole read (1 MiB, thousands of exchanges) into
YAML (soak, 1,000 connections: 604 ms without a single answer). Documents are written
once per loop iteration, without blocking; what the pipe cannot take waits in memory
(``backlog``) until it is writable again, and over ``HIGH_WATER`` bytes the connections
that record wait (``room``), not the loop (backpressure, as a slow disk gave).

The child ignores SIGINT/SIGTERM (a terminal's Ctrl-C, a test killing the process
group) and ends at end of input: when ``close`` closes the pipe, or when the proxy dies,
so what was written is published either way. Opening the file is confirmed before the
proxy starts, so an unsafe or unwritable directory is the same one-line error.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack

from .errors import StoreError
from .model import Exchange

_PIPE_SIZE = 1 << 20  # F_SETPIPE_SZ: room for bursts in the kernel
_F_SETPIPE_SZ = 1031
_READ = 64 * 1024  # the child's reads: room in the pipe again after ~100 documents
HIGH_WATER = 1 << 20  # bytes waiting beside the pipe before recording connections wait (RSS)


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
        os.set_blocking(self._fd, False)
        self._packer = msgpack.Packer(use_bin_type=True)
        self.backlog = bytearray()  # packed, not yet in the pipe
        self._loop: asyncio.AbstractEventLoop | None = None  # watching the pipe / flush due
        self._watching = False
        self._waiting: list[asyncio.Future[None]] = []  # connections waiting for room
        self._error: OSError | None = None
        for doc in header or []:
            self.append(doc)

    def append(self, doc: Any) -> None:
        if self._fd is None:
            raise ValueError("writer is closed")
        if self._error is not None:
            raise self._error
        self.backlog += self._packer.pack(doc)
        self.count += 1
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not in the proxy's loop (the header, a test): write now
            self._flush_blocking()
            return
        if self._loop is None:  # once per loop iteration: one write for many documents
            self._loop = loop
            loop.call_soon(self._flush)

    def room(self) -> asyncio.Future[None] | None:
        """None, or a future to wait for before more is recorded: the child is more than
        ``HIGH_WATER`` bytes behind (what the pipe holds aside)."""
        if len(self.backlog) <= HIGH_WATER or self._loop is None:
            return None
        waiter = self._loop.create_future()
        self._waiting.append(waiter)
        return waiter

    def _flush(self) -> None:
        """Write what the pipe takes now; watch it for room while anything is left."""
        loop, fd = self._loop, self._fd
        if loop is None or fd is None:
            return
        try:
            while self.backlog:
                del self.backlog[:os.write(fd, self.backlog)]
        except BlockingIOError:
            pass
        except OSError as exc:  # the child died: the next append says so
            self._error, self.backlog = exc, bytearray()
        if self.backlog and not self._watching:
            loop.add_writer(fd, self._flush)
            self._watching = True
        elif not self.backlog:
            if self._watching:
                loop.remove_writer(fd)
                self._watching = False
            self._loop = None
        if self._waiting and len(self.backlog) <= HIGH_WATER:
            waiting, self._waiting = self._waiting, []
            for waiter in waiting:
                if not waiter.done():
                    waiter.set_result(None)

    def _flush_blocking(self) -> None:
        """Write the backlog, waiting for the child as long as it takes (outside the loop)."""
        fd = self._fd
        assert fd is not None
        if self._watching and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_writer(fd)
        self._watching, self._loop = False, None
        while self.backlog:
            try:
                del self.backlog[:os.write(fd, self.backlog)]
            except BlockingIOError:
                select.select([], [fd], [])

    def write(self, exchange: Exchange) -> None:
        self.append(exchange.to_doc())

    def close(self) -> Path:
        if self._fd is not None:
            if self._error is None:
                with contextlib.suppress(OSError):  # the child died: its exit status says why
                    self._flush_blocking()
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
    # the dialects the cache's match keys need, imported while the proxy starts, not when
    # the first exchange comes: seconds on a busy machine, in which the pipe filled and
    # every recording connection waited (the start of the 1,000-connection soak)
    from ..protocols.registry import dialects

    dialects()
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=1 << 30)
    # the bytes read and not yet unpacked: each document's own bytes go to the cache as
    # they came (what the proxy packed is what the cache's packer would make of it)
    pending, at = bytearray(), 0  # ``pending`` starts at offset ``at`` of the stream
    try:
        while data := os.read(0, _READ):
            unpacker.feed(data)
            pending += data
            start = at
            for doc in unpacker:
                end = unpacker.tell()
                writer.append(doc, later=True, packed_doc=bytes(pending[start - at:end - at]))
                start = end
            writer.flush()  # one write for what this read completed
            del pending[:start - at]
            at = start
        writer.close()
    except (StoreError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=out, flush=True)
        return 1
    print("closed", file=out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

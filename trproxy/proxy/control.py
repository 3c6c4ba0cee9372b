"""The control channel: a test runner inside the wrapped command (trproxy's pytest plugin)
tells the proxy where each test starts and ends, so that record tags each exchange with
the test it belongs to and replay serves each test its own recordings.

A Unix socket: the eBPF redirect sees only TCP, so there is nothing to exempt, and the
socket sits in a directory only trproxy's user can enter. The child gets the address
and a random token in ``TRPROXY_CONTROL=<token>:<path>``; a connection that does not
present the token first is refused. One line each way, and the runner waits for the
answer before it goes on, so a test's traffic never races its start or end::

    hello TOKEN   -> ok        (anything else first: "error ..." and the connection closes)
    open NAME     -> ok        a window opens: a test, or a fixture of a wider scope
    close NAME    -> ok
    (other)       -> error ...

Windows nest (a session fixture set up inside a test's setup); the innermost open window
of each runner connection is the one in effect, so several runners (pytest-xdist workers)
each contribute theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .context import RunContext

log = logging.getLogger("trproxy")
ENV = "TRPROXY_CONTROL"
_MAX_LINE = 64 * 1024
_UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL
_PREFIX = "trproxy-control-"  # then <pid>-<random>


@dataclass
class ControlServer:
    ctx: RunContext
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    directory: Path | None = None
    _server: asyncio.AbstractServer | None = None
    _stacks: dict[int, list[str]] = field(default_factory=dict)  # per runner connection
    _ids: int = 0

    @property
    def path(self) -> Path:
        assert self.directory is not None
        return self.directory / "control"

    @property
    def address(self) -> str:
        """The value of ``TRPROXY_CONTROL`` for the child."""
        return f"{self.token}:{self.path}"

    async def start(self) -> ControlServer:
        prefix = f"{_PREFIX}{os.getpid()}-"
        self.directory = Path(tempfile.mkdtemp(prefix=prefix))  # mode 0700
        if len(str(self.path).encode()) > _UNIX_PATH_MAX:  # a long $TMPDIR
            shutil.rmtree(self.directory)
            self.directory = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        _remove_leftovers(self.directory.parent)
        self._server = await asyncio.start_unix_server(self._serve, str(self.path), limit=_MAX_LINE)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._ids += 1
        conn = self._ids
        try:
            hello = await reader.readline()
            verb, _, token = hello.decode("utf-8", "replace").rstrip("\n").partition(" ")
            if verb != "hello" or not hmac.compare_digest(token.encode(), self.token.encode()):
                log.warning("control channel: a connection without the run's token; closed")
                writer.write(b"error not this run's token\n")
                await writer.drain()
                return
            self._stacks[conn] = []
            self.ctx.set_windows(self._innermost())  # a runner reports its tests from now on
            writer.write(b"ok\n")
            while line := await reader.readline():
                writer.write(await self._command(conn, line))
                await writer.drain()
        except (ConnectionError, OSError, ValueError) as exc:  # ValueError: a line over the limit
            log.warning("control channel: connection %d ended: %s", conn, exc)
        finally:
            if self._stacks.pop(conn, None):
                log.info("control channel: a runner went away inside a test window")
                self.ctx.set_windows(self._innermost())
            with contextlib.suppress(Exception):
                writer.close()

    async def _command(self, conn: int, line: bytes) -> bytes:
        verb, _, name = line.decode("utf-8", "replace").rstrip("\n").partition(" ")
        if verb not in ("open", "close") or not name:
            return f"error unknown command {verb[:40]!r} (open NAME, close NAME)\n".encode()
        # let sessions handle bytes already received first: a request the test sent before
        # this message belongs to the window it was sent in
        await asyncio.sleep(0)
        stack = self._stacks[conn]
        if verb == "open":
            stack.append(name)
            self.ctx.set_windows(self._innermost(), opened=name)
        elif name in stack:
            del stack[len(stack) - 1 - stack[::-1].index(name)]  # its last opening
            self.ctx.set_windows(self._innermost())
        return b"ok\n"

    def _innermost(self) -> set[str]:
        return {stack[-1] for stack in self._stacks.values() if stack}


def _remove_leftovers(parent: Path) -> None:
    """Directories of runs that were killed (SIGKILL) before they could remove theirs."""
    for leftover in parent.glob(f"{_PREFIX}*-*"):
        pid = leftover.name[len(_PREFIX):].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists() and leftover.stat().st_uid == os.geteuid():
            shutil.rmtree(leftover, ignore_errors=True)


async def start(ctx: RunContext) -> ControlServer | None:
    """A control channel for the run, or None (with a warning) when none can be made:
    the run goes on unscoped."""
    try:
        return await ControlServer(ctx).start()
    except OSError as exc:
        log.warning("no control channel for test runners (%s): tests are not scoped", exc)
        return None

"""Inbound capture (record mode): the app's API calls become test cases.

The eBPF ``bind4``/``bind6`` programs move the app's listening port X to a shadow port
S; trproxy listens on X, relays each connection to the app at S and feeds a copy of
the bytes to the HTTP recorder. Each completed request/response is one test case.

Attribution of outbound mocks: when a request's first byte arrives, its test name is
added to ``RunContext.open_tests``; every outbound exchange that *starts* while it is
open carries that name, and the name is removed when the response is complete. So
concurrent requests each list every mock that might be theirs, and replay (which
prefers the running test's mocks, then matches by content) gives each its own.
Connections that carry no request make no test.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..protocols.base import Dialect, Direction, Interaction, ProtocolError
from ..protocols.registry import by_name
from ..proxy.context import RunContext
from ..proxy.relay import CHUNK, relay, reset
from ..proxy.server import BACKLOG

log = logging.getLogger("trproxy")

OnTest = Callable[[str, Interaction, str, int], None]  # (name, interaction, started ISO, port)
_APP_WAIT = 30.0


def _http() -> Dialect:
    dialect = by_name("http")
    assert dialect is not None, "the HTTP dialect (mitmproxy) is not importable"
    return dialect  # the proxy listens before the app does: wait this long for it to bind


@dataclass
class InboundCapture:
    """Listens on the app's ports and turns each HTTP exchange into a test case."""

    ctx: RunContext
    on_test: OnTest
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    _numbers: itertools.count = field(default_factory=lambda: itertools.count(1))

    async def listen(self, port: int, shadow: int, hosts: tuple[str, ...] = ("127.0.0.1", "::1")) -> None:
        for host in hosts:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            server = await asyncio.start_server(self._handler(port, shadow), host, port, family=family,
                                                limit=CHUNK, backlog=BACKLOG)
            self.servers.append(server)
        log.info("recording inbound calls on port %d (app moved to %d)", port, shadow)

    def _handler(self, port: int, shadow: int):
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            upstream = await _connect_app(shadow)
            if upstream is None:
                log.warning("the app never listened on port %d; resetting an inbound connection", port)
                reset(writer)
                return
            tap = _TestTap(self, port)
            with contextlib.suppress(asyncio.CancelledError):
                await relay((reader, writer), upstream, tap.client, tap.server)
        return handle

    def next_name(self) -> str:
        return f"test-{next(self._numbers)}"

    def close(self) -> None:
        for server in self.servers:
            server.close()


async def _connect_app(shadow: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _APP_WAIT
    while True:
        for host in ("127.0.0.1", "::1"):
            with contextlib.suppress(OSError):
                return await asyncio.open_connection(host, shadow, limit=CHUNK)
        if loop.time() > deadline:
            return None
        await asyncio.sleep(0.05)


@dataclass
class _TestTap:
    capture: InboundCapture
    port: int
    _recorder: object = None
    _open: list[tuple[str, str]] = field(default_factory=list)  # (name, started) in request order
    _failed: bool = False
    _idle: bool = True

    def __post_init__(self) -> None:
        # bodies over max_body go to the test set's bodies/, like outbound ones
        self._recorder = _http().recorder(blobs=self.capture.ctx.blobs)

    def client(self, data: bytes) -> None:
        if data and self._idle:
            name = self.capture.next_name()
            self._open.append((name, datetime.now(UTC).isoformat(timespec="microseconds")))
            self.capture.ctx.open_tests.add(name)
            self._idle = False
        self._feed(Direction.CLIENT, data)

    def server(self, data: bytes) -> None:
        self._feed(Direction.SERVER, data)

    def _feed(self, direction: Direction, data: bytes) -> None:
        if self._failed:
            return
        try:
            done = self._recorder.feed(direction, data)  # type: ignore[attr-defined]
        except ProtocolError as exc:
            self._failed = True
            self._close_all()
            self.capture.ctx.capture_failed(f"inbound port {self.port}", _http(), exc)
            return
        for interaction in done:
            if not self._open:
                break
            name, started = self._open.pop(0)
            self.capture.ctx.open_tests.discard(name)
            self.capture.on_test(name, interaction, started, self.port)
        if not self._open:
            self._idle = True
        if not data:
            self._close_all()

    def _close_all(self) -> None:
        for name, _ in self._open:
            self.capture.ctx.open_tests.discard(name)
        self._open.clear()

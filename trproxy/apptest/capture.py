"""Inbound capture (record mode): the app's API calls become test cases.

Two ways in, one tap. Every port (no ``--app-port``): the redirect's sk_lookup program
hands each connection from outside the run to a port the app listens on to one of our
two capture sockets (127.0.0.1 and ::1, ephemeral ports); the accepted socket's local
address is where the client was going, and we relay to the app there (announced to the
redirect, so that this one connection reaches the app). Connections that do not start
like HTTP are relayed without a test. Known ports (``--app-port X``): the eBPF
``bind4``/``bind6`` programs move the app's listener to a shadow port S, we listen on
X and relay to S. Either way a copy of the bytes feeds the HTTP recorder, and each
completed request/response is one test case.

Attribution of outbound mocks: when a request's first byte arrives, its test name is
added to ``RunContext.open_tests``; every outbound exchange that *starts* while it is
open carries that name, and the name is removed when the response is complete. So
concurrent requests each list every mock that might be theirs, and replay (which
prefers the running test's mocks, then matches by content) gives each its own.
Connections that carry no request make no test.

The tap records each exchange unredacted (in memory only): ``TestWriter`` first reads
the values later requests may take from it (``apptest/chain.py``), then redacts it with
the run's secret vault (named placeholders) before anything is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from ..protocols.base import Dialect, Direction, Interaction, ProtocolError
from ..protocols.http.config import NO_REDACTION, HttpConfig, Redaction, config_from_section
from ..protocols.http.readable import lenient_urlsplit, redact_message
from ..protocols.registry import by_name
from ..protocols.secrets import SecretVault, hint_of
from ..proxy.context import RunContext
from ..proxy.relay import CHUNK, relay, reset
from ..proxy.server import BACKLOG
from ..store import safeio
from ..store.config import read_config
from .chain import ChainIndex
from .noise import Noise, load_config, write_default_config
from .testcase import record_test

log = logging.getLogger("trproxy")


@dataclass
class Captured:
    """One inbound exchange as the tap saw it: unredacted."""

    name: str
    interaction: Interaction
    started: str  # ISO 8601, when its first byte arrived
    started_mono: float  # the same moment on the monotonic clock
    port: int


OnTest = Callable[[Captured], None]
# Redirector.to_app: while connecting a bound socket to (host, port), it reaches the app
ToApp = Callable[[socket.socket, str, int], contextlib.AbstractContextManager[None]]
_APP_WAIT = 30.0  # the proxy listens before the app does: wait this long for it to bind


def _http() -> Dialect:
    dialect = by_name("http")
    assert dialect is not None, "the HTTP dialect (mitmproxy) is not importable"
    return dialect


@dataclass
class TestWriter:
    """Turns captured exchanges into test files: links to earlier answers, secrets named,
    noise detected."""

    test_set: Path
    redaction: Redaction
    noise: Noise
    chains: ChainIndex
    written: int = 0

    __test__ = False

    def __call__(self, captured: Captured) -> None:
        last = captured.interaction.responses[-1] if captured.interaction.responses else None
        if not isinstance(last, dict) or "status" not in last or last.get("truncated"):
            return  # never answered, or reset or cut short (an HTTP/2 stream): no test
        raw_request, raw_response = captured.interaction.request, captured.interaction.responses[-1]
        context = hint_of(lenient_urlsplit(str(raw_request.get("url", ""))).path)
        request = redact_message(raw_request, self.redaction)  # names its secrets in the vault
        response = redact_message(raw_response, self.redaction, context)
        links = self.chains.links(raw_request, captured.started_mono)
        self.chains.add_response(captured.name, raw_response, time.monotonic())
        record_test(self.test_set, captured.name, request, response, captured.started, captured.port,
                    self.noise, links)
        self.written += 1


def http_config(root: Path) -> HttpConfig:
    """The ``http:`` settings of ``root/config.yaml`` (max_body, secret names)."""
    section = read_config(root).get("http") or {}
    return config_from_section(section if isinstance(section, dict) else {})


async def start_capture(root: Path, ports: list[int], ctx: RunContext, test_set: Path,
                        vault: SecretVault | None = None) -> tuple[InboundCapture, dict[int, int]]:
    """Listen on the app's ports (the app is moved to shadow ports), or with no ports on
    two capture sockets for every port (``InboundCapture.capture_sockets``, for the
    redirect); calls become tests. Returns the capture and {app port: shadow port}."""
    write_default_config(root)
    safeio.open_dir(test_set, test_set.parent, create=True).close()
    config = http_config(root)
    redaction = replace(config.redaction, vault=vault)
    writer = TestWriter(test_set, redaction, load_config(root), ChainIndex(vault))

    def on_test(captured: Captured) -> None:
        writer(captured)
        ctx.tests_recorded = writer.written

    inbound = InboundCapture(ctx, on_test, replace(config, redaction=NO_REDACTION))
    shadows = {port: free_port() for port in ports}
    for port, shadow in shadows.items():
        await inbound.listen(port, shadow)
    if not ports:
        await inbound.listen_any()
    return inbound, shadows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class InboundCapture:
    """Listens on the app's ports and turns each HTTP exchange into a test case."""

    ctx: RunContext
    on_test: OnTest
    config: HttpConfig = field(default_factory=lambda: HttpConfig(redaction=NO_REDACTION))
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    capture_sockets: list[socket.socket] = field(default_factory=list)
    to_app: ToApp | None = None  # set once the redirect exists (before any connection comes)
    _numbers: itertools.count = field(default_factory=lambda: itertools.count(1))

    async def listen(self, port: int, shadow: int, hosts: tuple[str, ...] = ("127.0.0.1", "::1")) -> None:
        for host in hosts:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            server = await asyncio.start_server(self._handler(port, shadow), host, port, family=family,
                                                limit=CHUNK, backlog=BACKLOG)
            self.servers.append(server)
        log.info("recording inbound calls on port %d (app moved to %d)", port, shadow)

    async def listen_any(self) -> None:
        """The capture sockets that the redirect hands outside connections to (any port)."""
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            sock = socket.socket(family, socket.SOCK_STREAM)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, 0))
            sock.listen(BACKLOG)
            self.capture_sockets.append(sock)
            self.servers.append(await asyncio.start_server(self._any_handler, sock=sock, limit=CHUNK))
        log.info("recording inbound HTTP calls on every port the app listens on")

    async def _any_handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("sockname")[:2]
        upstream = await self._connect_direct(host, port)
        if upstream is None:
            reset(writer)
            return
        tap = _TestTap(self, port, sniff=True)
        with contextlib.suppress(asyncio.CancelledError):
            await relay((reader, writer), upstream, tap.client, tap.server)

    async def _connect_direct(self, host: str, port: int
                              ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Connect to the app where the client was going, past the capture sockets: from the
        same local address (bound first, so the redirect can tell this connection apart)."""
        assert self.to_app is not None, "the redirect was not set up"
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.bind((host, 0))
            with self.to_app(sock, host, port):
                await asyncio.get_running_loop().sock_connect(sock, (host, port))
            return await asyncio.open_connection(sock=sock, limit=CHUNK)
        except OSError as exc:
            sock.close()
            log.warning("cannot reach the app at %s:%d (%s); resetting an inbound connection",
                        host, port, exc)
            return None

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
    sniff: bool = False  # relay without a test unless the client speaks first, in HTTP
    _recorder: object = None
    _open: list[tuple[str, str, float]] = field(default_factory=list)  # (name, started, monotonic)
    _failed: bool = False
    _idle: bool = True

    def __post_init__(self) -> None:
        # unredacted (TestWriter redacts); bodies over max_body go to the test set's bodies/
        from ..protocols.http import HttpRecorder

        self._recorder = HttpRecorder(self.capture.config, blobs=self.capture.ctx.blobs)

    def client(self, data: bytes) -> None:
        if self.sniff and data:
            self.sniff = False
            if _http().detect(data, self.port) is False:
                self._failed = True  # not HTTP: relayed, not recorded
        if data and self._idle and not self._failed:
            name = self.capture.next_name()
            self._open.append((name, datetime.now(UTC).isoformat(timespec="microseconds"),
                               time.monotonic()))
            self.capture.ctx.open_tests.add(name)
            self._idle = False
        self._feed(Direction.CLIENT, data)

    def server(self, data: bytes) -> None:
        if self.sniff and data:  # the server spoke first: not HTTP
            self.sniff = False
            self._failed = True
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
            name, started, started_mono = self._open.pop(0)
            self.capture.ctx.open_tests.discard(name)
            self.capture.on_test(Captured(name, interaction, started, started_mono, self.port))
        if not self._open:
            self._idle = True
        if not data:
            self._close_all()

    def _close_all(self) -> None:
        for name, _, _ in self._open:
            self.capture.ctx.open_tests.discard(name)
        self._open.clear()

"""Record and passthrough sessions: relay the bytes, and tap a copy into the recorder.

The relay never waits for the codec. A ``Capture`` sees copies of the bytes; it detects
the protocol, feeds the dialect's recorder and turns interactions into exchanges. A
recorder error stops capture for that connection only; bytes keep flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..protocols.base import Dialect, Direction, ProtocolError
from ..protocols.registry import detect, pre_protocol
from ..store import Exchange
from ..tls.errors import CertificateRejected, TlsError
from .context import format_destination
from .relay import CHUNK, relay, reset

if TYPE_CHECKING:
    from .context import RunContext

log = logging.getLogger("trproxy")
conn_ids = itertools.count(1)  # one numbering for recorded and replayed connections
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass
class Capture:
    """Record-mode tap for one connection (both directions)."""

    ctx: RunContext
    destination: str
    port: int
    tls: bool = False
    alpn: str | None = None  # what TLS negotiated (recorded, selected again at replay)
    connection: int = field(default_factory=lambda: next(conn_ids))
    dialect: Dialect | None = None
    _recorder: object | None = None
    _early: list[tuple[Direction, bytes]] = field(default_factory=list)
    _client_bytes: bytes = b""
    _failed: bool = False
    _seq: int = 0
    _started: float | None = None
    _started_wall: str = ""
    _order: int = 0  # run-wide number of the request being recorded (metadata.order)
    _tests: list[str] = field(default_factory=list)

    def client(self, data: bytes) -> None:
        self._feed(Direction.CLIENT, data)

    def server(self, data: bytes) -> None:
        self._feed(Direction.SERVER, data)

    def _feed(self, direction: Direction, data: bytes) -> None:
        if self._failed:
            return
        if direction is Direction.CLIENT and data and self._started is None:
            self._started, self._started_wall = time.monotonic(), _now()
            self._order = next(self.ctx.orders)
            self._tests = sorted(self.ctx.open_tests)  # inbound requests this one may serve
        try:
            if self.dialect is None:
                self._early.append((direction, data))
                if direction is Direction.CLIENT:
                    self._client_bytes += data
                final = not data or direction is Direction.SERVER or len(self._client_bytes) > 64
                self.dialect = detect(self._client_bytes, self.port, final=final)
                if self.dialect is None:
                    return
                self._recorder = self.dialect.recorder_for(self.tls, self.destination, self.ctx.blobs)
                log.debug("conn %d to %s: %s", self.connection, self.destination, self.dialect.name)
                early, self._early = self._early, []
                for d, chunk in early:
                    self._emit(self._recorder.feed(d, chunk))  # type: ignore[attr-defined]
            else:
                self._emit(self._recorder.feed(direction, data))  # type: ignore[attr-defined]
        except ProtocolError as exc:
            self._failed = True
            self.ctx.capture_failed(self.destination, self.dialect, exc)

    def _emit(self, interactions: list) -> None:
        for it in interactions:
            assert self.dialect is not None
            self._seq += 1
            started = self._started if self._started is not None else time.monotonic()
            self.ctx.record(Exchange(
                protocol=self.dialect.name, destination=self.destination,
                request=it.request, responses=it.responses, lifetime=it.lifetime,
                summary=it.summary, connection=self.connection, seq=self._seq,
                started=self._started_wall or _now(),
                duration_ms=(time.monotonic() - started) * 1000, tests=self._tests,
                tls=self.tls, alpn=self.alpn, order=self._order,
            ))
            self._started = None
            self._started_wall = ""


async def passthrough_or_record(ctx: RunContext, client: Streams, host: str, port: int,
                                record: bool) -> None:
    destination = format_destination(host, port)
    try:
        upstream = await asyncio.wait_for(asyncio.open_connection(host, port, limit=CHUNK),
                                          ctx.connect_timeout)
    except (TimeoutError, OSError) as exc:
        log.info("upstream %s failed: %s; resetting the client", destination, exc)
        reset(client[1])
        return
    if not record:
        await relay(client, upstream)
        return
    first_client, first_server = await _first_bytes(client[0], upstream[0])
    upgraded = False  # the server accepted an in-band TLS request (Postgres SSLRequest)
    while not first_server and not upgraded and (pre := pre_protocol(first_client)) is not None:
        answer, accept = pre
        if ctx.tls is not None and accept is not None:
            answer = await _server_answer(upstream, first_client)  # TLS only if the server has it
            if not answer:
                ctx.problems.append(f"{destination} closed the connection at the TLS request")
                reset(client[1])
                reset(upstream[1])
                return
            upgraded = answer == accept
        client[1].write(answer)  # "N": plaintext, recordable; the server's "S": TLS, intercepted below
        await client[1].drain()
        first_client = await client[0].read(CHUNK)
    if first_client and ctx.tls is not None:
        from ..tls.stream import intercept_record, read_client_hello

        try:
            hello, first_client = await read_client_hello(client[0], first_client)
        except (TlsError, ConnectionError, OSError):
            hello = None
        name = (hello.sni or host) if hello else host
        if hello is not None and name not in ctx.tls.passthrough_hosts:
            try:
                down, up = await intercept_record(ctx.tls, client, upstream, hello, first_client, name,
                                                  system_trust=not upgraded)
            except CertificateRejected as exc:
                ctx.problems.append(f"{name} refused our certificate ({exc}); passed through from now on")
                log.warning("the app refused trproxy's certificate for %s: %s", name, exc)
                reset(client[1])
                reset(upstream[1])
                return
            except (TlsError, ConnectionError, OSError) as exc:
                ctx.problems.append(f"TLS to {destination} failed: {exc}")
                log.warning("TLS interception for %s failed: %s", destination, exc)
                reset(client[1])
                reset(upstream[1])
                return
            cap = Capture(ctx, destination, port, tls=True, alpn=down.endpoint.alpn)
            await relay((down, down), (up, up), cap.client, cap.server)  # type: ignore[arg-type]
            return
    cap = Capture(ctx, destination, port)
    await relay(client, upstream, cap.client, cap.server, first_client, first_server)


async def _server_answer(upstream: Streams, request: bytes) -> bytes:
    """Forward an in-band TLS request; the server's one-byte answer (b"" if it hung up)."""
    try:
        upstream[1].write(request)
        await upstream[1].drain()
        return await upstream[0].read(1)
    except (ConnectionError, OSError):
        return b""


async def _first_bytes(client: asyncio.StreamReader, upstream: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """Whichever side speaks first, and what it said (the other read is cancelled unharmed)."""
    c = asyncio.ensure_future(client.read(CHUNK))
    u = asyncio.ensure_future(upstream.read(CHUNK))
    done, pending = await asyncio.wait({c, u}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return (c.result() if c in done else b""), (u.result() if u in done else b"")

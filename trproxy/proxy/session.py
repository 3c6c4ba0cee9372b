"""Per-connection sessions: passthrough, record (relay + capture) and replay (synthesize).

Record: the relay never waits for the codec. A ``Capture`` sees copies of the bytes;
it detects the protocol, feeds the dialect's recorder and turns interactions into
exchanges. A recorder error stops capture for that connection only; bytes keep flowing.

Replay: no upstream is ever opened. The dialect's replayer turns the client's bytes
into lookups; the mock pool answers them, and a miss becomes the protocol's own error
plus a report entry.
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

from ..protocols.base import Dialect, Direction, Lookup, ProtocolError, Reply
from ..protocols.detect import detect
from ..store import Affinity, Exchange, NoMatch
from .relay import CHUNK, relay, reset

if TYPE_CHECKING:
    from .context import RunContext

log = logging.getLogger("trproxy")
_conn_ids = itertools.count(1)
_SERVER_FIRST_WAIT = 0.5  # how long replay waits for a client that expects the server to speak


def format_destination(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass
class Capture:
    """Record-mode tap for one connection (both directions)."""

    ctx: RunContext
    destination: str
    port: int
    connection: int = field(default_factory=lambda: next(_conn_ids))
    dialect: Dialect | None = None
    _recorder: object | None = None
    _early: list[tuple[Direction, bytes]] = field(default_factory=list)
    _client_bytes: bytes = b""
    _failed: bool = False
    _seq: int = 0
    _started: float | None = None
    _started_wall: str = ""
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
                self._recorder = self.dialect.recorder()
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
            ))
            self._started = None
            self._started_wall = ""


async def passthrough_or_record(ctx: RunContext, client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                                host: str, port: int, record: bool) -> None:
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
    cap = Capture(ctx, destination, port)
    await relay(client, upstream, cap.client, cap.server)


async def replay(ctx: RunContext, client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 host: str, port: int) -> None:
    reader, writer = client
    destination = format_destination(host, port)
    connection = next(_conn_ids)
    buffered = b""
    dialect: Dialect | None = None
    try:
        while dialect is None:
            try:
                data = await asyncio.wait_for(reader.read(CHUNK), _SERVER_FIRST_WAIT if not buffered else None)
            except TimeoutError:
                data = None
            buffered += data or b""
            dialect = detect(buffered, port, final=not data)
            if not data and dialect is None:
                return
        assert dialect is not None
        replayer = dialect.replayer()
        affinity = Affinity()
        data = buffered
        while data:
            for event in replayer.feed(data):
                if isinstance(event, Reply):
                    writer.write(event.data)
                else:
                    out = _answer(ctx, dialect, replayer, event, destination, affinity)
                    if out is None:
                        reset(writer)
                        return
                    writer.write(out)
            await writer.drain()
            data = await reader.read(CHUNK)
        log.debug("replay conn %d to %s (%s) closed by client", connection, destination, dialect.name)
    except ProtocolError as exc:
        ctx.replay_failed(destination, dialect, exc)
        reset(writer)
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def _answer(ctx: RunContext, dialect: Dialect, replayer, lookup: Lookup, destination: str,
            affinity: Affinity) -> bytes | None:
    """Bytes for one lookup; None means close the connection (no protocol-native error)."""
    try:
        served = ctx.pool.find(dialect.name, destination, lookup.request, lookup.summary,
                               affinity, ctx.current_test)
    except NoMatch as miss:
        ctx.missed(dialect.name, destination, miss)
        if not lookup.expects_reply:
            return b""
        out = replayer.miss(lookup, miss.reason)
        return out or None
    ctx.served(dialect.name, destination, served.exchange)
    return replayer.respond(lookup, served.exchange.responses) if lookup.expects_reply else b""

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
from typing import TYPE_CHECKING, Any

from ..protocols.base import Dialect, Direction, Lookup, ProtocolError, Reply
from ..protocols.detect import detect, dialects
from ..store import Affinity, Exchange, NoMatch
from .context import Mode
from .relay import CHUNK, relay, reset
from .tlserrors import CertificateRejected, NotTls, TlsError

if TYPE_CHECKING:
    from .context import RunContext
    from .tls import ClientHelloInfo

log = logging.getLogger("trproxy")
_conn_ids = itertools.count(1)
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_SERVER_FIRST_WAIT = 0.5  # how long replay waits for a client that expects the server to speak
_MAX_HOLD_MS = 5000  # bound of a held answer (Lookup.context["hold_ms"])
FORWARD = object()  # _answer: fetch this request from the real server (new-episodes)


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
    tls: bool = False
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
                tls=self.tls,
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
    while not first_server and not upgraded and (pre := _pre_protocol(first_client)) is not None:
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
        from .tlslayer import intercept_record

        try:
            hello, first_client = await _client_hello(client[0], first_client)
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
            cap = Capture(ctx, destination, port, tls=True)
            await relay((down, down), (up, up), cap.client, cap.server)  # type: ignore[arg-type]
            return
    cap = Capture(ctx, destination, port)
    await relay(client, upstream, cap.client, cap.server, first_client, first_server)


def _pre_protocol(first: bytes) -> tuple[bytes, bytes | None] | None:
    """Bytes a dialect answers before its protocol starts: (the plaintext answer, the answer
    accepting TLS or None), e.g. Postgres SSLRequest -> ("N", "S"); None if none claims them."""
    for dialect in dialects():
        if dialect.local_reply is not None and (answer := dialect.local_reply(first)) is not None:
            accept = dialect.tls_upgrade(first) if dialect.tls_upgrade is not None else None
            return answer, accept
    return None


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


async def _client_hello(reader: asyncio.StreamReader, data: bytes) -> tuple[ClientHelloInfo | None, bytes]:
    """The ClientHello if ``data`` starts one (reading the rest of it), and all bytes read."""
    if data[:1] != b"\x16":
        return None, data
    from .tls import parse_client_hello

    while True:
        try:
            hello = parse_client_hello(data)
        except NotTls:
            return None, data
        if hello is not None:
            return hello, data
        more = await reader.read(CHUNK)
        if not more:
            return None, data
        data += more


async def replay(ctx: RunContext, client: Streams, host: str, port: int) -> None:
    reader, writer = client
    destination = format_destination(host, port)
    connection = next(_conn_ids)
    buffered = b""
    dialect: Dialect | None = None
    replayer = None
    tls = False
    server_name = host  # the TLS server name the app asked for (its SNI)
    upstream: Any = None  # new-episodes: forward.Upstream, the real server, at the first miss
    try:
        while dialect is None:
            try:
                data = await asyncio.wait_for(reader.read(CHUNK), _SERVER_FIRST_WAIT if not buffered else None)
            except TimeoutError:
                data = None
            buffered += data or b""
            while not tls and ctx.tls is not None and (pre := _pre_protocol(buffered)) is not None:
                # Postgres SSLRequest -> "S" when the recording was TLS, else "N" (as the server
                # answered, and plaintext replays faster); GSSENCRequest -> "N"
                answer, accept = pre
                accept = accept if ctx.pool.recorded_tls(destination) else None
                writer.write(accept or answer)
                await writer.drain()
                buffered = data = await reader.read(CHUNK)
                if accept:
                    break  # the ClientHello follows
            if not tls and ctx.tls is not None and buffered[:1] == b"\x16":
                from .tlslayer import intercept_replay

                hello, buffered = await _client_hello(reader, buffered)
                if hello is not None:
                    server_name = hello.sni or host
                    stream = await intercept_replay(ctx.tls, (reader, writer), hello, buffered,
                                                    server_name, ctx.pool.recorded_h2(destination))
                    reader = writer = stream  # type: ignore[assignment]
                    tls, buffered = True, await stream.read(CHUNK)
                    data = buffered
            dialect = detect(buffered, port, final=not data)
            if not data and dialect is None:
                return
        assert dialect is not None
        replayer = dialect.replayer_for(tls, destination, ctx.blobs)
        pull = getattr(replayer, "pull", None)  # bodies streamed from files
        affinity = Affinity()
        data = buffered
        while data:
            for event in replayer.feed(data):
                if isinstance(event, Reply):
                    writer.write(event.data)
                else:
                    out = _answer(ctx, dialect, replayer, event, destination, affinity)
                    if out is FORWARD:
                        if upstream is None:
                            from .forward import Upstream  # h11 and the HTTP dialect: only here

                            upstream = Upstream(ctx, host, port, server_name if tls else None)
                        out = await _forward_or_miss(ctx, dialect, replayer, event, destination,
                                                     upstream, connection)
                    if out is None:
                        reset(writer)
                        return
                    assert isinstance(out, bytes)
                    if out and (hold := event.context.get("hold_ms")):
                        await writer.drain()  # what came before goes out now
                        await asyncio.sleep(min(hold, _MAX_HOLD_MS) / 1000)
                    writer.write(out)
            await writer.drain()
            while pull is not None and (more := pull()):
                writer.write(more)
                await writer.drain()
            if getattr(replayer, "close_after", False):
                break  # the server would hang up now (Terminate, CancelRequest)
            data = await reader.read(CHUNK)
        log.debug("replay conn %d to %s (%s) closed by client", connection, destination, dialect.name)
    except (ProtocolError, TlsError) as exc:
        ctx.replay_failed(destination, dialect, exc)
        reset(writer)
    except (ConnectionError, OSError):
        pass
    finally:
        if upstream is not None:
            await upstream.close()
        if replayer is not None and hasattr(replayer, "close"):
            replayer.close()
        with contextlib.suppress(Exception):
            writer.close()


def _answer(ctx: RunContext, dialect: Dialect, replayer, lookup: Lookup, destination: str,
            affinity: Affinity) -> bytes | None | object:
    """Bytes for one lookup; None means close the connection (no protocol-native error);
    ``FORWARD``: new-episodes, fetch it from the real server (``forward``)."""
    try:
        served = ctx.pool.find(dialect.name, destination, lookup.request, lookup.summary,
                               affinity, ctx.current_test,
                               repeat_last=bool(lookup.context.get("repeat_last")))
    except NoMatch as miss:
        if ctx.mode is Mode.NEW_EPISODES and lookup.context.get("forward") is not None:
            return FORWARD  # HTTP: this request alone is fetched and recorded
        return _miss(ctx, dialect, replayer, lookup, destination, miss)
    ctx.served(dialect.name, destination, served.exchange)
    if served.repeat:
        lookup.context["repeat"] = True
    out = replayer.respond(lookup, served.exchange.responses) if lookup.expects_reply else b""
    if problem := lookup.context.get("unreplayable"):  # matched, but not served as recorded
        ctx.problems.append(f"{dialect.name} {destination}: {lookup.summary}: {problem}")
        log.warning("could not replay %s %s as recorded: %s", destination, lookup.summary, problem)
    return out


def _miss(ctx: RunContext, dialect: Dialect, replayer, lookup: Lookup, destination: str,
          miss: NoMatch) -> bytes | None:
    if not lookup.context.get("handshake"):  # handshakes the replayer answers itself
        ctx.missed(dialect.name, destination, miss)
    if not lookup.expects_reply:
        return b""
    out = replayer.miss(lookup, miss.reason)
    # b"": no protocol-native error exists, close; unless the lookup is one part of a
    # request answered as a whole later (a Kafka Fetch split per partition)
    return out if out or lookup.context.get("partial") else None


async def _forward_or_miss(ctx: RunContext, dialect: Dialect, replayer, lookup: Lookup,
                           destination: str, upstream: Any, connection: int) -> bytes | None:
    """new-episodes: the real server's answer, recorded; a miss when it cannot be had."""
    from .forward import ForwardError, forward

    try:
        return await forward(ctx, upstream, replayer, lookup, destination, connection)
    except ForwardError as exc:
        reason = f"not recorded, and fetching it from the server failed: {exc}"
        return _miss(ctx, dialect, replayer, lookup, destination, NoMatch(lookup.summary, reason, []))

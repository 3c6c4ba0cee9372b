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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ..protocols.base import Dialect, Direction, Interaction, Interrupt, ProtocolError, Pushed
from ..protocols.registry import by_alpn, by_greeting, detect, pre_protocol, server_first_waits
from ..store import Exchange
from ..tls.errors import CertificateRejected, TlsError
from .context import format_destination
from .netns import open_upstream
from .raw import MAX_TURN_BYTES, RawTurns
from .relay import CHUNK, relay, reset

if TYPE_CHECKING:
    from .context import RunContext

log = logging.getLogger("trproxy")
conn_ids = itertools.count(1)  # one numbering for recorded and replayed connections
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _now() -> str:
    """The wall-clock time, as ``datetime.now(UTC).isoformat(timespec="microseconds")``."""
    return _iso(time.time_ns())


_second: list = [None, ""]  # the last whole second formatted, and its text


def _iso(ns: int) -> str:
    """``ns`` since the epoch in ISO 8601 UTC to the microsecond; the date and time of
    the second formatted once per second (a ``datetime`` per request cost 4 us)."""
    seconds, micros = divmod(ns // 1000, 1_000_000)
    if _second[0] != seconds:
        _second[:] = [seconds, _EPOCH.__add__(timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")]
    return f"{_second[1]}.{micros:06d}+00:00"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Capture:
    """Record-mode tap for one connection (both directions).

    Besides the dialect's interactions it records what happens to the connection as a
    whole, protocol-free: when each request started (``order``, run-wide) and how long
    its answer took to start (``wait_ms``); messages the server pushed on its own, and a
    server that closed or reset the connection before the client did, as event
    documents stamped with the run-wide ``order`` reached when they happened (``after``).
    """

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
    _first_reply: float | None = None  # the first server byte after the request started
    _order: int = 0  # run-wide number of the request being recorded (metadata.order)
    _tests: list[str] = field(default_factory=list)
    _client_ended: bool = False
    _server_ended: bool = False
    _server_reset: bool = False
    _ending: tuple[str, int] | None = None  # the server's close or reset, and the order then
    _interrupted: bool = False  # another connection interrupted the pending request
    _answered_after: int = 0  # the run-wide order reached when its answer started
    clock: Callable[[], float] = time.monotonic  # (tests give their own)
    # the current turn's bytes, kept for the raw fallback (``raw.py``); None: too large
    _turn: list[tuple[Direction, bytes]] | None = field(default_factory=list)
    _turn_size: int = 0
    _turn_answered: bool = False  # the server spoke in the current turn
    _raw: RawTurns | None = None  # the dialect could not follow: the rest goes raw

    def client(self, data: bytes) -> asyncio.Future[None] | None:
        """The relay's tap for the client's bytes; what to wait for before reading more."""
        if not data:
            self._client_ended = True
        self._feed(Direction.CLIENT, data)
        if not data and self._ending is not None:
            # written once the recorder flushed what the client's end completes (a
            # WebSocket's last messages), so that it comes after them in the connection
            kind, after = self._ending
            self._ending = None
            self._event(kind, [], f"server {'reset' if kind == 'reset' else 'closed'} the "
                        "connection", after)
        return self.ctx.room() if data else None

    def server(self, data: bytes) -> asyncio.Future[None] | None:
        """The relay's tap for the server's bytes; what to wait for before reading more."""
        if data:
            if self._started is not None and self._first_reply is None:
                self._first_reply = self.clock()
                self._answered_after = self.ctx.last_order
            self._feed(Direction.SERVER, data)
            return self.ctx.room()
        if self._server_ended:
            return None
        self._server_ended = True
        self._feed(Direction.SERVER, data)
        identity = getattr(self._recorder, "identity", None)
        if identity and self.ctx.captures.get(identity) is self:
            del self.ctx.captures[identity]  # nothing can interrupt it any more
        farewell = getattr(self._recorder, "farewell", False)  # the close answers the client
        if not self._client_ended and not self._failed and self.dialect is not None \
                and not farewell:
            # the server ended the connection on its own (killed, timed out, HTTP/1.0...):
            # recorded when the client's side ends too, stamped with the order of now
            self._ending = ("reset" if self._server_reset else "close", self.ctx.last_order)
        return None

    def replay_early(self, chunks: list[tuple[str, bytes]]) -> None:
        """Bytes relayed before the capture started (a greeting, a TLS request)."""
        for side, data in chunks:
            (self.server if side == "server" else self.client)(data)

    def server_reset(self) -> None:
        """The server reset the connection (told by the relay before ``server(b"")``)."""
        self._server_reset = True

    def _feed(self, direction: Direction, data: bytes) -> None:
        if self._failed:
            return
        if self._raw is not None:
            self._raw_feed(direction, data)
            return
        self._keep_turn(direction, data)
        if direction is Direction.CLIENT and data and self._started is None:
            self._started, self._started_wall = self.clock(), _now()
            self._first_reply, self._interrupted = None, False
            self._order = self.ctx.next_order()
            self._tests = sorted(self.ctx.open_tests)  # inbound requests this one may serve
        try:
            if self.dialect is None:
                self._early.append((direction, data))
                if direction is Direction.CLIENT:
                    self._client_bytes += data
                final = not data or len(self._client_bytes) > 64 or (
                    direction is Direction.SERVER and not server_first_waits(data))
                greeted = (by_greeting(data) if direction is Direction.SERVER
                           and not self._client_bytes else None)
                self.dialect = by_alpn(self.alpn) or greeted or detect(self._client_bytes, self.port,
                                                                       final=final)
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
            if not self._go_raw(direction, exc):
                self._failed = True
                self.ctx.capture_failed(self.destination, self.dialect, exc)

    def _keep_turn(self, direction: Direction, data: bytes) -> None:
        """The bytes of the current turn (client until the server answers, then server),
        references only, while they are not too many."""
        if direction is Direction.SERVER:
            self._turn_answered = True
        elif self._turn_answered and data:  # the client speaks again: a new turn
            self._turn, self._turn_size, self._turn_answered = [], 0, False
        if self._turn is not None:
            self._turn.append((direction, data))
            self._turn_size += len(data)
            if self._turn_size > MAX_TURN_BYTES:
                self._turn = None

    def _go_raw(self, direction: Direction, exc: ProtocolError) -> bool:
        """The dialect failed on the server's bytes: the failed turn and the rest of the
        connection are recorded raw (``raw.py``); False when that cannot be done."""
        if direction is not Direction.SERVER or self._turn is None or self.dialect is None:
            return False
        turn, self._turn = self._turn, None
        if not any(d is Direction.CLIENT and data for d, data in turn):
            return False
        note = f"the {self.dialect.name} dialect could not decode the reply: {exc}"
        self._raw = RawTurns(self.dialect, self.tls, self.destination, note)
        for d, chunk in turn:
            self._emit(self._raw.feed(d, chunk), raw=note)
        if not self._raw.reading or self._raw.lost:  # its requests cannot be read alone
            self._raw = None
            return False
        self.ctx.problems.append(f"{self.destination}: {note}; the rest of the connection "
                                 "is recorded as raw bytes")
        log.warning("conn %d to %s: %s (recorded raw from here)", self.connection,
                    self.destination, note)
        return True

    def _raw_feed(self, direction: Direction, data: bytes) -> None:
        assert self._raw is not None
        self._emit(self._raw.feed(direction, data), raw=self._raw.note)
        if self._raw.lost:  # a request not even the replayer can read: capture stops
            self._failed = True
            self.ctx.capture_failed(self.destination, self.dialect, ProtocolError(
                f"{self._raw.note}; then a request it cannot read either"))

    def interrupt(self) -> None:
        """Another connection interrupted this one (a CancelRequest naming it): the answer
        pending now came because of that (``metadata.interrupted``)."""
        if self._started is not None and self._first_reply is None:
            self._interrupted = True

    def _emit(self, items: Sequence[Interaction | Pushed | Interrupt], raw: str | None = None) -> None:
        identity = getattr(self._recorder, "identity", None)
        if identity:  # known once the server said it (Postgres BackendKeyData)
            self.ctx.captures[identity] = self
        for it in items:
            assert self.dialect is not None
            if isinstance(it, Pushed):
                self._event("push", it.responses, it.summary or f"{len(it.responses)} pushed")
                continue
            if isinstance(it, Interrupt):
                if (target := self.ctx.captures.get(it.identity)) is not None:
                    target.interrupt()
                continue
            self._seq += 1
            started = self._started if self._started is not None else self.clock()
            wait = None
            if self._started is not None and self._first_reply is not None:
                wait = (self._first_reply - self._started) * 1000
            volatile = self.dialect.volatile(it.request, datetime.now(UTC)) if self.dialect.volatile else []
            self.ctx.record(Exchange(
                protocol=self.dialect.name, destination=self.destination,
                request=it.request, responses=it.responses, lifetime=it.lifetime,
                summary=it.summary, connection=self.connection, seq=self._seq,
                started=self._started_wall or _now(),
                duration_ms=(self.clock() - started) * 1000, tests=self._tests,
                tls=self.tls, alpn=self.alpn, order=self._order, wait_ms=wait,
                unanswered=it.unanswered, interrupted=self._interrupted,
                answered_after=self._answered_after if wait is not None else 0,
                extra=({"volatile": list(dict.fromkeys(volatile))} if volatile else {})
                | ({"raw": raw} if raw else {}),
            ))
            self._interrupted = False
            self._started = None
            self._started_wall = ""

    def _event(self, kind: str, responses: list, summary: str, after: int | None = None) -> None:
        """An event document (see ``Exchange.event``) at this point of the run."""
        if self.dialect is None or self._failed:
            return
        self._seq += 1
        self.ctx.record(Exchange(
            protocol=self.dialect.name, destination=self.destination, request=None,
            responses=responses, lifetime="event", summary=summary,
            connection=self.connection, seq=self._seq, started=_now(),
            tests=sorted(self.ctx.open_tests), tls=self.tls, alpn=self.alpn,
            event=kind, after=self.ctx.last_order if after is None else after))


def record_refused(ctx: RunContext, destination: str, summary: str = "connection refused") -> None:
    """A refused connect, as an event document: replay refuses a destination only ever
    refused (``MockPool.refused``) at connect, as the server did."""
    ctx.record(Exchange(protocol="tcp", destination=destination, request=None, responses=[],
                        lifetime="event", summary=summary, connection=next(conn_ids),
                        started=_now(), event="refused", after=ctx.last_order))


async def passthrough_or_record(ctx: RunContext, client: Streams, host: str, port: int,
                                record: bool) -> None:
    destination = format_destination(host, port)
    try:
        # asyncio.timeout, not wait_for: wait_for runs the connect in a task of its own,
        # 3 more loop iterations before the first request (each of them 100s of ms with
        # 1,000 busy connections)
        async with asyncio.timeout(ctx.connect_timeout):
            upstream = await open_upstream(ctx.upstream_netns, host, port, client[1], limit=CHUNK)
    except (TimeoutError, OSError) as exc:
        log.info("upstream %s failed: %s; resetting the client", destination, exc)
        if record and isinstance(exc, ConnectionRefusedError):
            record_refused(ctx, destination)
        reset(client[1])
        return
    if not record:
        await relay(client, upstream)
        return
    first_client, first_server = await _first_bytes(client[0], upstream[0])
    upgraded = False  # the server accepted an in-band TLS request (Postgres SSLRequest)
    greeted: list[tuple[str, bytes]] = []  # bytes relayed before the capture (MySQL TLS)
    greeter = by_greeting(first_server) if first_server and ctx.tls is not None else None
    if greeter is not None and greeter.tls_request is not None and greeter.greeting is not None:
        # the server greets, then the client may ask for TLS inside the protocol: relay the
        # greeting and look at the client's answer before choosing how to relay the rest
        client[1].write(first_server)
        await client[1].drain()
        greeted, first_server = [("server", first_server)], b""
        first_client = await client[0].read(CHUNK)
        if size := greeter.tls_request(first_client):
            upstream[1].write(first_client[:size])
            await upstream[1].drain()
            greeted.append(("client", first_client[:size]))
            first_client, upgraded = first_client[size:] or await client[0].read(CHUNK), True
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
        # who holds the connection, asked before our certificate goes out: a client that
        # refuses it hangs up at once and can no longer be found (its retry then came
        # from "another" client, intercepted and refused again)
        by = await ctx.tls.client_of(client[1]) if hello is not None else None
        if hello is not None and (name not in ctx.tls.refusals or not ctx.tls.passes_through(name, by)):
            try:
                down, up = await intercept_record(ctx.tls, client, upstream, hello, first_client, name,
                                                  system_trust=not upgraded)
            except CertificateRejected as exc:
                ctx.tls.refused(name, by)
                by_text = f"process {by[0]}" if isinstance(by, tuple) else "the app"
                ctx.problems.append(f"{name} refused our certificate ({exc}); passed through for "
                                    f"{by_text} from now on")
                log.warning("%s refused trproxy's certificate for %s: %s", by_text, name, exc)
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
            cap.replay_early(greeted)
            await relay((down, down), (up, up), cap.client, cap.server,  # type: ignore[arg-type]
                        upstream_reset=cap.server_reset)
            return
    if upgraded and greeted:  # the TLS asked for after the greeting is not intercepted (a
        # passthrough host): relayed, not recordable
        await relay(client, upstream, None, None, first_client, first_server)
        return
    cap = Capture(ctx, destination, port)
    cap.replay_early(greeted)
    await relay(client, upstream, cap.client, cap.server, first_client, first_server,
                upstream_reset=cap.server_reset)


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

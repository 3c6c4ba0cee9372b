"""Replay sessions: no upstream is ever opened (new-episodes fetches aside).

Before the protocol is known this module does the I/O itself: waiting for a client that
expects the server to speak first, answering bytes that come before the protocol
(Postgres SSLRequest), TLS interception, detection. Then the connection belongs to a
``engine.Session``, which decides every answer; ``_Driver`` carries out its commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from ..protocols.base import Dialect, ProtocolError
from ..protocols.registry import by_alpn, by_greeting, detect, pre_protocol
from ..tls.errors import TlsError
from .context import Mode, format_destination
from .engine import (
    ClientClosed,
    ClientData,
    Close,
    Command,
    Drain,
    Drained,
    Event,
    Forward,
    Forwarded,
    Injected,
    Miss,
    Notify,
    Opened,
    OutOfOrder,
    Problem,
    Reset,
    Send,
    Session,
    Similar,
    TimerFired,
    Wake,
)
from .record import conn_ids
from .relay import CHUNK, reset

if TYPE_CHECKING:
    from .context import RunContext

log = logging.getLogger("trproxy")
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_SERVER_FIRST_WAIT = 0.5  # how long replay waits for a client that expects the server to speak


async def replay(ctx: RunContext, client: Streams, host: str, port: int) -> None:
    reader, writer = client
    destination = format_destination(host, port)
    connection = next(conn_ids)
    buffered = b""
    dialect: Dialect | None = None
    tls = False
    server_name = host  # the TLS server name the app asked for (its SNI)
    alpn: str | None = None  # what our TLS with the app negotiated
    if ctx.pool.refused(destination) or (
            ctx.mode is Mode.REPLAY and not ctx.pool.has_destination(destination)):
        refuse(ctx, writer, destination)
        return
    try:
        while dialect is None:
            try:
                data = await asyncio.wait_for(reader.read(CHUNK), _SERVER_FIRST_WAIT if not buffered else None)
            except TimeoutError:
                data = None
            buffered += data or b""
            while not tls and ctx.tls is not None and (pre := pre_protocol(buffered)) is not None:
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
                from ..tls.stream import intercept_replay, read_client_hello

                hello, buffered = await read_client_hello(reader, buffered)
                if hello is not None:
                    server_name = hello.sni or host
                    stream = await intercept_replay(ctx.tls, (reader, writer), hello, buffered,
                                                    server_name, ctx.pool.recorded_alpn(destination))
                    reader = writer = stream  # type: ignore[assignment]
                    alpn = stream.endpoint.alpn
                    tls, buffered = True, await stream.read(CHUNK)
                    data = buffered
            silent = data is None and not buffered  # waits for a server-first greeting
            dialect = by_alpn(alpn) or (
                by_greeting(b"", ctx.pool.recorded_protocols(destination)) if silent else None
            ) or detect(buffered, port, final=not data)
            if not data and dialect is None:
                return
        assert dialect is not None
        # a server-first protocol whose recording was TLS inside it (MySQL SSLRequest): its
        # greeting offers TLS (the replayer is told so), and the driver intercepts it
        offer_tls = (not buffered and dialect.tls_request is not None and ctx.tls is not None
                     and ctx.pool.recorded_tls(destination))
        replayer = dialect.replayer_for(tls or offer_tls, destination, ctx.blobs)
        session = Session(ctx, dialect, replayer, destination,
                          forwarding=ctx.mode is Mode.NEW_EPISODES)
        driver = _Driver(ctx, session, writer, host, port, server_name if tls else None, connection,
                         alpn)
        if offer_tls:
            driver.tls_request = dialect.tls_request
        try:
            await driver.run(reader, buffered)
        finally:
            await driver.close()
        log.debug("replay conn %d to %s (%s) ended", connection, destination, dialect.name)
    except (ProtocolError, TlsError) as exc:
        ctx.replay_failed(destination, dialect, exc)
        reset(writer)
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def refuse(ctx: RunContext, writer: Any, destination: str) -> None:
    """No recording there, or the server refused when recording: the app's connection
    fails (a reset; the eBPF redirect refuses at connect when it can) and, unless it was
    refused when recording, the report says so."""
    if not ctx.pool.refused(destination):
        ctx.missed({"protocol": "tcp", "destination": destination, "request": "connect",
                    "reason": "nothing was recorded for this destination: connection refused",
                    "nearest": [], "test": ctx.test})
    reset(writer)


class _Driver:
    """Carries out a ``Session``'s commands on one connection: bytes, timers, reports,
    and new-episodes fetches (the rules are all in the engine)."""

    def __init__(self, ctx: RunContext, session: Session, writer: Any, host: str, port: int,
                 tls_name: str | None, connection: int, alpn: str | None = None) -> None:
        self.ctx, self.session, self.writer = ctx, session, writer
        self.host, self.port, self.tls_name, self.connection = host, port, tls_name, connection
        self.alpn = alpn
        self.loop = asyncio.get_running_loop()
        self.ended = asyncio.Event()
        session.owner = self  # other connections' Notify commands reach it through here
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._upstream: Any = None  # new-episodes: the real server, opened at the first miss
        self.tls_request: Any = None  # client bytes that start TLS now (MySQL SSLRequest)

    async def run(self, reader: Any, data: bytes) -> None:
        if not data and hasattr(self.session.replayer, "opened"):
            self.dispatch(Opened())  # a server-first protocol's replayer speaks first
            await self.writer.drain()
            data = await reader.read(CHUNK)
        while data:
            if self.tls_request is not None and (size := self.tls_request(data)):
                reader = await self._start_tls(reader, data[size:])
                data = await reader.read(CHUNK)
                continue
            self.dispatch(ClientData(data))
            if self.session.ended:
                return
            await self.writer.drain()
            data = await reader.read(CHUNK)
        self.dispatch(ClientClosed())
        await self.ended.wait()  # held answers, fetches and streams finish first

    async def _start_tls(self, reader: Any, first: bytes) -> Any:
        """TLS the client asked for inside the protocol: intercepted as at connect; the
        replayer never sees the request and reads the plaintext inside."""
        from ..tls.errors import TlsError
        from ..tls.stream import intercept_replay, read_client_hello

        assert self.ctx.tls is not None
        self.tls_request = None
        hello, first = await read_client_hello(reader, first or await reader.read(CHUNK))
        if hello is None:
            raise TlsError("no TLS ClientHello after the TLS request")
        name = hello.sni or self.host
        stream = await intercept_replay(self.ctx.tls, (reader, self.writer), hello, first, name,
                                        self.ctx.pool.recorded_alpn(format_destination(self.host, self.port)))
        self.writer, self.tls_name = stream, name
        return stream

    def dispatch(self, event: Event) -> None:
        if self.session.ended:
            return
        try:
            commands = self.session.handle(event, self.loop.time())
        except Exception:
            log.exception("replay of a connection to %s failed", self.session.destination)
            commands = [Reset()]
            self.session.ended = True
        batch: list[bytes] = []  # answers in a row go out in one write (pipelined requests:
        for command in commands:  # redis-benchmark -P 16 got 16 sends per read)
            if isinstance(command, Send):
                batch.append(command.data)
                continue
            if batch:
                self.writer.write(b"".join(batch))
                batch = []
            self._apply(command)
        if batch:
            self.writer.write(b"".join(batch))

    def _apply(self, command: Command) -> None:
        """Every command but ``Send`` (``dispatch`` writes those, batched)."""
        if isinstance(command, Wake):
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(command.at, self.dispatch, TimerFired())
        elif isinstance(command, Drain):
            self._spawn(self._drained())
        elif isinstance(command, Close):
            self.writer.close()
            self.ended.set()
        elif isinstance(command, Reset):
            reset(self.writer)
            self.ended.set()
        elif isinstance(command, Miss):
            self.ctx.missed(command.entry, command.request)
        elif isinstance(command, OutOfOrder):
            self.ctx.served_out_of_order(command.entry)
        elif isinstance(command, Injected):
            self.ctx.fault_injected(command.entry)
        elif isinstance(command, Similar):
            self.ctx.served_similar(command.entry)
        elif isinstance(command, Problem):
            self.ctx.problems.append(command.text)
            log.warning("%s", command.text)
        elif isinstance(command, Forward):
            self._spawn(self._forward(command))
        elif isinstance(command, Notify):
            target = command.target.owner
            if isinstance(target, _Driver):
                target.dispatch(command.event)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drained(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            self.dispatch(ClientClosed())
            return
        self.dispatch(Drained())

    async def _forward(self, command: Forward) -> None:
        """new-episodes: fetch the lookup from the real server (recorded as it comes)."""
        from .new_episodes import ForwardError, Upstream, forward

        if self._upstream is None:
            self._upstream = Upstream(self.ctx, self.host, self.port, self.tls_name)
        try:
            responses = await forward(self.ctx, self._upstream, self.session.dialect.name,
                                      command.lookup, self.session.destination, self.connection,
                                      self.alpn)
        except ForwardError as exc:
            self.dispatch(Forwarded(command, None, str(exc)))
            return
        self.dispatch(Forwarded(command, responses))

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._upstream is not None:
            await self._upstream.close()
        self.session.close()

"""Replay sessions: no upstream is ever opened (new-episodes fetches aside).

Before the protocol is known this module does the I/O itself: waiting for a client that
expects the server to speak first, answering bytes that come before the protocol
(Postgres SSLRequest), TLS interception, detection. Then the connection belongs to a
``engine.Session``, which decides every answer; ``_Driver`` carries out its commands.

A plain socket is then served in protocol callbacks (``_Client``): each read is handed
to the session in the callback that received it and the answers written to the transport,
with no task woken, no future and no drain per read (as ``relay._Splice`` does for
passthrough); reading pauses while the socket's send buffer is full, as the stream's
``drain`` after each read held it. TLS streams (``tls.stream.TlsStream``: no transport)
and a connection that may still start TLS (MySQL SSLRequest) are read as streams.
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
from .relay import CHUNK, reset, spliceable

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
    first_wait: float | None = _SERVER_FIRST_WAIT
    try:
        while dialect is None:
            try:
                data = await asyncio.wait_for(reader.read(CHUNK), first_wait if not buffered else None)
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
            if silent and alpn is None:
                recorded = ctx.pool.recorded_protocols(destination)
                dialect = by_greeting(b"", recorded)
                if dialect is None and recorded and "generic" not in recorded:
                    # only client-first protocols were recorded there: the client speaks
                    # first, however late (a client behind its own slow relay); with
                    # nothing recorded there (new episodes) the real server may speak first
                    first_wait = None
                    continue
            dialect = dialect or by_alpn(alpn) or detect(buffered, port, final=not data)
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
            if driver.tls_request is None and spliceable((reader, writer)):
                await driver.serve(reader, buffered)
            else:
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
        self.ended: asyncio.Future[None] = self.loop.create_future()  # Close or Reset done
        session.owner = self  # other connections' Notify commands reach it through here
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._upstream: Any = None  # new-episodes: the real server, opened at the first miss
        self.tls_request: Any = None  # client bytes that start TLS now (MySQL SSLRequest)
        self._write = writer.write  # the transport's own, once ``serve`` has it
        self._drain = writer.drain

    async def run(self, reader: Any, data: bytes) -> None:
        """Read the client as a stream (TLS, or TLS may start: ``tls_request``)."""
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
        await self.ended  # held answers, fetches and streams finish first

    async def serve(self, reader: asyncio.StreamReader, data: bytes) -> None:
        """Serve a plain socket in protocol callbacks (``_Client``) until the session ends;
        ``data``: what was read before, and what the stream holds goes with it. Raises
        what the connection died of (a reset) as ``run``'s read would."""
        transport = self.writer.transport
        buffer = getattr(reader, "_buffer", None)  # read by the stream, not consumed yet
        data += bytes(buffer or b"")
        if buffer:
            buffer.clear()
        eof = reader.at_eof()
        client = _Client(self, transport)
        transport.set_protocol(client)
        self._write, self._drain = transport.write, client.drain
        if not eof and not transport.is_closing() and not transport.is_reading():
            transport.resume_reading()  # the stream paused it (its buffer was full)
        if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
            client.pause_writing()
        if not data and hasattr(self.session.replayer, "opened"):
            self.dispatch(Opened())  # a server-first protocol's replayer speaks first
        if data:
            client.data_received(data)
        if eof:
            client.eof_received()
        await self.ended  # held answers, fetches and streams finish first

    def fail(self, exc: BaseException) -> None:
        """The connection died under the session (``serve`` raises it), or a callback
        failed: ends ``serve`` as an exception out of ``run`` ends it."""
        if not self.ended.done():
            self.ended.set_exception(exc)
        else:
            log.debug("replay conn %d after its end: %r", self.connection, exc)

    def _finish(self) -> None:
        if not self.ended.done():
            self.ended.set_result(None)

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
        self._write, self._drain = stream.write, stream.drain
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
                self._write(b"".join(batch))
                batch = []
            self._apply(command)
        if batch:
            self._write(b"".join(batch))

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
            self._finish()
        elif isinstance(command, Reset):
            reset(self.writer)
            self._finish()
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
            await self._drain()
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


class _Client(asyncio.Protocol):
    """A plain socket's callbacks for its ``_Driver`` (``serve``): each read is dispatched
    where it arrives; while the send buffer is above its high-water mark reading pauses
    (what ``drain`` after each read did) and ``drain`` waits, as ``StreamWriter``'s."""

    def __init__(self, driver: _Driver, transport: Any) -> None:
        self.driver, self.transport = driver, transport
        self.eof = False  # the client sent FIN (or the connection closed cleanly)
        self.lost = False  # the transport is closed
        self.full = False  # the send buffer is above its high-water mark
        self._paused = False  # reading paused by us (uvloop raises on pausing twice)
        self._drainers: list[asyncio.Future[None]] = []

    def data_received(self, data: bytes) -> None:
        try:
            self.driver.dispatch(ClientData(data))
        except Exception as exc:  # e.g. a write to a closed transport: as ``run`` raised
            self.driver.fail(exc)

    def eof_received(self) -> bool:
        self.eof = True
        try:
            self.driver.dispatch(ClientClosed())
        except Exception as exc:
            self.driver.fail(exc)
        return True  # half-close: what is held still goes out, then the session closes

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for waiter in self._drainers:
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("Connection lost"))
        if self.eof:
            return
        if exc is None:
            self.eof_received()  # closed without a FIN seen: the client is gone
        else:
            self.driver.fail(exc)  # a reset: as the stream's read raised it

    def pause_writing(self) -> None:
        self.full = True
        if not self._paused and not self.eof and not self.lost and self.transport.is_reading():
            self.transport.pause_reading()
            self._paused = True

    def resume_writing(self) -> None:
        self.full = False
        for waiter in self._drainers:
            if not waiter.done():
                waiter.set_result(None)
        if self._paused:
            self._paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    async def drain(self) -> None:
        """Until the send buffer is below its low-water mark (``StreamWriter.drain``)."""
        if self.transport.is_closing():
            await asyncio.sleep(0)  # as the stream's: the close is seen first
        if self.lost:
            raise ConnectionResetError("Connection lost")
        if not self.full:
            return
        waiter = self.driver.loop.create_future()
        self._drainers.append(waiter)
        try:
            await waiter
        finally:
            self._drainers.remove(waiter)

"""Full-duplex byte relay between two asyncio stream pairs.

Invariants: each direction is pumped independently, so a FIN one way (half-close)
leaves the other way open; ``drain`` after every write bounds the buffered bytes
(backpressure: a slow reader stops us reading from the fast writer); a reset on one
side is passed on as a reset (SO_LINGER 0) to the other, never as a silent hang.

Plain sockets are spliced in protocol callbacks instead (``_Splice``): each chunk
received is written to the other socket, and given to the tap, in the callback that
received it, with no task woken, no future and no drain per chunk; the same invariants
hold (pause_writing/resume_writing of one socket pause and resume reading the other).
The pumps remain for TLS streams (``tls.stream.TlsStream``), which are no transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import struct
import termios
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("trproxy")
CHUNK = 256 * 1024
_DRAIN_GRACE = 0.2  # seconds the surviving direction may finish after the other reset
# sees every chunk (b"" when that direction ends); may return an awaitable for the
# direction to wait for before it reads more (the recording's writer is behind)
Tap = Callable[[bytes], Awaitable[None] | None]


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST so the peer sees a reset, as it would from a dead server.

    A reset discards what the kernel has not sent yet: ``reset_after_sent`` first waits
    (bounded) for it when the bytes before the reset matter."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):  # ValueError: uvloop, already closed
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def unsent(writer: asyncio.StreamWriter) -> int:
    """Bytes written to the socket that the kernel has not sent yet (SIOCOUTQ)."""
    sock = writer.get_extra_info("socket")
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (AttributeError, OSError, ValueError):  # no socket (TLS stream), or closed
        return 0
    return struct.unpack("i", buf)[0] + writer.transport.get_write_buffer_size()


async def reset_after_sent(writer: asyncio.StreamWriter, timeout: float) -> None:
    """Reset once what was written has left (or after ``timeout``): the peer reads the
    last bytes (a server's 431 before it hung up) before it sees the reset."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while unsent(writer) and loop.time() < deadline:
        await asyncio.sleep(0.005)
    reset(writer)


def _unread(reader: asyncio.StreamReader, spare: socket.socket | None) -> bytes:
    """What the peer sent before it reset, which a direct client would still read (the
    kernel gives queued bytes before the reset), but asyncio loses twice:
    ``StreamReader.read`` raises the reset without returning the bytes it holds (CPython
    gh-75044, open), and a transport whose *write* failed closes without reading what
    the kernel still queues. ``spare`` (``spare_socket``) still reaches that queue."""
    buffer = getattr(reader, "_buffer", None)
    data = bytes(buffer or b"")
    if buffer:
        buffer.clear()
    return data + _queued(spare)


def _queued(spare: socket.socket | None) -> bytes:
    """What the kernel still queues for reading on ``spare`` (``spare_socket``)."""
    data = b""
    while spare is not None:
        try:
            more = spare.recv(CHUNK, socket.MSG_DONTWAIT)
        except OSError:  # EAGAIN: nothing more queued; ECONNRESET: the reset itself
            break
        if not more:
            break
        data += more
    return data


def spare_socket(writer: Any) -> socket.socket | None:
    """A second reference to a stream's socket, so the bytes its kernel queue holds stay
    readable after the transport closed it (see ``_unread``); close it when done."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None  # a TLS stream: its records are decrypted from what was read
    with contextlib.suppress(OSError):
        return socket.socket(fileno=os.dup(sock.fileno()))
    return None


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               tap: Tap | None = None, first: bytes = b"",
               spare: socket.socket | None = None,
               on_reset: Callable[[], None] | None = None) -> bool:
    """Copy ``first`` then until EOF; False when either side reset (the caller aborts both).

    Bytes the reader's peer sent before it reset are still delivered (a server that
    answers 431 and hangs up on a request it did not read). The tap sees ``b""`` however
    the direction ends: a recorder must learn that no more bytes come (a response
    delimited by the server's close is complete even when the app hung up first and our
    write to it failed). ``on_reset`` is told, before that, when the reader's peer reset.
    """
    peer_reset = False
    try:
        while True:
            if first:
                data, first = first, b""
            else:
                try:
                    data = await reader.read(CHUNK)
                except (ConnectionError, OSError):
                    data, peer_reset = _unread(reader, spare), True
            if not data or writer.is_closing():
                break
            writer.write(data)  # bytes first: the peer works while the recorder decodes a copy
            hold = None
            if tap is not None:
                try:
                    hold = tap(data)
                except Exception:  # a recorder bug ends the copy, never the app's connection
                    log.exception("the copy for the recording failed; the connection goes on "
                                  "unrecorded")
                    tap = None
            await writer.drain()
            if hold is not None:  # this connection waits for the recording, not the loop
                await hold
            if peer_reset:
                break
        if peer_reset:
            if on_reset is not None:
                on_reset()
            return False
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()
        return True
    except (ConnectionError, OSError):
        return False
    finally:
        if tap is not None:
            try:
                tap(b"")  # the direction ended: nothing more to hold back
            except Exception:
                log.exception("the copy for the recording failed at the end of the connection")


async def relay(client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                to_upstream: Tap | None = None, to_client: Tap | None = None,
                first_client: bytes = b"", first_server: bytes = b"",
                upstream_reset: Callable[[], None] | None = None) -> None:
    """Relay both ways until both directions ended; a reset aborts both sides.

    ``first_client``/``first_server``: bytes already read from either side, sent first;
    ``upstream_reset`` is told when the server reset (before ``to_client`` sees the end).
    """
    c_w, u_w = client[1], upstream[1]
    spares = (spare_socket(c_w), spare_socket(u_w))
    sides = ((client, first_client, spares[0], to_upstream, None),
             (upstream, first_server, spares[1], to_client, upstream_reset))
    try:
        if spliceable(client) and spliceable(upstream):
            await _splice(*sides)
        else:
            await _pumps(*sides)
    finally:
        for w in (c_w, u_w):
            w.close()
        for spare in spares:
            if spare is not None:
                spare.close()


async def _pumps(client: Side, upstream: Side) -> None:
    """``relay`` through two ``pump`` tasks (TLS streams, which are no transports)."""
    ((c_r, c_w), first_client, c_spare, to_upstream, _), (
        (u_r, u_w), first_server, u_spare, to_client, upstream_reset) = client, upstream
    up = asyncio.ensure_future(pump(c_r, u_w, to_upstream, first_client, c_spare))
    down = asyncio.ensure_future(pump(u_r, c_w, to_client, first_server, u_spare, upstream_reset))
    try:
        for finished in asyncio.as_completed((up, down)):
            if not await finished:
                # give the other direction a moment to deliver what the peer already sent
                # (e.g. the rest of a response the app no longer reads), then reset both
                other = down if up.done() and not down.done() else up
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(other), _DRAIN_GRACE)
                await asyncio.gather(reset_after_sent(c_w, _DRAIN_GRACE),
                                     reset_after_sent(u_w, _DRAIN_GRACE))
                break
    finally:
        for task in (up, down):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                    await task


def spliceable(streams: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> bool:
    """A plain socket's streams (not TLS, no error pending): its transport can be given
    to a ``_Splice``."""
    reader, writer = streams
    transport = getattr(writer, "transport", None)
    return (isinstance(reader, asyncio.StreamReader) and transport is not None
            and reader.exception() is None and writer.get_extra_info("sslcontext") is None
            and writer.get_extra_info("socket") is not None)


Side = tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter], bytes, "socket.socket | None",
             "Tap | None", "Callable[[], None] | None"]


async def _splice(client: Side, upstream: Side) -> None:
    """``relay`` of two plain sockets: each one's transport gets a ``_SpliceEnd`` as its
    protocol; returns once both directions ended, or after a reset (passed on as one).
    A side: its streams, bytes already read from it, its spare socket, the tap of what
    it sends and what to tell when it resets."""
    ends = []
    for (reader, writer), first, spare, tap, on_reset in (client, upstream):
        # what the stream read and nobody consumed yet goes first, and its end with it
        buffer = getattr(reader, "_buffer", None)
        pending = first + bytes(buffer or b"")
        if buffer:
            buffer.clear()
        ends.append(_SpliceEnd(writer.transport, pending, reader.at_eof(), spare, tap, on_reset))
    splice = _Splice(asyncio.get_running_loop(), *ends)
    try:
        if not await splice.finished:  # a reset: the peer of the side that reset gets one too
            await asyncio.gather(reset_after_sent(client[0][1], _DRAIN_GRACE),
                                 reset_after_sent(upstream[0][1], _DRAIN_GRACE))
    finally:
        for end in ends:
            end.tap_end()  # however it ended (a reset, a cancelled session)


class _SpliceEnd(asyncio.Protocol):
    """One socket of a ``_Splice``: what it receives is written to the other socket, then
    given to the tap; reading pauses while the other socket's send buffer is full or the
    tap holds the direction back (the recording's writer is behind)."""

    def __init__(self, transport: Any, pending: bytes, ended: bool, spare: socket.socket | None,
                 tap: Tap | None, on_reset: Callable[[], None] | None) -> None:
        self.transport = transport
        self.pending = pending  # read by the stream before the splice, not yet relayed
        self.ended = ended  # nothing more comes from this socket (FIN, reset, closed)
        self.spare = spare
        self.tap = tap
        self.on_reset = on_reset
        self.paused: set[str] = set()  # why this socket is not read: "full", "tap"
        self.peer: _SpliceEnd = self
        self.splice: _Splice | None = None

    def data_received(self, data: bytes) -> None:
        peer = self.peer.transport
        if not peer.is_closing():
            peer.write(data)  # bytes first: the peer works while the recorder decodes a copy
        if self.tap is None:
            return
        try:
            hold = self.tap(data)
        except Exception:  # a recorder bug ends the copy, never the app's connection
            log.exception("the copy for the recording failed; the connection goes on unrecorded")
            self.tap = None
            return
        if hold is not None:  # this connection waits for the recording, not the loop
            waiting = asyncio.ensure_future(hold)
            if not waiting.done():
                self.pause("tap")
                waiting.add_done_callback(lambda _: self.resume("tap"))

    def tap_end(self) -> None:
        """The tap sees ``b""`` once, however the direction ended."""
        tap, self.tap = self.tap, None
        if tap is not None:
            try:
                tap(b"")
            except Exception:
                log.exception("the copy for the recording failed at the end of the connection")

    def eof_received(self) -> bool:
        self._end()
        return True  # half-close: the other direction goes on

    def _end(self) -> None:
        """This direction ended: the other socket gets a FIN, as it would direct."""
        self.ended = True
        peer = self.peer.transport
        if not peer.is_closing() and peer.can_write_eof():
            peer.write_eof()
        self.tap_end()
        assert self.splice is not None
        self.splice.check()

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.splice is not None
        self.ended = True
        if exc is None or self.splice.finished.done():
            self.tap_end()
            self.splice.check(closed=True)
            return
        # a reset (or a failed send): what the peer sent before it still reaches the
        # other side (and the tap), as it would direct, and then a reset
        if data := _queued(self.spare):
            self.data_received(data)
        if self.on_reset is not None:
            self.on_reset()
        self.tap_end()
        self.splice.fail()

    def pause(self, why: str) -> None:
        """Stop reading this socket (uvloop raises on pausing a socket that does not read,
        resuming one that does, or after its EOF: the reasons are tracked)."""
        if not self.paused and not self.ended and self.transport.is_reading():
            self.transport.pause_reading()
            self.paused.add(why)
        elif self.paused:
            self.paused.add(why)

    def resume(self, why: str) -> None:
        if why in self.paused:
            self.paused.discard(why)
            if not self.paused and not self.transport.is_closing():
                self.transport.resume_reading()

    def pause_writing(self) -> None:  # our send buffer is full: stop reading the other one
        self.peer.pause("full")

    def resume_writing(self) -> None:
        self.peer.resume("full")


class _Splice:
    """Two sockets relayed to each other in protocol callbacks; ``finished`` is True once
    both directions ended, False after a reset on either side."""

    def __init__(self, loop: asyncio.AbstractEventLoop, a: _SpliceEnd, b: _SpliceEnd) -> None:
        self.finished: asyncio.Future[bool] = loop.create_future()
        self._ends = (a, b)
        a.peer, b.peer = b, a
        for end in (a, b):
            end.splice = self
            end.transport.set_protocol(end)
            if not end.ended and not end.transport.is_closing() and not end.transport.is_reading():
                end.transport.resume_reading()  # the stream paused it (its buffer was full)
        for end in (a, b):
            if end.pending:
                end.data_received(end.pending)
                end.pending = b""
            if end.transport.get_write_buffer_size() > end.transport.get_write_buffer_limits()[1]:
                end.pause_writing()
        for end in (a, b):
            if end.ended:
                end._end()
            elif end.transport.is_closing():  # closed before the splice began
                end.connection_lost(None)

    def check(self, closed: bool = False) -> None:
        """Finished once both directions ended; a socket closed under us ends both."""
        a, b = self._ends
        if not self.finished.done() and (closed or (a.ended and b.ended)):
            self.finished.set_result(True)

    def fail(self) -> None:
        if not self.finished.done():
            self.finished.set_result(False)

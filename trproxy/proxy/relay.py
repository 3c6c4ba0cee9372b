"""Full-duplex byte relay between two asyncio stream pairs.

Invariants: each direction is pumped independently, so a FIN one way (half-close)
leaves the other way open; ``drain`` after every write bounds the buffered bytes
(backpressure: a slow reader stops us reading from the fast writer); a reset on one
side is passed on as a reset (SO_LINGER 0) to the other, never as a silent hang.
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
    (c_r, c_w), (u_r, u_w) = client, upstream
    spares = (spare_socket(c_w), spare_socket(u_w))
    up = asyncio.ensure_future(pump(c_r, u_w, to_upstream, first_client, spares[0]))
    down = asyncio.ensure_future(pump(u_r, c_w, to_client, first_server, spares[1],
                                      upstream_reset))
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
        for w in (c_w, u_w):
            w.close()
        for spare in spares:
            if spare is not None:
                spare.close()

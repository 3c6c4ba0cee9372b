"""Full-duplex byte relay between two asyncio stream pairs.

Invariants: each direction is pumped independently, so a FIN one way (half-close)
leaves the other way open; ``drain`` after every write bounds the buffered bytes
(backpressure: a slow reader stops us reading from the fast writer); a reset on one
side is passed on as a reset (SO_LINGER 0) to the other, never as a silent hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable

CHUNK = 256 * 1024
_DRAIN_GRACE = 0.2  # seconds the surviving direction may finish after the other reset
Tap = Callable[[bytes], None]  # sees every chunk; b"" when that direction ends


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST so the peer sees a reset, as it would from a dead server."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               tap: Tap | None = None, first: bytes = b"") -> bool:
    """Copy ``first`` then until EOF; False when either side reset (the caller aborts both).

    The tap sees ``b""`` however the direction ends: a recorder must learn that no more
    bytes come (a response delimited by the server's close is complete even when the
    app hung up first and our write to it failed).
    """
    try:
        while data := first or await reader.read(CHUNK):
            first = b""
            writer.write(data)  # bytes first: the peer works while the recorder decodes a copy
            if tap is not None:
                tap(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()
        return True
    except (ConnectionError, OSError):
        return False
    finally:
        if tap is not None:
            tap(b"")


async def relay(client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                to_upstream: Tap | None = None, to_client: Tap | None = None,
                first_client: bytes = b"", first_server: bytes = b"") -> None:
    """Relay both ways until both directions ended; a reset aborts both sides.

    ``first_client``/``first_server``: bytes already read from either side, sent first.
    """
    (c_r, c_w), (u_r, u_w) = client, upstream
    up = asyncio.ensure_future(pump(c_r, u_w, to_upstream, first_client))
    down = asyncio.ensure_future(pump(u_r, c_w, to_client, first_server))
    try:
        for finished in asyncio.as_completed((up, down)):
            if not await finished:
                # give the other direction a moment to deliver what the peer already sent
                # (e.g. the rest of a response the app no longer reads), then reset both
                other = down if up.done() and not down.done() else up
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(other), _DRAIN_GRACE)
                reset(c_w)
                reset(u_w)
                break
    finally:
        for task in (up, down):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                    await task
        for w in (c_w, u_w):
            w.close()

"""An HTTP/1.1 client connection over asyncio streams (h11), returning readable responses.

Shared by ``trproxy test`` (sending recorded requests to the app, ``testrun``) and
``new-episodes`` (fetching a request from the real server, ``forward``). Keep-alive
aware: ``Unanswered`` tells a kept-alive connection the server closed while idle (worth
one retry on a fresh connection) from a server that failed to answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import h11

from .protocols.base import BlobReader, BlobStore
from .protocols.http.body import BodyBuffer, read_chunks
from .protocols.http.config import HttpConfig
from .protocols.http.readable import response_readable

_READ = 64 * 1024


class Unanswered(ConnectionResetError):
    """The connection failed before any byte of the response arrived."""


class Http1Connection:
    """One HTTP/1.1 client connection (h11 state machine over asyncio streams)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.used = False

    @classmethod
    async def open(cls, host: str, port: int, ssl: Any = None,
                   server_hostname: str | None = None) -> Http1Connection:
        reader, writer = await asyncio.open_connection(
            host, port, limit=_READ, ssl=ssl, server_hostname=server_hostname if ssl else None)
        return cls(reader, writer)

    @property
    def reusable(self) -> bool:
        return self.h11.our_state is h11.IDLE and self.h11.their_state is h11.IDLE

    async def exchange(self, request: h11.Request, body: bytes | BlobReader,
                       config: HttpConfig, blobs: BlobStore | None = None) -> dict[str, Any]:
        """Send one request, read its response. Raises ``Unanswered`` when the connection
        failed before the first response byte (a kept-alive connection closed while idle)."""
        self.used = True
        answered = False
        chunks = [body] if isinstance(body, bytes) else read_chunks(body)
        try:
            self.writer.write(self.h11.send(request) or b"")
            for chunk in chunks:
                if chunk:
                    self.writer.write(self.h11.send(h11.Data(data=chunk)) or b"")
                    await self.writer.drain()
            self.writer.write(self.h11.send(h11.EndOfMessage()) or b"")
            await self.writer.drain()
        except ConnectionError as exc:
            raise Unanswered(str(exc)) from exc
        head: h11.Response | None = None
        buf = BodyBuffer(config.max_body, blobs)
        trailers = None
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await self.reader.read(_READ)
                except ConnectionError as exc:
                    raise (exc if answered else Unanswered(str(exc))) from exc
                if not data and not answered:
                    raise Unanswered("the app closed the connection without answering")
                answered = True
                self.h11.receive_data(data)
                continue
            if isinstance(event, h11.InformationalResponse):
                continue  # 1xx: the final response follows
            if isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                buf.add(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                trailers = list(event.headers.raw_items()) or None
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("the app closed the connection mid-response")
        assert head is not None
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        return response_readable(head.status_code, head.reason.decode("latin-1"),
                                 f"HTTP/{head.http_version.decode()}", list(head.headers.raw_items()),
                                 buf, trailers, config)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self.writer.wait_closed()

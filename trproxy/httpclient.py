"""An HTTP/1.1 client connection over asyncio streams, returning readable responses.

Used by ``trproxy test`` (sending recorded requests to the app, ``testrun``); the HTTP
work is ``protocols.http.client.H1ClientExchange`` (sans-I/O), which new-episodes uses
too, so there is one HTTP/1 client. Keep-alive aware: ``Unanswered`` tells a kept-alive
connection the server closed while idle (worth one retry on a fresh connection) from a
server that failed to answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import h11

from .protocols.base import BlobReader, BlobStore
from .protocols.http.body import read_chunks
from .protocols.http.client import H1ClientExchange
from .protocols.http.config import HttpConfig

_READ = 64 * 1024


class Unanswered(ConnectionResetError):
    """The connection failed before any byte of the response arrived."""


class Http1Connection:
    """One HTTP/1.1 client connection: one exchange at a time, kept alive when it can."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.used = False
        self.reusable = True  # no exchange yet, or the last one left the connection usable

    @classmethod
    async def open(cls, host: str, port: int, ssl: Any = None,
                   server_hostname: str | None = None) -> Http1Connection:
        reader, writer = await asyncio.open_connection(
            host, port, limit=_READ, ssl=ssl, server_hostname=server_hostname if ssl else None)
        return cls(reader, writer)

    async def exchange(self, request: h11.Request, body: bytes | BlobReader,
                       config: HttpConfig, blobs: BlobStore | None = None) -> dict[str, Any]:
        """Send one request, read its response. Raises ``Unanswered`` when the connection
        failed before the first response byte (a kept-alive connection closed while idle),
        ``DecodeError`` when the answer is not HTTP/1."""
        self.used, self.reusable = True, False
        exchange = H1ClientExchange(request, config, blobs)
        chunks = [body] if isinstance(body, bytes) else read_chunks(body)
        try:
            self.writer.write(exchange.head())
            for chunk in chunks:
                self.writer.write(exchange.body(chunk))
                await self.writer.drain()
            self.writer.write(exchange.end())
            await self.writer.drain()
        except ConnectionError as exc:
            raise Unanswered(str(exc)) from exc
        while not exchange.done:
            try:
                data = await self.reader.read(_READ)
            except ConnectionError as exc:
                raise (exc if exchange.answered else Unanswered(str(exc))) from exc
            if not data and not exchange.answered:
                raise Unanswered("the server closed the connection without answering")
            exchange.receive(data)
        self.reusable = exchange.reusable
        return exchange.response()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self.writer.wait_closed()

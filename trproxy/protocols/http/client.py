"""HTTP/1.1 as a client, sans-I/O (h11): one request out, its response in, as readable data.

The one HTTP/1 client of the project: ``trproxy/httpclient.py`` runs it over asyncio
streams for ``trproxy test`` (recorded requests sent to the app), and ``forward.py``'s
``HttpForward`` wraps it for new-episodes (a request no recording answers, fetched from
the real server by the proxy). The caller sends ``head()``, ``body(chunk)``... ``end()``,
and feeds the server's bytes to ``receive`` (``b""`` when the server closed) until
``done``; ``response()`` is then the readable response. h11's errors become
``DecodeError``.
"""

from __future__ import annotations

from typing import Any

import h11

from ..base import BlobStore, DecodeError
from .body import BodyBuffer
from .config import HttpConfig
from .readable import response_readable

Fields = list[tuple[bytes, bytes]]


class H1ClientExchange:
    """One request and its response on an HTTP/1.1 connection (fresh or kept alive)."""

    def __init__(self, request: h11.Request, config: HttpConfig,
                 blobs: BlobStore | None = None) -> None:
        self.config = config
        self._h11 = h11.Connection(h11.CLIENT)
        self._request = request
        self._head: h11.Response | None = None
        self._body = BodyBuffer(config.max_body, blobs)
        self._trailers: Fields | None = None
        self.answered = False  # a byte of the response arrived
        self.done = False

    def head(self) -> bytes:
        return self._send(self._request)

    def body(self, chunk: bytes) -> bytes:
        return self._send(h11.Data(data=chunk)) if chunk else b""

    def end(self) -> bytes:
        return self._send(h11.EndOfMessage())

    def _send(self, event: Any) -> bytes:
        try:
            return self._h11.send(event) or b""
        except h11.LocalProtocolError as exc:
            raise DecodeError(f"HTTP/1.1 request: {exc}") from exc

    def receive(self, data: bytes) -> None:
        """The server's bytes; ``b""``: it closed. ``DecodeError`` if they are not a
        response (or the server closed in the middle of one)."""
        self.answered = self.answered or bool(data)
        try:
            self._h11.receive_data(data)
            while not self.done:
                event = self._h11.next_event()
                if event is h11.NEED_DATA:
                    return
                if isinstance(event, h11.Response):
                    self._head = event
                elif isinstance(event, h11.Data):
                    self._body.add(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    self._trailers = [(bytes(n), bytes(v)) for n, v in event.headers.raw_items()] or None
                    self.done = True
                elif isinstance(event, h11.ConnectionClosed):
                    raise DecodeError("the server closed the connection mid-response")
                # InformationalResponse (1xx): the final response follows
        except h11.ProtocolError as exc:
            raise DecodeError(f"HTTP/1.1 response: {exc}") from exc

    @property
    def reusable(self) -> bool:
        """The connection can carry another request (both sides done, keep-alive)."""
        return self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE

    def response(self) -> dict[str, Any]:
        head = self._head
        if not self.done or head is None:
            raise DecodeError("no complete response yet")
        return response_readable(head.status_code, head.reason.decode("latin-1"),
                                 f"HTTP/{head.http_version.decode()}", list(head.headers.raw_items()),
                                 self._body, self._trailers, self.config)

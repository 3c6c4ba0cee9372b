"""Record mode over HTTP/1.x: pair each request with its responses on one connection.

Two ``H1Parser``s, one per direction. Requests queue up in order (keep-alive and
pipelining, RFC 9112 §9.3.2: responses come back in request order); each response
head is parsed against the oldest request still waiting, which decides its framing
(HEAD, 1xx, 204, 304 have no body, RFC 9112 §6.3). Informational responses (100
Continue, 103 Early Hints, RFC 9110 §15.2) are kept in the interaction's responses
before the final one. An interaction is emitted once both its request and its final
response are complete, in request order.

After ``101 Switching Protocols`` or a 2xx to ``CONNECT`` the connection stops being
HTTP: the interaction is emitted. A switch to WebSocket (the request had ``Upgrade:
websocket``) hands every later byte, including any that came with the 101, to a
``WsRecorder`` (``websocket.py``), whose message interactions follow; after other
switches (h2c, tunnels) every later byte is ignored, without error. On close,
interactions with a complete final response are flushed (a request body cut short is
marked ``truncated``); a response cut by the server's close or reset is kept as far as
it came, marked ``truncated`` (replay sends that much, then the proxy ends the
connection as recorded); requests that never got an answer are returned with
``unanswered`` set (replay answers them with nothing).

Memory: bodies go through ``BodyBuffer`` (bounded by ``HttpConfig.max_body``; larger
ones stream to ``blobs`` when given); heads are bounded by ``max_head``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import http

from ..base import NEED_DATA, BlobStore, Direction, Interaction
from .body import BodyBuffer
from .config import HttpConfig
from .h1 import Data, End, H1Parser, H1State, Head, switches_protocol
from .readable import (
    field_value,
    make_url,
    method_text,
    request_readable,
    response_readable,
    summary,
    text_or_hex,
    wire_text,
)
from .websocket import WsRecorder, is_websocket_upgrade


@dataclass
class _Exchange:
    request: http.Request
    request_body: BodyBuffer
    request_trailers: list[tuple[bytes, bytes]] | None = None
    request_done: bool = False
    responses: list[dict[str, Any]] = field(default_factory=list)
    response: http.Response | None = None
    response_body: BodyBuffer | None = None
    final: bool = False  # the final (non-1xx) response is complete
    status: int = 0


def request_url(request: http.Request, scheme: str, authority: str | None, config: HttpConfig) -> str:
    """Absolute URL of an HTTP/1 request (RFC 9112 §3.2-3.3: Host header, else the
    connection's destination)."""
    data = request.data
    path = wire_text(data.path) or "/"
    if data.authority and data.method.upper() != b"CONNECT":  # absolute-form
        return make_url(wire_text(data.scheme) or scheme, wire_text(data.authority), path,
                        config.redaction)
    host = field_value(data.headers.fields, b"host") or data.authority
    return make_url(scheme, wire_text(host) if host else (authority or "unknown"), path,
                    config.redaction)


class H1Recorder:
    """One HTTP/1.x connection in record mode (both directions)."""

    def __init__(self, config: HttpConfig, scheme: str = "http", authority: str | None = None,
                 blobs: BlobStore | None = None) -> None:
        self.config = config
        self.blobs = blobs
        self.scheme = scheme
        self.authority = authority
        self._requests = H1Parser(is_request=True, max_head=config.max_head)
        self._responses = H1Parser(is_request=False, max_head=config.max_head)
        self._pending: deque[_Exchange] = deque()  # in request order
        self._reading: _Exchange | None = None      # request whose body is being read
        self.tunnel = False
        self._ws: WsRecorder | None = None  # after a switch to WebSocket
        self._ws_early: list[tuple[Direction, bytes]] = []  # its bytes already read
        self.closed = {Direction.CLIENT: False, Direction.SERVER: False}

    # -- driving -------------------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, out: list[Interaction]) -> None:
        """Append completed interactions to ``out`` (kept even if a later byte fails)."""
        if not data:
            self.closed[direction] = True
        if self.tunnel:
            if self._ws is not None:
                out.extend(self._ws.feed(direction, data))
            return
        if direction is Direction.CLIENT:
            self._requests.feed(data)
        else:
            self._responses.feed(data)
        # either side's bytes can unblock the other (a response ends the WAIT state
        # of an upgrade request), so pump both until neither moves
        progress = True
        while progress and not self.tunnel:
            progress = self._pump_requests() | self._pump_responses(out)
        early, self._ws_early = self._ws_early, []
        for d, chunk in early:  # after the 101's interaction, in ``out`` already
            assert self._ws is not None
            out.extend(self._ws.feed(d, chunk))
        if not data:
            out.extend(self._flush_closed())

    def _pump_requests(self) -> bool:
        moved = False
        while not self.tunnel:
            event = self._requests.next_event()
            if event is NEED_DATA:
                return moved
            moved = True
            if isinstance(event, Head):
                self._reading = _Exchange(event.message, BodyBuffer(self.config.max_body, self.blobs))
                self._pending.append(self._reading)
            elif isinstance(event, Data):
                assert self._reading is not None
                self._reading.request_body.add(event.data)
            elif isinstance(event, End):
                assert self._reading is not None
                self._reading.request_trailers = event.trailers
                self._reading.request_done = True
                self._reading = None
        return moved

    def _waiting(self) -> _Exchange | None:
        for ex in self._pending:
            if not ex.final:
                return ex
        return None

    def _pump_responses(self, out: list[Interaction]) -> bool:
        moved = False
        while not self.tunnel:
            ex = self._waiting()
            event = self._responses.next_event(ex.request if ex else None)
            if event is NEED_DATA:
                return moved
            moved = True
            assert ex is not None
            if isinstance(event, Head):
                ex.response = event.message
                ex.response_body = BodyBuffer(self.config.max_body, self.blobs)
            elif isinstance(event, Data):
                assert ex.response_body is not None
                ex.response_body.add(event.data)
            elif isinstance(event, End):
                self._response_done(ex, event.trailers)
                out.extend(self._emit_ready())
        return moved

    def _response_done(self, ex: _Exchange, trailers: list[tuple[bytes, bytes]] | None) -> None:
        resp = ex.response
        assert resp is not None
        ex.responses.append(response_readable(
            resp.status_code, text_or_hex(resp.data.reason), resp.http_version,
            list(resp.headers.fields),
            ex.response_body, trailers, self.config, wire_text(ex.request.data.path)))
        ex.response = None
        if resp.status_code >= 200 or resp.status_code == 101:
            ex.final = True
            ex.status = resp.status_code
            if switches_protocol(ex.request, resp):
                # RFC 9110 §7.8 / §9.3.6: the rest of the connection is not HTTP
                ex.request_done = True
                self.tunnel = True
                if resp.status_code == 101 and is_websocket_upgrade(ex.request.headers.get("upgrade")):
                    self._start_websocket(ex.request, resp)
                self._requests.tunnel()
                self._responses.tunnel()
            elif self._requests.state is H1State.WAIT and ex is self._pending[-1]:
                self._requests.resume()  # upgrade refused: HTTP goes on

    def _start_websocket(self, request: http.Request, response: http.Response) -> None:
        """RFC 6455 §4.1: after the 101 both sides send frames; some may be buffered already."""
        extensions = ", ".join(response.headers.get_all("sec-websocket-extensions")) or None
        url = request_url(request, self.scheme, self.authority, self.config)
        self._ws = WsRecorder(url, extensions, self.config)
        buffered = [(Direction.CLIENT, self._requests.take_buffer()),
                    (Direction.SERVER, self._responses.take_buffer())]
        self._ws_early = [(d, chunk) for d, chunk in buffered if chunk]
        self._ws_early += [(d, b"") for d, closed in self.closed.items() if closed]

    def _interaction(self, ex: _Exchange, truncated: bool = False,
                     unanswered: bool = False) -> Interaction:
        req = ex.request
        url = request_url(req, self.scheme, self.authority, self.config)
        request = request_readable(method_text(req.data.method), url, req.http_version,
                                   list(req.headers.fields),
                                   ex.request_body, ex.request_trailers, self.config)
        if truncated:
            request["truncated"] = True
        return Interaction(request=request, responses=ex.responses, lifetime="data",
                           summary=summary(req.method, url, ex.status), unanswered=unanswered)

    def _cut_response(self, ex: _Exchange) -> None:
        """The response the server's close cut short: what came of it, ``truncated``."""
        resp = ex.response
        assert resp is not None and ex.response_body is not None
        cut = response_readable(resp.status_code, text_or_hex(resp.data.reason), resp.http_version,
                                list(resp.headers.fields), ex.response_body, None, self.config)
        cut["truncated"] = True
        ex.responses.append(cut)
        ex.status = resp.status_code

    def _emit_ready(self) -> list[Interaction]:
        out = []
        while self._pending and self._pending[0].final and self._pending[0].request_done:
            out.append(self._interaction(self._pending.popleft()))
        return out

    def _flush_closed(self) -> list[Interaction]:
        """A side closed: what can no longer complete is flushed or dropped."""
        out = []
        if self.closed[Direction.CLIENT]:
            # the request being read will never finish; answered ones are still worth keeping
            while self._pending and self._pending[0].final:
                ex = self._pending.popleft()
                out.append(self._interaction(ex, truncated=not ex.request_done))
        if self.closed[Direction.SERVER] and self._responses.state is H1State.CLOSED:
            # no more responses: answered exchanges go out, one cut short as far as it came,
            # the others as never answered
            while self._pending:
                ex = self._pending.popleft()
                if not ex.final and ex.response is not None and self._responses.truncated:
                    self._cut_response(ex)
                    out.append(self._interaction(ex, truncated=not ex.request_done))
                elif ex.final:
                    out.append(self._interaction(ex, truncated=not ex.request_done))
                elif ex.request_done:
                    out.append(self._interaction(ex, unanswered=True))
        return out


"""Replay mode over HTTP/1.x: requests in, ``Lookup``s out, recorded responses rendered.

Per request (RFC 9112): the head is parsed; ``Expect: 100-continue`` from an
HTTP/1.1 client is answered at once with ``100 Continue`` (RFC 9110 §10.1.1), so the
client sends its body; when the body is complete a ``Lookup`` is emitted. Pipelined
requests give ``Lookup``s in order and the proxy answers them in that order.

``respond`` renders the recorded responses for the live request: recorded ``100
Continue`` is skipped (we sent our own, or the client did not ask), other 1xx are
sent as is, the final response is framed afresh (see ``render``). A recorded ``101``
switches the connection. To WebSocket (the request had ``Upgrade: websocket``): the
upgrade's ``Lookup`` is followed by one for the server's greeting (``open_lookup``,
answered after the 101; a miss sends nothing and is not reported), and the client's
later bytes go to a ``WsReplayer`` (``websocket.py``), whose lookups and answers pass
through here; ``close_after`` says when it closed. After other switches (CONNECT, h2c)
the client's bytes are swallowed. Requests are bounded like in recording: heads by
``max_head``, bodies kept up to ``max_body`` then digested.

A body recorded as a file (``blobs``) is streamed: ``respond`` returns the head and
``pull`` the body piece by piece; responses to later pipelined requests wait behind
it in a queue, so the order on the wire stays the order of the requests.
"""

from __future__ import annotations

import functools
import pickle
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mitmproxy import http

from ..base import NEED_DATA, BlobStore, Lookup, LookupContext, Readable, Reply
from .body import BodyBuffer, BodyUnavailable
from .config import HttpConfig
from .forward import http_forward
from .h1 import Data, End, H1Parser, Head
from .h1_record import request_url
from .readable import header_value, method_text, request_readable, summary
from .render import error_response, render_h1, render_h1_answer, unavailable_response
from .websocket import WsReplayer, is_websocket_upgrade, open_lookup

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(eq=False)
class _Known:
    """A request's readable form, summary and private values, derived from its message
    (``H1Replayer._known``); ``same_as``: itself when remembered (``LookupContext.same_as``:
    every lookup it answers has an equal request), else None."""

    message: http.Request  # kept: the memo's key holds its id
    config: HttpConfig
    readable: dict[str, Any]
    label: str
    private: dict[str, Any]
    ws_url: str | None
    same_as: Any = None
    pickled: bytes | None = None  # the readable form, when remembered

    def request(self) -> dict[str, Any]:
        """The readable request: one of its own for each lookup of a remembered one (the
        report and a forward keep theirs; a copy through ``pickle``: exact types, C speed)."""
        return self.readable if self.pickled is None else pickle.loads(self.pickled)  # noqa: S301 (our bytes)


# Requests without a body whose message is shared (``h1.request_head``): clients repeat
# theirs, and making the readable request and its summary was a tenth of a replayed
# request, the match key another 5 %.
_KNOWN: dict[tuple[int, int, str, str | None], _Known] = {}
_MAX_KNOWN = 1024


def _expects_continue(request: http.Request) -> bool:
    """``Expect: 100-continue`` from an HTTP/1.1 client (RFC 9110 §10.1.1): the fields read
    as mitmproxy's ``headers.get`` reads them (values joined, UTF-8), without its
    mapping's per-field name conversions (a third of the parser's time per request)."""
    values = [v for n, v in request.data.headers.fields if n.lower() == b"expect"]
    return (bool(values) and request.data.http_version == b"HTTP/1.1"
            and b", ".join(values).decode("utf-8", "surrogateescape").strip().lower() == "100-continue")


def _live_version(request: http.Request) -> str:
    return "HTTP/1.0" if request.http_version == "HTTP/1.0" else "HTTP/1.1"


class H1Replayer:
    """One HTTP/1.x client connection in replay mode."""

    def __init__(self, config: HttpConfig, scheme: str = "http", authority: str | None = None,
                 blobs: BlobStore | None = None) -> None:
        self.config = config
        self.scheme = scheme
        self.authority = authority
        self.blobs = blobs
        # output behind a streamed body, in order: bytes, or the iterator streaming a file
        self._queue: deque[bytes | Iterator[bytes]] = deque()
        self._parser = H1Parser(is_request=True, max_head=config.max_head)
        self._request: http.Request | None = None
        self._shared = False  # the request's message is shared (``Head.shared``)
        self._body: BodyBuffer | None = None
        self.tunnel = False
        self._ws: WsReplayer | None = None  # after a replayed switch to WebSocket
        self._ws_early = b""  # client bytes read before that switch
        self._until_close = False  # a response delimited by the close was sent

    @property
    def close_after(self) -> bool:
        """Hang up, as the server did: after a response delimited by the close, or once
        the WebSocket was closed (a Close sent or answered)."""
        return self._until_close or (self._ws is not None and self._ws.close_after)

    def feed(self, data: bytes) -> list[Lookup | Reply]:
        out: list[Lookup | Reply] = []
        if self.tunnel:
            if self._ws is not None:
                data, self._ws_early = self._ws_early + data, b""
                return self._ws.feed(data)
            return out
        self._parser.feed(data)
        while True:
            event = self._parser.next_event()
            if event is NEED_DATA:
                return out
            if isinstance(event, Head):
                self._request, self._shared = event.message, event.shared
                self._body = BodyBuffer(self.config.max_body)
                if _expects_continue(event.message):
                    out.append(Reply(CONTINUE))
            elif isinstance(event, Data):
                assert self._body is not None
                self._body.add(event.data)
            elif isinstance(event, End):
                lookup = self._lookup(event.trailers)
                out.append(lookup)
                if "ws_url" in lookup.context.private:  # answered after the 101: the greeting, if any
                    out.append(open_lookup(lookup.context.private["ws_url"]))
                # a request that may switch protocols: the answer decides (see respond)
                self._parser.resume()

    def _lookup(self, trailers: list[tuple[bytes, bytes]] | None) -> Lookup:
        req, body = self._request, self._body
        assert req is not None and body is not None
        known = self._known(req, body, trailers)
        readable = known.request()
        context = LookupContext(private=dict(known.private), same_as=known.same_as)
        if known.ws_url is not None:
            context.private["ws_url"] = known.ws_url
        elif req.method.upper() != "CONNECT":  # new-episodes: what to send upstream on a miss
            context.forward = functools.partial(
                http_forward, self.config, self.blobs, readable, known.label, req.data.method,
                req.data.path, req.headers.fields, body)
        return Lookup(request=readable, lifetime="data", summary=known.label, expects_reply=True,
                      context=context)

    def _known(self, req: http.Request, body: BodyBuffer,
               trailers: list[tuple[bytes, bytes]] | None) -> _Known:
        """What the lookup takes from the request; remembered (``_KNOWN``) for a request
        whose message is shared and that has no body nor trailers, since then it depends
        only on that message, this connection's scheme and authority, and the config."""
        key = (id(req), id(self.config), self.scheme, self.authority)
        memo = self._shared and not body.size and not trailers
        known = _KNOWN.get(key) if memo else None
        if known is not None and known.message is req and known.config is self.config:
            return known
        url = request_url(req, self.scheme, self.authority, self.config)
        readable = request_readable(method_text(req.data.method), url, req.http_version,
                                    list(req.headers.fields), body, trailers, self.config)
        private = {"method": req.method, "http_version": _live_version(req)}
        if "sec-websocket-key" in req.headers:
            private["ws_key"] = req.headers["sec-websocket-key"]
        ws_url = url if is_websocket_upgrade(req.headers.get("upgrade")) else None
        known = _Known(req, self.config, readable, summary(req.method, url), private, ws_url)
        if memo:
            if len(_KNOWN) >= _MAX_KNOWN:
                del _KNOWN[next(iter(_KNOWN))]  # the oldest
            _KNOWN[key] = known
            known.same_as = known  # the pool keys once per entry (it holds it: no id reused)
            known.pickled = pickle.dumps(readable, pickle.HIGHEST_PROTOCOL)
        return known

    def _start_websocket(self, url: str, response: dict[str, Any]) -> None:
        """RFC 6455 §4.1: after the 101 the client sends frames, with the recorded extensions."""
        extensions = header_value(response.get("headers", []), "sec-websocket-extensions")
        self._ws = WsReplayer(url, extensions, self.config)
        self._ws_early = self._parser.take_buffer()

    def respond(self, lookup: Lookup, responses: list[Readable]) -> bytes:
        if lookup.context.private.get("websocket"):  # a WebSocket message, or the greeting
            return self._send([self._ws.respond(lookup, responses) if self._ws else b""])
        method = lookup.context.private.get("method", "GET")
        version = lookup.context.private.get("http_version", "HTTP/1.1")
        out: list[bytes | Iterator[bytes] | None] = []
        for response in responses:
            status = int(response["status"])
            if status == 100:
                continue
            try:
                data, rest, closes = render_h1_answer(response, method, version,
                                                      lookup.context.private.get("ws_key"), self.blobs)
                out += (data, rest)
                self._until_close = self._until_close or closes
            except BodyUnavailable as e:
                out.append(render_h1(unavailable_response(e), method, version))
                lookup.context.unreplayable = str(e)  # reported by the proxy
            if status == 101 or (method.upper() == "CONNECT" and 200 <= status < 300):
                self.tunnel = True
                if status == 101 and "ws_url" in lookup.context.private:
                    self._start_websocket(lookup.context.private["ws_url"], response)
                self._parser.tunnel()
            if status >= 200 or status == 101:
                break
        return self._send(out)

    def miss(self, lookup: Lookup, reason: str) -> bytes:
        if lookup.context.private.get("websocket"):  # Close 1011; b"" for a greeting never recorded
            return self._send([self._ws.miss(lookup, reason) if self._ws else b""])
        method = lookup.context.private.get("method", "GET")
        version = lookup.context.private.get("http_version", "HTTP/1.1")
        text = f"trproxy: no recorded response matches {lookup.summary}\n{reason}\n"
        return self._send([render_h1(error_response(502, text), method, version)])

    # -- output order: a streamed body goes out whole before the next response -------

    def _send(self, parts: list[bytes | Iterator[bytes] | None]) -> bytes:
        """Bytes to send now; what follows a streamed body waits in the queue for ``pull``."""
        self._queue.extend(p for p in parts if p)
        ready = []
        while self._queue and isinstance(self._queue[0], bytes):
            ready.append(self._queue.popleft())
        return b"".join(ready)  # type: ignore[arg-type]

    def pull(self) -> bytes:
        """The next piece of queued output (a streamed body, then what waited behind it)."""
        while self._queue:
            head = self._queue[0]
            if isinstance(head, bytes):
                self._queue.popleft()
                return head
            chunk = next(head, None)
            if chunk is None:
                self._queue.popleft()
            elif chunk:
                return chunk
        return b""

    def close(self) -> None:
        for part in self._queue:
            if not isinstance(part, bytes):
                part.close()  # type: ignore[attr-defined]  # a generator: closes its file
        self._queue.clear()

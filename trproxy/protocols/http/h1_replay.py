"""Replay mode over HTTP/1.x: requests in, ``Lookup``s out, recorded responses rendered.

Per request (RFC 9112): the head is parsed; ``Expect: 100-continue`` from an
HTTP/1.1 client is answered at once with ``100 Continue`` (RFC 9110 §10.1.1), so the
client sends its body; when the body is complete a ``Lookup`` is emitted. Pipelined
requests give ``Lookup``s in order and the proxy answers them in that order.

``respond`` renders the recorded responses for the live request: recorded ``100
Continue`` is skipped (we sent our own, or the client did not ask), other 1xx are
sent as is, the final response is framed afresh (see ``render``). A recorded ``101``
switches the connection: the replayer then swallows the client's bytes (WebSocket
frames are not replayed). Requests are bounded like in recording: heads by
``max_head``, bodies kept up to ``max_body`` then digested.
"""

from __future__ import annotations

from typing import Any

from mitmproxy import http

from ..base import NEED_DATA, Lookup, Readable, Reply
from .body import BodyBuffer, OmittedBody
from .config import HttpConfig
from .h1 import Data, End, H1Parser, Head
from .h1_record import request_url
from .readable import method_text, request_readable, summary
from .render import error_response, omitted_response, render_h1

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _live_version(request: http.Request) -> str:
    return "HTTP/1.0" if request.http_version == "HTTP/1.0" else "HTTP/1.1"


class H1Replayer:
    """One HTTP/1.x client connection in replay mode."""

    def __init__(self, config: HttpConfig, scheme: str = "http", authority: str | None = None) -> None:
        self.config = config
        self.scheme = scheme
        self.authority = authority
        self._parser = H1Parser(is_request=True, max_head=config.max_head)
        self._request: http.Request | None = None
        self._body: BodyBuffer | None = None
        self.tunnel = False

    def feed(self, data: bytes) -> list[Lookup | Reply]:
        out: list[Lookup | Reply] = []
        if self.tunnel:
            return out
        self._parser.feed(data)
        while True:
            event = self._parser.next_event()
            if event is NEED_DATA:
                return out
            if isinstance(event, Head):
                self._request = event.message
                self._body = BodyBuffer(self.config.max_body)
                expect = self._request.headers.get("expect", "").strip().lower()
                if expect == "100-continue" and self._request.http_version == "HTTP/1.1":
                    out.append(Reply(CONTINUE))
            elif isinstance(event, Data):
                assert self._body is not None
                self._body.add(event.data)
            elif isinstance(event, End):
                out.append(self._lookup(event.trailers))
                # a request that may switch protocols: the answer decides (see respond)
                self._parser.resume()

    def _lookup(self, trailers: list[tuple[bytes, bytes]] | None) -> Lookup:
        req, body = self._request, self._body
        assert req is not None and body is not None
        url = request_url(req, self.scheme, self.authority, self.config)
        readable = request_readable(method_text(req.data.method), url, req.http_version,
                                    list(req.headers.fields), body, trailers, self.config)
        context: dict[str, Any] = {"method": req.method, "http_version": _live_version(req)}
        if "sec-websocket-key" in req.headers:
            context["ws_key"] = req.headers["sec-websocket-key"]
        return Lookup(request=readable, lifetime="data", summary=summary(req.method, url),
                      expects_reply=True, context=context)

    def respond(self, lookup: Lookup, responses: list[Readable]) -> bytes:
        method = lookup.context.get("method", "GET")
        version = lookup.context.get("http_version", "HTTP/1.1")
        out = []
        for response in responses:
            status = int(response["status"])
            if status == 100:
                continue
            try:
                out.append(render_h1(response, method, version, lookup.context.get("ws_key")))
            except OmittedBody as e:
                out.append(render_h1(omitted_response(e), method, version))
                lookup.context["unreplayable"] = str(e)  # reported by the proxy
            if status == 101 or (method.upper() == "CONNECT" and 200 <= status < 300):
                self.tunnel = True
                self._parser.tunnel()
            if status >= 200 or status == 101:
                break
        return b"".join(out)

    def miss(self, lookup: Lookup, reason: str) -> bytes:
        method = lookup.context.get("method", "GET")
        version = lookup.context.get("http_version", "HTTP/1.1")
        text = f"trproxy: no recorded response matches {lookup.summary}\n{reason}\n"
        return render_h1(error_response(502, text), method, version)

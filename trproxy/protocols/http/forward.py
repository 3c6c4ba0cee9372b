"""new-episodes: a request no recording answers, fetched from the real server (sans-I/O).

A replayer's ``Lookup`` carries ``context.forward``, a function giving an
``HttpForward``: the ``ForwardConversation`` the proxy pumps over a connection it opens
(per request, as VCR.py's ``new_episodes`` does). The request goes upstream *unredacted*
(``ForwardRequest``: it never reaches a recording; what is recorded is the lookup's
readable, redacted request) and the response comes back twice: redacted for the
recording, as the server sent it for the app (its real cookies and tokens). ``None``
when the body was over ``max_body`` (only its digest was kept): it cannot be forwarded.

Framing and hop-by-hop fields are dropped (RFC 9110 §7.6.1): the upstream connection is
HTTP/1.1 framed afresh with Content-Length (none on a bodiless GET, §8.6), and
``Expect: 100-continue`` was answered already by the replayer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h11

from ..base import BlobStore, Interaction, Readable
from .body import BodyBuffer
from .client import H1ClientExchange
from .config import HttpConfig, Redaction
from .readable import redact_message, split_url

_NOT_FORWARDED = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive",
                            b"proxy-connection", b"te", b"upgrade", b"expect", b"trailer"})


@dataclass(frozen=True)
class ForwardRequest:
    method: bytes
    target: bytes  # origin form: /path?query
    headers: list[tuple[bytes, bytes]]
    body: bytes


def forward_request(method: str | bytes, target: str | bytes | None,
                    fields: Sequence[tuple[bytes, bytes]], body: BodyBuffer,
                    url: str | None = None) -> ForwardRequest | None:
    """Called only on a miss (replayers put it in the lookup unevaluated). ``target`` is
    the origin form; None takes it, and a Host when ``fields`` have none, from ``url``
    (HTTP/2 requests carry ``:authority``, not Host)."""
    if body.overflow:
        return None
    authority = None
    if target is None:
        _scheme, authority, target = split_url(url or "")
    headers = [(n, v) for n, v in fields if n.lower() not in _NOT_FORWARDED and not n.startswith(b":")]
    if authority and not any(n.lower() == b"host" for n, _ in headers):
        headers.insert(0, (b"host", authority.encode("utf-8")))
    return ForwardRequest(_bytes(method), _bytes(target) or b"/", headers, body.data())


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


class HttpForward:
    """One request sent to the real server over HTTP/1.1 (``base.ForwardConversation``)."""

    alpn: tuple[str, ...] = ("http/1.1",)

    def __init__(self, request: ForwardRequest, readable: Readable, summary: str,
                 config: HttpConfig, blobs: BlobStore | None = None) -> None:
        self.readable, self.summary, self.config = readable, summary, config
        headers = list(request.headers)
        if request.body or request.method.upper() in (b"POST", b"PUT", b"PATCH"):
            headers.append((b"content-length", b"%d" % len(request.body)))  # RFC 9110 §8.6
        unredacted = HttpConfig(redaction=Redaction(frozenset(), frozenset()), noise=config.noise,
                                max_body=config.max_body, max_head=config.max_head)
        self._body = request.body
        self._exchange = H1ClientExchange(
            h11.Request(method=request.method, target=request.target, headers=headers),
            unredacted, blobs)

    def send(self) -> bytes:
        ex = self._exchange
        return ex.head() + ex.body(self._body) + ex.end()

    def receive(self, data: bytes) -> None:
        self._exchange.receive(data)

    @property
    def answered(self) -> bool:
        return self._exchange.answered

    @property
    def done(self) -> bool:
        return self._exchange.done

    @property
    def reusable(self) -> bool:
        return self._exchange.reusable

    def result(self) -> tuple[Interaction, list[Any]]:
        live = self._exchange.response()
        recorded = redact_message(live, self.config.redaction)
        return Interaction(self.readable, [recorded], "data",
                           f"{self.summary} -> {live['status']}"), [live]


def http_forward(config: HttpConfig, blobs: BlobStore | None, readable: Readable, summary: str,
                 method: str | bytes, target: str | bytes | None,
                 fields: Sequence[tuple[bytes, bytes]], body: BodyBuffer,
                 url: str | None = None) -> HttpForward | None:
    """``Lookup.context.forward`` of an HTTP request (see ``forward_request``)."""
    request = forward_request(method, target, fields, body, url)
    return None if request is None else HttpForward(request, readable, summary, config, blobs)

"""The live request as it must go to the real server (``new-episodes`` mode).

A replayer's ``Lookup`` carries ``context.forward``: a function giving this, so a
request no recording answers can be sent upstream and recorded (per request, as VCR.py's
``new_episodes`` does). It holds the request *unredacted* — it never reaches a recording;
what is recorded is the lookup's readable (redacted) request. ``None`` when the body was
over ``max_body`` (only its digest was kept), so it cannot be forwarded.

Framing and hop-by-hop fields are dropped (RFC 9110 §7.6.1): the upstream connection is
HTTP/1.1 framed afresh with Content-Length, and ``Expect: 100-continue`` was answered
already by the replayer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .body import BodyBuffer
from .readable import split_url

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

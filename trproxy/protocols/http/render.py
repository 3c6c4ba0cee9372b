"""Readable responses -> wire bytes/headers for the live connection's HTTP version.

A response recorded over HTTP/1.1 may be served to an HTTP/2 client and vice versa,
so framing is always recomputed, never copied: ``Content-Length`` is set from the
body actually sent (re-encoded with its content coding), unless the recorded body was
delimited by the close of the connection (HTTP/1.0 servers), which replay repeats, ``Transfer-Encoding`` and
the other connection-specific fields are dropped (RFC 9113 §8.2.2 forbids them in
HTTP/2; in HTTP/1.1 we frame with Content-Length, or chunked when trailers must be
sent, RFC 9112 §7.1; in HTTP/2 only when the recording had a Content-Length, since
END_STREAM ends the body). Responses to HEAD and 304 keep the recorded Content-Length
because it describes the representation, not this message (RFC 9110 §8.6). A body
recorded as a file is streamed from it (``render_h1_parts``; HTTP/2 reads it as the
flow-control windows open), framed with the file's actual size.

A response recorded ``truncated`` (cut by the server's close or reset) is sent as far as
it came, with the head as recorded, and no end.

A 101 to a WebSocket upgrade gets a ``Sec-WebSocket-Accept`` computed from the live
``Sec-WebSocket-Key`` (RFC 6455 §4.2.2), since the recorded one answered another key.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import msgpack
from mitmproxy import http
from mitmproxy.net.http import http1, status_codes

from ..base import BlobReader, BlobStore, Failure, unblob
from .body import BodyUnavailable, body_file, open_body, read_chunks
from .readable import body_bytes, headers_from_readable

# RFC 9113 §8.2.2 / RFC 9110 §7.6.1: hop-by-hop fields, never forwarded as recorded
CONNECTION_FIELDS = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te",
})
_FRAMING = CONNECTION_FIELDS | {b"content-length"}

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def no_body(method: str, status: int) -> bool:
    """RFC 9110 §6.4.1: responses to HEAD, 1xx, 204 and 304 have no content."""
    return method.upper() == "HEAD" or status < 200 or status in (204, 304)


def delimited_by_close(response: dict[str, Any], method: str) -> bool:
    """The recorded body ended with the connection (RFC 9112 §6.3, item 8: no
    Content-Length, not chunked: an HTTP/1.0 server, or one that closes): replayed the
    same way, the connection closing after it."""
    if no_body(method, int(response["status"])) or response.get("trailers"):
        return False
    fields = headers_from_readable(response.get("headers", []))
    if {n.lower() for n, _v in fields} & {b"content-length", b"transfer-encoding"}:
        return False
    closes = any(n.lower() == b"connection" and b"close" in v.lower() for n, v in fields)
    return closes or response.get("http_version") == "HTTP/1.0"


def keeps_recorded_length(method: str, status: int) -> bool:
    return method.upper() == "HEAD" or status == 304


def error_response(status: int, text: str) -> dict[str, Any]:
    """A readable response carrying ``text`` (used for replay misses)."""
    return {
        "status": status,
        "reason": status_codes.RESPONSES.get(status, ""),
        "http_version": "HTTP/1.1",
        "headers": [["Content-Type", "text/plain; charset=utf-8"], ["X-Trproxy", "miss"]],
        "body": text,
    }


def fault_response(failure: Failure) -> dict[str, Any]:
    """A readable response with the status ``failure`` names (fault injection), with
    ``Retry-After`` when it gives one."""
    status = int(failure.error)
    response = error_response(status, failure.message or "trproxy: injected fault\n")
    response["headers"] = [h for h in response["headers"] if h[0] != "X-Trproxy"]
    response["headers"].append(["X-Trproxy", "fault"])
    if failure.retry_after is not None:
        response["headers"].append(["Retry-After", str(failure.retry_after)])
    return response


def check_fault(failure: Failure) -> None:
    """An HTTP fault is a final status (200..599: 503, 429, 500...)."""
    if not failure.error.isdigit() or not 200 <= int(failure.error) <= 599:
        raise ValueError(f"an HTTP error is a status from 200 to 599, not {failure.error!r}")


def unavailable_response(error: BodyUnavailable) -> dict[str, Any]:
    return error_response(502, f"trproxy: cannot replay this response: {error}\n")


def ws_accept(key: str) -> str:
    """RFC 6455 §4.2.2 over the key's bytes as received (header values are decoded as
    UTF-8 with surrogateescape, so a key that is not ASCII must not raise)."""
    raw = key.encode("utf-8", "surrogateescape")
    return base64.b64encode(hashlib.sha1(raw + WS_GUID).digest()).decode()


def _framed_fields(response: dict[str, Any], method: str, body_len: int,
                   ws_key: str | None, length_required: bool = True) -> list[tuple[bytes, bytes]]:
    status = int(response["status"])
    fields = headers_from_readable(response.get("headers", []))
    recorded_length = [v for n, v in fields if n.lower() == b"content-length"]
    if status == 101:
        # an upgrade keeps Connection/Upgrade, they are the point of the response
        out = [(n, v) for n, v in fields if n.lower() not in (b"content-length", b"transfer-encoding")]
        if ws_key is not None:
            accept = ws_accept(ws_key).encode()
            out = [(n, accept if n.lower() == b"sec-websocket-accept" else v) for n, v in out]
        return out
    out = [(n, v) for n, v in fields if n.lower() not in _FRAMING]
    if keeps_recorded_length(method, status):
        out.extend((b"Content-Length", v) for v in recorded_length[:1])
    elif not no_body(method, status) and (length_required or recorded_length):
        out.append((b"Content-Length", b"%d" % body_len))
    return out


def response_body(response: dict[str, Any], method: str,
                  blobs: BlobStore | None = None) -> bytes | BlobReader:
    """The body to send: bytes, or an open blob for a body recorded as a file.

    Raises ``BodyUnavailable`` when the recording kept only a digest, or the file is gone.
    """
    if no_body(method, int(response["status"])):
        return b""
    if body_file(response.get("body")) is not None:
        return open_body(response["body"], blobs)
    return body_bytes(response)


def render_h1_parts(response: dict[str, Any], method: str, live_version: str,
                    ws_key: str | None = None,
                    blobs: BlobStore | None = None) -> tuple[bytes, Iterator[bytes] | None]:
    """One HTTP/1.x response for a client speaking ``live_version``: its bytes, and for
    a body recorded as a file, the rest as an iterator that streams the file.

    Raises ``BodyUnavailable`` when the recorded body cannot be sent.
    """
    status = int(response["status"])
    if response.get("truncated"):
        return _render_cut(response, live_version), None
    body = response_body(response, method, blobs)
    size = len(body) if isinstance(body, bytes) else body.size
    trailers = response.get("trailers")
    chunked = bool(trailers) and live_version == "HTTP/1.1" and not no_body(method, status)
    fields = _framed_fields(response, method, size, ws_key,
                            length_required=not delimited_by_close(response, method))
    if chunked:
        fields = [(n, v) for n, v in fields if n.lower() != b"content-length"]
        fields.append((b"Transfer-Encoding", b"chunked"))
    head = _head(live_version, response, fields)
    trailer_headers = http.Headers(headers_from_readable(trailers or [])) if chunked else None
    if not isinstance(body, bytes):
        return head, http1.assemble_body(http.Headers(fields), read_chunks(body), trailer_headers)
    if not chunked:
        return head + body, None
    return head + b"".join(http1.assemble_body(http.Headers(fields), [body], trailer_headers)), None


def render_h1_answer(response: dict[str, Any], method: str, live_version: str, ws_key: str | None = None,
                     blobs: BlobStore | None = None) -> tuple[bytes, Iterator[bytes] | None, bool]:
    """``render_h1_parts``, and whether the connection ends after it (a final response
    ``delimited_by_close``). A response held in memory is rendered once per (its msgpack
    bytes, strict types: ``True`` is no ``1``; the request's method, the live version, the
    WebSocket key): ``_RENDERED``. Its text is what is sent, volatile values and secrets'
    stand-ins already in it, so an answer that differs in one gets its own entry."""
    text: bytes | None = None
    if not _large(response.get("body")):  # a 5 MB answer is not copied for a key it cannot have
        try:
            text = _PACK(response)
        except (TypeError, ValueError, OverflowError):  # not msgpack's (a tuple, a huge integer)
            pass
    key = (text, method, live_version, ws_key)
    known = _RENDERED.get(key) if text is not None else None
    if known is not None:
        return known[0], None, known[1]
    data, rest = render_h1_parts(response, method, live_version, ws_key, blobs)
    closes = int(response["status"]) >= 200 and delimited_by_close(response, method)
    if rest is None and text is not None and len(text) <= _MAX_ANSWER:
        if len(_RENDERED) >= _MAX_RENDERED:
            del _RENDERED[next(iter(_RENDERED))]  # the oldest
        _RENDERED[key] = data, closes
    return data, rest, closes


# Answers rendered (``render_h1_answer``): an HTTP server repeats its answers, and
# rendering one (framing, the head, a body re-encoded) was a tenth of a replayed request.
_RENDERED: dict[tuple[bytes | None, str, str, str | None], tuple[bytes, bool]] = {}
_MAX_RENDERED = 512
_MAX_ANSWER = 16 * 1024
_PACK = msgpack.Packer(use_bin_type=True, strict_types=True).pack


def _large(body: Any) -> bool:
    """A body whose text (or hex, base64) alone is over ``_MAX_ANSWER``, or in a file."""
    if isinstance(body, dict):
        return body_file(body) is not None or any(isinstance(v, str) and len(v) > _MAX_ANSWER
                                                   for v in body.values())
    return isinstance(body, str) and len(body) > _MAX_ANSWER


def _head(live_version: str, response: dict[str, Any], fields: list[tuple[bytes, bytes]]) -> bytes:
    """The status line and fields (RFC 9112 §4, §5), as mitmproxy's
    ``assemble_response_head`` writes them, without building a ``Response`` for it
    (a replayed request's most costly step: mitmproxy type-checks every message made)."""
    status = int(response["status"])
    recorded = response.get("reason") or status_codes.RESPONSES.get(status, "")
    reason = unblob(recorded) if not isinstance(recorded, str) else recorded.encode("latin-1", "replace")
    lines = [b"%s %d %s\r\n" % (live_version.encode(), status, reason)]
    lines += [b"%s: %s\r\n" % (name, value) for name, value in fields]
    lines.append(b"\r\n")
    return b"".join(lines)


def _render_cut(response: dict[str, Any], live_version: str) -> bytes:
    """A response the server's close or reset cut short, as far as it came: its head as
    recorded (the length it promised, or chunked), the part of its body that came, no
    end (the connection ends next, as recorded)."""
    fields = headers_from_readable(response.get("headers", []))
    body = body_bytes(response)
    chunked = any(n.lower() == b"transfer-encoding" and b"chunked" in v.lower() for n, v in fields)
    if chunked and body:
        body = b"%x\r\n" % len(body) + body + b"\r\n"
    return _head(live_version, response, fields) + body


def render_h1(response: dict[str, Any], method: str, live_version: str,
              ws_key: str | None = None) -> bytes:
    """``render_h1_parts`` for a response held in memory (no file body)."""
    data, rest = render_h1_parts(response, method, live_version, ws_key)
    assert rest is None
    return data


def render_h2_headers(response: dict[str, Any], method: str, body_len: int) -> list[tuple[bytes, bytes]]:
    """HTTP/2 header block: ``:status`` first, lower-case names (RFC 9113 §8.2.1, §8.3.2)."""
    status = int(response["status"])
    # END_STREAM delimits an HTTP/2 body (RFC 9113 §8.1.1): content-length is sent only
    # when the recording had one (some clients stop reading at it and miss trailers)
    fields = _framed_fields(response, method, body_len, None, length_required=False)
    if status == 101:  # no 101 in HTTP/2 (RFC 9113 §8.6)
        fields = [(n, v) for n, v in fields if n.lower() not in _FRAMING]
    out = [(b":status", b"%d" % status)]
    out.extend((n.lower(), v) for n, v in fields if n.lower() not in CONNECTION_FIELDS)
    return out


def render_h2_trailers(response: dict[str, Any]) -> list[tuple[bytes, bytes]] | None:
    trailers = response.get("trailers")
    if not trailers:
        return None
    return [(n.lower(), v) for n, v in headers_from_readable(trailers)]

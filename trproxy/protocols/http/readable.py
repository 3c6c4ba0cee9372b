"""HTTP messages <-> readable data, with secrets redacted on the way in.

Request::

    {method: GET, url: "https://api.example.com:8443/v1/items?id=3",
     http_version: HTTP/1.1, headers: [[Accept, "*/*"], [Cookie, "sid=<redacted>"]],
     body: <body form, see body.py>, encoding: gzip?, trailers: [[n, v]]?}

Response::

    {status: 200, reason: OK, http_version: HTTP/1.1, headers: [...], body: ...,
     encoding: gzip?, trailers: [...]?}

Header lists keep every field line in wire order, repeated names as separate entries
(RFC 9110 §5.2-5.3: two ``Set-Cookie`` stay two). Header values that are not text are
``{"hex": ...}``. ``encoding`` appears only when the stored body was decoded from that
content coding; ``trailers`` only when the message had trailer fields (RFC 9110 §6.5).

Invariant: every function here is deterministic and pure; the same bytes and config
give the same readable data in record and in replay, which is what makes
``match_key`` comparisons of live and recorded requests meaningful.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import SplitResult, quote, unquote_plus, urlsplit

from ..base import DecodeError, Readable, unblob
from ..secrets import hint_of
from .body import (
    CODINGS,
    BodyBuffer,
    body_from_readable,
    body_to_readable,
    decode_body,
    encode_body,
    field_hint,
    is_text,
)
from .config import HttpConfig, Redaction, is_secret_field
from .grpc import body_readable as grpc_body_readable
from .grpc import call_name, is_grpc_type

Fields = Sequence[tuple[bytes, bytes]]

DEFAULT_PORTS = {"http": 80, "https": 443}

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}\Z")  # RFC 9110 §5.6.2
_VISIBLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))


def method_text(raw: bytes) -> str:
    """The request method, which must be a token (RFC 9110 §9.1)."""
    if not _TOKEN.match(raw):
        raise DecodeError(f"invalid HTTP method {raw[:64]!r}")
    return raw.decode("ascii")


def wire_text(raw: bytes) -> str:
    """A request-target or authority as text: UTF-8 when clean, otherwise with the
    offending bytes percent-encoded (RFC 3986 §2.1), so it is always safe YAML."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.isprintable() and " " not in text:
        return text
    return quote(raw, safe=_VISIBLE_ASCII)


def text_or_hex(value: bytes) -> Readable:
    try:
        s = value.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": value.hex()}
    return s if is_text(s) else {"hex": value.hex()}


def _redact_cookie_pairs(value: str, separator: str, redaction: Redaction) -> str:
    """``a=1; b=2`` -> ``a=<secret:cookie.a>; b=<secret:cookie.b>`` (names kept, RFC 6265 §4.2.1)."""
    out = []
    for pair in value.split(separator):
        name, eq, cookie = pair.partition("=")
        hint = f"cookie.{name.strip()}" if eq else "cookie"
        out.append(f"{name}={redaction.secret(cookie, hint)}" if eq else redaction.secret(pair, hint))
    return separator.join(out)


def _redact_set_cookie(value: str, redaction: Redaction) -> str:
    """``sid=abc; Path=/; HttpOnly`` -> ``sid=<secret:cookie.sid>; Path=/; HttpOnly`` (RFC 6265 §4.1.1)."""
    first, sep, attributes = value.partition(";")
    name, eq, cookie = first.partition("=")
    hint = f"cookie.{name.strip()}"
    return (f"{name}={redaction.secret(cookie, hint)}" if eq else redaction.secret(first, hint)) \
        + sep + attributes


# ``Bearer abc``, ``Token abc``, ``Basic abc=``: the scheme is kept (RFC 9110 §11.4)
_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)( +)(\S.*)\Z", re.S)


def redact_header(name: str, value: Readable, redaction: Redaction) -> Readable:
    lname = name.lower()
    if lname not in redaction.headers:
        return redaction.scrub(value) if isinstance(value, str) else value
    if not isinstance(value, str):
        return redaction.secret(unblob(value).decode("latin-1"), lname)
    if lname == "cookie":
        return _redact_cookie_pairs(value, ";", redaction)
    if lname == "set-cookie":
        return _redact_set_cookie(value, redaction)
    scheme = _CREDENTIALS.match(value)
    if scheme is not None:
        return scheme.group(1) + scheme.group(2) + redaction.secret(scheme.group(3), lname)
    return redaction.secret(value, lname)


def headers_to_readable(fields: Iterable[tuple[bytes, bytes]], redaction: Redaction) -> list[list[Readable]]:
    out: list[list[Readable]] = []
    for raw_name, raw_value in fields:
        name = text_or_hex(raw_name)
        value = text_or_hex(raw_value)
        out.append([name, redact_header(name, value, redaction) if isinstance(name, str) else value])
    return out


def headers_from_readable(headers: Iterable[Sequence[Readable]]) -> list[tuple[bytes, bytes]]:
    return [(unblob(name), unblob(value)) for name, value in headers]


def header_value(headers: Iterable[Sequence[Readable]], name: str) -> str | None:
    """The first value of ``name`` (case-insensitive) in a readable header list."""
    lname = name.lower()
    for n, v in headers:
        if isinstance(n, str) and n.lower() == lname:
            return v if isinstance(v, str) else unblob(v).decode("latin-1")
    return None


def field_value(fields: Fields, name: bytes) -> bytes | None:
    lname = name.lower()
    for n, v in fields:
        if n.lower() == lname:
            return v
    return None


# -- URLs ---------------------------------------------------------------------------------


def redact_query(query: str, redaction: Redaction, context: str = "") -> str:
    """Replace values of secret query keys, keeping the rest of the query text as sent."""
    if not query:
        return query
    parts = query.split("&")
    changed = False
    for i, part in enumerate(parts):
        key, eq, value = part.partition("=")
        name = unquote_plus(key)
        if is_secret_field(name, redaction.fields):
            parts[i] = f"{key}={redaction.secret(unquote_plus(value), field_hint(context, name))}"
            changed = True
    return "&".join(parts) if changed else query


def make_url(scheme: str, authority: str, target: str, redaction: Redaction) -> str:
    """``scheme://authority/path?query`` from an origin-form target (RFC 9112 §3.2.1)."""
    path, q, query = target.partition("?")
    if not path.startswith("/"):
        path = "/" + path if path != "*" else path
    authority = authority.lower()
    host, colon, port = authority.rpartition(":")
    if colon and "]" not in port and port.isdigit() and int(port) == DEFAULT_PORTS.get(scheme):
        authority = host
    query = redact_query(query, redaction, hint_of(path))
    return redaction.scrub(f"{scheme}://{authority}{path}{q}{query}")


def lenient_urlsplit(url: str) -> SplitResult:
    """``urlsplit`` that never raises: a Host header with an unbalanced ``[`` (fuzzed or
    hostile input) makes the stdlib raise ValueError; split such a url by hand."""
    try:
        return urlsplit(url)
    except ValueError:
        scheme, sep, rest = url.partition("://")
        if not sep:
            scheme, rest = "", url
        authority, slash, tail = rest.partition("/")
        path, _, query = (("/" + tail) if slash else "").partition("?")
        return SplitResult(scheme, authority, path, query, "")


def split_url(url: str) -> tuple[str, str, str]:
    """``(scheme, authority, target)`` of a readable url."""
    parts = lenient_urlsplit(url)
    target = parts.path or "/"
    if parts.query or url.endswith("?"):
        target += "?" + parts.query
    return parts.scheme, parts.netloc, target


# -- bodies ---------------------------------------------------------------------------


def body_fields(fields: Fields, buf: BodyBuffer, config: HttpConfig, context: str = "",
                path: str = "", response: bool = False) -> dict[str, Any]:
    """``{"body": ..., "encoding"?: ...}`` for a complete message body (``context``: see
    ``body_to_readable``; ``path``: the request's, naming a gRPC call's message types)."""
    ctype_raw = field_value(fields, b"content-type")
    ctype = ctype_raw.decode("latin-1") if ctype_raw else ""
    coding_raw = field_value(fields, b"content-encoding")
    coding = coding_raw.decode("latin-1").strip().lower() if coding_raw else ""
    if coding == "identity":
        coding = ""
    if buf.overflow:
        note = f"{coding}-encoded " if coding else ""
        return {"body": buf.stored(f"{note}body of {buf.size} bytes exceeds max_body "
                                   f"{config.max_body}: only its size and digest are kept")}
    data = buf.data()
    if coding and data:
        if coding not in CODINGS:
            return {"body": body_to_readable(data, "application/octet-stream", config.redaction)}
        try:
            decoded = decode_body(data, coding, config.max_body)
        except ValueError:
            # corrupt: keep the bytes exactly as sent, replayed without re-encoding
            return {"body": body_to_readable(data, "application/octet-stream", config.redaction)}
        if decoded is None:  # kept encoded, as a file (or a digest)
            big = BodyBuffer(0, buf.blobs)
            big.add(data)
            return {"body": big.stored(f"{coding} body decodes to more than max_body "
                                       f"{config.max_body} bytes; size and digest are of the "
                                       f"encoded body")}
        return {"body": body_to_readable(decoded, ctype, config.redaction, context), "encoding": coding}
    if data and is_grpc_type(ctype):
        grpc = grpc_body_readable(data, config.grpc_names, path, response)
        if grpc is not None:
            return {"body": {"grpc": [redact_fields(m, config.redaction, context)
                                      for m in grpc["grpc"]]}}
    return {"body": body_to_readable(data, ctype, config.redaction, context)}


def redact_fields(message: Readable, redaction: Redaction, context: str = "") -> Readable:
    """A gRPC message's field tree with the texts of secret fields (by their names, known
    from a descriptor set) replaced, and known secret values scrubbed from the others."""
    if not isinstance(message, list):
        return message
    out = []
    for entry in message:
        value = entry[1]
        if isinstance(value, str) and value:
            name = entry[2] if len(entry) == 3 else None
            value = redaction.secret(value, field_hint(context, name)) \
                if name and is_secret_field(name, redaction.fields) else redaction.scrub(value)
        elif isinstance(value, list):
            value = redact_fields(value, redaction, context)
        out.append([entry[0], value, *entry[2:]])
    return out


def body_bytes(message: dict[str, Any]) -> bytes:
    """Wire body of a readable message: decoded form re-encoded with its ``encoding``.

    Raises ``BodyUnavailable`` when the recording kept only a digest or a file.
    """
    data = body_from_readable(message.get("body"))
    coding = message.get("encoding")
    if coding and data:
        data = encode_body(data, coding)
    return data


# -- whole messages -------------------------------------------------------------------


def redact_url(url: str, redaction: Redaction) -> str:
    """A readable URL built without redaction, redacted as ``make_url`` would have."""
    base, q, query = url.partition("?")
    if not q:
        return redaction.scrub(url)
    return redaction.scrub(f"{base}?{redact_query(query, redaction, hint_of(lenient_urlsplit(base).path))}")


def redact_message(message: dict[str, Any], redaction: Redaction, context: str | None = None) -> dict[str, Any]:
    """A readable message built without redaction, redacted as recording would have.

    The body is made readable again from its bytes, so JSON kept as text for its layout
    is still searched for secret fields. Bodies kept as files or digests stay as they are.
    ``context`` names its secrets (default: from the message's own URL, for a request).
    """
    out = dict(message)
    if context is None:
        context = hint_of(lenient_urlsplit(str(message.get("url", ""))).path)
    if isinstance(message.get("url"), str):
        out["url"] = redact_url(message["url"], redaction)
    for part in ("headers", "trailers"):
        if part in message:
            out[part] = [[n, redact_header(n, v, redaction) if isinstance(n, str) else v]
                         for n, v in message[part]]
    body = message.get("body")
    if isinstance(body, str) or (isinstance(body, dict) and "json" in body):
        ctype = header_value(message.get("headers", []), "content-type") or ""
        out["body"] = body_to_readable(body_from_readable(body), ctype, redaction, context)
    return out



def request_readable(method: str, url: str, http_version: str, fields: Fields,
                     buf: BodyBuffer, trailers: Fields | None, config: HttpConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "method": method,
        "url": url,
        "http_version": http_version,
        "headers": headers_to_readable(fields, config.redaction),
    }
    path = lenient_urlsplit(url).path
    out.update(body_fields(fields, buf, config, hint_of(path), path))
    if trailers:
        out["trailers"] = headers_to_readable(trailers, config.redaction)
    return out


def response_readable(status: int, reason: Readable, http_version: str, fields: Fields,
                      buf: BodyBuffer | None, trailers: Fields | None,
                      config: HttpConfig, url: str = "") -> dict[str, Any]:
    """The readable response; ``url`` (its request's, or just its path) names the
    secrets in its body."""
    out: dict[str, Any] = {
        "status": status,
        "reason": reason,
        "http_version": http_version,
        "headers": headers_to_readable(fields, config.redaction),
    }
    if buf is None:
        out["body"] = ""
    else:
        path = lenient_urlsplit(url).path if url else ""
        out.update(body_fields(fields, buf, config, hint_of(path) if url else "", path, response=True))
    if trailers:
        out["trailers"] = headers_to_readable(trailers, config.redaction)
    return out


def summary(method: str, url: str, status: int | str | None = None, grpc: bool = False) -> str:
    """``GET host/path -> 200``; a gRPC call: ``gRPC host package.Service/Method``."""
    _, authority, target = split_url(url)
    path = target.split("?", 1)[0]
    call = call_name(path) if grpc and method == "POST" else None
    text = f"gRPC {authority} {call}" if call else f"{method} {authority}{path}"
    if len(text) > 80:
        text = text[:77] + "..."
    return text if status is None else f"{text} -> {status}"

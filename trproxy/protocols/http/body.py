"""HTTP bodies: bounded accumulation, content codings, and the readable body form.

Readable body forms (what a recording holds under ``body``):

* ``str`` — the body as UTF-8 text (``""`` when empty);
* ``{"json": value, "style"?: "..."}`` — a JSON document (RFC 8259), parsed, secrets
  redacted; ``style`` names the serializer layout so replay sends the same bytes
  (see "JSON layout" below); JSON that no known layout reproduces stays text;
* ``{"base64": "..."}`` — bytes that are not text;
* ``{"file": "bodies/<sha256>", "size": n, "sha256": "..."}`` — a body larger than
  ``HttpConfig.max_body``, streamed to a file beside the recording (a ``BlobStore``)
  as it was on the wire (content coding kept: the headers say which); replay streams
  it back. Matched by size and digest;
* ``{"omitted": True, "size": n, "sha256": "...", "note": "..."}`` — such a body when
  no store was given or the file could not be written: only its size and digest.

Content codings (RFC 9110 §8.4.1: gzip, deflate; RFC 7932 br; RFC 8878 zstd) are
removed before the body is made readable; the message then records
``encoding: <coding>`` and the replayer applies the coding again (with mitmproxy's
encoders). A body whose coding is unknown or corrupt is stored as received (text if
it happens to be text, else ``base64``) with no ``encoding`` key, and replayed byte
for byte.

Invariants: ``BodyBuffer`` never holds more than ``limit`` bytes (beyond it, it keeps a
running SHA-256 and writes through to its blob); decoding stops as soon as the output passes ``limit`` (a
decompression bomb costs at most ``limit`` bytes of memory, brotli aside: its decoder
is fed in small slices and checked after each).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode

import brotli
import zstandard
from mitmproxy.net.encoding import custom_encode

from ..base import BlobReader, BlobStore, BlobUnavailable, BlobWriter, Readable, unblob
from ..secrets import map_strings
from .config import Redaction, is_secret_field, secret_hints
from .grpc import body_bytes as grpc_body_bytes

CODINGS = frozenset({"gzip", "x-gzip", "deflate", "br", "zstd"})

# a body with these characters is not text (it is stored as base64)
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\ufffe\uffff\ud800-\udfff]")
# strings YAML cannot carry: lone surrogates (libyaml), NEL alone (PyYAML's emitter)
_NOT_YAML = re.compile("[\x85\ud800-\udfff]")


class BodyUnavailable(ValueError):
    """A recorded body cannot be sent: only its digest was kept, or its file is unreadable."""


class BodyBuffer:
    """Collects a message body up to ``limit`` bytes; beyond that, keeps its size and
    SHA-256 and, given a ``BlobStore``, streams it to a blob (never held whole)."""

    __slots__ = ("limit", "size", "_chunks", "_hash", "blobs", "_writer", "_ref")

    def __init__(self, limit: int, blobs: BlobStore | None = None) -> None:
        self.limit = limit
        self.size = 0
        self._chunks: list[bytes] | None = []
        self._hash: Any = None
        self.blobs = blobs
        self._writer: BlobWriter | None = None
        self._ref: str | None = None

    def add(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self._chunks is not None and self.size > self.limit:
            self._hash = hashlib.sha256()
            if self.blobs is not None:
                self._writer = self.blobs.create()
            for chunk in self._chunks:
                self._hash.update(chunk)
                if self._writer is not None:
                    self._writer.write(chunk)
            self._chunks = None
        if self._chunks is None:
            self._hash.update(data)
            if self._writer is not None:
                self._writer.write(data)
        else:
            self._chunks.append(bytes(data))

    @property
    def overflow(self) -> bool:
        return self._chunks is None

    def data(self) -> bytes:
        assert self._chunks is not None, "body overflowed its bound"
        return b"".join(self._chunks)

    def stored(self, note: str = "") -> dict[str, Any]:
        """The readable form of an overflowed body: ``{file, size, sha256}`` once its blob
        is committed, else ``{omitted, size, sha256, note}``."""
        digest = self._hash.hexdigest()
        if self._writer is not None:
            self._ref = self._writer.commit(digest)
            self._writer = None
        if self._ref is not None:
            return {"file": self._ref, "size": self.size, "sha256": digest}
        return {
            "omitted": True,
            "size": self.size,
            "sha256": digest,
            "note": note or f"body larger than {self.limit} bytes: only its size and digest are kept",
        }


def body_file(body: Readable) -> str | None:
    """The blob reference of a body stored in a file, else None."""
    if isinstance(body, dict) and isinstance(body.get("file"), str):
        return body["file"]
    return None


def open_body(body: Readable, blobs: BlobStore | None) -> BlobReader:
    """Open a file body for streaming; ``BodyUnavailable`` says why it cannot be."""
    ref = body_file(body)
    assert ref is not None
    if blobs is None:
        raise BodyUnavailable(f"recorded body {ref} is in a file, and no body store is open")
    try:
        return blobs.open(ref)
    except BlobUnavailable as e:
        raise BodyUnavailable(str(e)) from e


def read_chunks(reader: BlobReader, chunk: int = 256 * 1024) -> Iterator[bytes]:
    """The reader's bytes in pieces, closing it at the end (or when abandoned)."""
    try:
        while data := reader.read(chunk):
            yield data
    finally:
        reader.close()


# -- content codings ------------------------------------------------------------------


def _inflate(data: bytes, wbits: int, limit: int, multi_member: bool) -> bytes | None:
    out = bytearray()
    while True:
        d = zlib.decompressobj(wbits)
        out += d.decompress(data, limit + 1 - len(out))
        if len(out) > limit:
            return None
        if not d.eof:
            raise ValueError("truncated compressed body")
        data = d.unused_data
        if not (multi_member and data):
            return bytes(out)


def decode_body(data: bytes, coding: str, limit: int) -> bytes | None:
    """Remove one content coding; None when the result would exceed ``limit``.

    Raises ValueError on corrupt input or an unknown coding.
    """
    coding = coding.lower()
    if not data:
        return b""
    try:
        if coding in ("gzip", "x-gzip"):
            return _inflate(data, 16 + zlib.MAX_WBITS, limit, multi_member=True)
        if coding == "deflate":
            # RFC 9110 §8.4.1.2 says zlib format; some servers send raw deflate
            try:
                return _inflate(data, zlib.MAX_WBITS, limit, multi_member=False)
            except zlib.error:
                return _inflate(data, -zlib.MAX_WBITS, limit, multi_member=False)
        if coding == "zstd":
            reader = zstandard.ZstdDecompressor().stream_reader(
                io.BytesIO(data), read_across_frames=True)
            out = reader.read(limit + 1)
            if len(out) > limit:
                return None
            if reader.read(1):  # pragma: no cover - read(n) returns everything up to n
                return None
            return out
        if coding == "br":
            dec = brotli.Decompressor()
            parts, size = [], 0
            for i in range(0, len(data), 256):
                part = dec.process(data[i:i + 256])
                size += len(part)
                if size > limit:
                    return None
                parts.append(part)
            if not dec.is_finished():
                raise ValueError("truncated brotli body")
            return b"".join(parts)
    except (zlib.error, zstandard.ZstdError, brotli.error) as e:
        raise ValueError(f"corrupt {coding} body: {e}") from e
    raise ValueError(f"unknown content coding {coding!r}")


def encode_body(data: bytes, coding: str) -> bytes:
    """Apply a content coding again on replay (mitmproxy's encoders: gzip with mtime 0)."""
    coding = coding.lower()
    if coding == "x-gzip":
        coding = "gzip"
    return custom_encode[coding](data)


# -- readable form ----------------------------------------------------------------------


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def is_json_type(content_type: str) -> bool:
    mt = _media_type(content_type)
    return mt == "application/json" or mt.endswith("+json")


def is_form_type(content_type: str) -> bool:
    return _media_type(content_type) == "application/x-www-form-urlencoded"


def is_text(s: str) -> bool:
    return _NOT_TEXT.search(s) is None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} has no YAML equal")


# the string check runs only when the raw text could need it, so the C parser does the work
_SUSPECT_STRINGS = re.compile(r"\\u[dD][89a-fA-F]|\\u0085|\x85")


def _walk(value: Any):
    stack = [value]
    while stack:
        v = stack.pop()
        yield v
        if isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v)
            stack.extend(v.values())


def parse_json(text: str) -> Any:
    """JSON -> Python data that YAML round-trips; ValueError if it cannot.

    Rejected: NaN/Infinity (no YAML equal) and strings YAML cannot carry (lone
    surrogates from ``\\uD800`` escapes, a lone NEL). Numbers beyond float range become
    ``inf``, which ``dumps_styled`` refuses, so such documents stay text. Duplicate keys
    keep the last value; ``json_readable`` then sees that the text does not round-trip.
    """
    value = json.loads(text, parse_constant=_reject_constant)
    if ("\\u" in text or "\x85" in text) and _SUSPECT_STRINGS.search(text):
        for v in _walk(value):
            if isinstance(v, str) and _NOT_YAML.search(v):
                raise ValueError("JSON string YAML cannot carry")
    return value


def may_hold_secrets(text: str, fields: frozenset[str]) -> bool:
    """False when no secret field name occurs in ``text`` at all (the common case)."""
    if not fields:
        return False
    squashed = text.lower().replace("_", "").replace("-", "")
    return any(hint in squashed for hint in secret_hints(fields))


def field_hint(context: str, key: str) -> str:
    """The name a secret field's value gets: ``login.password`` (``context`` is where the
    message went, ``hint_of`` its URL)."""
    return f"{context}.{key}" if context and context != key.lower() else key


def _secret_value(value: Any, hint: str, redaction: Redaction) -> Any:
    if value is None or isinstance(value, bool):
        return value  # nothing to hide
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return redaction.secret(text, hint)


def redact_json(value: Any, redaction: Redaction, context: str = "") -> Any:
    """A copy of ``value`` with the values of secret keys replaced, at any depth."""
    fields = redaction.fields
    if isinstance(value, dict):
        return {k: (_secret_value(v, field_hint(context, k), redaction) if is_secret_field(k, fields)
                    else redact_json(v, redaction, context))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v, redaction, context) for v in value]
    return value


def redact_form(text: str, redaction: Redaction, context: str = "") -> str:
    pairs = parse_qsl(text, keep_blank_values=True)
    if not any(is_secret_field(k, redaction.fields) for k, _ in pairs):
        return text
    return urlencode([(k, _secret_value(v, field_hint(context, k), redaction)
                       if is_secret_field(k, redaction.fields) else v) for k, v in pairs],
                     safe="<>:")


# -- JSON layout ----------------------------------------------------------------------
# A JSON body is stored as data, but replay should send the bytes the server sent. The
# common serializer layouts are recognized and named in ``style`` (absent = compact):
# "compact" | "spaced" (", " ": ") | "indentN" (N spaces, JSON.stringify / json.dumps
# indent), plus " ascii" (\uXXXX escapes for non-ASCII) and " newline" (trailing \n).
# A JSON body no layout reproduces byte for byte is stored as text instead (unless it
# holds secrets, which must be redacted: then the closest layout is used).

_INDENT = re.compile(r"\n( +)\S")


def dumps_styled(value: Any, style: str = "") -> str:
    words = style.split()
    layout = words[0] if words else "compact"
    kw: dict[str, Any] = {"ensure_ascii": "ascii" in words, "allow_nan": False}
    if layout.startswith("indent"):
        kw.update(indent=int(layout[6:] or 2), separators=(",", ": "))
    elif layout == "spaced":
        kw.update(separators=(", ", ": "))
    else:
        kw.update(separators=(",", ":"))
    text = json.dumps(value, **kw)
    return text + "\n" if "newline" in words else text


def _guess_styles(text: str) -> list[str]:
    body = text.rstrip("\n")
    suffix = (" ascii" if text.isascii() and "\\u" in text else "") + \
        (" newline" if text.endswith("\n") else "")
    indent = _INDENT.search(body)
    layouts = [f"indent{len(indent.group(1))}"] if indent else []
    layouts += ["spaced", "compact"] if (", " in body or ": " in body) else ["compact", "spaced"]
    return [(layout + suffix).strip() for layout in layouts]


def json_readable(text: str, redaction: Redaction, context: str = "") -> Readable | None:
    """``{"json": value, "style"?: ...}`` for a JSON text, None to keep it as text."""
    try:
        value = parse_json(text)
    except (ValueError, RecursionError):
        return None
    redacted = value
    if may_hold_secrets(text, redaction.fields):
        redacted = redact_json(value, redaction, context)
        if redaction.vault is not None and redacted != value:  # a secret named here, echoed here
            redacted = map_strings(redacted, redaction.scrub)
    styles = _guess_styles(text)
    try:
        exact = next((st for st in styles if dumps_styled(value, st) == text), None)
        if exact is None and redacted == value:
            return None
        style = exact if exact is not None else styles[0]
        dumps_styled(redacted, style)  # numbers beyond float range: keep as text
    except ValueError:
        return None
    return {"json": redacted, "style": style} if style != "compact" else {"json": redacted}


def body_to_readable(data: bytes, content_type: str, redaction: Redaction,
                     context: str = "") -> Readable:
    """The readable form of a complete (decoded) body; see the module docstring.
    ``context`` names the secrets found in it (``hint_of`` the request's URL)."""
    if not data:
        return ""
    try:
        text: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        text = redaction.scrub(text)  # secret values known from elsewhere, stand-ins
        stripped = text.lstrip()
        if is_json_type(content_type) or (not content_type and stripped[:1] in ("{", "[")):
            as_json = json_readable(text, redaction, context)
            if as_json is not None:
                return as_json
        if is_text(text):
            if is_form_type(content_type):
                return redact_form(text, redaction, context)
            return text
    return {"base64": base64.b64encode(data).decode("ascii")}


def body_from_readable(body: Readable) -> bytes:
    """Inverse of ``body_to_readable`` (JSON serialized in its recorded ``style``)."""
    if body is None or body == "":
        return b""
    if isinstance(body, dict):
        if "json" in body:
            return dumps_styled(body["json"], body.get("style", "")).encode()
        if "grpc" in body:
            return grpc_body_bytes(body)
        if body.get("omitted"):
            raise BodyUnavailable(
                f"recorded body of {body.get('size')} bytes was not stored "
                f"(sha256 {body.get('sha256')}); record again with a larger max_body")
        if (ref := body_file(body)) is not None:
            raise BodyUnavailable(f"recorded body {ref} is in a file; it is streamed, not loaded")
    return unblob(body)

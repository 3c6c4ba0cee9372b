"""Frontend (client -> server) messages of protocol 3.0, one frozen dataclass each.

Names and field order follow the spec's "Message Formats" page. Each class has
``TYPE`` (the Byte1 type code; ``b""`` for the untyped startup-phase packets),
``body()`` -> bytes and ``parse(reader)`` -> instance; ``parse`` consumes the whole
body or raises ``DecodeError``. The codec adds the framing (type + length).

``p`` is shared by PasswordMessage, SASLInitialResponse, SASLResponse and
GSSResponse: which one it is depends on the authentication request the server sent
last, so the codec chooses the class (spec: "the exact message type can be deduced
from the context").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..base import DecodeError, Direction
from .wire import (
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
    PROTOCOL_3_0,
    SSL_REQUEST_CODE,
    Reader,
    Writer,
)

_FRONTEND = (Direction.CLIENT,)
_BOTH = (Direction.CLIENT, Direction.SERVER)


class FrontendMessage:
    __slots__ = ()
    TYPE: ClassVar[bytes] = b""
    DIRECTIONS: ClassVar[tuple[Direction, ...]] = _FRONTEND

    def body(self) -> bytes:
        return b""

    @classmethod
    def parse(cls, r: Reader) -> FrontendMessage:
        r.done()
        return cls()


# --- startup phase (untyped packets) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartupMessage(FrontendMessage):
    """Int32 protocol version, then (name, value) String pairs, then a NUL."""

    parameters: tuple[tuple[str, str], ...] = ()
    protocol_version: int = PROTOCOL_3_0

    def body(self) -> bytes:
        w = Writer().int32(self.protocol_version)
        for name, value in self.parameters:
            w.cstring(name).cstring(value)
        return w.raw(b"\0").getvalue()

    @classmethod
    def parse(cls, r: Reader) -> StartupMessage:
        version = r.int32()
        if version >> 16 != 3:
            raise DecodeError(f"StartupMessage: unsupported protocol version "
                              f"{version >> 16}.{version & 0xFFFF}")
        params = []
        while True:
            if r.at_end():
                raise DecodeError("StartupMessage: parameter list not terminated")
            if r.data[r.pos] == 0:
                r.pos += 1
                break
            name = r.cstring()
            params.append((name, r.cstring()))
        r.done()
        return cls(tuple(params), version)

    @property
    def params(self) -> dict[str, str]:
        return dict(self.parameters)


@dataclass(frozen=True, slots=True)
class SSLRequest(FrontendMessage):
    """Int32 80877103; the server answers one byte, 'S' (TLS follows) or 'N'."""

    def body(self) -> bytes:
        return Writer().int32(SSL_REQUEST_CODE).getvalue()


@dataclass(frozen=True, slots=True)
class GSSENCRequest(FrontendMessage):
    """Int32 80877104; the server answers one byte, 'G' (GSSAPI encryption) or 'N'."""

    def body(self) -> bytes:
        return Writer().int32(GSSENC_REQUEST_CODE).getvalue()


@dataclass(frozen=True, slots=True)
class CancelRequest(FrontendMessage):
    """Int32 80877102, Int32 process id, secret key (Int32 in 3.0; up to 256 bytes in 3.2)."""

    process_id: int = 0
    secret_key: bytes = b"\0\0\0\0"

    def body(self) -> bytes:
        return Writer().int32(CANCEL_REQUEST_CODE).int32(self.process_id).raw(
            self.secret_key).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> CancelRequest:
        r.int32()  # the code, checked by the codec
        pid = r.int32()
        key = r.rest()
        if not 4 <= len(key) <= 256:
            raise DecodeError(f"CancelRequest: secret key of {len(key)} bytes")
        return cls(pid, key)


# --- authentication responses (all type 'p') -----------------------------------------


@dataclass(frozen=True, slots=True)
class PasswordMessage(FrontendMessage):
    """Cleartext or MD5-hashed password, a String. Never reaches a recording."""

    TYPE = b"p"
    password: bytes = b""

    def body(self) -> bytes:
        return self.password + b"\0"

    @classmethod
    def parse(cls, r: Reader) -> PasswordMessage:
        data = r.rest()
        if not data.endswith(b"\0") or b"\0" in data[:-1]:
            raise DecodeError("PasswordMessage: not a single NUL-terminated string")
        return cls(data[:-1])


@dataclass(frozen=True, slots=True)
class SASLInitialResponse(FrontendMessage):
    """String mechanism, Int32 length (-1: none), initial client response."""

    TYPE = b"p"
    mechanism: str = "SCRAM-SHA-256"
    data: bytes | None = None

    def body(self) -> bytes:
        return Writer().cstring(self.mechanism).value(self.data).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> SASLInitialResponse:
        mechanism = r.cstring()
        data = r.value()
        r.done()
        return cls(mechanism, data)


@dataclass(frozen=True, slots=True)
class SASLResponse(FrontendMessage):
    """SASL mechanism-specific message data (the rest of the body)."""

    TYPE = b"p"
    data: bytes = b""

    def body(self) -> bytes:
        return self.data

    @classmethod
    def parse(cls, r: Reader) -> SASLResponse:
        return cls(r.rest())


@dataclass(frozen=True, slots=True)
class GSSResponse(FrontendMessage):
    """GSSAPI or SSPI response data (the rest of the body)."""

    TYPE = b"p"
    data: bytes = b""

    def body(self) -> bytes:
        return self.data

    @classmethod
    def parse(cls, r: Reader) -> GSSResponse:
        return cls(r.rest())


# --- simple and extended query -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query(FrontendMessage):
    TYPE = b"Q"
    query: str = ""

    def body(self) -> bytes:
        return Writer().cstring(self.query).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> Query:
        q = r.cstring()
        r.done()
        return cls(q)


@dataclass(frozen=True, slots=True)
class Parse(FrontendMessage):
    """String statement name ("" = unnamed), String query, Int16 n, Int32 type oid[n]."""

    TYPE = b"P"
    name: str = ""
    query: str = ""
    param_types: tuple[int, ...] = ()

    def body(self) -> bytes:
        w = Writer().cstring(self.name).cstring(self.query).count(len(self.param_types))
        for oid in self.param_types:
            w.uint32(oid)
        return w.getvalue()

    @classmethod
    def parse(cls, r: Reader) -> Parse:
        name = r.cstring()
        query = r.cstring()
        types = tuple(r.uint32() for _ in range(r.count()))
        r.done()
        return cls(name, query, types)


@dataclass(frozen=True, slots=True)
class Bind(FrontendMessage):
    """Portal, statement, parameter format codes, parameter values, result format codes.

    Format codes: none = all text, one = applies to all, else one per column (spec).
    """

    TYPE = b"B"
    portal: str = ""
    statement: str = ""
    param_formats: tuple[int, ...] = ()
    params: tuple[bytes | None, ...] = ()
    result_formats: tuple[int, ...] = ()

    def body(self) -> bytes:
        w = Writer().cstring(self.portal).cstring(self.statement)
        w.count(len(self.param_formats))
        for f in self.param_formats:
            w.int16(f)
        w.count(len(self.params))
        for v in self.params:
            w.value(v)
        w.count(len(self.result_formats))
        for f in self.result_formats:
            w.int16(f)
        return w.getvalue()

    @classmethod
    def parse(cls, r: Reader) -> Bind:
        portal = r.cstring()
        statement = r.cstring()
        pformats = tuple(r.int16() for _ in range(r.count()))
        params = tuple(r.value() for _ in range(r.count()))
        rformats = tuple(r.int16() for _ in range(r.count()))
        r.done()
        return cls(portal, statement, pformats, params, rformats)

    def param_format(self, i: int) -> int:
        return format_code(self.param_formats, i)


def format_code(codes: tuple[int, ...], i: int) -> int:
    """The format of column/parameter ``i`` under the spec's 0/1/n convention."""
    if not codes:
        return 0
    if len(codes) == 1:
        return codes[0]
    return codes[i] if i < len(codes) else 0


def _kind(r: Reader) -> str:
    kind = r.byte1()
    if kind not in (b"S", b"P"):
        raise DecodeError(f"{r.what}: kind must be 'S' or 'P', got {kind!r}")
    return kind.decode()


@dataclass(frozen=True, slots=True)
class Describe(FrontendMessage):
    """Byte1 'S' (prepared statement) or 'P' (portal), String name."""

    TYPE = b"D"
    kind: str = "S"
    name: str = ""

    def body(self) -> bytes:
        return Writer().byte1(self.kind.encode()).cstring(self.name).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> Describe:
        kind = _kind(r)
        name = r.cstring()
        r.done()
        return cls(kind, name)


@dataclass(frozen=True, slots=True)
class Close(FrontendMessage):
    """Byte1 'S' (prepared statement) or 'P' (portal), String name."""

    TYPE = b"C"
    kind: str = "S"
    name: str = ""

    def body(self) -> bytes:
        return Writer().byte1(self.kind.encode()).cstring(self.name).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> Close:
        kind = _kind(r)
        name = r.cstring()
        r.done()
        return cls(kind, name)


@dataclass(frozen=True, slots=True)
class Execute(FrontendMessage):
    """String portal, Int32 maximum rows (0 = no limit)."""

    TYPE = b"E"
    portal: str = ""
    max_rows: int = 0

    def body(self) -> bytes:
        return Writer().cstring(self.portal).int32(self.max_rows).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> Execute:
        portal = r.cstring()
        n = r.int32()
        r.done()
        return cls(portal, n)


@dataclass(frozen=True, slots=True)
class Sync(FrontendMessage):
    TYPE = b"S"


@dataclass(frozen=True, slots=True)
class Flush(FrontendMessage):
    TYPE = b"H"


@dataclass(frozen=True, slots=True)
class Terminate(FrontendMessage):
    TYPE = b"X"


@dataclass(frozen=True, slots=True)
class FunctionCall(FrontendMessage):
    """Int32 function oid, argument formats, arguments, Int16 result format."""

    TYPE = b"F"
    function_oid: int = 0
    arg_formats: tuple[int, ...] = ()
    args: tuple[bytes | None, ...] = ()
    result_format: int = 0

    def body(self) -> bytes:
        w = Writer().uint32(self.function_oid).count(len(self.arg_formats))
        for f in self.arg_formats:
            w.int16(f)
        w.count(len(self.args))
        for a in self.args:
            w.value(a)
        return w.int16(self.result_format).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> FunctionCall:
        oid = r.uint32()
        formats = tuple(r.int16() for _ in range(r.count()))
        args = tuple(r.value() for _ in range(r.count()))
        result = r.int16()
        r.done()
        return cls(oid, formats, args, result)


# --- COPY (both directions; the codec returns the same classes for the server) -------


@dataclass(frozen=True, slots=True)
class CopyData(FrontendMessage):
    TYPE = b"d"
    DIRECTIONS = _BOTH
    data: bytes = b""

    def body(self) -> bytes:
        return self.data

    @classmethod
    def parse(cls, r: Reader) -> CopyData:
        return cls(r.rest())


@dataclass(frozen=True, slots=True)
class CopyDone(FrontendMessage):
    TYPE = b"c"
    DIRECTIONS = _BOTH


@dataclass(frozen=True, slots=True)
class CopyFail(FrontendMessage):
    """String: the reason the frontend aborts COPY FROM STDIN."""

    TYPE = b"f"
    message: str = ""

    def body(self) -> bytes:
        return Writer().cstring(self.message).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> CopyFail:
        m = r.cstring()
        r.done()
        return cls(m)


# Typed frontend messages by type byte ('p' is resolved by the codec from context).
BY_TYPE: dict[bytes, type[FrontendMessage]] = {
    cls.TYPE: cls
    for cls in (Query, Parse, Bind, Describe, Close, Execute, Sync, Flush, Terminate,
                FunctionCall, CopyData, CopyDone, CopyFail)
}

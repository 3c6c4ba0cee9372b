"""Backend (server -> client) messages of protocol 3.0, one frozen dataclass each.

Names follow the spec's "Message Formats" page. ``TYPE`` is the Byte1 type code;
the ``Authentication*`` family shares ``R`` and is told apart by its Int32 code
(``AUTH_CODE``). ``SSLResponse``/``GSSENCResponse`` are the single unframed byte the
server sends after SSLRequest/GSSENCRequest (the spec does not name them).
CopyData and CopyDone flow both ways and are the classes of ``frontend``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from ..base import DecodeError, Direction
from .frontend import CopyData, CopyDone
from .wire import Reader, Writer

_BACKEND = (Direction.SERVER,)


class BackendMessage:
    __slots__ = ()
    TYPE: ClassVar[bytes] = b""
    DIRECTIONS: ClassVar[tuple[Direction, ...]] = _BACKEND

    def body(self) -> bytes:
        return b""

    @classmethod
    def parse(cls, r: Reader) -> BackendMessage:
        r.done()
        return cls()


# --- replies to SSLRequest / GSSENCRequest (one byte, no frame) ----------------------


@dataclass(frozen=True, slots=True)
class SSLResponse(BackendMessage):
    """'S': TLS handshake follows; 'N': continue in plaintext."""

    code: str = "N"


@dataclass(frozen=True, slots=True)
class GSSENCResponse(BackendMessage):
    """'G': GSSAPI encryption follows; 'N': continue unencrypted."""

    code: str = "N"


# --- authentication ('R', Int32 code) ------------------------------------------------


class Authentication(BackendMessage):
    __slots__ = ()
    TYPE = b"R"
    AUTH_CODE: ClassVar[int] = -1

    def body(self) -> bytes:
        return Writer().int32(self.AUTH_CODE).raw(self.payload()).getvalue()

    def payload(self) -> bytes:
        return b""

    @classmethod
    def parse(cls, r: Reader) -> BackendMessage:  # r is positioned after the code
        r.done()
        return cls()


@dataclass(frozen=True, slots=True)
class AuthenticationOk(Authentication):
    AUTH_CODE = 0


@dataclass(frozen=True, slots=True)
class AuthenticationKerberosV5(Authentication):
    AUTH_CODE = 2


@dataclass(frozen=True, slots=True)
class AuthenticationCleartextPassword(Authentication):
    AUTH_CODE = 3


@dataclass(frozen=True, slots=True)
class AuthenticationMD5Password(Authentication):
    """Byte4 salt for md5(md5(password + user) + salt)."""

    AUTH_CODE = 5
    salt: bytes = b"\0\0\0\0"

    def payload(self) -> bytes:
        return self.salt

    @classmethod
    def parse(cls, r: Reader) -> AuthenticationMD5Password:
        salt = r.take(4)
        r.done()
        return cls(salt)


@dataclass(frozen=True, slots=True)
class AuthenticationSCMCredential(Authentication):
    AUTH_CODE = 6


@dataclass(frozen=True, slots=True)
class AuthenticationGSS(Authentication):
    AUTH_CODE = 7


@dataclass(frozen=True, slots=True)
class AuthenticationGSSContinue(Authentication):
    AUTH_CODE = 8
    data: bytes = b""

    def payload(self) -> bytes:
        return self.data

    @classmethod
    def parse(cls, r: Reader) -> AuthenticationGSSContinue:
        return cls(r.rest())


@dataclass(frozen=True, slots=True)
class AuthenticationSSPI(Authentication):
    AUTH_CODE = 9


@dataclass(frozen=True, slots=True)
class AuthenticationSASL(Authentication):
    """The mechanisms the server offers, each a String, then a NUL."""

    AUTH_CODE = 10
    mechanisms: tuple[str, ...] = ("SCRAM-SHA-256",)

    def payload(self) -> bytes:
        w = Writer()
        for m in self.mechanisms:
            w.cstring(m)
        return w.raw(b"\0").getvalue()

    @classmethod
    def parse(cls, r: Reader) -> AuthenticationSASL:
        mechs = []
        while True:
            if r.at_end():
                raise DecodeError("AuthenticationSASL: mechanism list not terminated")
            if r.data[r.pos] == 0:
                r.pos += 1
                break
            mechs.append(r.cstring())
        r.done()
        return cls(tuple(mechs))


@dataclass(frozen=True, slots=True)
class AuthenticationSASLContinue(Authentication):
    AUTH_CODE = 11
    data: bytes = b""

    def payload(self) -> bytes:
        return self.data

    @classmethod
    def parse(cls, r: Reader) -> AuthenticationSASLContinue:
        return cls(r.rest())


@dataclass(frozen=True, slots=True)
class AuthenticationSASLFinal(Authentication):
    AUTH_CODE = 12
    data: bytes = b""

    def payload(self) -> bytes:
        return self.data

    @classmethod
    def parse(cls, r: Reader) -> AuthenticationSASLFinal:
        return cls(r.rest())


AUTH_BY_CODE: dict[int, type[Authentication]] = {
    cls.AUTH_CODE: cls
    for cls in (AuthenticationOk, AuthenticationKerberosV5, AuthenticationCleartextPassword,
                AuthenticationMD5Password, AuthenticationSCMCredential, AuthenticationGSS,
                AuthenticationGSSContinue, AuthenticationSSPI, AuthenticationSASL,
                AuthenticationSASLContinue, AuthenticationSASLFinal)
}


def parse_authentication(r: Reader) -> BackendMessage:
    code = r.int32()
    cls = AUTH_BY_CODE.get(code)
    if cls is None:
        raise DecodeError(f"Authentication: unknown request code {code}")
    return cls.parse(r)


# --- session state --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParameterStatus(BackendMessage):
    TYPE = b"S"
    name: str = ""
    value: str = ""

    def body(self) -> bytes:
        return Writer().cstring(self.name).cstring(self.value).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> ParameterStatus:
        name = r.cstring()
        value = r.cstring()
        r.done()
        return cls(name, value)


def backend_key(process_id: int, secret_key: bytes) -> bytes:
    """What names a backend to a CancelRequest: its process id and secret key."""
    return process_id.to_bytes(4, "big", signed=True) + secret_key


@dataclass(frozen=True, slots=True)
class BackendKeyData(BackendMessage):
    """Int32 process id, secret key (Int32 in 3.0, variable length in 3.2)."""

    TYPE = b"K"
    process_id: int = 0
    secret_key: bytes = b"\0\0\0\0"

    def body(self) -> bytes:
        return Writer().int32(self.process_id).raw(self.secret_key).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> BackendKeyData:
        pid = r.int32()
        key = r.rest()
        if not 4 <= len(key) <= 256:
            raise DecodeError(f"BackendKeyData: secret key of {len(key)} bytes")
        return cls(pid, key)


@dataclass(frozen=True, slots=True)
class ReadyForQuery(BackendMessage):
    """Byte1 transaction status: 'I' idle, 'T' in a transaction block, 'E' failed one."""

    TYPE = b"Z"
    status: str = "I"

    def body(self) -> bytes:
        return self.status.encode("ascii")

    @classmethod
    def parse(cls, r: Reader) -> ReadyForQuery:
        status = r.byte1()
        r.done()
        if status not in (b"I", b"T", b"E"):
            raise DecodeError(f"ReadyForQuery: unknown transaction status {status!r}")
        return cls(status.decode())


@dataclass(frozen=True, slots=True)
class NegotiateProtocolVersion(BackendMessage):
    TYPE = b"v"
    newest_minor: int = 0
    unrecognized: tuple[str, ...] = ()

    def body(self) -> bytes:
        w = Writer().int32(self.newest_minor).int32(len(self.unrecognized))
        for opt in self.unrecognized:
            w.cstring(opt)
        return w.getvalue()

    @classmethod
    def parse(cls, r: Reader) -> NegotiateProtocolVersion:
        minor = r.int32()
        n = r.int32()
        if n < 0:
            raise DecodeError(f"NegotiateProtocolVersion: negative count {n}")
        opts = []
        for _ in range(n):
            opts.append(r.cstring())
        r.done()
        return cls(minor, tuple(opts))


# --- errors and asynchronous messages --------------------------------------------------


class _Fields(BackendMessage):
    """ErrorResponse/NoticeResponse body: (Byte1 field code, String value)*, then NUL."""

    __slots__ = ()
    fields: tuple[tuple[str, str], ...]

    def body(self) -> bytes:
        w = Writer()
        for code, value in self.fields:
            w.byte1(code.encode("ascii")).cstring(value)
        return w.raw(b"\0").getvalue()

    @classmethod
    def parse(cls, r: Reader) -> BackendMessage:
        fields = []
        while True:
            code = r.byte1()
            if code == b"\0":
                break
            if not (0x21 <= code[0] <= 0x7E):
                raise DecodeError(f"{r.what}: illegal field code {code!r}")
            fields.append((code.decode("ascii"), r.cstring()))
        r.done()
        return cls(tuple(fields))  # type: ignore[call-arg]

    def get(self, code: str, default: str = "") -> str:
        for c, v in self.fields:
            if c == code:
                return v
        return default


@dataclass(frozen=True, slots=True)
class ErrorResponse(_Fields):
    """Fields by code (spec "Error and Notice Message Fields"): S severity, V severity
    (never localized), C SQLSTATE, M message, D detail, H hint, P position, W where..."""

    TYPE = b"E"
    fields: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class NoticeResponse(_Fields):
    TYPE = b"N"
    fields: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class NotificationResponse(BackendMessage):
    """LISTEN/NOTIFY: Int32 notifying backend pid, String channel, String payload."""

    TYPE = b"A"
    process_id: int = 0
    channel: str = ""
    payload: str = ""

    def body(self) -> bytes:
        return Writer().int32(self.process_id).cstring(self.channel).cstring(
            self.payload).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> NotificationResponse:
        pid = r.int32()
        channel = r.cstring()
        payload = r.cstring()
        r.done()
        return cls(pid, channel, payload)


# --- query results ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldDescription:
    """One RowDescription column: name, table oid, attribute number, type oid, type
    size, type modifier, format code."""

    name: str
    table_oid: int = 0
    column: int = 0
    type_oid: int = 25
    type_size: int = -1
    type_modifier: int = -1
    format: int = 0


_FIELD = struct.Struct("!IhIhih")  # table oid, column, type oid, size, modifier, format
_I32 = struct.Struct("!i")
_NULL = _I32.pack(-1)


@dataclass(frozen=True, slots=True)
class RowDescription(BackendMessage):
    TYPE = b"T"
    fields: tuple[FieldDescription, ...] = ()

    def body(self) -> bytes:
        w = Writer().count(len(self.fields))
        for f in self.fields:
            w.cstring(f.name)
            try:  # the six numbers at once: the same bytes, the same checks
                w.raw(_FIELD.pack(f.table_oid, f.column, f.type_oid, f.type_size, f.type_modifier,
                                  f.format))
            except struct.error:  # one is out of range: written one by one, which says which
                w.uint32(f.table_oid).int16(f.column).uint32(f.type_oid)
                w.int16(f.type_size).int32(f.type_modifier).int16(f.format)
        return w.getvalue()

    @classmethod
    def parse(cls, r: Reader) -> RowDescription:
        fields = []
        for _ in range(r.count()):
            name = r.cstring()
            fields.append(FieldDescription(name, *_FIELD.unpack(r.take(_FIELD.size))))
        r.done()
        return cls(tuple(fields))


@dataclass(frozen=True, slots=True)
class DataRow(BackendMessage):
    """Int16 column count, then per column Int32 length (-1 = NULL) and the value."""

    TYPE = b"D"
    values: tuple[bytes | None, ...] = ()

    def body(self) -> bytes:
        w = Writer().count(len(self.values))
        parts = w.parts  # ``Writer.value`` without a call per value
        for v in self.values:
            parts.append(_NULL if v is None else _I32.pack(len(v)) + v)
        return w.getvalue()

    @classmethod
    def parse(cls, r: Reader) -> DataRow:
        values = tuple([r.value() for _ in range(r.count())])
        r.done()
        return cls(values)


@dataclass(frozen=True, slots=True)
class CommandComplete(BackendMessage):
    """The command tag: "SELECT 3", "INSERT 0 1", "UPDATE 2", "COPY 5", "BEGIN"..."""

    TYPE = b"C"
    tag: str = ""

    def body(self) -> bytes:
        return Writer().cstring(self.tag).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> CommandComplete:
        tag = r.cstring()
        r.done()
        return cls(tag)


@dataclass(frozen=True, slots=True)
class EmptyQueryResponse(BackendMessage):
    TYPE = b"I"


@dataclass(frozen=True, slots=True)
class ParseComplete(BackendMessage):
    TYPE = b"1"


@dataclass(frozen=True, slots=True)
class BindComplete(BackendMessage):
    TYPE = b"2"


@dataclass(frozen=True, slots=True)
class CloseComplete(BackendMessage):
    TYPE = b"3"


@dataclass(frozen=True, slots=True)
class NoData(BackendMessage):
    TYPE = b"n"


@dataclass(frozen=True, slots=True)
class PortalSuspended(BackendMessage):
    TYPE = b"s"


@dataclass(frozen=True, slots=True)
class ParameterDescription(BackendMessage):
    TYPE = b"t"
    type_oids: tuple[int, ...] = ()

    def body(self) -> bytes:
        w = Writer().count(len(self.type_oids))
        for oid in self.type_oids:
            w.uint32(oid)
        return w.getvalue()

    @classmethod
    def parse(cls, r: Reader) -> ParameterDescription:
        oids = tuple(r.uint32() for _ in range(r.count()))
        r.done()
        return cls(oids)


@dataclass(frozen=True, slots=True)
class FunctionCallResponse(BackendMessage):
    """Int32 length (-1 = NULL), the function result."""

    TYPE = b"V"
    result: bytes | None = None

    def body(self) -> bytes:
        return Writer().value(self.result).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> FunctionCallResponse:
        v = r.value()
        r.done()
        return cls(v)


class _CopyResponse(BackendMessage):
    """Int8 overall format (0 text, 1 binary), Int16 n, Int16 column format[n]."""

    __slots__ = ()
    format: int
    column_formats: tuple[int, ...]

    def body(self) -> bytes:
        w = Writer().int8(self.format).count(len(self.column_formats))
        for f in self.column_formats:
            w.int16(f)
        return w.getvalue()

    @classmethod
    def parse(cls, r: Reader) -> BackendMessage:
        fmt = r.int8()
        cols = tuple(r.int16() for _ in range(r.count()))
        r.done()
        return cls(fmt, cols)  # type: ignore[call-arg]


@dataclass(frozen=True, slots=True)
class CopyInResponse(_CopyResponse):
    TYPE = b"G"
    format: int = 0
    column_formats: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class CopyOutResponse(_CopyResponse):
    TYPE = b"H"
    format: int = 0
    column_formats: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class CopyBothResponse(_CopyResponse):
    TYPE = b"W"
    format: int = 0
    column_formats: tuple[int, ...] = ()


BY_TYPE: dict[bytes, Any] = {
    cls.TYPE: cls
    for cls in (ParameterStatus, BackendKeyData, ReadyForQuery, NegotiateProtocolVersion,
                ErrorResponse, NoticeResponse, NotificationResponse, RowDescription, DataRow,
                CommandComplete, EmptyQueryResponse, ParseComplete, BindComplete, CloseComplete,
                NoData, PortalSuspended, ParameterDescription, FunctionCallResponse,
                CopyInResponse, CopyOutResponse, CopyBothResponse, CopyData, CopyDone)
}

# Messages the server may send at any time, outside any request's reply (spec:
# "Asynchronous Operations").
ASYNC_TYPES = (NoticeResponse, ParameterStatus, NotificationResponse)

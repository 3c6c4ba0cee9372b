"""Primitive wire types of the PostgreSQL frontend/backend protocol 3.0.

Spec: PostgreSQL docs, "Frontend/Backend Protocol" > "Message Data Types": every
integer is big-endian (Int8/Int16/Int32), strings are NUL-terminated (String), and a
message is ``Byte1 type + Int32 length (counting itself) + body``; the startup-phase
packets (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) have no type byte.

``Reader`` reads one message *body*; every read is bounds-checked and raises
``DecodeError``, so a malformed body can never read past its frame or loop forever.
Strings are decoded as UTF-8 with ``surrogateescape`` so any byte string round-trips
exactly (``client_encoding`` may be something other than UTF-8); the readable layer
turns strings that are not clean UTF-8 into ``{"hex": ...}``.
"""

from __future__ import annotations

import struct

from ..base import DecodeError, EncodeError

# Startup-phase request codes (spec: "Message Formats", StartupMessage & friends).
PROTOCOL_3_0 = 3 << 16  # 196608
SSL_REQUEST_CODE = 80877103  # 1234 << 16 | 5679
GSSENC_REQUEST_CODE = 80877104  # 1234 << 16 | 5680
CANCEL_REQUEST_CODE = 80877102  # 1234 << 16 | 5678

# The server refuses startup packets longer than this (MAX_STARTUP_PACKET_LENGTH).
MAX_STARTUP_PACKET = 10000

_I8 = struct.Struct(">b")
_U8 = struct.Struct(">B")
_I16 = struct.Struct("!h")
_U16 = struct.Struct("!H")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_HEADER = struct.Struct("!ci")
_LEN = struct.Struct("!i")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class Reader:
    """Bounds-checked cursor over one message body."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what  # message name, for error messages

    def _need(self, n: int) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.data):
            raise DecodeError(f"{self.what}: body ends after {len(self.data)} bytes, "
                              f"needed {start + n}")
        self.pos = start + n
        return start

    def byte1(self) -> bytes:
        start = self._need(1)
        return self.data[start:start + 1]

    def int8(self) -> int:
        return self.data[self._need(1)]

    def int16(self) -> int:
        return _I16.unpack_from(self.data, self._need(2))[0]

    def int32(self) -> int:
        return _I32.unpack_from(self.data, self._need(4))[0]

    def uint32(self) -> int:
        return _U32.unpack_from(self.data, self._need(4))[0]

    def count(self) -> int:
        """An Int16 element count, read unsigned (0..65535) as servers and libpq do: a
        Bind may carry up to 65535 parameters, so a count of 32768+ is not negative."""
        return _U16.unpack_from(self.data, self._need(2))[0]

    def take(self, n: int) -> bytes:
        start = self._need(n)
        return self.data[start:start + n]

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise DecodeError(f"{self.what}: string not NUL-terminated")
        raw = self.data[self.pos:end]
        self.pos = end + 1
        return _text(raw)

    def value(self) -> bytes | None:
        """Int32 length (-1 = NULL) followed by that many bytes (Bind, DataRow...)."""
        n = self.int32()
        if n == -1:
            return None
        if n < 0:
            raise DecodeError(f"{self.what}: illegal value length {n}")
        return self.take(n)

    def rest(self) -> bytes:
        start = self.pos
        self.pos = len(self.data)
        return self.data[start:]

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def done(self) -> None:
        if self.pos != len(self.data):
            raise DecodeError(f"{self.what}: {len(self.data) - self.pos} unexpected bytes "
                              f"after the last field")


class Writer:
    """Builds one message body."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def byte1(self, b: bytes) -> Writer:
        if len(b) != 1:
            raise EncodeError(f"expected one byte, got {b!r}")
        self.parts.append(b)
        return self

    def int8(self, v: int) -> Writer:
        self.parts.append(_checked(_I8 if v < 0 else _U8, v))
        return self

    def int16(self, v: int) -> Writer:
        self.parts.append(_checked(_I16, v))
        return self

    def int32(self, v: int) -> Writer:
        self.parts.append(_checked(_I32, v))
        return self

    def count(self, n: int) -> Writer:
        """An Int16 element count, unsigned (see ``Reader.count``)."""
        self.parts.append(_checked(_U16, n))
        return self

    def uint32(self, v: int) -> Writer:
        self.parts.append(_checked(_U32, v))
        return self

    def cstring(self, s: str) -> Writer:
        raw = _raw(s)
        if b"\0" in raw:
            raise EncodeError(f"string contains NUL: {s!r}")
        self.parts.append(raw + b"\0")
        return self

    def value(self, v: bytes | None) -> Writer:
        if v is None:
            self.parts.append(_I32.pack(-1))
        else:
            self.parts.append(_I32.pack(len(v)) + v)
        return self

    def raw(self, b: bytes) -> Writer:
        self.parts.append(b)
        return self

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


def _checked(packer: struct.Struct, v: int) -> bytes:
    try:
        return packer.pack(v)
    except struct.error as exc:
        raise EncodeError(f"{v!r} out of range for {packer.format}") from exc


def frame(type_byte: bytes, body: bytes) -> bytes:
    """A typed message: Byte1 type, Int32 length (including itself), body."""
    return _HEADER.pack(type_byte, len(body) + 4) + body


def untyped_frame(body: bytes) -> bytes:
    """A startup-phase packet: Int32 length (including itself), body."""
    return _LEN.pack(len(body) + 4) + body


text = _text
raw = _raw

"""Kafka's primitive wire types: fixed-width big-endian integers, varints, strings,
bytes, UUIDs, and their "compact" forms used by flexible versions (KIP-482).

Spec: https://kafka.apache.org/protocol#protocol_types.

``Reader`` reads from an immutable ``bytes`` object and raises ``DecodeError`` on any
short read or out-of-range length, never ``IndexError``/``struct.error``: every length
is checked against what is left before it is used, so a hostile length cannot make
us allocate. ``Writer`` appends to a ``bytearray`` and raises ``EncodeError`` for values
that do not fit their type.
"""

from __future__ import annotations

import struct
import uuid as _uuid

from ..base import DecodeError, EncodeError

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")

_RANGES = {
    "int8": (-(1 << 7), (1 << 7) - 1),
    "int16": (-(1 << 15), (1 << 15) - 1),
    "uint16": (0, (1 << 16) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "uint32": (0, (1 << 32) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
}


class Reader:
    """Cursor over one frame (or one tagged field's bytes)."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.end - self.pos:
            raise DecodeError(f"need {n} bytes at offset {self.pos}, {self.end - self.pos} left")
        start = self.pos
        self.pos = start + n
        return self.buf[start:self.pos]

    def _fixed(self, st: struct.Struct) -> int:
        pos = self.pos
        if pos + st.size > self.end:
            raise DecodeError(f"need {st.size} bytes at offset {pos}, {self.end - pos} left")
        self.pos = pos + st.size
        return st.unpack_from(self.buf, pos)[0]

    def int8(self) -> int:
        return self._fixed(_I8)

    def int16(self) -> int:
        return self._fixed(_I16)

    def uint16(self) -> int:
        return self._fixed(_U16)

    def int32(self) -> int:
        return self._fixed(_I32)

    def uint32(self) -> int:
        return self._fixed(_U32)

    def int64(self) -> int:
        return self._fixed(_I64)

    def float64(self) -> float:
        return self._fixed(_F64)

    def boolean(self) -> bool:
        b = self.int8()
        if b not in (0, 1):
            raise DecodeError(f"boolean byte {b} is neither 0 nor 1")
        return b == 1

    def uvarint(self, max_bytes: int = 5) -> int:
        """Unsigned LEB128 (protobuf-style) varint; at most 5 bytes for 32 bits."""
        result = shift = 0
        buf, pos, end = self.buf, self.pos, self.end
        for _ in range(max_bytes):
            if pos >= end:
                raise DecodeError(f"varint runs past the end at offset {pos}")
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                self.pos = pos
                return result
            shift += 7
        raise DecodeError(f"varint longer than {max_bytes} bytes at offset {self.pos}")

    def varint(self) -> int:
        """Signed zig-zag varint (record fields), 32 bits."""
        n = self.uvarint(5)
        if n > 0xFFFFFFFF:
            raise DecodeError("varint out of int32 range")
        return (n >> 1) ^ -(n & 1)

    def varlong(self) -> int:
        """Signed zig-zag varlong, 64 bits."""
        n = self.uvarint(10)
        if n > 0xFFFFFFFFFFFFFFFF:
            raise DecodeError("varlong out of int64 range")
        return (n >> 1) ^ -(n & 1)

    def uuid(self) -> str:
        return str(_uuid.UUID(bytes=self.take(16)))

    # lengths: classic forms are int16/int32 with -1 for null; compact forms are
    # uvarint N+1 with 0 for null (KIP-482)
    def length(self, compact: bool, wide: bool) -> int:
        if compact:
            n = self.uvarint() - 1
        else:
            n = self.int32() if wide else self.int16()
        if n < -1:
            raise DecodeError(f"negative length {n} at offset {self.pos}")
        return n

    def string(self, compact: bool, nullable: bool) -> str | None:
        n = self.length(compact, wide=False)
        if n == -1:
            if not nullable:
                raise DecodeError(f"null in a non-nullable string at offset {self.pos}")
            return None
        raw = self.take(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DecodeError(f"string is not UTF-8: {e}") from None

    def bytes_(self, compact: bool, nullable: bool) -> bytes | None:
        n = self.length(compact, wide=True)
        if n == -1:
            if not nullable:
                raise DecodeError(f"null in non-nullable bytes at offset {self.pos}")
            return None
        return self.take(n)

    def array_length(self, compact: bool, nullable: bool) -> int:
        n = self.length(compact, wide=True)
        if n == -1 and not nullable:
            raise DecodeError(f"null in a non-nullable array at offset {self.pos}")
        # every element takes at least one byte: a bound that stops huge counts early
        if n > self.end - self.pos:
            raise DecodeError(f"array of {n} elements in {self.end - self.pos} bytes")
        return n


class Writer:
    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self.buf)

    def raw(self, data: bytes) -> None:
        self.buf += data

    def _fixed(self, st: struct.Struct, kind: str, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise EncodeError(f"{kind} needs an int, got {value!r}")
        lo, hi = _RANGES[kind]
        if not lo <= value <= hi:
            raise EncodeError(f"{value} does not fit {kind}")
        self.buf += st.pack(value)

    def int8(self, v: int) -> None:
        self._fixed(_I8, "int8", v)

    def int16(self, v: int) -> None:
        self._fixed(_I16, "int16", v)

    def uint16(self, v: int) -> None:
        self._fixed(_U16, "uint16", v)

    def int32(self, v: int) -> None:
        self._fixed(_I32, "int32", v)

    def uint32(self, v: int) -> None:
        self._fixed(_U32, "uint32", v)

    def int64(self, v: int) -> None:
        self._fixed(_I64, "int64", v)

    def float64(self, v: float) -> None:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise EncodeError(f"float64 needs a number, got {v!r}")
        self.buf += _F64.pack(v)

    def boolean(self, v: bool) -> None:
        if not isinstance(v, bool):
            raise EncodeError(f"bool needs True/False, got {v!r}")
        self.buf.append(1 if v else 0)

    def uvarint(self, n: int) -> None:
        if n < 0:
            raise EncodeError(f"unsigned varint of negative {n}")
        while n >= 0x80:
            self.buf.append((n & 0x7F) | 0x80)
            n >>= 7
        self.buf.append(n)

    def varint(self, v: int) -> None:
        if isinstance(v, bool) or not isinstance(v, int) or not -(1 << 31) <= v < (1 << 31):
            raise EncodeError(f"{v!r} does not fit a varint")
        self.uvarint(((v << 1) ^ (v >> 31)) & 0xFFFFFFFF)

    def varlong(self, v: int) -> None:
        if isinstance(v, bool) or not isinstance(v, int) or not -(1 << 63) <= v < (1 << 63):
            raise EncodeError(f"{v!r} does not fit a varlong")
        self.uvarint(((v << 1) ^ (v >> 63)) & 0xFFFFFFFFFFFFFFFF)

    def uuid(self, v: str) -> None:
        try:
            self.buf += _uuid.UUID(v).bytes
        except (ValueError, TypeError, AttributeError) as e:
            raise EncodeError(f"not a UUID: {v!r}") from e

    def length(self, n: int, compact: bool, wide: bool) -> None:
        if compact:
            self.uvarint(n + 1)
        elif wide:
            self.int32(n)
        else:
            self.int16(n)

    def string(self, v: str | None, compact: bool, nullable: bool) -> None:
        if v is None:
            if not nullable:
                raise EncodeError("null in a non-nullable string")
            self.length(-1, compact, wide=False)
            return
        if not isinstance(v, str):
            raise EncodeError(f"string needs str, got {v!r}")
        raw = v.encode("utf-8", "surrogatepass")
        if not compact and len(raw) > 0x7FFF:
            raise EncodeError("string longer than 32767 bytes")
        self.length(len(raw), compact, wide=False)
        self.buf += raw

    def bytes_(self, v: bytes | None, compact: bool, nullable: bool) -> None:
        if v is None:
            if not nullable:
                raise EncodeError("null in non-nullable bytes")
            self.length(-1, compact, wide=True)
            return
        self.length(len(v), compact, wide=True)
        self.buf += v

    def array_length(self, n: int | None, compact: bool, nullable: bool) -> None:
        if n is None:
            if not nullable:
                raise EncodeError("null in a non-nullable array")
            self.length(-1, compact, wide=True)
        else:
            self.length(n, compact, wide=True)

"""Readable form of column and parameter values (DataRow, Bind, FunctionCall).

Spec: "Formats and Format Codes": a value is text (format 0) or binary (format 1);
NULL is a length of -1. Readable forms, all invertible without context:

* NULL -> ``None``
* text -> ``str`` (or ``{"hex": ...}`` when not printable UTF-8, via ``blob``)
* binary of a type we know -> ``{"binary": "int4", "value": 7}``; any other binary value
  -> ``{"binary": <type oid or 0>, "hex": "..."}``

``wire_value`` turns any of these back into the exact bytes; ``canonical_value`` gives
the form match keys compare (decoration such as the decoded value or the oid does not
take part, only the format and the bytes).
"""

from __future__ import annotations

import datetime
import math
import struct
import uuid
from collections.abc import Callable
from typing import Any

from ..base import EncodeError, Readable, blob, unblob
from ..volatile import MASK

_Codec = tuple[Callable[[bytes], Any], Callable[[Any], bytes]]


def _struct(fmt: str) -> _Codec:
    s = struct.Struct(fmt)
    return (lambda b: s.unpack(b)[0]), (lambda v: s.pack(v))


def _float(fmt: str) -> _Codec:
    s = struct.Struct(fmt)

    def dec(b: bytes) -> float:
        v = s.unpack(b)[0]
        if not math.isfinite(v):
            raise ValueError("non-finite floats stay hex (NaN != NaN after YAML)")
        return v

    return dec, (lambda v: s.pack(v))


def _bool_dec(b: bytes) -> bool:
    if b not in (b"\x00", b"\x01"):
        raise ValueError("not a bool")
    return b == b"\x01"


def _text_dec(b: bytes) -> str:
    text = b.decode("utf-8")
    if not isinstance(blob(b), str):
        raise ValueError("not printable")
    return text


_TEXT: _Codec = (_text_dec, lambda v: v.encode("utf-8"))

# Date/time binary formats count from 2000-01-01 (integer_datetimes): int64 microseconds
# for timestamp/timestamptz, int32 days for date. Values a datetime cannot hold (infinity,
# years outside 1..9999) fail to decode and stay hex.
_EPOCH = datetime.datetime(2000, 1, 1)
_EPOCH_UTC = _EPOCH.replace(tzinfo=datetime.UTC)
_MICRO = datetime.timedelta(microseconds=1)
_I64 = struct.Struct("!q")
_I32 = struct.Struct("!i")


def _timestamp(epoch: datetime.datetime) -> _Codec:
    def dec(b: bytes) -> str:
        return (epoch + _I64.unpack(b)[0] * _MICRO).isoformat()

    def enc(v: str) -> bytes:
        return _I64.pack((datetime.datetime.fromisoformat(v) - epoch) // _MICRO)

    return dec, enc


def _date_dec(b: bytes) -> str:
    return (_EPOCH.date() + datetime.timedelta(days=_I32.unpack(b)[0])).isoformat()


def _date_enc(v: str) -> bytes:
    return _I32.pack((datetime.date.fromisoformat(v) - _EPOCH.date()).days)


def _jsonb_dec(b: bytes) -> str:
    if b[:1] != b"\x01":  # jsonb's binary format: a version byte, then the JSON text
        raise ValueError("unknown jsonb version")
    return _text_dec(b[1:])

# Binary send/recv formats of common built-in types (oid -> name, decode, encode).
BINARY_TYPES: dict[int, tuple[str, _Codec]] = {
    16: ("bool", (_bool_dec, lambda v: b"\x01" if v else b"\x00")),
    20: ("int8", _struct("!q")),
    21: ("int2", _struct("!h")),
    23: ("int4", _struct("!i")),
    26: ("oid", _struct("!I")),
    700: ("float4", _float("!f")),
    701: ("float8", _float("!d")),
    25: ("text", _TEXT),
    1043: ("varchar", _TEXT),
    19: ("name", _TEXT),
    1042: ("bpchar", _TEXT),
    114: ("json", _TEXT),
    2950: ("uuid", (lambda b: str(uuid.UUID(bytes=b)), lambda v: uuid.UUID(v).bytes)),
    1114: ("timestamp", _timestamp(_EPOCH)),
    1184: ("timestamptz", _timestamp(_EPOCH_UTC)),
    1082: ("date", (_date_dec, _date_enc)),
    3802: ("jsonb", (_jsonb_dec, lambda v: b"\x01" + v.encode("utf-8"))),
}
_BY_NAME = {name: codec for name, codec in BINARY_TYPES.values()}


def readable_value(raw: bytes | None, fmt: int = 0, oid: int = 0) -> Readable:
    if raw is None:
        return None
    if fmt == 0:
        return blob(raw)
    known = BINARY_TYPES.get(oid)
    if known is not None:
        name, (dec, enc) = known
        try:
            value = dec(raw)
            if enc(value) == raw:
                return {"binary": name, "value": value}
        except (ValueError, struct.error, UnicodeDecodeError, OverflowError):
            pass
    return {"binary": oid, "hex": raw.hex()}


def wire_value(value: Readable) -> bytes | None:
    """The bytes a readable value stands for (format is implied by the form)."""
    if value is None:
        return None
    if isinstance(value, dict) and "binary" in value:
        if "hex" in value:
            return bytes.fromhex(value["hex"])
        codec = _BY_NAME.get(value["binary"])
        if codec is None:
            raise EncodeError(f"unknown binary type {value['binary']!r}")
        try:
            return codec[1](value["value"])
        except (struct.error, ValueError, TypeError, AttributeError, OverflowError) as exc:
            raise EncodeError(f"bad {value['binary']} value {value.get('value')!r}") from exc
    return unblob(value)


def canonical_value(value: Readable) -> Readable:
    """What match keys compare: text as readable text, binary as {"binary": hex}; a
    binary value masked as volatile as it is."""
    if isinstance(value, dict) and "binary" in value and MASK in str(value.get("value")):
        return value
    if isinstance(value, dict) and "binary" in value:
        raw = wire_value(value)
        return {"binary": raw.hex() if raw is not None else None}
    if isinstance(value, dict) and "base64" in value:
        return blob(unblob(value))
    return value

"""RESP messages <-> readable, YAML-safe data (the recording format), and RESP3 -> RESP2.

The scheme (also in the package docstring):

====================  =============================================
RESP                  readable
====================  =============================================
bulk string           ``"text"`` (clean UTF-8) or ``{"hex": "..."}``
null bulk ``$-1``     ``null``
simple string         ``{"simple": "OK"}``
simple error          ``{"error": "ERR ..."}``
integer               ``{"int": 1}``
array                 ``[...]``; null array ``*-1``: ``{"array": null}``
RESP3 null ``_``      ``{"null": true}``
boolean               ``{"bool": true}``
double                ``{"double": "1.5"}`` (text kept: ``inf``, ``nan``)
big number            ``{"bignum": "1234..."}``
bulk error            ``{"bulk_error": "SYNTAX ..."}``
verbatim string       ``{"verbatim": {"format": "txt", "text": "..."}}``
map                   ``{"map": [[key, value], ...]}`` (order kept)
set                   ``{"set": [...]}``
push                  ``{"push": [...]}``
attribute             ``{"attribute": [[key, value], ...], "value": ...}``
====================  =============================================

A request is a list of its arguments (``["SET", "k", "v"]``, non-text arguments as
``{"hex": ...}``); an inline request redis-server refuses is ``{"inline": "<line>"}``.
Any text inside may itself be ``{"hex": ...}``. Converting to readable and back gives an
equal message, so a recording replays byte for byte.
"""

from __future__ import annotations

from typing import Any

from ..base import EncodeError, Readable, blob, unblob
from .resp import (
    BIGNUM_RE,
    DOUBLE_RE,
    Array,
    Attribute,
    BigNumber,
    Boolean,
    BulkError,
    BulkString,
    Command,
    Double,
    Integer,
    InvalidInline,
    Map,
    Null,
    Push,
    RespValue,
    Set,
    SimpleError,
    SimpleString,
    VerbatimString,
)


def _pairs_out(pairs: tuple) -> list:
    return [[to_readable(k), to_readable(v)] for k, v in pairs]


def to_readable(value: RespValue) -> Readable:  # noqa: C901 - one case per RESP type
    """Readable form of one server message."""
    if isinstance(value, BulkString):
        return None if value.value is None else blob(value.value)
    if isinstance(value, SimpleString):
        return {"simple": blob(value.value)}
    if isinstance(value, Integer):
        return {"int": value.value}
    if isinstance(value, Array):
        return {"array": None} if value.items is None else [to_readable(i) for i in value.items]
    if isinstance(value, SimpleError):
        return {"error": blob(value.value)}
    if isinstance(value, Map):
        return {"map": _pairs_out(value.items)}
    if isinstance(value, Set):
        return {"set": [to_readable(i) for i in value.items]}
    if isinstance(value, Push):
        return {"push": [to_readable(i) for i in value.items]}
    if isinstance(value, Null):
        return {"null": True}
    if isinstance(value, Boolean):
        return {"bool": value.value}
    if isinstance(value, Double):
        return {"double": value.value}
    if isinstance(value, BigNumber):
        return {"bignum": value.value}
    if isinstance(value, BulkError):
        return {"bulk_error": blob(value.value)}
    if isinstance(value, VerbatimString):
        return {"verbatim": {"format": blob(value.format), "text": blob(value.text)}}
    if isinstance(value, Attribute):
        return {"attribute": _pairs_out(value.attributes), "value": to_readable(value.value)}
    raise EncodeError(f"not a RESP value: {value!r}")


def _pairs_in(pairs: Any) -> tuple:
    if not isinstance(pairs, list):
        raise EncodeError(f"expected a list of [key, value] pairs, got {pairs!r}")
    out = []
    for pair in pairs:
        if not isinstance(pair, list) or len(pair) != 2:
            raise EncodeError(f"expected a [key, value] pair, got {pair!r}")
        out.append((_from_readable(pair[0]), _from_readable(pair[1])))
    return tuple(out)


def _items_in(items: Any) -> tuple:
    if not isinstance(items, list):
        raise EncodeError(f"expected a list, got {items!r}")
    return tuple(_from_readable(i) for i in items)


def from_readable(data: Readable) -> RespValue:
    """Inverse of ``to_readable``; raises ``EncodeError`` on anything else."""
    try:
        return _from_readable(data)
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:  # bad hex, too deep
        raise EncodeError(f"not a readable RESP value: {exc}") from exc


def _from_readable(data: Readable) -> RespValue:
    if data is None:
        return BulkString(None)
    if isinstance(data, str):
        return BulkString(data.encode("utf-8"))
    if isinstance(data, list):
        return Array(tuple(_from_readable(i) for i in data))
    if not isinstance(data, dict):
        raise EncodeError(f"not a readable RESP value: {data!r}")
    if "hex" in data or "base64" in data:
        return BulkString(unblob(data))
    if "attribute" in data and "value" in data and len(data) == 2:
        return Attribute(_pairs_in(data["attribute"]), _from_readable(data["value"]))
    if len(data) != 1:
        raise EncodeError(f"not a readable RESP value: {data!r}")
    ((kind, payload),) = data.items()
    if kind == "simple":
        return SimpleString(unblob(payload))
    if kind == "error":
        return SimpleError(unblob(payload))
    if kind == "int" and type(payload) is int:
        return Integer(payload)
    if kind == "array" and payload is None:
        return Array(None)
    if kind == "map":
        return Map(_pairs_in(payload))
    if kind == "set":
        return Set(_items_in(payload))
    if kind == "push":
        return Push(_items_in(payload))
    if kind == "null" and payload is True:
        return Null()
    if kind == "bool" and isinstance(payload, bool):
        return Boolean(payload)
    if kind == "double" and isinstance(payload, str) and DOUBLE_RE.match(payload.encode("utf-8")):
        return Double(payload)
    if kind == "bignum" and isinstance(payload, str) and BIGNUM_RE.match(payload.encode("utf-8")):
        return BigNumber(payload)
    if kind == "bulk_error":
        return BulkError(unblob(payload))
    if kind == "verbatim" and isinstance(payload, dict) and set(payload) == {"format", "text"}:
        return VerbatimString(unblob(payload["format"]), unblob(payload["text"]))
    raise EncodeError(f"not a readable RESP value: {data!r}")


def request_to_readable(message: Command | InvalidInline) -> Readable:
    """Readable form of a request (before redaction: see ``commands.redact_request``)."""
    if isinstance(message, InvalidInline):
        return {"inline": blob(message.line)}
    return [blob(a) for a in message.args]


def request_from_readable(data: Readable) -> Command | InvalidInline:
    if isinstance(data, dict) and set(data) == {"inline"}:
        try:
            return InvalidInline(unblob(data["inline"]), "unbalanced quotes in request")
        except (ValueError, TypeError) as exc:
            raise EncodeError(f"not a readable Redis request: {exc}") from exc
    try:
        if isinstance(data, list) and data:
            return Command(tuple(unblob(a) for a in data))
    except (ValueError, TypeError) as exc:
        raise EncodeError(f"not a readable Redis request: {exc}") from exc
    raise EncodeError(f"not a readable Redis request: {data!r}")


def downgrade(value: RespValue) -> RespValue:
    """The RESP2 form of a RESP3 value, as redis-server itself would send it to a RESP2 client.

    Maps and sets become flat arrays, pushes arrays, null ``$-1``, booleans ``:1``/``:0``,
    doubles/big numbers/verbatim strings bulk strings, bulk errors simple errors;
    attributes are dropped (RESP2 has none).
    """
    if isinstance(value, Array):
        return value if value.items is None else Array(tuple(downgrade(i) for i in value.items))
    if isinstance(value, Map):
        return Array(tuple(downgrade(x) for pair in value.items for x in pair))
    if isinstance(value, Set | Push):
        return Array(tuple(downgrade(i) for i in value.items))
    if isinstance(value, Attribute):
        return downgrade(value.value)
    if isinstance(value, Null):
        return BulkString(None)
    if isinstance(value, Boolean):
        return Integer(1 if value.value else 0)
    if isinstance(value, Double | BigNumber):
        return BulkString(value.value.encode("ascii", "replace"))
    if isinstance(value, VerbatimString):
        return BulkString(value.text)
    if isinstance(value, BulkError):
        return SimpleError(value.value.replace(b"\r", b" ").replace(b"\n", b" "))
    return value

"""RESP messages as frozen dataclasses, and their encoding to bytes.

Names follow the protocol spec (https://redis.io/docs/latest/develop/reference/protocol-spec/):
RESP2 has simple strings, simple errors, integers, bulk strings and arrays; RESP3 adds
nulls, booleans, doubles, big numbers, bulk errors, verbatim strings, maps, sets,
attributes and pushes. Server messages are ``RespValue``s; client messages are
``Command`` (a multi-bulk or inline request) and ``InvalidInline`` (an inline request
redis-server rejects, e.g. unbalanced quotes: the server answers with an error and
closes the connection).

Invariants:
* every message is immutable and hashable (tuples, bytes), so ``==`` compares content;
* ``encode_value``/``encode_command`` produce canonical RESP; decoding their output gives
  back an equal message (``decode(encode(m)) == m``). Non-canonical spellings that a
  lenient decoder accepts (``:+1``, ``$03``) re-encode canonically; redis never sends
  them;
* RESP2's two nulls stay distinct from RESP3's: ``BulkString(None)`` is ``$-1``,
  ``Array(None)`` is ``*-1`` and ``Null()`` is ``_``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from ..base import Direction, EncodeError

CRLF = b"\r\n"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# RESP3 double: what redis prints (%.17g, inf, -inf, nan) and what the spec allows
DOUBLE_RE = re.compile(
    rb"[+-]?(?:inf|nan|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\Z", re.IGNORECASE
)
BIGNUM_RE = re.compile(rb"[+-]?[0-9]+\Z")


class _Server:
    __slots__ = ()
    direction: ClassVar[Direction] = Direction.SERVER


@dataclass(frozen=True, slots=True)
class SimpleString(_Server):
    """``+OK\\r\\n``: a line of text without CR or LF."""

    value: bytes


@dataclass(frozen=True, slots=True)
class SimpleError(_Server):
    """``-ERR message\\r\\n``: an error reply (a message, not an exception)."""

    value: bytes


@dataclass(frozen=True, slots=True)
class Integer(_Server):
    """``:1000\\r\\n``: a signed 64-bit integer."""

    value: int


@dataclass(frozen=True, slots=True)
class BulkString(_Server):
    """``$5\\r\\nhello\\r\\n``; ``None`` is RESP2's null bulk string ``$-1\\r\\n``."""

    value: bytes | None


@dataclass(frozen=True, slots=True)
class Array(_Server):
    """``*2\\r\\n...``; ``None`` is RESP2's null array ``*-1\\r\\n``."""

    items: tuple[RespValue, ...] | None


@dataclass(frozen=True, slots=True)
class Null(_Server):
    """RESP3 ``_\\r\\n``."""


@dataclass(frozen=True, slots=True)
class Boolean(_Server):
    """RESP3 ``#t\\r\\n`` / ``#f\\r\\n``."""

    value: bool


@dataclass(frozen=True, slots=True)
class Double(_Server):
    """RESP3 ``,1.5\\r\\n``; kept as its text so ``inf``/``nan``/``1e300`` stay exact."""

    value: str


@dataclass(frozen=True, slots=True)
class BigNumber(_Server):
    """RESP3 ``(3492890328409238509324850943850943825024385\\r\\n``, as its decimal text."""

    value: str


@dataclass(frozen=True, slots=True)
class BulkError(_Server):
    """RESP3 ``!21\\r\\nSYNTAX invalid syntax\\r\\n``: a binary-safe error."""

    value: bytes


@dataclass(frozen=True, slots=True)
class VerbatimString(_Server):
    """RESP3 ``=15\\r\\ntxt:Some string\\r\\n``: three-byte ``format`` and the text."""

    format: bytes
    text: bytes


@dataclass(frozen=True, slots=True)
class Map(_Server):
    """RESP3 ``%2\\r\\n`` followed by key, value, key, value (order kept, keys any type)."""

    items: tuple[tuple[RespValue, RespValue], ...]


@dataclass(frozen=True, slots=True)
class Set(_Server):
    """RESP3 ``~2\\r\\n``: an unordered collection, kept in wire order."""

    items: tuple[RespValue, ...]


@dataclass(frozen=True, slots=True)
class Push(_Server):
    """RESP3 ``>3\\r\\n``: out-of-band data (pub/sub messages, invalidations)."""

    items: tuple[RespValue, ...]


@dataclass(frozen=True, slots=True)
class Attribute(_Server):
    """RESP3 ``|1\\r\\n`` key/value pairs that annotate the ``value`` that follows them."""

    attributes: tuple[tuple[RespValue, RespValue], ...]
    value: RespValue


RespValue = (
    SimpleString | SimpleError | Integer | BulkString | Array | Null | Boolean | Double | BigNumber
    | BulkError | VerbatimString | Map | Set | Push | Attribute
)


@dataclass(frozen=True, slots=True)
class Command:
    """A client request: its arguments, the command name first.

    ``inline`` says it came as an inline command (``PING\\r\\n``, the telnet form) rather
    than a multi-bulk array; the arguments are already unquoted.
    """

    direction: ClassVar[Direction] = Direction.CLIENT
    args: tuple[bytes, ...]
    inline: bool = False

    @property
    def name(self) -> bytes:
        return self.args[0].upper() if self.args else b""


@dataclass(frozen=True, slots=True)
class InvalidInline:
    """An inline request redis-server refuses (``reason``); it then closes the connection."""

    direction: ClassVar[Direction] = Direction.CLIENT
    line: bytes
    reason: str


# --- encoding ---------------------------------------------------------------------------


def _line_ok(value: bytes, what: str) -> bytes:
    if b"\r" in value or b"\n" in value:
        raise EncodeError(f"{what} cannot contain CR or LF: {value!r}")
    return value


def _enc(v: RespValue, out: list[bytes]) -> None:  # noqa: C901 - one dispatch per type
    if isinstance(v, BulkString):
        if v.value is None:
            out.append(b"$-1\r\n")
        else:
            out.append(b"$%d\r\n%b\r\n" % (len(v.value), v.value))
    elif isinstance(v, SimpleString):
        out.append(b"+%b\r\n" % _line_ok(v.value, "a simple string"))
    elif isinstance(v, Integer):
        n = v.value
        if type(n) is not int or not INT64_MIN <= n <= INT64_MAX:
            raise EncodeError(f"RESP integers are signed 64-bit: {n!r}")
        out.append(b":%d\r\n" % n)
    elif isinstance(v, Array):
        if v.items is None:
            out.append(b"*-1\r\n")
        else:
            out.append(b"*%d\r\n" % len(v.items))
            for item in v.items:
                _enc(item, out)
    elif isinstance(v, SimpleError):
        out.append(b"-%b\r\n" % _line_ok(v.value, "a simple error"))
    elif isinstance(v, Map | Attribute):
        pairs = v.items if isinstance(v, Map) else v.attributes
        out.append(b"%b%d\r\n" % (b"%" if isinstance(v, Map) else b"|", len(pairs)))
        for key, value in pairs:
            _enc(key, out)
            _enc(value, out)
        if isinstance(v, Attribute):
            _enc(v.value, out)
    elif isinstance(v, Set | Push):
        out.append(b"%b%d\r\n" % (b"~" if isinstance(v, Set) else b">", len(v.items)))
        for item in v.items:
            _enc(item, out)
    elif isinstance(v, Null):
        out.append(b"_\r\n")
    elif isinstance(v, Boolean):
        out.append(b"#t\r\n" if v.value else b"#f\r\n")
    elif isinstance(v, Double | BigNumber):
        text = v.value.encode("ascii", "replace")
        if not (DOUBLE_RE if isinstance(v, Double) else BIGNUM_RE).match(text):
            raise EncodeError(f"not a RESP3 {type(v).__name__}: {v.value!r}")
        out.append(b"%b%b\r\n" % (b"," if isinstance(v, Double) else b"(", text))
    elif isinstance(v, BulkError):
        out.append(b"!%d\r\n%b\r\n" % (len(v.value), v.value))
    elif isinstance(v, VerbatimString):
        if len(v.format) != 3 or b":" in v.format:
            raise EncodeError(f"a verbatim string format is three bytes: {v.format!r}")
        out.append(b"=%d\r\n%b:%b\r\n" % (len(v.text) + 4, v.format, v.text))
    else:
        raise EncodeError(f"not a RESP value: {v!r}")


def encode_value(value: RespValue) -> bytes:
    """Wire bytes of one server message."""
    out: list[bytes] = []
    try:
        _enc(value, out)
    except (AttributeError, TypeError) as exc:
        raise EncodeError(f"malformed RESP value {value!r}: {exc}") from exc
    return b"".join(out)


def _quote_inline(arg: bytes) -> bytes:
    """An argument as ``sdssplitargs`` reads it back (redis ``sds.c``): quoted if needed."""
    if arg and not any(c <= 0x20 or c >= 0x7F or c in b"\"'\\" for c in arg):
        return arg
    out = bytearray(b'"')
    for c in arg:
        if c == 0x22 or c == 0x5C:  # " and \ are escaped
            out += b"\\" + bytes((c,))
        elif 0x20 <= c < 0x7F:
            out.append(c)
        else:
            out += b"\\x%02x" % c
    out += b'"'
    return bytes(out)


def encode_command(message: Command | InvalidInline) -> bytes:
    """Wire bytes of one client request (multi-bulk, or inline when it came inline)."""
    if isinstance(message, InvalidInline):
        if b"\n" in message.line:
            raise EncodeError("an inline request is one line")
        return message.line + CRLF
    args = message.args
    if not args or not all(isinstance(a, bytes) for a in args):
        raise EncodeError(f"a command needs at least one bytes argument: {args!r}")
    if message.inline:
        first = _quote_inline(args[0])
        if first.startswith(b"*"):  # a leading '*' would make it a multi-bulk request
            first = b'"' + first + b'"'
        return b" ".join([first, *(_quote_inline(a) for a in args[1:])]) + CRLF
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        parts.append(b"$%d\r\n%b\r\n" % (len(a), a))
    return b"".join(parts)

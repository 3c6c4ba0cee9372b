"""Incremental RESP decoders: ``ReplyParser`` (server bytes) and ``RequestParser`` (client).

Both are explicit state machines over one growing buffer; a message may arrive in any
number of pieces and is decoded in time linear in its size (no re-parsing from the
start: the reply parser keeps a stack of the aggregates it is inside, and remembers how
far it already looked for the next CRLF).

States (``ParserState``): ``IDLE`` between messages, ``PARTIAL`` inside one, ``CLOSED``
after the peer closed with nothing pending, ``ERROR`` after a ``DecodeError`` (every
later call raises again). Closing in the middle of a message is a ``DecodeError``.

Limits (``Limits``) bound every buffer: a bulk string's declared length, a line's length
(type byte to CRLF), an inline request, the declared element count of an aggregate and
the nesting depth. Defaults follow redis-server (``proto-max-bulk-len`` 512 MiB,
``PROTO_INLINE_MAX_SIZE`` 64 KiB).

Request syntax is what redis-server accepts (``networking.c``): a request starting with
``*`` is a multi-bulk array of ``$`` bulk strings (``*0`` and negative counts are
ignored); anything else is an inline command, one line split by ``sdssplitargs`` rules
(quotes, ``\\xHH`` escapes); empty inline lines are ignored.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ..base import NEED_DATA, DecodeError
from .resp import (
    BIGNUM_RE,
    DOUBLE_RE,
    INT64_MAX,
    INT64_MIN,
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


class ParserState(enum.Enum):
    IDLE = "idle"
    PARTIAL = "partial"
    CLOSED = "closed"
    ERROR = "error"


@dataclass(frozen=True)
class Limits:
    """Bounds on what one connection may make the decoder buffer or build."""

    max_bulk_length: int = 512 * 1024 * 1024  # redis proto-max-bulk-len
    max_line_length: int = 1024 * 1024  # simple strings, errors, numbers, headers
    max_inline_length: int = 64 * 1024  # redis PROTO_INLINE_MAX_SIZE
    max_elements: int = 2**31 - 1  # declared aggregate size (redis: INT_MAX)
    max_depth: int = 64  # aggregates inside aggregates


# type bytes (RESP spec, "RESP protocol description")
_BULK, _ARRAY, _SIMPLE, _ERROR, _INT = 36, 42, 43, 45, 58  # $ * + - :
_MAP, _SET, _PUSH, _ATTR = 37, 126, 62, 124  # % ~ > |
_NULL, _BOOL, _DOUBLE, _BIGNUM, _BULKERR, _VERBATIM = 95, 35, 44, 40, 33, 61  # _ # , ( ! =
_ATTRVALUE = -1  # pseudo frame: attributes collected, waiting for the value they annotate
_COMPACT_AT = 1 << 20
_CR, _LF = 13, 10


def _length(line: bytes | bytearray, what: str, allow_null: bool) -> int:
    if line.isdigit() and len(line) <= 18:
        return int(line)
    if allow_null and line == b"-1":
        return -1
    raise DecodeError(f"invalid {what} length {bytes(line[:24])!r}")


def _integer(line: bytes | bytearray) -> int:
    digits = line[1:] if line[:1] in (b"-", b"+") else line
    if not digits.isdigit() or len(digits) > 19:
        raise DecodeError(f"invalid RESP integer {bytes(line[:24])!r}")
    value = int(line)
    if not INT64_MIN <= value <= INT64_MAX:
        raise DecodeError(f"RESP integer out of the signed 64-bit range: {bytes(line)!r}")
    return value


def _no_crlf(line: bytes, what: str) -> bytes:
    if b"\r" in line or b"\n" in line:
        raise DecodeError(f"a {what} contains a bare CR or LF")
    return line


class _Buffered:
    """What both parsers share: the buffer, its read position and the lifecycle."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._buf = bytearray()
        self._pos = 0
        self._scan = 0  # where the search for the next line end resumes
        self._closed = False
        self._error: DecodeError | None = None

    def feed(self, data: bytes) -> None:
        if self._error is not None:
            raise DecodeError(f"decoder is in its error state: {self._error}")
        if not data:
            self._closed = True
        elif self._closed:
            raise DecodeError("bytes after the peer closed")
        else:
            self._buf += data

    def _fail(self, exc: DecodeError) -> DecodeError:
        self._error = exc
        return exc

    def _compact(self) -> None:
        pos = self._pos
        if pos == len(self._buf):
            self._buf.clear()
        elif pos > _COMPACT_AT or pos > len(self._buf) // 2:
            del self._buf[:pos]
        else:
            return
        self._scan = max(0, self._scan - pos)
        self._pos = 0

    def _in_message(self) -> bool:
        return self._pos < len(self._buf)

    @property
    def state(self) -> ParserState:
        if self._error is not None:
            return ParserState.ERROR
        if self._in_message():
            return ParserState.PARTIAL
        return ParserState.CLOSED if self._closed else ParserState.IDLE

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a decoded message."""
        return len(self._buf) - self._pos

    def _parse(self) -> Any:
        raise NotImplementedError

    def _next(self) -> Any:
        if self._error is not None:
            raise DecodeError(f"decoder is in its error state: {self._error}")
        try:
            message = self._parse()
        except DecodeError as exc:
            raise self._fail(exc) from None
        except (ValueError, IndexError, UnicodeDecodeError) as exc:  # defensive: never escape
            raise self._fail(DecodeError(f"malformed RESP: {exc}")) from exc
        if message is NEED_DATA and self._closed and self._in_message():
            raise self._fail(DecodeError("the peer closed the connection in the middle of a message"))
        return message


class ReplyParser(_Buffered):
    """Server messages: every RESP2 and RESP3 type (not the streamed RESP3 variants)."""

    def __init__(self, limits: Limits) -> None:
        super().__init__(limits)
        self._stack: list[list] = []  # [type byte, expected item count, items, attributes]
        self._bulk: tuple[int, int] | None = None  # (type byte, length) of a pending payload

    def _in_message(self) -> bool:
        return bool(self._stack) or self._bulk is not None or self._pos < len(self._buf)

    @property
    def partial_type(self) -> str | None:
        """The outermost type of the message being received (for diagnostics), or None."""
        if self._stack:
            return _NAMES.get(self._stack[0][0])
        if self._bulk is not None:
            return _NAMES.get(self._bulk[0])
        return None

    # the next complete server message, or NEED_DATA (an alias: one call less per message)
    next_value = _Buffered._next

    def _parse(self) -> Any:  # noqa: C901 - one flat loop is fastest
        buf = self._buf
        pos = self._pos
        stack = self._stack
        limits = self.limits
        max_line = limits.max_line_length
        max_bulk = limits.max_bulk_length
        size = len(buf)
        scan = self._scan  # only the first search may resume past pos
        pending = self._bulk
        value: RespValue
        while True:
            if pending is not None:  # waiting for a payload announced earlier
                kind, n = pending
                end = pos + n
                if size < end + 2:
                    self._bulk = pending
                    self._pos = pos
                    if pos > _COMPACT_AT:
                        self._compact()
                    return NEED_DATA
                pending = self._bulk = None
                value = _payload(kind, bytes(buf[pos:end]), buf[end:end + 2])
                pos = end + 2
            else:
                eol = buf.find(b"\r\n", scan if scan > pos else pos)
                if eol < 0 or eol - pos > max_line:
                    if size - pos > max_line:
                        raise DecodeError(f"a RESP line longer than {max_line} bytes")
                    self._scan = size - 1 if size > pos else pos
                    self._pos = pos
                    if pos > _COMPACT_AT or pos == size:
                        self._compact()
                    return NEED_DATA
                scan = 0
                t = buf[pos]
                if t == _BULK:  # the common case first: "$<n>", payload usually already here
                    header = buf[pos + 1:eol]
                    if header.isdigit() and len(header) <= 18:
                        n = int(header)
                    elif header == b"-1":
                        value = BulkString(None)
                        pos = eol + 2
                        n = -1
                    else:
                        raise DecodeError(f"invalid bulk length {bytes(header[:24])!r}")
                    if n >= 0:
                        if n > max_bulk:
                            raise DecodeError(f"bulk length {n} over the limit {max_bulk}")
                        pos = eol + 2
                        end = pos + n
                        if size < end + 2:
                            pending = (_BULK, n)
                            continue
                        if buf[end] != _CR or buf[end + 1] != _LF:
                            raise DecodeError("a bulk payload is not followed by CRLF")
                        value = _new(BulkString)  # = BulkString(...), without the frozen __init__
                        _set_bulk(value, bytes(buf[pos:end]))
                        pos = end + 2
                elif t == _ARRAY or t == _MAP or t == _SET or t == _PUSH or t == _ATTR:
                    header = buf[pos + 1:eol]
                    pos = eol + 2
                    if header.isdigit() and len(header) <= 18:
                        n = int(header)
                    elif header == b"-1" and t == _ARRAY:
                        n = -1
                    else:
                        raise DecodeError(f"invalid aggregate length {bytes(header[:24])!r}")
                    if n < 0:
                        value = Array(None)
                    elif n > limits.max_elements:
                        raise DecodeError(f"aggregate of {n} elements over the limit {limits.max_elements}")
                    elif len(stack) >= limits.max_depth:
                        raise DecodeError(f"aggregates nested deeper than {limits.max_depth}")
                    elif t == _ATTR:
                        stack.append([_ATTR, 2 * n, [], None] if n else [_ATTRVALUE, 1, [], ()])
                        continue
                    elif n == 0:
                        value = _EMPTY[t]
                    else:
                        stack.append([t, 2 * n if t == _MAP else n, [], None])
                        continue
                else:
                    line = bytes(buf[pos + 1:eol])
                    pos = eol + 2
                    if t == _INT:
                        value = Integer(_integer(line))
                    elif t == _SIMPLE:
                        value = _SIMPLE_CACHE.get(line) or SimpleString(_no_crlf(line, "simple string"))
                    elif t == _ERROR:
                        value = SimpleError(_no_crlf(line, "simple error"))
                    elif t == _BULKERR or t == _VERBATIM:
                        n = _length(line, "bulk", False)
                        if n > max_bulk:
                            raise DecodeError(f"bulk length {n} over the limit {max_bulk}")
                        pending = (t, n)
                        continue
                    else:
                        value = _scalar(t, line)
            # a value is complete: hand it to the aggregate it belongs to, if any
            while stack:
                frame = stack[-1]
                items = frame[2]
                items.append(value)
                if len(items) < frame[1]:
                    break
                stack.pop()
                kind = frame[0]
                if kind == _ARRAY:
                    value = _new(Array)  # = Array(tuple(items)), without the frozen __init__
                    _set_items(value, tuple(items))
                elif kind == _MAP:
                    pairs = iter(items)  # (k1, v1), (k2, v2)...
                    value = _new(Map)
                    _set_pairs(value, tuple(zip(pairs, pairs, strict=True)))
                elif kind == _SET:
                    value = Set(tuple(items))
                elif kind == _PUSH:
                    value = Push(tuple(items))
                elif kind == _ATTR:  # the attribute map is done; now the value it annotates
                    pairs = iter(items)
                    stack.append([_ATTRVALUE, 1, [], tuple(zip(pairs, pairs, strict=True))])
                    break
                else:
                    value = Attribute(frame[3], items[0])
            else:
                self._pos = pos
                self._scan = 0
                if pos > _COMPACT_AT or pos == size:
                    self._compact()
                return value


def _payload(kind: int, data: bytes, crlf: bytes | bytearray) -> RespValue:
    """The value whose payload arrived after its header (bulk, bulk error, verbatim)."""
    if crlf != b"\r\n":
        raise DecodeError("a bulk payload is not followed by CRLF")
    if kind == _BULK:
        return BulkString(data)
    if kind == _BULKERR:
        return BulkError(data)
    if len(data) < 4 or data[3] != 0x3A:  # verbatim: three-byte format, ':' then the text
        raise DecodeError("a verbatim string must start with 'fmt:'")
    return VerbatimString(data[:3], data[4:])


def _scalar(t: int, line: bytes) -> RespValue:
    """The rarer one-line RESP3 types."""
    if t == _NULL:
        if line:
            raise DecodeError("a RESP3 null is '_' alone")
        return _NULL_VALUE
    if t == _BOOL:
        if line == b"t":
            return _TRUE
        if line == b"f":
            return _FALSE
        raise DecodeError(f"a RESP3 boolean is #t or #f, not {line[:8]!r}")
    if t == _DOUBLE:
        if not DOUBLE_RE.match(line):
            raise DecodeError(f"invalid RESP3 double {line[:24]!r}")
        return Double(line.decode("ascii"))
    if t == _BIGNUM:
        if not BIGNUM_RE.match(line):
            raise DecodeError(f"invalid RESP3 big number {line[:24]!r}")
        return BigNumber(line.decode("ascii"))
    if t == 0x3F:  # '?'
        raise DecodeError("streamed RESP3 strings/aggregates are not supported "
                          "(redis-server never sends them)")
    raise DecodeError(f"unknown RESP type byte {bytes((t,))!r}")


_EMPTY: dict[int, RespValue] = {_ARRAY: Array(()), _MAP: Map(()), _SET: Set(()), _PUSH: Push(())}
_new = object.__new__
# the slots themselves: they fill a new instance faster than a frozen dataclass __init__
_set_bulk = BulkString.__dict__["value"].__set__
_set_items = Array.__dict__["items"].__set__
_set_pairs = Map.__dict__["items"].__set__
_SIMPLE_CACHE = {v: SimpleString(v) for v in (b"OK", b"QUEUED", b"PONG", b"RESET")}
_NULL_VALUE, _TRUE, _FALSE = Null(), Boolean(True), Boolean(False)
_NAMES = {
    _BULK: "BulkString", _ARRAY: "Array", _MAP: "Map", _SET: "Set", _PUSH: "Push",
    _ATTR: "Attribute", _ATTRVALUE: "Attribute", _BULKERR: "BulkError",
    _VERBATIM: "VerbatimString",
}

# --- requests ---------------------------------------------------------------------------

_SPACES = b" \t\n\v\f\r"  # C isspace()
_TOKEN_END = b" \n\r\t"
_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
_HEX = b"0123456789abcdefABCDEF"


def split_inline(line: bytes) -> list[bytes] | None:
    """Arguments of an inline request, as redis ``sdssplitargs`` reads them; None if unbalanced.

    Like the C original the line ends at the first NUL; inside double quotes ``\\xHH``,
    ``\\n``, ``\\r``, ``\\t``, ``\\b``, ``\\a`` and ``\\<c>`` are escapes; inside single quotes
    only ``\\'``; a closing quote must be followed by a space or the end.
    """
    line = line.split(b"\x00", 1)[0]
    n = len(line)
    i = 0
    args: list[bytes] = []
    while True:
        while i < n and line[i] in _SPACES:
            i += 1
        if i >= n:
            return args
        current = bytearray()
        in_double = in_single = False
        while True:
            c = line[i] if i < n else 0
            if in_double:
                if (c == 0x5C and i + 3 < n and line[i + 1] == 0x78
                        and line[i + 2] in _HEX and line[i + 3] in _HEX):
                    current.append(int(line[i + 2:i + 4], 16))
                    i += 3
                elif c == 0x5C and i + 1 < n:
                    i += 1
                    current.append(_ESCAPES.get(line[i], line[i]))
                elif c == 0x22:
                    if i + 1 < n and line[i + 1] not in _SPACES:
                        return None
                    i += 1
                    break
                elif c == 0:
                    return None
                else:
                    current.append(c)
            elif in_single:
                if c == 0x5C and i + 1 < n and line[i + 1] == 0x27:
                    i += 1
                    current.append(0x27)
                elif c == 0x27:
                    if i + 1 < n and line[i + 1] not in _SPACES:
                        return None
                    i += 1
                    break
                elif c == 0:
                    return None
                else:
                    current.append(c)
            elif c == 0 or c in _TOKEN_END:
                if c:
                    i += 1
                break
            elif c == 0x22:
                in_double = True
            elif c == 0x27:
                in_single = True
            else:
                current.append(c)
            i += 1
        args.append(bytes(current))


class RequestParser(_Buffered):
    """Client messages: multi-bulk and inline commands, as redis-server reads them."""

    def __init__(self, limits: Limits) -> None:
        super().__init__(limits)
        self._args: list[bytes] | None = None  # multi-bulk request in progress
        self._remaining = 0
        self._bulk_len = -1

    def _in_message(self) -> bool:
        return self._args is not None or self._pos < len(self._buf)

    # the next complete request, or NEED_DATA
    next_command = _Buffered._next

    def _line_end(self, buf: bytearray, pos: int, sep: bytes, limit: int, what: str) -> int:
        scan = self._scan
        end = buf.find(sep, scan if scan > pos else pos)
        if end < 0 or end - pos > limit:
            if len(buf) - pos > limit:
                raise DecodeError(f"Protocol error: too big {what}")
            self._scan = max(pos, len(buf) - len(sep) + 1)
            return -1
        self._scan = 0
        return end

    def _parse(self) -> Any:  # noqa: C901 - one flat loop is fastest
        buf = self._buf
        pos = self._pos
        limits = self.limits
        max_line = limits.max_inline_length
        size = len(buf)
        while True:
            args = self._args
            if args is None:
                if pos >= size:
                    break
                if buf[pos] != _ARRAY:  # an inline command, up to LF
                    nl = self._line_end(buf, pos, b"\n", max_line, "inline request")
                    if nl < 0:
                        break
                    line = bytes(buf[pos:nl])
                    pos = nl + 1
                    if line.endswith(b"\r"):
                        line = line[:-1]
                    split = split_inline(line)
                    if split is None or split:
                        self._pos = pos
                        self._compact()
                        if split is None:
                            return InvalidInline(line, "unbalanced quotes in request")
                        return Command(tuple(split), inline=True)
                    continue  # an empty line: ignored
                eol = self._line_end(buf, pos, b"\r\n", max_line, "mbulk count string")
                if eol < 0:
                    break
                text = bytes(buf[pos + 1:eol])
                pos = eol + 2
                count = int(text) if text.isdigit() and len(text) <= 10 else None
                if count is None and text[:1] == b"-" and text[1:].isdigit() and len(text) <= 11:
                    continue  # redis ignores a non-positive count
                if count is None or count > min(limits.max_elements, 2**31 - 1):
                    raise DecodeError(f"Protocol error: invalid multibulk length {text[:24]!r}")
                if count == 0:
                    continue
                args = self._args = []
                self._remaining = count
            # collect the arguments that are complete
            remaining = self._remaining
            n = self._bulk_len
            while remaining:
                if n < 0:
                    eol = self._line_end(buf, pos, b"\r\n", max_line, "bulk count string")
                    if eol < 0:
                        break
                    if buf[pos] != _BULK:
                        raise DecodeError(f"Protocol error: expected '$', got {chr(buf[pos])!r}")
                    header = buf[pos + 1:eol]
                    if not header.isdigit() or len(header) > 18:
                        raise DecodeError(f"Protocol error: invalid bulk length {bytes(header[:24])!r}")
                    n = int(header)
                    if n > limits.max_bulk_length:
                        raise DecodeError(f"Protocol error: invalid bulk length {n}")
                    pos = eol + 2
                end = pos + n
                if size < end + 2:
                    break
                if buf[end] != _CR or buf[end + 1] != _LF:
                    raise DecodeError("a bulk argument is not followed by CRLF")
                args.append(bytes(buf[pos:end]))
                pos = end + 2
                n = -1
                remaining -= 1
            self._bulk_len = n
            self._remaining = remaining
            if remaining:
                break
            self._args = None
            self._pos = pos
            if pos > _COMPACT_AT or pos == size:
                self._compact()
            return Command(tuple(args))
        self._pos = pos
        if pos > _COMPACT_AT or (self._args is None and pos == len(buf)):
            self._compact()
        return NEED_DATA

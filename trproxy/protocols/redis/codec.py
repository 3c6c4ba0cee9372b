"""The Redis codec: one connection, both directions, sans-I/O.

``feed(direction, data)`` buffers bytes (``b""``: that side closed); ``next_message()``
returns decoded messages - ``Command``/``InvalidInline`` from the client, ``RespValue``s
from the server - or ``NEED_DATA``; ``encode(message)`` gives wire bytes.

Messages come out per direction in wire order; across directions, in the order the
directions were fed (a caller that drains after every ``feed``, as the recorder does,
sees exact wire order). The first ``DecodeError`` puts the codec in its ``ERROR`` state:
every later call raises.

The codec knows RESP, not Redis semantics: which reply belongs to which request
(pipelining, ``CLIENT REPLY``, pub/sub) is the recorder's business.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from ..base import NEED_DATA, DecodeError, Direction, EncodeError
from .parser import Limits, ParserState, ReplyParser, RequestParser
from .resp import Command, InvalidInline, encode_command, encode_value

Message = Any  # Command | InvalidInline | RespValue

# bytes -> the messages those bytes are, whole, from an empty parser, per direction: an
# app sends the same requests and gets the same replies again and again (redis-benchmark:
# every one), and decoding them was 18 % of record's relay at -c 50. The messages are
# immutable (frozen dataclasses of bytes and tuples), so every connection may share them.
_DECODED: dict[Direction, dict[bytes, tuple[Message, ...]]] = {Direction.CLIENT: {}, Direction.SERVER: {}}
_DECODED_SIZE = 4096  # entries per direction, the oldest dropped first
_DECODED_BYTES = 1024  # longer pieces are decoded each time (bounded memory: ~8 MiB of them)
_DEFAULT_LIMITS = Limits()


class _Side:
    """One direction: its parser, and what ``remember`` keeps of it."""

    __slots__ = ("parser", "decoded", "known", "fresh", "unparsed")

    def __init__(self, parser: RequestParser | ReplyParser, direction: Direction) -> None:
        self.parser = parser
        self.decoded = _DECODED[direction]
        self.known: deque[Message] = deque()  # messages of known pieces, not returned yet
        self.fresh: tuple[bytes, list[Message]] | None = None  # a piece fed to an empty parser
        self.unparsed = False  # bytes went to the parser since it last needed data


class RedisCodec:
    """RESP2/RESP3 for both directions; the limits bound every buffer (see ``Limits``)."""

    def __init__(self, *, max_bulk_length: int = Limits.max_bulk_length,
                 max_line_length: int = Limits.max_line_length,
                 max_inline_length: int = Limits.max_inline_length,
                 max_elements: int = Limits.max_elements,
                 max_depth: int = Limits.max_depth,
                 remember: Callable[[Message], bool] | None = None) -> None:
        """``remember``: pieces seen before are not decoded again (``_DECODED``; record),
        those whose every message it says may be kept (not a password: one stays in
        memory no longer than its request)."""
        self.limits = Limits(max_bulk_length, max_line_length, max_inline_length,
                             max_elements, max_depth)
        self.requests = RequestParser(self.limits)
        self.replies = ReplyParser(self.limits)
        self._order: list[Direction] = []  # directions with bytes not yet decoded, oldest first
        self._error: DecodeError | None = None
        self._keep = remember if self.limits == _DEFAULT_LIMITS else None
        self._remember = self._keep is not None
        self._client = _Side(self.requests, Direction.CLIENT)
        self._server = _Side(self.replies, Direction.SERVER)

    def state(self, direction: Direction) -> ParserState:
        if self._error is not None:
            return ParserState.ERROR
        return (self.requests if direction is Direction.CLIENT else self.replies).state

    def feed(self, direction: Direction, data: bytes) -> None:
        self._check()
        side = self._client if direction is Direction.CLIENT else self._server
        side.fresh = None
        if self._remember and data and len(data) <= _DECODED_BYTES and not side.unparsed \
                and side.parser.state is ParserState.IDLE:
            known = side.decoded.get(data)
            if known is not None:
                side.known.extend(known)
                if direction not in self._order:
                    self._order.append(direction)
                return
            if not side.known:
                side.fresh = (data, [])
        try:
            side.parser.feed(data)
        except DecodeError as exc:
            self._error = exc
            raise
        side.unparsed = True
        if direction not in self._order:
            self._order.append(direction)

    def next_message(self) -> Message:
        self._check()
        while self._order:
            direction = self._order[0]
            side = self._client if direction is Direction.CLIENT else self._server
            if side.known:
                return side.known.popleft()
            if not side.unparsed:  # all it was fed was known: nothing for the parser
                self._order.pop(0)
                continue
            try:
                if direction is Direction.CLIENT:
                    message = self.requests.next_command()
                else:
                    message = self.replies.next_value()
            except DecodeError as exc:
                self._error = exc
                raise
            fresh = side.fresh
            if message is not NEED_DATA:
                if fresh is not None:
                    fresh[1].append(message)
                return message
            side.unparsed = False
            if fresh is not None:
                side.fresh = None
                keep = self._keep
                if fresh[1] and side.parser.state is ParserState.IDLE \
                        and keep is not None and all(map(keep, fresh[1])):  # whole messages
                    decoded = side.decoded
                    if len(decoded) >= _DECODED_SIZE:
                        del decoded[next(iter(decoded))]
                    decoded[fresh[0]] = tuple(fresh[1])
            self._order.pop(0)
        return NEED_DATA

    def encode(self, message: Message) -> bytes:
        if isinstance(message, Command | InvalidInline):
            return encode_command(message)
        if getattr(message, "direction", None) is Direction.SERVER:
            return encode_value(message)
        raise EncodeError(f"not a Redis message: {message!r}")

    def _check(self) -> None:
        if self._error is not None:
            raise DecodeError(f"codec is in its error state: {self._error}")

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

from typing import Any

from ..base import NEED_DATA, DecodeError, Direction, EncodeError
from .parser import Limits, ParserState, ReplyParser, RequestParser
from .resp import Command, InvalidInline, encode_command, encode_value

Message = Any  # Command | InvalidInline | RespValue


class RedisCodec:
    """RESP2/RESP3 for both directions; the limits bound every buffer (see ``Limits``)."""

    def __init__(self, *, max_bulk_length: int = Limits.max_bulk_length,
                 max_line_length: int = Limits.max_line_length,
                 max_inline_length: int = Limits.max_inline_length,
                 max_elements: int = Limits.max_elements,
                 max_depth: int = Limits.max_depth) -> None:
        self.limits = Limits(max_bulk_length, max_line_length, max_inline_length,
                             max_elements, max_depth)
        self.requests = RequestParser(self.limits)
        self.replies = ReplyParser(self.limits)
        self._order: list[Direction] = []  # directions with bytes not yet decoded, oldest first
        self._error: DecodeError | None = None

    def state(self, direction: Direction) -> ParserState:
        if self._error is not None:
            return ParserState.ERROR
        return (self.requests if direction is Direction.CLIENT else self.replies).state

    def feed(self, direction: Direction, data: bytes) -> None:
        self._check()
        try:
            (self.requests if direction is Direction.CLIENT else self.replies).feed(data)
        except DecodeError as exc:
            self._error = exc
            raise
        if direction not in self._order:
            self._order.append(direction)

    def next_message(self) -> Message:
        self._check()
        while self._order:
            direction = self._order[0]
            try:
                if direction is Direction.CLIENT:
                    message = self.requests.next_command()
                else:
                    message = self.replies.next_value()
            except DecodeError as exc:
                self._error = exc
                raise
            if message is not NEED_DATA:
                return message
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

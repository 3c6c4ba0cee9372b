"""Record mode: pair each Redis request with its replies, in pipelined order.

Pairing rules (redis-server behaviour):

* replies come back in request order; a request gets one reply, none while ``CLIENT
  REPLY OFF``/``SKIP`` silences it (``commands.ReplyMode``), or one confirmation per
  channel for ``(P|S)(UN)SUBSCRIBE`` (``commands.Subscriptions``); an error ends any of
  them;
* out-of-band messages - RESP3 pushes other than an awaited confirmation, RESP2
  ``message``/``pmessage``/``smessage`` arrays while subscribed, ``MONITOR`` lines -
  belong to no request. They are recorded as extra responses of the interaction they
  follow in the byte stream (or, when nothing precedes them, of the next one), so on
  replay ``SUBSCRIBE`` is answered by its confirmation followed by the messages, in the
  recorded order. An interaction that carries such messages has lifetime ``data`` (it
  must be served once, not repeated).

Emission: an interaction is returned as soon as its last reply arrives, except while the
connection is subscribed or monitoring: then the last answered interaction stays open
for the messages that may follow and is returned when the next request's first reply
arrives or the connection closes.

When the server closes, requests it never answered are not recorded (``unanswered``
lists them). A decode error is raised on the next ``feed`` when interactions completed
before it in the same call, so none is lost.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

from ..base import (
    NEED_DATA,
    Direction,
    Interaction,
    Lifetime,
    ProtocolError,
    Readable,
    UnexpectedMessage,
    blob,
)
from .codec import RedisCodec
from .commands import (
    Expect,
    ReplyMode,
    Subscriptions,
    is_message,
    lifetime,
    redact_reply,
    redact_request,
    summary,
)
from .readable import request_to_readable, to_readable
from .resp import (
    Array,
    BulkError,
    Command,
    InvalidInline,
    Push,
    RespValue,
    SimpleError,
    SimpleString,
)

_MONITOR_LINE = re.compile(rb"[0-9]+\.[0-9]+ \[")


@dataclass
class _Pending:
    args: tuple[bytes, ...]  # empty for an InvalidInline
    request: Readable
    expect: Expect
    lifetime: Lifetime
    summary: str
    responses: list[Readable] = field(default_factory=list)
    replies: int = 0
    needed: int = 1
    pushes: bool = False  # carries out-of-band messages

    def interaction(self) -> Interaction:
        return Interaction(request=self.request, responses=self.responses,
                           lifetime="data" if self.pushes else self.lifetime,
                           summary=self.summary)


class RedisRecorder:
    """One connection in record mode; ``feed`` returns completed ``Interaction``s."""

    def __init__(self, **limits: int) -> None:
        self._codec = RedisCodec(**limits)
        self._mode = ReplyMode()
        self._subs = Subscriptions()
        self._queue: deque[_Pending] = deque()  # requests awaiting their replies, in order
        self._open: _Pending | None = None  # answered; may still get out-of-band messages
        self._orphans: list[Readable] = []  # out-of-band messages with no interaction yet
        self._monitoring = False
        self._error: ProtocolError | None = None
        self.unanswered: list[Readable] = []

    def feed(self, direction: Direction, data: bytes) -> list[Interaction]:
        if self._error is not None:
            raise self._error
        out: list[Interaction] = []
        try:
            self._codec.feed(direction, data)
            while (message := self._codec.next_message()) is not NEED_DATA:
                if message.direction is Direction.CLIENT:
                    self._on_request(message, out)
                else:
                    self._on_reply(message, out)
            if not data:
                self._on_close(direction, out)
        except ProtocolError as exc:
            self._error = exc
            if out:
                return out
            raise
        return out

    # --- requests ---

    def _on_request(self, message: Command | InvalidInline, out: list[Interaction]) -> None:
        if isinstance(message, InvalidInline):  # the server answers -ERR and closes
            pending = _Pending((), request_to_readable(message), Expect.ONE, "data",
                               "inline request (unbalanced quotes)")
        else:
            args = message.args
            pending = _Pending(args, [blob(a) for a in redact_request(args)],
                               self._mode.expect(args), lifetime(args), summary(args))
        self._queue.append(pending)
        self._drain(out)

    def _drain(self, out: list[Interaction]) -> None:
        """Emit requests at the head that get no reply (CLIENT REPLY OFF/SKIP)."""
        while self._queue and self._queue[0].expect is Expect.NONE:
            self._close_open(out)
            out.append(self._queue.popleft().interaction())

    # --- replies ---

    def _on_reply(self, value: RespValue, out: list[Interaction]) -> None:
        head = self._queue[0] if self._queue else None
        if self._out_of_band(value, head):
            readable = to_readable(value)
            target = self._open or (head if head is not None and head.replies else None)
            if target is None:
                self._orphans.append(readable)
            else:
                target.responses.append(readable)
                target.pushes = True
            return
        if head is None:
            raise UnexpectedMessage(f"a {type(value).__name__} reply with no request pending")
        if head.replies == 0:
            self._close_open(out)
            if self._orphans:
                head.responses.extend(self._orphans)
                head.pushes = True
                self._orphans = []
            if head.expect is Expect.SUBSCRIPTION:
                head.needed = self._subs.replies_for(head.args)
        head.replies += 1
        if isinstance(value, SimpleError | BulkError):
            head.needed = head.replies  # an error is the whole answer
        elif head.expect is Expect.SUBSCRIPTION:
            self._subs.confirmation(head.args[0].upper(), value)
        head.responses.append(to_readable(redact_reply(head.args, value)))
        if head.replies < head.needed:
            return
        self._queue.popleft()
        self._apply(head, value)
        if self._subs.active or self._monitoring:
            self._open = head
        else:
            out.append(head.interaction())
        self._drain(out)

    def _out_of_band(self, value: RespValue, head: _Pending | None) -> bool:
        if isinstance(value, Push):  # out-of-band unless it is the awaited (un)subscribe confirmation
            return not (head is not None and head.expect is Expect.SUBSCRIPTION
                        and self._subs.confirmation_kind(head.args, value))
        if isinstance(value, Array) and self._subs.active and is_message(value):
            return True
        return (isinstance(value, SimpleString) and self._monitoring
                and _MONITOR_LINE.match(value.value) is not None)

    def _apply(self, done: _Pending, last: RespValue) -> None:
        """Connection state that a completed command changes."""
        name = done.args[0].upper() if done.args else b""
        if name == b"MONITOR" and isinstance(last, SimpleString):
            self._monitoring = True
        elif name == b"RESET" and isinstance(last, SimpleString):
            self._monitoring = False
            self._subs.clear()

    def _close_open(self, out: list[Interaction]) -> None:
        if self._open is not None:
            out.append(self._open.interaction())
            self._open = None

    def _on_close(self, direction: Direction, out: list[Interaction]) -> None:
        if direction is Direction.CLIENT:
            if not self._queue:  # nothing more can be asked; replies may still come otherwise
                self._close_open(out)
            return
        self._close_open(out)
        for pending in self._queue:
            if pending.replies:
                out.append(pending.interaction())
            else:
                self.unanswered.append(pending.request)
        self._queue.clear()
        self._orphans = []

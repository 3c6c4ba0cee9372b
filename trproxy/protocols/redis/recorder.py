"""Record mode: pair each Redis request with its replies, in pipelined order.

Pairing rules (redis-server behaviour):

* replies come back in request order; a request gets one reply, none while ``CLIENT
  REPLY OFF``/``SKIP`` silences it (``commands.ReplyMode``), or one confirmation per
  channel for ``(P|S)(UN)SUBSCRIBE`` (``commands.Subscriptions``); an error ends any of
  them;
* out-of-band messages - RESP3 pushes other than an awaited confirmation, RESP2
  ``message``/``pmessage``/``smessage`` arrays while subscribed, ``MONITOR`` lines -
  belong to no request: each is returned as ``Pushed`` when it arrives, so the proxy
  records when (replay sends it once the replay reached that point: after the PUBLISH
  on another connection that caused it, not right after ``SUBSCRIBE``).

Emission: an interaction is returned as soon as its last reply arrives. When the
connection ends, requests never answered are returned with ``unanswered`` set (a
blocking ``BRPOP k 0`` the client gave up on: replay holds it the same way);
``unanswered`` also lists them. A decode error is raised on the next ``feed`` when
interactions completed before it in the same call, so none is lost.
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
    Pushed,
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
    BigNumber,
    Boolean,
    BulkError,
    BulkString,
    Command,
    Double,
    Integer,
    InvalidInline,
    Null,
    Push,
    RespValue,
    SimpleError,
    SimpleString,
    VerbatimString,
)

_MONITOR_LINE = re.compile(rb"[0-9]+\.[0-9]+ \[")
# replies the codec may remember (no aggregate: CONFIG GET requirepass answers with one)
_SCALARS = (SimpleString, SimpleError, Integer, BulkString, Null, Boolean, Double, BigNumber,
            BulkError, VerbatimString)


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

    def interaction(self, unanswered: bool = False) -> Interaction:
        return Interaction(request=self.request, responses=self.responses,
                           lifetime="data" if unanswered else self.lifetime,
                           summary=self.summary, unanswered=unanswered)


class RedisRecorder:
    """One connection in record mode; ``feed`` returns completed ``Interaction``s."""

    def __init__(self, **limits: int) -> None:
        self._codec = RedisCodec(**limits, remember=_no_secret)
        self._mode = ReplyMode()
        self._subs = Subscriptions()
        self._queue: deque[_Pending] = deque()  # requests awaiting their replies, in order
        self._monitoring = False
        self._error: ProtocolError | None = None
        self.unanswered: list[Readable] = []
        self._quit = False

    @property
    def farewell(self) -> bool:
        """The client sent QUIT: the server's close that follows answers it, and is not
        an event of its own (``base.Recorder``); replay closes after QUIT itself."""
        return self._quit

    def feed(self, direction: Direction, data: bytes) -> list[Interaction | Pushed]:
        if self._error is not None:
            raise self._error
        out: list[Interaction | Pushed] = []
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

    def _on_request(self, message: Command | InvalidInline, out: list[Interaction | Pushed]) -> None:
        if isinstance(message, InvalidInline):  # the server answers -ERR and closes
            pending = _Pending((), request_to_readable(message), Expect.ONE, "data",
                               "inline request (unbalanced quotes)")
        else:
            args = message.args
            pending = _Pending(args, [blob(a) for a in redact_request(args)],
                               self._mode.expect(args), lifetime(args), summary(args))
            self._quit = self._quit or (bool(args) and args[0].upper() == b"QUIT")
        self._queue.append(pending)
        self._drain(out)

    def _drain(self, out: list[Interaction | Pushed]) -> None:
        """Emit requests at the head that get no reply (CLIENT REPLY OFF/SKIP)."""
        while self._queue and self._queue[0].expect is Expect.NONE:
            out.append(self._queue.popleft().interaction())

    # --- replies ---

    def _on_reply(self, value: RespValue, out: list[Interaction | Pushed]) -> None:
        head = self._queue[0] if self._queue else None
        if self._out_of_band(value, head):
            out.append(Pushed([to_readable(value)], _push_summary(value)))
            return
        if head is None:
            raise UnexpectedMessage(f"a {type(value).__name__} reply with no request pending")
        if head.replies == 0:
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

    def _on_close(self, direction: Direction, out: list[Interaction | Pushed]) -> None:
        if direction is Direction.CLIENT:
            return  # replies may still come
        for pending in self._queue:
            if not pending.replies:
                self.unanswered.append(pending.request)
            out.append(pending.interaction(unanswered=not pending.replies))
        self._queue.clear()


def _no_secret(message: Command | InvalidInline | RespValue) -> bool:
    """Whether the codec may remember a message (``RedisCodec(remember=...)``): not a
    request with a password (AUTH, HELLO AUTH, CONFIG SET requirepass...), nor an
    aggregate reply (CONFIG GET requirepass, ACL GETUSER answer with one)."""
    if isinstance(message, Command):
        return redact_request(message.args) == message.args
    return isinstance(message, _SCALARS)


def _push_summary(value: RespValue) -> str:
    """``message news`` (the kind and the channel of a pub/sub message), else ``push``."""
    items = getattr(value, "items", None)
    if items and all(isinstance(getattr(i, "value", None), bytes) for i in items[:2]):
        words = [i.value.decode("utf-8", "replace")[:40] for i in items[:2]]
        return " ".join(words)
    return "monitor" if isinstance(value, SimpleString) else "push"

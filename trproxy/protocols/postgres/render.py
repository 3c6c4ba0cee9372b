"""Replay: fit recorded responses to the live request, as a server would answer it.

The match key ignores what may differ between runs (statement names, whether this
connection had already prepared the statement, Close), so a recorded answer can
belong to a batch of a slightly different *shape*: recorded ``Parse+Bind+Execute+Sync``
for a live ``Bind+Execute+Sync``, or the reverse. ``render_batch`` walks the live
messages in order and takes from the recorded answers what each one gets (spec,
"Extended Query"):

    Parse -> ParseComplete   Bind -> BindComplete   Close -> CloseComplete
    Describe 'S' -> ParameterDescription + RowDescription|NoData
    Describe 'P' -> RowDescription|NoData
    Execute -> DataRow*|COPY... then CommandComplete|EmptyQueryResponse|PortalSuspended
    Sync -> ReadyForQuery          Flush -> nothing

ParseComplete/CloseComplete are synthesized when the recording lacks them and dropped
when the live batch lacks the message; an ErrorResponse makes the rest of the batch be
skipped up to Sync, like the server does. NoticeResponse/ParameterStatus/
NotificationResponse pass through where they were. A CopyInResponse pauses the walk:
the server now waits for the client's COPY data (``Rendered.paused``).

A FATAL (or PANIC) error ends the answer (``Rendered.fatal``): the server closed the
session after it, so no ReadyForQuery follows and the replayer hangs up.

ReadyForQuery's transaction status (``live_status``): an answer to a request that cannot
change it (a session-lifetime answer, or statements without transaction control) gets
the live status, as the server would report it on this connection - a SELECT recorded
inside a transaction may be replayed outside one; an answer to BEGIN/COMMIT/CALL...
keeps the recorded one. Either way an error inside a transaction block makes it 'E'.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import backend as be
from . import frontend as fe
from .identity import is_backend_pid_sql
from .names import learn_description

_STRAY = (be.ParseComplete, be.CloseComplete)
_END_OF_EXECUTE = (be.CommandComplete, be.EmptyQueryResponse, be.PortalSuspended)


class Mismatch(Exception):
    """The recorded answer does not fit the live request."""


def error_response(code: str, message: str, severity: str = "ERROR") -> be.ErrorResponse:
    return be.ErrorResponse((("S", severity), ("V", severity), ("C", code), ("M", message)))


@dataclass
class Rendered:
    messages: list[Any] = field(default_factory=list)
    tx: str = "I"
    errored: bool = False  # ended in an error without reaching Sync: skip to Sync
    paused: list[Any] | None = None  # recorded answers left after a CopyInResponse
    fatal: bool = False  # a FATAL/PANIC error: the server closed the session after it
    # what each Describe of the live batch learned (``learn_description``), by its place in
    # the batch: what the replayer's memo of this answer applies to a later batch
    described: list[tuple[int, tuple[int, ...] | None, be.RowDescription | None]] = field(default_factory=list)


def status_after_error(tx: str) -> str:
    return "E" if tx in ("T", "E") else "I"


class _Walk:
    def __init__(self, recorded: list[Any], live_status: bool, tx: str) -> None:
        self.r = recorded
        self.i = 0
        self.live_status = live_status
        self.out = Rendered(tx=tx)
        self.pid_row: Callable[[be.DataRow], be.DataRow] | None = None

    def peek(self) -> Any:
        while self.i < len(self.r) and isinstance(self.r[self.i], be.ASYNC_TYPES):
            self.out.messages.append(self.r[self.i])
            self.i += 1
        return self.r[self.i] if self.i < len(self.r) else None

    def take(self) -> Any:
        msg = self.r[self.i]
        self.i += 1
        if isinstance(msg, be.ReadyForQuery):
            msg = self.ready(msg.status)
        elif isinstance(msg, be.ErrorResponse):
            if self.out.tx == "T":
                self.out.tx = "E"
            self.out.fatal = msg.get("S") in ("FATAL", "PANIC")
        self.out.messages.append(msg)
        return msg

    def ready(self, recorded_status: str | None) -> be.ReadyForQuery:
        if recorded_status is not None and not self.live_status:
            self.out.tx = recorded_status
        return be.ReadyForQuery(self.out.tx)

    def skip_stray(self, keep: tuple[type, ...] = ()) -> Any:
        while isinstance(self.peek(), _STRAY) and not isinstance(self.peek(), keep):
            self.i += 1
        return self.peek()

    def expect(self, *types: type) -> Any:
        nxt = self.peek()
        if isinstance(nxt, be.ErrorResponse):
            self.take()
            raise _Errored
        if not isinstance(nxt, types):
            want = "/".join(t.__name__ for t in types)
            raise Mismatch(f"expected {want}, recorded {type(nxt).__name__ if nxt else 'nothing'}")
        return self.take()


class _Errored(Exception):
    pass


def render_batch(live: list[tuple[Any, Any]], recorded: list[Any], *, live_status: bool,
                 tx: str, pid_row: Callable[[be.DataRow], be.DataRow] | None = None) -> Rendered:
    """Answer the live batch ``live`` ([(message, statement-or-portal)]) from ``recorded``."""
    w = _Walk(recorded, live_status, tx)
    w.pid_row = pid_row
    errored = False
    for k, (msg, ref) in enumerate(live):
        if w.out.fatal:
            return w.out  # the server hung up: nothing more, not even ReadyForQuery
        if errored:
            if isinstance(msg, fe.Sync):
                w.skip_stray()
                nxt = w.peek()
                if isinstance(nxt, be.ReadyForQuery):
                    w.take()
                else:
                    w.out.messages.append(be.ReadyForQuery(status_after_error(w.out.tx)))
                    w.out.tx = status_after_error(w.out.tx)
                errored = False
            continue
        try:
            if _answer(w, msg, ref, k):
                w.out.paused = w.r[w.i:]
                return w.out  # COPY FROM STDIN: the rest comes after the client's data
        except _Errored:
            errored = True
    w.peek()  # trailing notices
    w.out.errored = errored
    return w.out


def _answer(w: _Walk, msg: Any, ref: Any, k: int) -> bool:
    """Render the answer to the ``k``-th live message; True when a COPY IN pauses the walk."""
    if isinstance(msg, fe.Flush):
        return False
    if isinstance(msg, fe.Parse):
        nxt = w.peek()
        if isinstance(nxt, (be.ParseComplete, be.ErrorResponse)):
            w.expect(be.ParseComplete)
        else:
            w.out.messages.append(be.ParseComplete())
    elif isinstance(msg, fe.Close):
        if isinstance(w.skip_stray(keep=(be.CloseComplete,)), be.CloseComplete):
            w.take()
        else:
            w.out.messages.append(be.CloseComplete())
    elif isinstance(msg, fe.Bind):
        w.skip_stray()
        w.expect(be.BindComplete)
    elif isinstance(msg, fe.Describe):
        w.skip_stray()
        params = None
        if msg.kind == "S":
            params = w.expect(be.ParameterDescription).type_oids
        rows = w.expect(be.RowDescription, be.NoData)
        described = rows if isinstance(rows, be.RowDescription) else None
        learn_description(ref, params, described)
        w.out.described.append((k, params, described))
    elif isinstance(msg, fe.Execute):
        w.skip_stray()
        pid_row = w.pid_row if w.pid_row is not None and is_backend_pid_sql(
            getattr(ref, "query", None)) else None
        while True:
            got = w.expect(be.DataRow, *_END_OF_EXECUTE, be.CopyInResponse, be.CopyOutResponse,
                           be.CopyBothResponse, fe.CopyData, fe.CopyDone)
            if isinstance(got, be.CopyInResponse):
                return True
            if isinstance(got, _END_OF_EXECUTE):
                break
            if pid_row is not None and isinstance(got, be.DataRow):
                w.out.messages[-1] = pid_row(got)
    elif isinstance(msg, fe.Sync):
        nxt = w.skip_stray()
        if isinstance(nxt, be.ReadyForQuery):
            w.take()
        else:
            w.out.messages.append(w.ready(None))
    return False


def render_simple(recorded: list[Any], *, live_status: bool, tx: str) -> Rendered:
    """Query or FunctionCall: the recorded answers as they are, up to a CopyInResponse."""
    w = _Walk(recorded, live_status, tx)
    while w.i < len(w.r) and not w.out.fatal:
        msg = w.take()
        if isinstance(msg, be.CopyInResponse):
            w.out.paused = w.r[w.i:]
            break
    return w.out


def resume_copy(remaining: list[Any], *, live_status: bool, tx: str,
                until_execute_end: bool) -> tuple[Rendered, list[Any]]:
    """After the client's CopyDone: the recorded answers up to the end of the COPY
    (CommandComplete or ErrorResponse) when ``until_execute_end``, else all of them.
    Returns what was rendered and what is left (the ReadyForQuery of an extended-protocol
    COPY, sent when the client's Sync arrives)."""
    w = _Walk(remaining, live_status, tx)
    while w.i < len(w.r):
        msg = w.take()
        if until_execute_end and isinstance(msg, (*_END_OF_EXECUTE, be.ErrorResponse)):
            break
    return w.out, remaining[w.i:]

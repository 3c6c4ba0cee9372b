"""Record mode: pair each client request with the server's answer, as readable data.

Groups follow how the server processes messages (spec, "Message Flow"):

* startup: SSLRequest/GSSENCRequest + StartupMessage + authentication answers ->
  everything up to ReadyForQuery (or the ErrorResponse that ends the session). When the
  server asks for a cleartext or MD5 password, that is two round trips and two
  interactions: the StartupMessage -> the password request, then the StartupMessage
  with the (hashed) PasswordMessage -> the rest, so replay can ask the same question and
  match the answer (``credentials``). SASL (SCRAM) stays one interaction: replay skips
  it. Lifetime "session": served in recorded order, the last one again (``identity``).
* simple Query -> everything up to ReadyForQuery, including a COPY in either
  direction (the client's CopyData/CopyDone/CopyFail join the request).
* extended batch: Parse/Bind/Describe/Execute/Close up to Sync -> everything up to
  ReadyForQuery; a Flush also ends a batch (the client waits for the answers so far),
  and such a batch is complete when every message in it has been answered. Pipelined
  batches are separate interactions. After an error the server skips to Sync: batches
  it skipped are not recorded (replay skips them the same way).
* FunctionCall -> FunctionCallResponse ... ReadyForQuery.

A cursor walks each batch's messages as the answers arrive, so DataRows are read
with the right column formats and types (from Bind and RowDescription, possibly of an
earlier batch) and a reply that fits no request raises ``UnexpectedMessage``.
NoticeResponse/ParameterStatus/NotificationResponse (and an ErrorResponse, a FATAL before
the server hangs up) that arrive with nothing pending are returned as ``Pushed`` when
they arrive, so the proxy records when (a NOTIFY on another connection caused them).
Batches of only Parse/Close/Sync/Flush are not recorded: the replayer answers them
itself (``matching.is_trivial``). A CancelRequest connection records nothing but returns
an ``Interrupt`` naming the backend it cancels, which ``identity`` (the BackendKeyData
the server sent) lets the proxy find. Requests not wholly answered when the client hung
up first are returned with ``unanswered`` set: the client never read an answer that came
after it left (kept in the recording, never replayed). A server close after the client's
Terminate or CancelRequest answers it (``farewell``), it is no event of its own.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..base import (
    NEED_DATA,
    Direction,
    Interaction,
    Interrupt,
    ProtocolError,
    Pushed,
    Readable,
    UnexpectedMessage,
)
from . import backend as be
from . import frontend as fe
from .backend import backend_key
from .codec import PostgresCodec
from .matching import is_trivial, lifetime_of, summary_of
from .names import Names, Portal, Statement, learn_description, shape_of
from .readable import RowShape, item_name, password_item, request_item, response_item

_EXTENDED = (fe.Parse, fe.Bind, fe.Describe, fe.Execute, fe.Close)
_END_OF_EXECUTE = (be.CommandComplete, be.EmptyQueryResponse, be.PortalSuspended)


@dataclass
class _Group:
    kind: str  # "startup" | "query" | "batch" | "function"
    items: list[Readable] = field(default_factory=list)  # the readable request
    responses: list[Readable] = field(default_factory=list)
    # batch cursor: the messages awaiting answers, with the statement/portal each meant
    cursor: list[tuple[Any, Statement | Portal | None]] = field(default_factory=list)
    k: int = 0
    closed_by: str | None = None  # "Sync" | "Flush" once the client ended the batch
    errored: bool = False
    discarded: bool = False  # skipped by the server after an error in an earlier batch
    unanswered: bool = False  # the client hung up before any answer
    abandoned: bool = False  # the client hung up before the whole answer: it never saw it
    copy: str | None = None  # the server is in COPY "in" (reading data) or "out" mode
    client_copy: str | None = None  # the client sent COPY "data", or is "done" (CopyDone/Fail)
    copy_synced: bool = False  # the Sync after an extended-protocol COPY arrived
    shape: RowShape = field(default_factory=RowShape)
    shape_k: int = -1  # the cursor position ``shape`` was computed for
    described_params: tuple[int, ...] | None = None
    done: bool = False


class PostgresRecorder:
    """One connection in record mode (see module doc)."""

    def __init__(self, *, max_message_size: int | None = None, start: str = "auto") -> None:
        kwargs = {"max_message_size": max_message_size} if max_message_size else {}
        self.codec = PostgresCodec(start=start, **kwargs)
        self.names = Names()
        self._pending: deque[_Group] = deque()
        self._open: _Group | None = None  # batch still accepting client messages
        self._pushed: list[Pushed | Interrupt] = []  # server messages with nothing pending
        self._client_closed = False
        self.identity: bytes | None = None  # the backend key (CancelRequests name it)
        self._skipping = False  # an error ended a Flush batch: the server skips to Sync
        self._startup: _Group | None = None
        self._startup_params: dict[str, str] = {}

    # --- Recorder API ------------------------------------------------------------------

    @property
    def farewell(self) -> bool:
        """The client sent Terminate or a CancelRequest: the server's close that follows
        answers it, and is not an event of its own (see ``base.Recorder``)."""
        return self.codec.client_finished is not None

    def feed(self, direction: Direction, data: bytes) -> list[Interaction | Pushed | Interrupt]:
        self.codec.feed(direction, data)
        out: list[Interaction | Pushed | Interrupt] = []
        while (event := self.codec.next_event()) is not NEED_DATA:
            sender: Direction = event[0]  # type: ignore[index]
            msg: Any = event[1]  # type: ignore[index]
            if sender is Direction.CLIENT:
                self._client(msg)
            else:
                self._server(msg)
            self._emit(out)
            out += self._pushed
            self._pushed = []
        if not data and direction is Direction.CLIENT:
            self._client_closed = True
            for group in self._pending:  # a Postgres client that hangs up has left: what
                group.abandoned = not group.done  # the server says after, no one reads
        if not data and direction is Direction.SERVER:
            self._server_closed()
            self._emit(out)
        return out

    # --- client side -------------------------------------------------------------------

    def _new(self, kind: str) -> _Group:
        group = _Group(kind)
        self._pending.append(group)
        return group

    def _client(self, msg: Any) -> None:
        if isinstance(msg, (fe.SSLRequest, fe.GSSENCRequest, fe.StartupMessage)):
            if self._startup is None:
                self._startup = self._new("startup")
            if isinstance(msg, fe.StartupMessage):
                self._startup_params = msg.params
            self._startup.items.append(request_item(msg))
        elif isinstance(msg, (fe.PasswordMessage, fe.SASLInitialResponse, fe.SASLResponse,
                              fe.GSSResponse)):
            if self._startup is None or self._startup.done:
                raise UnexpectedMessage(f"{type(msg).__name__} outside authentication")
            self._startup.items.append(password_item(msg, self._startup_params)
                                       if isinstance(msg, fe.PasswordMessage) else request_item(msg))
        elif isinstance(msg, (fe.Query, fe.FunctionCall)):
            self._end_open_batch()
            if self._skipping:
                return  # the server discards it with the rest of the failed batch
            kind = "query" if isinstance(msg, fe.Query) else "function"
            self._new(kind).items.append(self.names.request_item(msg)[0])
        elif isinstance(msg, (fe.CopyData, fe.CopyDone, fe.CopyFail)):
            # COPY data belongs to the latest request: clients may stream it before the
            # CopyInResponse arrives (asyncpg); the server ignores it if no COPY runs.
            tail = self._tail()
            if tail is None or tail.client_copy == "done":
                return
            tail.items.append(request_item(msg))
            tail.client_copy = "data" if isinstance(msg, fe.CopyData) else "done"
        elif isinstance(msg, (fe.Sync, fe.Flush)):
            tail = self._tail()
            if tail is not None and ((tail.copy == "in" and tail.client_copy != "done") or (
                    tail.kind == "batch" and tail.client_copy == "done" and not tail.copy_synced
                    and isinstance(msg, fe.Sync))):
                # Sync/Flush during COPY FROM STDIN are ignored by the server; in an
                # extended-protocol COPY the Sync after CopyDone (libpq sends one) is the
                # one that ends the batch.
                tail.items.append(request_item(msg))
                tail.copy_synced = tail.client_copy == "done"
                return
            self._extended(msg)
        elif isinstance(msg, _EXTENDED):
            self._extended(msg)
        elif isinstance(msg, fe.CancelRequest):  # the server answers nothing; the cancelled
            self._pushed.append(Interrupt(backend_key(msg.process_id, msg.secret_key)))
        # Terminate: nothing to record

    def _end_open_batch(self) -> None:
        """A Query after extended messages without Sync: the server answers them first,
        then the Query; the batch ends like one ended by Flush (no ReadyForQuery)."""
        if self._open is not None:
            group, self._open = self._open, None
            group.closed_by = "Flush"
            self._check_done(group)

    def _extended(self, msg: Any) -> None:
        group = self._open
        if group is None:
            group = self._open = self._new("batch")
            group.discarded = group.errored = self._skipping
        item, ref = self.names.request_item(msg)
        group.items.append(item)
        group.cursor.append((msg, ref))
        if isinstance(msg, (fe.Sync, fe.Flush)):
            group.closed_by = type(msg).__name__
            self._open = None
            if isinstance(msg, fe.Sync):
                self._skipping = False
            self._check_done(group)

    # --- server side -------------------------------------------------------------------

    def _tail(self) -> _Group | None:
        for group in reversed(self._pending):
            if not group.done:
                return group
        return None

    def _head(self) -> _Group | None:
        for group in self._pending:
            if not group.done:
                return group
        return None

    def _server(self, msg: Any) -> None:
        if isinstance(msg, be.SSLResponse) and msg.code == "S":
            raise ProtocolError("TLS negotiated: the server answered SSLRequest with 'S', "
                                "so the session is encrypted and cannot be recorded "
                                "(use sslmode=disable/prefer against a server without TLS)")
        if isinstance(msg, be.GSSENCResponse) and msg.code == "G":
            raise ProtocolError("GSSAPI encryption negotiated: the session cannot be recorded")
        if isinstance(msg, be.BackendKeyData):
            self.identity = backend_key(msg.process_id, msg.secret_key)
        head = self._head()
        if head is None:
            if isinstance(msg, (*be.ASYNC_TYPES, be.ErrorResponse)):
                self._pushed.append(Pushed([response_item(msg)], type(msg).__name__))
                return
            raise UnexpectedMessage(f"server sent {type(msg).__name__} with no request pending")
        if head.kind == "batch":
            self._batch_reply(head, msg)
        else:
            if isinstance(msg, be.RowDescription):
                head.shape = RowShape(tuple(f.format for f in msg.fields),
                                      tuple(f.type_oid for f in msg.fields))
            elif isinstance(msg, be.CopyInResponse):
                head.copy = "in"
            elif isinstance(msg, (be.CopyOutResponse, be.CopyBothResponse)):
                head.copy = "out"
            elif isinstance(msg, (be.CommandComplete, be.ErrorResponse)):
                head.copy = None
            head.responses.append(response_item(msg, head.shape))
            if isinstance(msg, be.ReadyForQuery):
                head.done = True
            elif head.kind == "startup" and isinstance(msg, be.ErrorResponse):
                head.done = True  # authentication failed: the server closes

    def _batch_reply(self, group: _Group, msg: Any) -> None:
        cursor = group.cursor
        while group.k < len(cursor) and isinstance(cursor[group.k][0], fe.Flush):
            group.k += 1
        if isinstance(msg, be.DataRow):
            if group.errored or group.k >= len(cursor) or not isinstance(
                    cursor[group.k][0], fe.Execute):
                raise UnexpectedMessage("DataRow does not answer an Execute")
            if group.shape_k != group.k:
                group.shape, group.shape_k = shape_of(cursor[group.k][1]), group.k
            group.responses.append(response_item(msg, group.shape))
            return
        group.responses.append(response_item(msg))
        if isinstance(msg, be.ASYNC_TYPES):
            return
        if group.errored:
            if isinstance(msg, be.ReadyForQuery):
                group.done = True
                return
            raise UnexpectedMessage(f"{type(msg).__name__} while the server skips to Sync")
        if isinstance(msg, be.ErrorResponse):
            group.errored = True
            group.copy = None
            self._check_done(group)
            return
        if group.k >= len(cursor):
            raise UnexpectedMessage(f"server sent {type(msg).__name__} with no request pending")
        req, ref = cursor[group.k]
        if not self._answers(group, req, ref, msg):
            raise UnexpectedMessage(f"{type(msg).__name__} does not answer {type(req).__name__}")
        self._check_done(group)

    def _answers(self, group: _Group, req: Any, ref: Any, msg: Any) -> bool:
        """Advance the cursor if ``msg`` (part of) answers ``req``; False if it cannot."""
        step = True
        if isinstance(req, fe.Parse):
            ok = isinstance(msg, be.ParseComplete)
        elif isinstance(req, fe.Bind):
            ok = isinstance(msg, be.BindComplete)
        elif isinstance(req, fe.Close):
            ok = isinstance(msg, be.CloseComplete)
        elif isinstance(req, fe.Sync):
            ok = group.done = isinstance(msg, be.ReadyForQuery)
        elif isinstance(req, fe.Describe):
            if isinstance(msg, be.ParameterDescription) and req.kind == "S":
                group.described_params, ok, step = msg.type_oids, True, False
            else:
                ok = isinstance(msg, (be.RowDescription, be.NoData))
                if ok:
                    rows = msg if isinstance(msg, be.RowDescription) else None
                    learn_description(ref, group.described_params, rows)
                    group.described_params = None
        elif isinstance(req, fe.Execute):
            ok = True
            if isinstance(msg, _END_OF_EXECUTE):
                group.copy = None
            elif isinstance(msg, be.CopyInResponse):
                group.copy, step = "in", False
            elif isinstance(msg, (be.CopyOutResponse, be.CopyBothResponse, fe.CopyData,
                                  fe.CopyDone)):
                group.copy, step = group.copy or "out", False
            else:
                ok = False
        else:
            ok = False
        if ok and step:
            group.k += 1
        return ok

    def _check_done(self, group: _Group) -> None:
        if group.done or group.closed_by != "Flush":
            return
        cursor = group.cursor
        while group.k < len(cursor) and isinstance(cursor[group.k][0], fe.Flush):
            group.k += 1
        if group.errored:
            group.done = True
            # the server now ignores everything up to the next Sync, in later batches too
            self._skipping = True
            later = list(self._pending)
            for other in later[later.index(group) + 1:]:
                if other.done:
                    continue
                other.discarded = other.errored = True
                if other.kind != "batch":
                    other.done = True  # a Query the server discards gets no answer at all
                elif other.closed_by == "Sync":
                    self._skipping = False
                    break
        elif group.k >= len(cursor) and group.copy is None:
            group.done = True

    def _server_closed(self) -> None:
        head = self._head()
        if head is not None and head.responses:
            head.done = True  # e.g. FATAL "terminating connection" mid-query
        for group in self._pending:
            if not group.done:
                # never answered: the client gave up first (kept, replayed as no answer),
                # or the server went away (it will be replayed by its close)
                group.unanswered = self._client_closed and not group.responses
                group.discarded = not group.unanswered
                group.done = True

    def _emit(self, out: list[Interaction | Pushed | Interrupt]) -> None:
        while self._pending and self._pending[0].done:
            group = self._pending.popleft()
            if group.discarded or not group.items:
                continue
            if group.kind == "batch" and is_trivial(group.items):
                continue
            if group.kind == "startup":
                if any("ReadyForQuery" in r or "ErrorResponse" in r for r in group.responses):
                    out += _startup_interactions(group.items, group.responses)
                continue  # else abandoned before the end of authentication (psql asks a password)
            out.append(Interaction(group.items, group.responses, lifetime_of(group.items),
                                   summary_of(group.items),
                                   unanswered=group.unanswered or group.abandoned))


_PASSWORD_REQUESTS = ("AuthenticationCleartextPassword", "AuthenticationMD5Password")


def _startup_interactions(items: list[Readable], responses: list[Readable]) -> list[Interaction]:
    """One startup interaction, or two when the server asked for a password (module doc)."""
    at = next((i for i, item in enumerate(items) if item_name(item) == "PasswordMessage"), None)
    asked = next((i for i, r in enumerate(responses) if item_name(r) in _PASSWORD_REQUESTS), None)
    if at is None or asked is None:
        return [Interaction(items, responses, lifetime_of(items), summary_of(items))]
    first = items[:at]
    second = [i for i in first if item_name(i) == "StartupMessage"] + items[at:]
    return [Interaction(first, responses[:asked + 1], lifetime_of(first), summary_of(first)),
            Interaction(second, responses[asked + 1:], lifetime_of(second), summary_of(second))]

"""Replay mode: play the server for one client connection, from recorded interactions.

``feed(client_bytes)`` returns, in order, ``Reply`` (answers synthesized here) and
``Lookup`` (requests the proxy answers from the store with ``respond``/``miss``); the
proxy must send them in that order. Synthesized here, never looked up:

* SSLRequest and GSSENCRequest -> 'N' (stay in plaintext); with TLS interception on,
  the proxy answers SSLRequest 'S' itself and feeds this replayer the plaintext inside;
* CancelRequest -> nothing; ``close_after`` tells the proxy to close, as a server does,
  and an ``Interrupt`` naming the backend key it carries tells the connection that key
  belongs to (``identity``: the BackendKeyData its startup answer sent) to stop
  waiting: its held answer (the cancelled query's) goes out;
* batches of only Parse/Close/Sync/Flush -> ParseComplete / CloseComplete /
  ReadyForQuery (``matching.is_trivial``);
* while skipping to Sync after an error: the server ignores messages until Sync.

The startup becomes a session ``Lookup`` (match key: user and database), served in
recorded order (the last one again when more connect); the live connection takes the
identity of the recorded one it was served (``identity``). ``respond`` renders AuthenticationOk + the recorded ParameterStatus (with
the live client's settings reported, ``startup.reflect``) + the live BackendKeyData +
ReadyForQuery. A SASL (SCRAM) exchange cannot be replayed (it needs the server's keys):
replay asks for the password in cleartext instead (the client still sees a password
login and must have one) and takes any. When the recording asked for a cleartext or MD5
password, the same request (the recorded MD5 salt) goes to the client and its answer,
hashed, is a second lookup: only the recorded credentials get the recorded login. ``miss`` on a
startup synthesizes a working default handshake; on a password, fails the login
(SQLSTATE 28P01). A miss on a query answers ErrorResponse (SQLSTATE XX000,
"trproxy: no recording for ...") then ReadyForQuery, or - in a batch that ended at
Flush - skips to the next Sync like a server after an error, so the client stays usable.

``backend`` is this connection's identity once its startup was answered
(``identity.Backend``: pid, key; ``identity`` the same as the key a CancelRequest names).

Transaction status is tracked per connection (from the ReadyForQuery of data answers)
so session answers and synthesized ReadyForQuery carry the live status.
"""

from __future__ import annotations

import marshal
from dataclasses import dataclass
from typing import Any

from ..base import (
    NEED_DATA,
    Direction,
    Failure,
    Interrupt,
    Lookup,
    LookupContext,
    Readable,
    Reply,
)
from . import backend as be
from . import frontend as fe
from .backend import backend_key
from .codec import PostgresCodec
from .identity import (
    BACKENDS,
    Backend,
    Backends,
    is_backend_pid_sql,
    row_pid,
    terminated_pids,
    with_pid,
)
from .matching import is_trivial, summary_of, traits
from .names import Names, learn_description
from .readable import item_name, password_item, request_item, response_message
from .render import (
    Mismatch,
    Rendered,
    error_response,
    render_batch,
    render_simple,
    resume_copy,
    status_after_error,
)
from .sql import by_shape, summarize
from .startup import live_settings, reflect

# ParameterStatus a PostgreSQL 15 server reports at startup (GUC_REPORT settings).
DEFAULT_PARAMETERS: tuple[tuple[str, str], ...] = (
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO, MDY"),
    ("default_transaction_read_only", "off"),
    ("in_hot_standby", "off"),
    ("integer_datetimes", "on"),
    ("IntervalStyle", "postgres"),
    ("is_superuser", "off"),
    ("server_encoding", "UTF8"),
    ("server_version", "15.0 (trproxy replay)"),
    ("session_authorization", ""),
    ("standard_conforming_strings", "on"),
    ("TimeZone", "UTC"),
)
# what PostgreSQL 15 says with these SQLSTATEs (the ones fault injection is most used for)
FAULT_MESSAGES = {
    "40001": "could not serialize access due to concurrent update",
    "40P01": "deadlock detected",
    "57014": "canceling statement due to statement timeout",
    "55P03": "could not obtain lock on row in relation",
    "53300": "sorry, too many clients already",
    "57P01": "terminating connection due to administrator command",
    "57P03": "the database system is starting up",
    "08006": "terminating connection due to unexpected failure",
}
_AUTH_EXCHANGE = (be.SSLResponse, be.GSSENCResponse, be.AuthenticationCleartextPassword,
                  be.AuthenticationMD5Password, be.AuthenticationSASL,
                  be.AuthenticationSASLContinue, be.AuthenticationSASLFinal,
                  be.AuthenticationGSS, be.AuthenticationGSSContinue, be.AuthenticationSSPI,
                  be.AuthenticationKerberosV5, be.AuthenticationSCMCredential)
_AUTH_NAMES = {cls.__name__ for cls in _AUTH_EXCHANGE}
_MAX_SAME_AS = 4096  # characters of a Query's text the pool may keep as ``same_as``


@dataclass(frozen=True, slots=True)
class _Answer:
    """A recorded answer as ``respond`` rendered it for one shape of live request."""

    data: bytes
    tx: str  # the transaction status after it
    errored: bool  # the batch ended in an error: skip to Sync
    described: tuple[tuple[int, tuple[int, ...] | None, be.RowDescription | None], ...]


# (live messages' kinds, transaction status, live status?, the recorded answer marshalled)
# -> its rendering: an answer recorded alike for many statements (pgbench's rows) is
# rendered once, not once per request; small answers only, none that names a pid or a
# notification's sender, ends the session or starts a COPY (``_answer_key``)
_RENDERED: dict[tuple[Any, ...], _Answer] = {}
_MAX_RENDERED = 2048  # bytes of an answer marshalled
_MAX_ANSWERS = 4096  # answers kept (emptied when full)


class LazyReply(Reply):
    """A Reply whose bytes depend on answers to earlier Lookups in the same ``feed``
    (the transaction status of a ReadyForQuery): computed when first read, i.e. when the
    proxy sends it, after it has answered the Lookups before it."""

    def __init__(self, make: Any) -> None:  # no dataclass __init__: ``data`` is lazy
        self._make = make
        self._data: bytes | None = None

    @property
    def data(self) -> bytes:  # type: ignore[override]
        if self._data is None:
            self._data = self._make()
        return self._data

    def __repr__(self) -> str:
        return "LazyReply()"


class PostgresReplayer:
    def __init__(self, *, max_message_size: int | None = None,
                 backends: Backends = BACKENDS) -> None:
        kwargs = {"max_message_size": max_message_size} if max_message_size else {}
        self.codec = PostgresCodec(start="startup", **kwargs)
        self.backends = backends
        self.backend: Backend | None = None  # this connection's identity, once started
        self._startup: fe.StartupMessage | None = None
        self._asked = False  # a password was asked for: the next PasswordMessage answers it
        self._after_password: list[Readable] | None = None  # SCRAM: the handshake to send then
        self._negotiated: be.NegotiateProtocolVersion | None = None  # sent before the password
        self.names = Names()
        self.tx = "I"
        self.close_after = False  # the server would close the connection now
        self.identity: bytes | None = None  # ``backend`` as a CancelRequest names it
        self._batch: list[tuple[Any, Any]] = []
        self._items: list[Readable] = []
        self._skip = False  # an error ended a Flush batch: ignore messages until Sync
        self._copy: dict[str, Any] | None = None  # a COPY FROM STDIN in progress
        self._last_lookup: Lookup | None = None
        self._started_as: int | None = None  # the recorded connection whose startup it was served

    # --- client bytes in -----------------------------------------------------------------

    def feed(self, data: bytes) -> list[Lookup | Reply | Interrupt]:
        self.codec.feed(Direction.CLIENT, data)
        out: list[Lookup | Reply | Interrupt] = []
        while (event := self.codec.next_event()) is not NEED_DATA:
            self._client(event[1], out)  # type: ignore[index]
        if self._batch and not self._skip and isinstance(self._batch[-1][0], fe.Execute):
            out.append(self._batch_lookup(list(self._batch), list(self._items), tentative=True))
        return out

    def _encode(self, messages: list[Any]) -> bytes:
        encode = self.codec.encode
        return b"".join([encode(m) for m in messages])

    def _client(self, msg: Any, out: list[Lookup | Reply | Interrupt]) -> None:
        n = len(out)
        self._dispatch(msg, out)
        if len(out) > n and isinstance(out[-1], Lookup):
            self._last_lookup = out[-1]

    def _dispatch(self, msg: Any, out: list[Lookup | Reply | Interrupt]) -> None:
        if isinstance(msg, (fe.SSLRequest, fe.GSSENCRequest)):
            self.codec.feed(Direction.SERVER, b"N")  # keep the codec's startup phase in step
            self.codec.events()
            out.append(Reply(b"N"))
        elif isinstance(msg, fe.StartupMessage):
            self._startup = msg
            item = request_item(msg)
            out.append(Lookup([item], "session", summary_of([item]), True,
                              LookupContext(private={"kind": "startup"})))
        elif isinstance(msg, fe.PasswordMessage) and self._after_password is not None:
            recorded, self._after_password = self._after_password, None
            out.append(Reply(self._encode(self._handshake(recorded))))  # SCRAM: not checkable
        elif isinstance(msg, fe.PasswordMessage) and self._asked and self._startup is not None:
            self._asked = False
            request = [request_item(self._startup), password_item(msg, self._startup.params)]
            out.append(Lookup(request, "session", summary_of(request), True,
                              LookupContext(private={"kind": "login"})))
        elif isinstance(msg, fe.CancelRequest):
            # the engine finds the live connection this key was handed to (``identity``)
            out.append(Interrupt(backend_key(msg.process_id, msg.secret_key)))
            self.close_after = True
        elif isinstance(msg, fe.Terminate):
            self.close_after = True
            self.close()
        elif self._copy is not None:
            self._copy_message(msg, out)
        elif isinstance(msg, (fe.CopyData, fe.CopyDone, fe.CopyFail)):
            # COPY data sent before the CopyInResponse arrived (asyncpg streams it right
            # after the Query): it belongs to the last request, answered when that is.
            if self._last_lookup is not None:
                self._last_lookup.context.private.setdefault("copy", []).append(msg)
        elif isinstance(msg, (fe.Query, fe.FunctionCall)):
            if self._batch:  # extended messages without Sync: answered before the Query
                self._finish_batch(out)
            if self._skip:
                return  # the server discards everything up to Sync
            item = self.names.request_item(msg)[0]
            kind = "query" if isinstance(msg, fe.Query) else "function"
            rollback = isinstance(msg, fe.Query) and _is_rollback(msg.query)
            request = [item]
            found = traits(request)
            private = {"kind": kind, "rollback": rollback,
                       "backend_pid": is_backend_pid_sql(getattr(msg, "query", None)),
                       "changes_transaction": found.changes_transaction}
            text = item.get("Query")  # the pool keys a statement's text once (not a FunctionCall)
            same_as = text if isinstance(text, str) and len(text) <= _MAX_SAME_AS else None
            out.append(Lookup(request, found.lifetime, found.summary, True,
                              LookupContext(repeat_last=found.repeats, handshake=rollback,
                                            timed=found.sleeps, private=private, same_as=same_as)))
        elif isinstance(msg, (fe.Parse, fe.Bind, fe.Describe, fe.Execute, fe.Close, fe.Sync,
                              fe.Flush)):
            self._extended(msg, out)
        # PasswordMessage & co. never asked for, stray CopyData: ignored like a server

    def _extended(self, msg: Any, out: list[Lookup | Reply | Interrupt]) -> None:
        if self._skip and not isinstance(msg, fe.Sync):
            return
        if self._skip:  # the Sync that ends the skipping
            self._skip = False
            out.append(LazyReply(lambda: self._encode([be.ReadyForQuery(self.tx)])))
            return
        item, ref = self.names.request_item(msg)
        self._batch.append((msg, ref))
        self._items.append(item)
        if isinstance(msg, (fe.Sync, fe.Flush)):
            self._finish_batch(out)

    def _finish_batch(self, out: list[Lookup | Reply | Interrupt]) -> None:
        batch, items = self._batch, self._items
        self._batch, self._items = [], []
        if is_trivial(items):
            out.append(LazyReply(lambda: self._encode(self._trivial(batch))))
            return
        out.append(self._batch_lookup(batch, items))

    def _batch_lookup(self, batch: list[tuple[Any, Any]], items: list[Readable],
                      tentative: bool = False) -> Lookup:
        """Extended messages as one lookup. ``tentative``: they end with an Execute and no
        Sync/Flush has come (yet): a server runs them at once but answers only when it
        flushes - at an error (``elog.c`` flushes every ErrorResponse), a full buffer, or
        the Sync. A recording of just these messages (the server answered them before any
        Sync) is served now; else nothing happens and more messages extend the batch."""
        found = traits(items)
        return Lookup(items, found.lifetime, found.summary, True,
                      LookupContext(repeat_last=found.repeats, tentative=tentative, timed=found.sleeps,
                                    private={"kind": "batch", "messages": batch,
                                             "changes_transaction": found.changes_transaction}))

    def _trivial(self, batch: list[tuple[Any, Any]]) -> list[Any]:
        answers: list[Any] = []
        for msg, _ in batch:
            if isinstance(msg, fe.Parse):
                answers.append(be.ParseComplete())
            elif isinstance(msg, fe.Close):
                answers.append(be.CloseComplete())
            elif isinstance(msg, fe.Sync):
                answers.append(be.ReadyForQuery(self.tx))
        return answers

    def _copy_message(self, msg: Any, out: list[Lookup | Reply | Interrupt]) -> None:
        """COPY FROM STDIN: the server reads the data and answers at CopyDone/CopyFail.
        In an extended-protocol COPY the ReadyForQuery answers the Sync the client sends
        after CopyDone (a trivial batch here), so only the COPY's own answer is sent."""
        copy = self._copy
        assert copy is not None
        if isinstance(msg, fe.CopyDone):
            self._copy = None
            rendered, _ = resume_copy(copy["remaining"], live_status=copy["live_status"], tx=self.tx,
                                      until_execute_end=copy["extended"])
            self.tx = rendered.tx
            self.close_after = self.close_after or rendered.fatal
            out.append(Reply(self._encode(rendered.messages)))
        elif isinstance(msg, fe.CopyFail):
            self._copy = None
            answer: list[Any] = [error_response("57014", f"COPY from stdin failed: {msg.message}")]
            self.tx = status_after_error(self.tx)
            if not copy["extended"]:
                answer.append(be.ReadyForQuery(self.tx))
            out.append(Reply(self._encode(answer)))
        # CopyData: consumed; Sync/Flush during COPY IN: ignored (spec, "COPY Operations")

    # --- answers -----------------------------------------------------------------------

    def respond(self, lookup: Lookup, responses: list[Readable]) -> bytes:
        kind = lookup.context.private.get("kind")
        if kind in ("startup", "login"):
            self._started_as = lookup.context.connection
        elif self.backend is not None and lookup.context.connection is not None and not lookup.context.repeat:
            self.backends.served(self.backend, lookup.context.connection)  # not a shared repeat
        if kind == "startup":
            asked = _password_request(responses)
            if asked is not None:  # the recording answered a password: ask for it too
                self._asked = True
                self._negotiated = next((m for m in asked if isinstance(m, be.NegotiateProtocolVersion)),
                                        None)
                return self._encode(asked)
            if any(item_name(r) == "AuthenticationSASL" for r in responses):
                # the server asked for a password (SCRAM): so does replay, in cleartext to
                # this local proxy, since a SCRAM exchange needs the server's keys; any
                # password is taken (nothing recorded can check it)
                self._after_password = responses
                return self._encode([be.AuthenticationCleartextPassword()])
            return self._encode(self._handshake(responses))
        if kind == "login":
            return self._encode(self._handshake(responses))
        if kind == "batch" and self._skip:
            return self._skipped(lookup)
        if lookup.context.tentative:  # answered: the batch it holds is done
            self._batch, self._items = [], []
        live_status = _live_status(lookup)
        terminated = terminated_pids(lookup.request)
        key = None if terminated else self._answer_key(lookup, responses, live_status)
        known = _RENDERED.get(key) if key is not None else None
        if known is not None:
            return self._again(lookup, known)
        try:
            recorded = self._recorded(responses)
            if kind == "batch":
                rendered = render_batch(lookup.context.private["messages"], recorded,
                                        live_status=live_status, tx=self.tx, pid_row=self._pid_row)
            else:
                rendered = render_simple(recorded, live_status=live_status, tx=self.tx)
                if lookup.context.private.get("backend_pid"):
                    rendered.messages = [self._pid_row(m) if isinstance(m, be.DataRow) else m
                                         for m in rendered.messages]
        except Mismatch as exc:
            return self.miss(lookup, f"the recorded answer does not fit: {exc}")
        self._terminating(lookup, rendered, terminated)
        data = self._finish(lookup, rendered)
        if key is not None and not rendered.fatal and rendered.paused is None:
            if len(_RENDERED) >= _MAX_ANSWERS:
                _RENDERED.clear()
            _RENDERED[key] = _Answer(data, rendered.tx, rendered.errored, tuple(rendered.described))
        return data

    def _answer_key(self, lookup: Lookup, responses: list[Readable], live_status: bool) -> tuple[Any, ...] | None:
        """What a recorded answer's rendering depends on (``_RENDERED``): the live messages'
        kinds, the transaction status, and the answer itself (marshalled); None for an
        answer that depends on more (a pid, a notification's sender) or is large."""
        private = lookup.context.private
        if private["kind"] == "batch":
            messages = private["messages"]
            shape: Any = tuple([(type(m), getattr(m, "kind", None)) for m, _ in messages])
            if any(isinstance(m, fe.Execute) and is_backend_pid_sql(getattr(ref, "query", None))
                   for m, ref in messages):
                return None
        elif private.get("backend_pid"):
            return None
        else:
            shape = private["kind"]
        try:  # equal bytes, equal answers: marshal takes only exact types (True is not 1)
            text = marshal.dumps(responses)
        except ValueError:  # not plain data (readable data is): rendered each time
            return None
        if len(text) > _MAX_RENDERED or b"NotificationResponse" in text:
            return None
        return shape, self.tx, live_status, text

    def _again(self, lookup: Lookup, known: _Answer) -> bytes:
        """An answer rendered before (``_RENDERED``): what ``_finish`` did with it then."""
        messages = lookup.context.private.get("messages", ())
        for k, params, rows in known.described:
            learn_description(messages[k][1], params, rows)
        self.tx = known.tx
        if known.errored:
            self._skip = True
        return known.data

    def _terminating(self, lookup: Lookup, rendered: Rendered, live: list[int]) -> None:
        """``pg_terminate_backend(pid)`` (``identity``, ``live``: the pids the request
        names): what the recorded call did to its victim goes to the live connection of the
        live pid; terminating itself, this connection gets the FATAL and the close after
        the ``t`` row, as from a server."""
        if len(live) != 1 or self.backend is None:
            return
        recorded = terminated_pids(lookup.context.recorded)
        victim = self.backends.recorded_as(recorded[0]) if len(recorded) == 1 else None
        if victim is not None and (identity := self.backends.identity(live[0])) is not None:
            lookup.context.ends = (victim, identity)
        rows = [i for i, m in enumerate(rendered.messages) if isinstance(m, be.DataRow)]
        if live[0] == self.backend.pid and not rendered.fatal and rows:
            rendered.messages = rendered.messages[:rows[-1] + 1] + [
                error_response("57P01", "terminating connection due to administrator command", "FATAL")]
            rendered.fatal = True

    def _recorded(self, responses: list[Readable]) -> list[Any]:
        """The recorded answers as messages; a notification names the live connection
        that plays its recorded sender (``identity``)."""
        out = []
        for r in responses:
            name = item_name(r)
            if name in _AUTH_NAMES:
                continue
            msg = response_message(r)
            if name == "NotificationResponse":
                msg = be.NotificationResponse(self.backends.live_pid(msg.process_id), msg.channel,
                                              msg.payload)
            out.append(msg)
        return out

    def _pid_row(self, row: be.DataRow) -> be.DataRow:
        """A row of ``SELECT pg_backend_pid()``: this connection's pid; the recorded one
        says which recorded backend it plays (``identity``)."""
        found = row_pid(row)
        if self.backend is None or found is None:
            return row
        self.backends.reveal(self.backend, found[0])
        return with_pid(row, self.backend.pid, found[1])

    def close(self) -> None:
        """The connection ended: its pid is free again."""
        if self.backend is not None:
            self.backends.release(self.backend)

    def _finish(self, lookup: Lookup, rendered: Rendered) -> bytes:
        self.tx = rendered.tx
        if rendered.fatal:
            self.close_after = True  # the server ended the session (pg_terminate_backend)
        data = self._encode(rendered.messages)
        if rendered.paused is not None:
            self._copy = {"remaining": rendered.paused, "live_status": _live_status(lookup),
                          "extended": lookup.context.private.get("kind") == "batch"}
            early: list[Lookup | Reply | Interrupt] = []
            for msg in lookup.context.private.pop("copy", []):
                if self._copy is not None:
                    self._copy_message(msg, early)
            data += b"".join(r.data for r in early if isinstance(r, Reply))
        elif rendered.errored:
            self._skip = True
        return data

    def _skipped(self, lookup: Lookup) -> bytes:
        """A batch sent before the client saw the error of an earlier one: the server
        ignores it up to its Sync."""
        if any(isinstance(m, fe.Sync) for m, _ in lookup.context.private["messages"]):
            self._skip = False
            return self._encode([be.ReadyForQuery(self.tx)])
        return b""

    def push(self, responses: list[Readable]) -> bytes:
        """Messages the server sent on its own (NotificationResponse, a FATAL before it
        hung up), as recorded; a notification names the live player of its sender."""
        return self._encode(self._recorded(responses))

    def miss(self, lookup: Lookup, reason: str) -> bytes:
        kind = lookup.context.private.get("kind")
        if kind == "startup":
            return self._encode(self._handshake([]))
        if kind == "login":  # no recorded login with these credentials: refused, as a server
            self.close_after = True
            user = self._startup.params.get("user", "") if self._startup else ""
            return self._encode([error_response(
                "28P01", f'password authentication failed for user "{user}" (trproxy: no '
                         f"recording of {lookup.summary} with this password: {reason})", "FATAL")])
        if kind == "batch" and self._skip:
            return self._skipped(lookup)
        if lookup.context.private.get("rollback"):
            # a ROLLBACK never recorded (the app's retry loop after an injected error):
            # a server answers it the same way in any state
            self.tx = "I"
            return self._encode([be.CommandComplete("ROLLBACK"), be.ReadyForQuery("I")])
        what = summarize(lookup.summary, 200) if lookup.summary else "this request"
        return self._failed(lookup, error_response("XX000", f"trproxy: no recording for {what}: {reason}"))

    def fault(self, lookup: Lookup, failure: Failure) -> bytes:
        """The request fails with ``failure.error`` as its SQLSTATE (fault injection); a
        connection-class one (08xxx, 57P0x) is FATAL and the server hangs up after it."""
        kind = lookup.context.private.get("kind")
        if kind == "batch" and self._skip:
            return self._skipped(lookup)
        code = failure.error.upper()
        fatal = code.startswith("08") or code.startswith("57P0") or kind in ("startup", "login")
        message = failure.message or FAULT_MESSAGES.get(code, f"trproxy: injected fault {code}")
        if fatal:
            self.close_after = True
            return self._encode([error_response(code, message, "FATAL")])
        return self._failed(lookup, error_response(code, message))

    def cancelled(self, lookup: Lookup) -> bytes:
        """What the server answers a query that a CancelRequest ended (a ``hang`` fault
        released by the client's cancel): 57014, then on as after any error."""
        if lookup.context.private.get("kind") == "batch" and self._skip:
            return self._skipped(lookup)
        return self._failed(lookup, error_response("57014", "canceling statement due to user request"))

    def _failed(self, lookup: Lookup, error: be.ErrorResponse) -> bytes:
        """``error`` in place of the answer, then as a server goes on after an error:
        ReadyForQuery, or (a batch that ended at Flush) skipping to the next Sync."""
        kind = lookup.context.private.get("kind")
        if self.tx == "T":
            self.tx = "E"
        answer: list[Any] = [error]
        ends_with_sync = kind != "batch" or any(
            isinstance(m, fe.Sync) for m, _ in lookup.context.private.get("messages", []))
        if ends_with_sync:
            answer.append(be.ReadyForQuery(self.tx))
        else:
            self._skip = True
        return self._encode(answer)

    def _handshake(self, responses: list[Readable]) -> list[Any]:
        """AuthenticationOk + ParameterStatus + BackendKeyData + ReadyForQuery."""
        recorded = []
        for r in responses:
            if item_name(r) in _AUTH_NAMES:
                continue
            try:
                recorded.append(response_message(r))
            except Exception:  # noqa: BLE001 - an unreadable recorded item: defaults instead
                continue
        fatal = next((m for m in recorded if isinstance(m, be.ErrorResponse)), None)
        if fatal is not None:  # the recorded login failed: fail the same way
            self.close_after = True
            ok = [m for m in recorded if isinstance(m, be.AuthenticationOk)]
            return ok + [fatal]
        startup = self._startup or fe.StartupMessage()
        live = startup.params
        # NegotiateProtocolVersion comes before authentication (spec, "Start-up")
        out: list[Any] = [m for m in recorded if isinstance(m, be.NegotiateProtocolVersion)]
        out.append(be.AuthenticationOk())
        statuses = [m for m in recorded if isinstance(m, be.ParameterStatus)]
        if not statuses:
            defaults = dict(DEFAULT_PARAMETERS, session_authorization=live.get("user", ""))
            statuses = [be.ParameterStatus(k, v) for k, v in defaults.items()]
        out += reflect(statuses, live_settings(live))
        out += [m for m in recorded if isinstance(m, be.NoticeResponse)]
        key = next((m for m in recorded if isinstance(m, be.BackendKeyData)), None)
        self.close()  # a second startup on one connection cannot happen; be safe
        negotiated = next((m for m in out if isinstance(m, be.NegotiateProtocolVersion)), self._negotiated)
        minor = negotiated.newest_minor if negotiated else startup.protocol_version & 0xFFFF
        self.backend = self.backends.claim(key.process_id if key else None, 32 if minor >= 2 else 4)
        if key is not None and self._started_as is not None:
            self.backends.started(self._started_as, key.process_id)
        self.identity = backend_key(self.backend.pid, self.backend.key)
        out.append(be.BackendKeyData(self.backend.pid, self.backend.key))
        self.tx = "I"
        out.append(be.ReadyForQuery("I"))
        return out


@by_shape
def _is_rollback(sql: str) -> bool:
    return " ".join(sql.rstrip().rstrip(";").split()).upper() in (
        "ROLLBACK", "ABORT", "ROLLBACK WORK", "ROLLBACK TRANSACTION")


def _live_status(lookup: Lookup) -> bool:
    """Whether the answer carries the live transaction status (``render``): the request
    cannot change it (session lifetime, or no transaction control in it: ``traits``)."""
    return lookup.lifetime == "session" or not lookup.context.private["changes_transaction"]


def _password_request(responses: list[Readable]) -> list[Any] | None:
    """What to send when a startup's recorded answer ends with a cleartext/MD5 password
    request (a recording split at the password, ``recorder``): NegotiateProtocolVersion
    and the request; else None."""
    names = [item_name(r) for r in responses]
    if not names or names[-1] not in ("AuthenticationCleartextPassword", "AuthenticationMD5Password"):
        return None
    try:
        return [response_message(r) for r, name in zip(responses, names, strict=True)
                if name not in ("SSLResponse", "GSSENCResponse")]
    except Exception:  # noqa: BLE001 - a hand-edited salt: no password step
        return None


def check_fault(failure: Failure) -> None:
    """A SQLSTATE is five digits or upper-case letters (``40001``, ``57P01``)."""
    code = failure.error.upper()
    if len(code) != 5 or not code.isalnum() or not code.isascii():
        raise ValueError(f"a Postgres error is a SQLSTATE (5 characters, e.g. 40001), "
                         f"not {failure.error!r}")

"""``MySQLCodec``: the sans-I/O state machine for one connection, both directions.

A server's answer can only be read knowing the command it answers (a resultset, a
prepared statement's metadata, one OK) and the capabilities both sides agreed on
(CLIENT_DEPRECATE_EOF, CLIENT_SESSION_TRACK...), so the codec follows the whole
connection: the greeting, the authentication exchange, then commands, each queued until
its answer is complete (clients may pipeline: COM_STMT_CLOSE gets no answer at all).

``feed(direction, data)`` then ``next_event()`` gives ``(direction, message, done)``:
``message`` is a one-key dict (``{"COM_QUERY": "SELECT 1"}``, ``{"ResultSet": {...}}``,
see ``packets``); ``done`` is True on the server message that completes the answer to
the oldest pending command (or ends authentication). A replayer feeds client bytes only
and tells the codec what its own answers did (``authenticated``, ``add_statement``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..base import NEED_DATA, DecodeError, Direction, ProtocolError, UnexpectedMessage
from . import packets as p
from .wire import (
    CLIENT_COMPRESS,
    CLIENT_DEPRECATE_EOF,
    CLIENT_QUERY_ATTRIBUTES,
    COMMANDS,
    DEFAULT_MAX_PACKET,
    SERVER_MORE_RESULTS_EXISTS,
    SERVER_STATUS_CURSOR_EXISTS,
    PacketBuffer,
    Reader,
)

NO_ANSWER = {"COM_STMT_CLOSE", "COM_STMT_SEND_LONG_DATA", "COM_QUIT"}  # the server sends nothing
UNSUPPORTED = {"COM_STMT_FETCH": "server-side cursors (COM_STMT_FETCH)"}


@dataclass
class Statement:
    """A prepared statement as the connection knows it."""

    sql: str
    params: int
    columns: list[Any] = field(default_factory=list)
    types: list[tuple[str, bool]] | None = None  # parameter types last bound
    long_data: dict[int, bytes] = field(default_factory=dict)


@dataclass
class _Pending:
    """A command waiting for its answer, and how far that answer got."""

    command: str
    sql: str = ""  # COM_STMT_PREPARE: the statement being prepared
    statement: Statement | None = None  # COM_STMT_EXECUTE
    state: str = "start"
    count: int = 0
    columns: list[Any] = field(default_factory=list)
    rows: list[Any] = field(default_factory=list)
    prepared: dict[str, Any] | None = None
    converters: list[Any] | None = None  # text rows: per column (``packets.text_converters``)
    param_defs: list[Any] = field(default_factory=list)


class MySQLCodec:
    def __init__(self, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        self._in = {Direction.CLIENT: PacketBuffer(max_packet), Direction.SERVER: PacketBuffer(max_packet)}
        self.phase = "greeting"  # -> "auth" -> "command" (or "closed" after an ERR)
        self.server_caps = 0
        self.caps = 0  # negotiated: what the client asked for of what the server offered
        self.scramble = b""
        self.auth_plugin = ""
        self.status = 0
        self.statements: dict[int, Statement] = {}
        self.last_statement: int | None = None
        self.pending: deque[_Pending] = deque()
        self.seq = 0  # the sequence id of the last client packet
        self._responded = False  # the HandshakeResponse (or SSLRequest) arrived
        self._events: deque[tuple[Direction, dict[str, Any], bool]] = deque()

    # --- API ---------------------------------------------------------------------------------

    def feed(self, direction: Direction, data: bytes) -> None:
        if not data:
            return
        buf = self._in[direction]
        buf.feed(data)
        while (packet := buf.next()) is not None:
            seq, payload = packet
            if direction is Direction.CLIENT:
                self.seq = seq
                self._client(payload)
            else:
                self._server(payload)

    def next_event(self) -> Any:
        return self._events.popleft() if self._events else NEED_DATA

    def pending_bytes(self, direction: Direction) -> int:
        return self._in[direction].pending()

    def authenticated(self, caps: int) -> None:
        """(Replay) the replayer accepted the login: commands follow."""
        self.caps, self.phase = caps, "command"

    def add_statement(self, statement_id: int, statement: Statement) -> None:
        self.statements[statement_id] = statement
        self.last_statement = statement_id

    def statement(self, statement_id: int) -> Statement:
        if statement_id == 0xFFFFFFFF and self.last_statement is not None:
            statement_id = self.last_statement  # MariaDB: "the one just prepared"
        found = self.statements.get(statement_id)
        if found is None:
            raise UnexpectedMessage(f"statement {statement_id} was never prepared")
        return found

    # --- client ------------------------------------------------------------------------------

    def _emit(self, direction: Direction, message: dict[str, Any], done: bool = False) -> None:
        self._events.append((direction, message, done))

    def _client(self, payload: bytes) -> None:
        if self.phase == "greeting":
            raise UnexpectedMessage("the client spoke before the server's greeting")
        if self.phase == "auth":
            if not self._responded:
                self._responded = True
                response = p.parse_handshake_response(payload)
                self.caps = response["capabilities"] & (self.server_caps or response["capabilities"])
                if response.get("ssl_request"):  # TLS now; the HandshakeResponse inside it
                    self._responded = False
                    self._emit(Direction.CLIENT, {"SSLRequest": response})
                    return
                if self.caps & CLIENT_COMPRESS:
                    raise ProtocolError("the compressed protocol was negotiated: it cannot be followed")
                self._emit(Direction.CLIENT, {"HandshakeResponse": response})
            else:
                self._emit(Direction.CLIENT, {"AuthData": payload})
            return
        if not payload:
            raise DecodeError("empty command packet")
        name = COMMANDS.get(payload[0])
        if name is None:
            raise ProtocolError(f"unknown command 0x{payload[0]:02x}")
        if name in UNSUPPORTED:
            raise ProtocolError(f"{UNSUPPORTED[name]} is not supported")
        if name == "COM_CHANGE_USER":  # a new authentication exchange, as at connect
            self.phase, self._responded = "auth", True
            self.statements.clear()
            self._emit(Direction.CLIENT, {name: p.parse_change_user(payload, self.caps)})
            return
        message, pending = self._command(name, payload)
        if pending is not None:
            self.pending.append(pending)
        self._emit(Direction.CLIENT, message)

    def _command(self, name: str, payload: bytes) -> tuple[dict[str, Any], _Pending | None]:
        body = payload[1:]
        if name == "COM_QUERY":
            return {name: p.text(self._query_text(body))}, _Pending(name)
        if name == "COM_STMT_PREPARE":
            sql = p.text(body)
            return {name: sql}, _Pending(name, sql=sql)
        if name == "COM_STMT_EXECUTE":
            r = Reader(payload, 1)
            sid = r.u32()
            stmt = self.statement(sid)
            execute, stmt.types = p.parse_execute(payload, stmt.params, stmt.types, stmt.long_data)
            stmt.long_data = {}
            return {name: {"statement": sid, "sql": stmt.sql, **execute}}, _Pending(name, statement=stmt)
        if name in ("COM_STMT_CLOSE", "COM_STMT_RESET"):
            sid = Reader(payload, 1).u32()
            if name == "COM_STMT_CLOSE":
                self.statements.pop(sid, None)
                return {name: sid}, None
            stmt = self.statement(sid)
            stmt.long_data = {}
            return {name: {"statement": sid, "sql": stmt.sql}}, _Pending(name)
        if name == "COM_STMT_SEND_LONG_DATA":
            r = Reader(payload, 1)
            sid, param = r.u32(), r.u16()
            stmt = self.statement(sid)
            stmt.long_data[param] = stmt.long_data.get(param, b"") + r.rest()
            return {name: {"statement": sid, "param": param}}, None
        if name == "COM_INIT_DB":
            return {name: p.text(body)}, _Pending(name)
        if name == "COM_FIELD_LIST":
            r = Reader(body)
            table = p.text(r.nul_str(lenient=True))
            return {name: {"table": table, "wildcard": p.text(r.rest())}}, _Pending(name)
        if name == "COM_SET_OPTION":
            return {name: Reader(body).u16()}, _Pending(name)
        if name == "COM_QUIT":
            return {name: {}}, None
        return {name: {}}, _Pending(name)  # COM_PING, COM_RESET_CONNECTION, COM_STATISTICS

    def _query_text(self, body: bytes) -> bytes:
        if not self.caps & CLIENT_QUERY_ATTRIBUTES:
            return body
        r = Reader(body)
        count = r.lenenc_int()
        r.lenenc_int()  # parameter set count: always 1
        if count:
            raise ProtocolError("query attributes are not supported")
        return r.rest()

    # --- server ------------------------------------------------------------------------------

    def _server(self, payload: bytes) -> None:
        if not payload:
            raise DecodeError("empty server packet")
        if self.phase == "greeting":
            if p.is_err(payload):
                self._emit(Direction.SERVER, {"ERR": p.parse_err(payload)}, True)
                self.phase = "closed"
                return
            greeting, self.scramble = p.parse_greeting(payload)
            self.server_caps, self.status = greeting["capabilities"], greeting["status"]
            self.auth_plugin = greeting["auth_plugin"]
            self.phase = "auth"
            self._emit(Direction.SERVER, {"Greeting": greeting}, True)
            return
        if self.phase == "auth":
            self._auth_reply(payload)
            return
        if self.phase != "command" or not self.pending:
            if p.is_err(payload):  # e.g. a server shutting down says why, then hangs up
                self._emit(Direction.SERVER, {"ERR": p.parse_err(payload)}, False)
                return
            raise UnexpectedMessage("the server sent a packet with no command pending")
        pending = self.pending[0]
        if pending.command in ("COM_QUERY", "COM_STMT_EXECUTE"):
            self._result(pending, payload)
        elif pending.command == "COM_STMT_PREPARE":
            self._prepared(pending, payload)
        elif pending.command == "COM_FIELD_LIST":
            if p.is_err(payload):
                self._answer({"ERR": p.parse_err(payload)})
            elif p.is_eof(payload):
                self._answer({"Columns": pending.columns})
            else:
                pending.columns.append(p.parse_column(payload, self.caps))
        elif pending.command == "COM_STATISTICS":
            self._answer({"Statistics": p.blob(payload)} if not p.is_err(payload)
                         else {"ERR": p.parse_err(payload)})
        else:
            self._answer(self._ok_err_eof(payload))

    def _auth_reply(self, payload: bytes) -> None:
        head = payload[0]
        if head == 0x00:
            ok = p.parse_ok(payload, self.caps)
            self.status = ok["status"]
            self.phase = "command"
            self._emit(Direction.SERVER, {"OK": ok}, True)
        elif head == 0xFF:
            self.phase = "closed"
            self._emit(Direction.SERVER, {"ERR": p.parse_err(payload)}, True)
        elif head == 0xFE:
            r = Reader(payload, 1)
            plugin = p.text(r.nul_str(lenient=True))
            self.scramble = r.rest().rstrip(b"\0")
            self.auth_plugin = plugin
            self._emit(Direction.SERVER, {"AuthSwitchRequest": {"plugin": plugin}})
        elif head == 0x01:
            self._emit(Direction.SERVER, {"AuthMoreData": p.blob(payload[1:])})
        else:
            raise UnexpectedMessage(f"packet 0x{head:02x} during authentication")

    def _ok_err_eof(self, payload: bytes) -> dict[str, Any]:
        if payload[0] == 0x00:
            ok = p.parse_ok(payload, self.caps)
            self.status = ok["status"]
            return {"OK": ok}
        if p.is_err(payload):
            return {"ERR": p.parse_err(payload)}
        if p.is_eof(payload):
            return {"EOF": p.parse_eof(payload)}
        raise UnexpectedMessage(f"packet 0x{payload[0]:02x} where OK or ERR was expected")

    def _answer(self, message: dict[str, Any], more: bool = False) -> None:
        if not more:
            self.pending.popleft()
        self._emit(Direction.SERVER, message, not more)

    def _result(self, q: _Pending, payload: bytes) -> None:
        deprecate = self.caps & CLIENT_DEPRECATE_EOF
        if q.state == "start":
            if payload[0] == 0x00 or p.is_err(payload):
                message = self._ok_err_eof(payload)
                more = bool("OK" in message and message["OK"]["status"] & SERVER_MORE_RESULTS_EXISTS)
                self._answer(message, more)
                return
            if payload[0] == 0xFB:
                raise ProtocolError("LOAD DATA LOCAL INFILE is not supported")
            r = Reader(payload)
            q.count = r.lenenc_int()
            metadata = r.u8() if r.left() else 1  # MariaDB's metadata-follows flag
            q.columns, q.rows, q.converters = [], [], None
            if not metadata:
                if q.statement is None:
                    raise UnexpectedMessage("a resultset without its column definitions")
                q.columns = list(q.statement.columns)
                q.state = "rows" if deprecate else "columns_eof"
            else:
                q.state = "columns"
            return
        if q.state == "columns":
            q.columns.append(p.parse_column(payload, self.caps))
            if len(q.columns) == q.count:
                q.state = "rows" if deprecate else "columns_eof"
                if q.statement is not None:
                    q.statement.columns = list(q.columns)
            return
        if q.state == "columns_eof":
            if not p.is_eof(payload):
                raise UnexpectedMessage("no EOF after the column definitions")
            if p.parse_eof(payload)["status"] & SERVER_STATUS_CURSOR_EXISTS:
                raise ProtocolError("server-side cursors are not supported")
            q.state = "rows"
            return
        binary = q.command == "COM_STMT_EXECUTE"
        result: dict[str, Any] = {"columns": q.columns}
        if binary:
            result["binary"] = True
        if p.is_err(payload):
            result.update(rows=q.rows, error=p.parse_err(payload))
            q.state = "start"
            self._answer({"ResultSet": result})
            return
        if p.is_eof(payload):
            end = p.parse_ok(payload, self.caps) if deprecate else p.parse_eof(payload)
            self.status = end["status"]
            result["rows"] = q.rows
            result.update({k: v for k, v in end.items() if v or k == "status"})
            q.state = "start"
            self._answer({"ResultSet": result}, bool(end["status"] & SERVER_MORE_RESULTS_EXISTS))
            return
        if binary:
            if payload[0] != 0:
                raise DecodeError(f"binary row header 0x{payload[0]:02x}")
            q.rows.append(p.parse_binary_row(payload, q.columns))
        else:
            if q.converters is None:
                q.converters = p.text_converters(q.columns)
            q.rows.append(p.parse_text_row(payload, q.columns, q.converters))

    def _prepared(self, q: _Pending, payload: bytes) -> None:
        deprecate = self.caps & CLIENT_DEPRECATE_EOF
        if q.state == "start":
            if p.is_err(payload):
                self._answer({"ERR": p.parse_err(payload)})
                return
            if payload[0] != 0:
                raise UnexpectedMessage(f"packet 0x{payload[0]:02x} answering COM_STMT_PREPARE")
            q.prepared = p.parse_prepare_ok(payload)
            q.state = "params"
        elif q.state in ("params", "columns"):
            target = q.param_defs if q.state == "params" else q.columns
            target.append(p.parse_column(payload, self.caps))
        elif q.state in ("params_eof", "columns_eof"):
            if not p.is_eof(payload):
                raise UnexpectedMessage("no EOF after the statement's definitions")
            q.state = "columns" if q.state == "params_eof" else "done"
        assert q.prepared is not None
        # advance past finished parts (a part with no definitions has no EOF either)
        while True:
            if q.state == "params" and len(q.param_defs) == q.prepared["params"]:
                q.state = "params_eof" if q.param_defs and not deprecate else "columns"
            elif q.state == "columns" and len(q.columns) == q.prepared["columns"]:
                q.state = "columns_eof" if q.columns and not deprecate else "done"
            else:
                break
        if q.state == "done":
            sid = q.prepared["statement"]
            self.add_statement(sid, Statement(q.sql, q.prepared["params"], list(q.columns)))
            self._answer({"PrepareOK": {"statement": sid, "params": q.param_defs,
                                        "columns": q.columns, "warnings": q.prepared["warnings"]}})

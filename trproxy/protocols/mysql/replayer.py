"""Replay mode: play the MySQL server for one client connection, from recordings.

The server speaks first: ``opened()`` asks for the recorded greeting (a session
``Lookup`` of ``{"Connect": {}}``; a miss sends a default one, unreported), sent with
this connection's own id and a fresh scramble and without the capabilities replay cannot
play (compression, MariaDB's metadata cache: ``wire.REPLAY_WITHHELD``; TLS unless the
recording was TLS and the proxy intercepts it: ``scheme="https"``, and then the proxy
answers the client's SSLRequest itself and this replayer reads the plaintext inside). The login is
a session ``Lookup`` by user and database; its recorded authentication exchange is played
step by step (an AuthSwitchRequest carries the live scramble, caching_sha2_password's
fast-auth byte or full-auth public key as recorded) and whatever the client proves is
accepted: the scramble is random, so no recorded proof could be checked. A miss logs in.

Commands become ``Lookup`` s rendered with the live connection's capabilities
(CLIENT_DEPRECATE_EOF decides EOF packets vs OK-with-EOF-header, CLIENT_SESSION_TRACK the
OK layout). A prepared statement gets this connection's own id, which later executions
use; COM_PING, COM_RESET_CONNECTION, COM_STMT_RESET, COM_SET_OPTION and COM_STMT_CLOSE are
answered here; COM_QUIT closes. A miss answers ERR 1105 (HY000) "trproxy: no recording
for ...", which drivers raise as an error and the connection stays usable.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

from ..base import NEED_DATA, Direction, Failure, Lookup, LookupContext, Readable, Reply, unblob
from . import packets as p
from .codec import MySQLCodec, Statement
from .matching import lifetime_of, repeats, summary_of
from .recorder import recorded_request
from .wire import (
    CLIENT_DEPRECATE_EOF,
    CLIENT_SSL,
    REPLAY_WITHHELD,
    SERVER_STATUS_AUTOCOMMIT,
    frames,
    lenenc,
)

DEFAULT_GREETING = {
    "server_version": "5.5.5-10.11.0-MariaDB-trproxy-replay",
    "capabilities": 0x1F_F7FFFE,  # MariaDB 10.11's, CLIENT_MYSQL unset
    "charset": 45, "status": SERVER_STATUS_AUTOCOMMIT, "auth_plugin": "mysql_native_password",
}
_CONNECTION_IDS = itertools.count(1)
# what MariaDB says with the errors fault injection is most used for: (SQLSTATE, message)
FAULT_ERRORS = {
    1205: ("HY000", "Lock wait timeout exceeded; try restarting transaction"),
    1213: ("40001", "Deadlock found when trying to get lock; try restarting transaction"),
    1040: ("08004", "Too many connections"),
    1053: ("08S01", "Server shutdown in progress"),
    1927: ("70100", "Connection was killed"),
    1969: ("70100", "Query execution was interrupted (max_statement_time exceeded)"),
}
_FATAL = {1040, 1053, 1927}  # the server hangs up after these
FAST_AUTH_SUCCESS = b"\x03"


def _scramble(connection_id: int) -> bytes:
    """20 printable bytes, different per connection (never checked: replay accepts any
    proof; derived, not random, to keep this module free of randomness)."""
    digest = hashlib.sha256(b"trproxy scramble %d" % connection_id).digest()
    return bytes(0x21 + b % 0x5E for b in digest[:20])


class MySQLReplayer:
    def __init__(self, *, scheme: str = "http", authority: str = "", blobs: object = None) -> None:
        self.codec = MySQLCodec()
        self.codec.phase = "auth"
        self.offer_tls = scheme == "https"  # the proxy intercepts the TLS a client asks for
        self.connection_id = next(_CONNECTION_IDS)
        self.scramble = _scramble(self.connection_id)
        self.close_after = False
        self._auth_steps: list[list[Readable]] = []  # recorded auth answers still to play
        self._next_id = 1

    # --- client bytes in -----------------------------------------------------------------------

    def opened(self) -> list[Lookup]:
        return [Lookup({"Connect": {}}, "session", "greeting",
                       context=LookupContext(handshake=True, private={"kind": "greeting"}))]

    def feed(self, data: bytes) -> list[Lookup | Reply]:
        self.codec.feed(Direction.CLIENT, data)
        out: list[Lookup | Reply] = []
        while (event := self.codec.next_event()) is not NEED_DATA:
            self._client(event[1], out)
        return out

    def _client(self, message: dict[str, Any], out: list[Lookup | Reply]) -> None:
        name, value = next(iter(message.items()))
        seq = self.codec.seq + 1
        if name == "SSLRequest":
            self.close_after = True  # the greeting offered no TLS: a confused client
            return
        if name in ("HandshakeResponse", "COM_CHANGE_USER"):
            request = recorded_request(message)
            out.append(Lookup(request, "session", summary_of(request),
                              context=LookupContext(handshake=True, private={"kind": "login", "seq": seq})))
        elif name == "AuthData":
            if self._auth_steps:
                out.append(Reply(self._play_auth(seq)))
        elif name == "COM_QUIT":
            self.close_after = True
        elif name in ("COM_STMT_CLOSE", "COM_STMT_SEND_LONG_DATA"):
            pass
        elif name in ("COM_PING", "COM_RESET_CONNECTION", "COM_STMT_RESET"):
            ok = {"status": self.codec.status & ~0x08 or SERVER_STATUS_AUTOCOMMIT}
            out.append(Reply(frames([p.build_ok(ok, self.codec.caps)], seq)[0]))
        elif name == "COM_SET_OPTION":
            out.append(Reply(frames([self._end_packet({"status": self.codec.status})], seq)[0]))
        else:
            request = recorded_request(message)
            private = {"kind": name, "seq": seq, "sql": value if name == "COM_STMT_PREPARE" else ""}
            context = LookupContext(repeat_last=repeats(request), private=private)
            out.append(Lookup(request, lifetime_of(request), summary_of(request), context=context))

    # --- answers -------------------------------------------------------------------------------

    def respond(self, lookup: Lookup, responses: list[Readable]) -> bytes:
        kind, seq = lookup.context.private["kind"], lookup.context.private.get("seq", 0)
        if kind == "greeting":
            return self._greeting(responses[0] if responses else {"Greeting": DEFAULT_GREETING})
        if kind == "login":
            self._auth_steps = _auth_steps(responses)
            return self._play_auth(seq)
        return frames(self._render(responses, lookup.context.private.get("sql", "")), seq)[0]

    def miss(self, lookup: Lookup, reason: str) -> bytes:
        kind, seq = lookup.context.private["kind"], lookup.context.private.get("seq", 0)
        if kind == "greeting":
            return self._greeting({"Greeting": DEFAULT_GREETING})
        if kind == "login":
            self._auth_steps = [[{"OK": {"status": self.codec.status}}]]
            return self._play_auth(seq)
        err = {"code": 1105, "state": "HY000", "message": f"trproxy: no recording for {lookup.summary}: {reason}"}
        return frames([p.build_err(err)], seq)[0]

    def fault(self, lookup: Lookup, failure: Failure) -> bytes:
        """The request fails with ERR ``failure.error`` (fault injection); after a
        connection-ending one (1040, 1053, 1927) or a failed login the server hangs up."""
        code = int(failure.error)
        state, message = FAULT_ERRORS.get(code, ("HY000", f"trproxy: injected fault {code}"))
        kind, seq = lookup.context.private["kind"], lookup.context.private.get("seq", 0)
        if code in _FATAL or kind in ("greeting", "login"):
            self.close_after = True
        err = p.build_err({"code": code, "state": state, "message": failure.message or message})
        return frames([err], seq)[0]

    def _greeting(self, response: Readable) -> bytes:
        if "ERR" in response:
            self.close_after = True
            return frames([p.build_err(response["ERR"])], 0)[0]
        greeting = dict(response["Greeting"])
        withheld = REPLAY_WITHHELD & ~CLIENT_SSL if self.offer_tls else REPLAY_WITHHELD
        greeting["capabilities"] = int(greeting.get("capabilities", 0)) & ~withheld
        self.codec.server_caps = greeting["capabilities"]
        self.codec.status = int(greeting.get("status", SERVER_STATUS_AUTOCOMMIT))
        return frames([p.build_greeting(greeting, self.scramble, self.connection_id)], 0)[0]

    def _play_auth(self, seq: int) -> bytes:
        """The next step of the recorded authentication exchange (module doc)."""
        step = self._auth_steps.pop(0) if self._auth_steps else [{"OK": {"status": self.codec.status}}]
        payloads = []
        for message in step:
            name, value = next(iter(message.items()))
            if name == "AuthSwitchRequest":
                payloads.append(b"\xfe" + p.raw(str(value.get("plugin", ""))) + b"\0" + self.scramble + b"\0")
            elif name == "AuthMoreData":
                payloads.append(b"\x01" + unblob(value))
            elif name == "ERR":
                self.close_after = True
                payloads.append(p.build_err(value))
            else:
                ok = dict(value)
                self.codec.status = int(ok.get("status", self.codec.status))
                payloads.append(p.build_ok(ok, self.codec.caps))
                self.codec.authenticated(self.codec.caps)
        return frames(payloads, seq)[0]

    def _end_packet(self, end: Readable) -> bytes:
        """What ends a resultset: an EOF packet, or an OK with the EOF header."""
        if self.codec.caps & CLIENT_DEPRECATE_EOF:
            return p.build_ok(end, self.codec.caps, header=0xFE)
        return p.build_eof(int(end.get("warnings", 0)), int(end.get("status", 0)))

    def _render(self, responses: list[Readable], sql: str = "") -> list[bytes]:
        out: list[bytes] = []
        eof = not self.codec.caps & CLIENT_DEPRECATE_EOF
        for message in responses:
            name, value = next(iter(message.items()))
            if name == "OK":
                self.codec.status = int(value.get("status", self.codec.status))
                out.append(p.build_ok(value, self.codec.caps))
            elif name == "ERR":
                out.append(p.build_err(value))
            elif name == "EOF":
                out.append(p.build_eof(int(value.get("warnings", 0)), int(value.get("status", 0))))
            elif name == "Statistics":
                out.append(unblob(value))
            elif name == "Columns":
                out += [p.build_column(c, self.codec.caps) for c in value]
                out.append(p.build_eof(0, self.codec.status))
            elif name == "PrepareOK":
                out += self._prepared(value, eof, sql)
            elif name == "ResultSet":
                out += self._resultset(value, eof)
        return out

    def _prepared(self, value: Readable, eof: bool, sql: str) -> list[bytes]:
        sid, self._next_id = self._next_id, self._next_id + 1
        params, columns = list(value.get("params", [])), list(value.get("columns", []))
        self.codec.add_statement(sid, Statement(sql, len(params), columns))
        out = [p.build_prepare_ok(sid, len(columns), len(params), int(value.get("warnings", 0)))]
        for defs in (params, columns):
            out += [p.build_column(c, self.codec.caps) for c in defs]
            if defs and eof:
                out.append(p.build_eof(0, self.codec.status))
        return out

    def _resultset(self, value: Readable, eof: bool) -> list[bytes]:
        columns = list(value.get("columns", []))
        status = int(value.get("status", self.codec.status))
        out = [lenenc(len(columns))] + [p.build_column(c, self.codec.caps) for c in columns]
        if eof:
            out.append(p.build_eof(0, status))
        binary = bool(value.get("binary"))
        for row in value.get("rows", []):
            out.append(p.build_binary_row(row, columns) if binary else p.build_text_row(row))
        if "error" in value:
            out.append(p.build_err(value["error"]))
        else:
            self.codec.status = status
            out.append(self._end_packet(value))
        return out


def _auth_steps(responses: list[Readable]) -> list[list[Readable]]:
    """The recorded authentication answers cut where the client must speak next: after an
    AuthSwitchRequest, or AuthMoreData other than caching_sha2_password's fast-auth byte."""
    steps: list[list[Readable]] = [[]]
    for message in responses:
        steps[-1].append(message)
        name = next(iter(message))
        if name == "AuthSwitchRequest" or (name == "AuthMoreData" and unblob(message[name]) != FAST_AUTH_SUCCESS):
            steps.append([])
    if not steps[-1]:
        steps[-1].append({"OK": {"status": SERVER_STATUS_AUTOCOMMIT}})
    return steps



def check_fault(failure: Failure) -> None:
    """A MySQL error is its number (``1213``, ``1205``)."""
    if not failure.error.isdigit() or not 1 <= int(failure.error) <= 0xFFFE:
        raise ValueError(f"a MySQL error is an error number (e.g. 1213), not {failure.error!r}")

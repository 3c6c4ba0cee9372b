"""Record mode: pair each client command with the server's answer, as readable data.

* the server's greeting is an interaction of its own, ``{"Connect": {}}`` -> the greeting
  (without its random scramble): replay sends it before the client says anything;
* the login: the HandshakeResponse (password proof redacted) -> the authentication
  exchange (AuthSwitchRequest, AuthMoreData: caching_sha2_password's fast-auth byte or
  its full-auth public key) up to the OK or ERR; the client's further auth packets are
  never kept (they are proofs or passwords);
* a command -> every result the server sent for it (several with
  SERVER_MORE_RESULTS_EXISTS: multi-statements, stored procedures);
* commands the server never answers (COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA,
  COM_QUIT) and those whose answer does not depend on the data (COM_PING,
  COM_RESET_CONNECTION, COM_STMT_RESET, COM_SET_OPTION) are not recorded: the replayer
  answers them itself.

An ERR with no command pending (a server going away) is returned as ``Pushed``. An
SSLRequest means the rest is encrypted: ``ProtocolError`` (the proxy keeps relaying),
unless the proxy intercepts that TLS (``scheme="https"``): the plaintext inside follows.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..base import NEED_DATA, Direction, Interaction, ProtocolError, Pushed, Readable
from .codec import NO_ANSWER, MySQLCodec
from .matching import lifetime_of, summary_of
from .packets import redacted_response

LOCAL_COMMANDS = {"COM_PING", "COM_RESET_CONNECTION", "COM_STMT_RESET", "COM_SET_OPTION"}


@dataclass
class _Open:
    request: Readable
    responses: list[Readable] = field(default_factory=list)
    keep: bool = True
    done: bool = False


def recorded_request(message: dict[str, Any]) -> Readable:
    """A client message as recorded and looked up: secrets and connection-local ids out."""
    name, value = next(iter(message.items()))
    if name in ("HandshakeResponse", "COM_CHANGE_USER"):
        return {name: redacted_response(value)}
    if name == "COM_STMT_EXECUTE":
        return {name: {k: v for k, v in value.items() if k != "statement"}}
    if name == "COM_STMT_RESET":
        return {name: {"sql": value["sql"]}}
    return message


class MySQLRecorder:
    def __init__(self, *, max_packet: int | None = None, scheme: str = "http", authority: str = "",
                 blobs: object = None) -> None:
        self.codec = MySQLCodec(max_packet) if max_packet else MySQLCodec()
        self.tls = scheme == "https"  # the proxy intercepts the TLS an SSLRequest starts
        self._open: deque[_Open] = deque()
        self._client_closed = False

    def feed(self, direction: Direction, data: bytes) -> list[Interaction | Pushed]:
        self.codec.feed(direction, data)
        out: list[Interaction | Pushed] = []
        while (event := self.codec.next_event()) is not NEED_DATA:
            sender, message, done = event
            if sender is Direction.CLIENT:
                self._client(message)
            else:
                self._server(message, done, out)
            self._emit(out)
        if not data and direction is Direction.CLIENT:
            self._client_closed = True
        if not data and direction is Direction.SERVER:
            for item in self._open:
                item.done = True
            self._emit(out)
        return out

    def _client(self, message: dict[str, Any]) -> None:
        name = next(iter(message))
        if name == "SSLRequest" and self.tls:
            return  # what follows is the plaintext inside the TLS the proxy intercepts
        if name == "SSLRequest":
            raise ProtocolError("the client asked for TLS (SSLRequest): the session is encrypted "
                                "and cannot be recorded (connect with ssl disabled, or let "
                                "trproxy intercept TLS)")
        if name == "AuthData" or name in NO_ANSWER:
            return
        self._open.append(_Open(recorded_request(message), keep=name not in LOCAL_COMMANDS))

    def _server(self, message: dict[str, Any], done: bool, out: list[Interaction | Pushed]) -> None:
        name = next(iter(message))
        if name == "Greeting" or (self.codec.phase == "closed" and not self._open):
            out.append(Interaction({"Connect": {}}, [message], "session",
                                   f"greeting {message[name].get('server_version', '')}".rstrip()))
            return
        head = next((item for item in self._open if not item.done), None)
        if head is None:
            out.append(Pushed([message], name))
            return
        head.responses.append(message)
        head.done = done

    def _emit(self, out: list[Interaction | Pushed]) -> None:
        while self._open and self._open[0].done:
            item = self._open.popleft()
            if not item.keep:
                continue
            unanswered = not item.responses
            if unanswered and not self._client_closed:
                continue  # the server went away: replayed by its close
            out.append(Interaction(item.request, item.responses, lifetime_of(item.request),
                                   summary_of(item.request), unanswered=unanswered))

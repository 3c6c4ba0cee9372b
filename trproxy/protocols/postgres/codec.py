"""Sans-I/O codec for one PostgreSQL connection (protocol 3.0), both directions.

``feed(direction, data)`` queues bytes in wire order; ``next_event()`` returns the next
complete message with its sender as ``(Direction, message)`` (``next_message()``
returns just the message), or ``NEED_DATA``. Parsing is lazy and strictly in the order
the bytes were fed, because each side's framing depends on the other's (spec,
"Message Flow" > "Start-up"):

* ``STARTUP``: the client sends untyped packets (SSLRequest, GSSENCRequest,
  CancelRequest, StartupMessage); the server says nothing yet.
* ``NEGOTIATING_SSL`` / ``NEGOTIATING_GSS``: the server answers with one unframed byte;
  'N' returns to ``STARTUP``, 'S'/'G' means an encrypted stream follows
  (``ENCRYPTED``: any further byte raises ``DecodeError`` - it is not ours to read).
* ``MESSAGES``: typed messages both ways. The type of a client ``p`` message depends on
  the last Authentication request the server sent.
* ``ERROR``: a ``DecodeError`` happened; every later call raises again.

After Terminate or CancelRequest the client may send nothing more; the server may
still answer what came before. ``feed(d, b"")`` means side ``d`` closed; a partial
message left on that side is a ``DecodeError``.

Invariants: a frame longer than ``max_message_size`` (or a startup packet longer than
``max_startup_size``) is rejected from its header alone, so a side's buffer never
holds more than one frame beyond what the caller fed and has not pulled; a frame that
arrives in many pieces is joined once (linear time); no input can make the codec raise
anything but ``ProtocolError`` subclasses. Messages without fields (Sync, BindComplete,
ReadyForQuery('I')...) decode to shared instances: they are frozen.
"""

from __future__ import annotations

import enum
import struct
from collections import deque

from ..base import NEED_DATA, DecodeError, Direction, EncodeError, ProtocolError
from . import backend as be
from . import frontend as fe
from .wire import (
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
    MAX_STARTUP_PACKET,
    SSL_REQUEST_CODE,
    Reader,
    frame,
    untyped_frame,
)

CLIENT = Direction.CLIENT
SERVER = Direction.SERVER

DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024

_HEAD = struct.Struct("!ii")
_TYPED = struct.Struct("!ci")
_U16 = struct.Struct("!H")
_I32 = struct.Struct("!i")


class Phase(enum.Enum):
    STARTUP = "startup"
    NEGOTIATING_SSL = "negotiating-ssl"
    NEGOTIATING_GSS = "negotiating-gss"
    MESSAGES = "messages"
    ENCRYPTED = "encrypted"
    ERROR = "error"


# Which 'p' message answers which Authentication request (spec, "Message Formats").
_P_BY_AUTH: dict[type, type[fe.FrontendMessage]] = {
    be.AuthenticationSASL: fe.SASLInitialResponse,
    be.AuthenticationSASLContinue: fe.SASLResponse,
    be.AuthenticationSASLFinal: fe.SASLResponse,
    be.AuthenticationGSS: fe.GSSResponse,
    be.AuthenticationGSSContinue: fe.GSSResponse,
    be.AuthenticationSSPI: fe.GSSResponse,
}

_UNTYPED = (fe.StartupMessage, fe.SSLRequest, fe.GSSENCRequest, fe.CancelRequest)

Event = tuple[Direction, object]


class _Side:
    """One direction's bytes: ``buf[pos:]`` is unparsed. A frame longer than what has
    arrived is gathered in ``parts`` and joined once complete (linear, not quadratic)."""

    __slots__ = ("direction", "buf", "pos", "need", "parts", "parts_len", "closed")

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.buf = b""
        self.pos = 0
        self.need = 1  # bytes the parser needs from ``pos`` before it can say more
        self.parts: list[bytes] | None = None
        self.parts_len = 0
        self.closed = False

    def pending(self) -> int:
        return len(self.buf) - self.pos + self.parts_len

    def add(self, data: bytes) -> bool:
        """Append; False while the frame being gathered is still incomplete."""
        if self.parts is not None:
            self.parts.append(data)
            self.parts_len += len(data)
            if self.parts_len < self.need:
                return False
            self.buf, self.pos, self.parts, self.parts_len = b"".join(self.parts), 0, None, 0
            return True
        have = len(self.buf) - self.pos
        if have == 0:
            self.buf, self.pos = data, 0
        elif have + len(data) >= self.need:
            self.buf, self.pos = self.buf[self.pos:] + data, 0
        else:
            self.parts, self.parts_len = [self.buf[self.pos:], data], have + len(data)
            self.buf, self.pos = b"", 0
            return False
        return True


# Messages without fields are immutable: decode them to one shared instance each.
_EMPTY_FRONTEND = {cls.TYPE: cls() for cls in (fe.Sync, fe.Flush, fe.Terminate, fe.CopyDone)}
_EMPTY_BACKEND = {cls.TYPE: cls() for cls in (
    be.ParseComplete, be.BindComplete, be.CloseComplete, be.NoData, be.PortalSuspended,
    be.EmptyQueryResponse, fe.CopyDone)}
_READY = {s: be.ReadyForQuery(s.decode()) for s in (b"I", b"T", b"E")}
_READY_FRAMES = {s: frame(b"Z", s.encode()) for s in ("I", "T", "E")}


def _data_row(body: bytes) -> be.DataRow:
    """DataRow, the bulk of most result sets, without a Reader per value."""
    (n,) = _U16.unpack_from(body, 0)  # counts are unsigned (wire.Reader.count)
    pos, end = 2, len(body)
    values: list[bytes | None] = []
    for _ in range(n):
        if pos + 4 > end:
            raise DecodeError("DataRow: body ends inside a value length")
        (size,) = _I32.unpack_from(body, pos)
        pos += 4
        if size == -1:
            values.append(None)
            continue
        if size < 0 or pos + size > end:
            raise DecodeError(f"DataRow: illegal value length {size}")
        values.append(body[pos:pos + size])
        pos += size
    if pos != end:
        raise DecodeError(f"DataRow: {end - pos} unexpected bytes after the last field")
    return be.DataRow(tuple(values))


class PostgresCodec:
    """One connection. ``start``: "startup" (a new connection, the default for the proxy),
    "ready" (typed messages from the first byte, e.g. a capture that starts mid-session)
    or "auto" (a first client byte of 0 is a startup packet's length, anything else a
    message type)."""

    def __init__(self, *, start: str = "auto", max_message_size: int = DEFAULT_MAX_MESSAGE,
                 max_startup_size: int = MAX_STARTUP_PACKET) -> None:
        if start not in ("startup", "ready", "auto"):
            raise ValueError(f"start must be startup, ready or auto, not {start!r}")
        self.phase = Phase.MESSAGES if start == "ready" else Phase.STARTUP
        self._auto = start == "auto"
        self.max_message_size = max_message_size
        self.max_startup_size = max_startup_size
        self._segments: deque[tuple[_Side, bytes]] = deque()
        self._client = _Side(CLIENT)
        self._server = _Side(SERVER)
        self._current: _Side | None = None
        self._client_finished: str | None = None  # "Terminate" / "CancelRequest"
        self._auth: type | None = None  # last Authentication request seen
        self._error: str | None = None

    # --- public API ------------------------------------------------------------------

    def feed(self, direction: Direction, data: bytes) -> None:
        if self._error is not None:
            raise DecodeError(f"codec is in its error state: {self._error}")
        side = self._client if direction is CLIENT else self._server
        self._segments.append((side, data if type(data) is bytes else bytes(data)))

    def next_event(self) -> Event | object:
        if self._error is not None:
            raise DecodeError(f"codec is in its error state: {self._error}")
        try:
            return self._next()
        except ProtocolError as exc:
            self._fail(str(exc))
            raise
        except (struct.error, IndexError, ValueError, UnicodeError) as exc:  # defensive
            self._fail(f"malformed message: {exc}")
            raise DecodeError(self._error) from exc

    def next_message(self) -> object:
        event = self.next_event()
        return event if event is NEED_DATA else event[1]  # type: ignore[index]

    def events(self) -> list[Event]:
        """Every complete message fed so far, in wire order."""
        out: list[Event] = []
        while (event := self.next_event()) is not NEED_DATA:
            out.append(event)  # type: ignore[arg-type]
        return out

    def encode(self, message: object) -> bytes:
        if type(message) is be.ReadyForQuery and message.status in ("I", "T", "E"):
            return _READY_FRAMES[message.status]  # one per reply: made once
        type_byte = getattr(type(message), "TYPE", None)
        if type_byte and isinstance(message, (fe.FrontendMessage, be.BackendMessage)):
            if isinstance(message, be.ReadyForQuery) and message.status not in ("I", "T", "E"):
                raise EncodeError(f"ReadyForQuery status {message.status!r}")
            return frame(type_byte, message.body())
        if isinstance(message, _UNTYPED):
            return untyped_frame(message.body())
        if isinstance(message, (be.SSLResponse, be.GSSENCResponse)):
            allowed = "SN" if isinstance(message, be.SSLResponse) else "GN"
            if message.code not in allowed:
                raise EncodeError(f"{type(message).__name__} code must be one of {allowed}")
            return message.code.encode()
        raise EncodeError(f"not a PostgreSQL message: {message!r}")

    @property
    def client_finished(self) -> str | None:
        """"Terminate" or "CancelRequest" once the client sent it: it has said goodbye."""
        return self._client_finished

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet turned into messages (both sides)."""
        return (sum(len(d) for _, d in self._segments) + self._client.pending()
                + self._server.pending())

    # --- the loop ----------------------------------------------------------------------

    def _fail(self, why: str) -> None:
        self._error = why
        self.phase = Phase.ERROR

    def _next(self) -> Event | object:
        side = self._current
        while True:
            if side is not None:
                msg = self._parse_client() if side is self._client else self._parse_server()
                if msg is not NEED_DATA:
                    return (side.direction, msg)
                self._current = side = None
            if not self._segments:
                return NEED_DATA
            side, data = self._segments.popleft()
            if side.closed:
                raise DecodeError(f"{side.direction.value} sent data after closing")
            if not data:
                side.closed = True
                if side.pending():
                    raise DecodeError(f"{side.direction.value} closed in the middle of a "
                                      f"message ({side.pending()} bytes of it received)")
                side = None
                continue
            if self._auto:
                self._auto = False
                if side is self._server or data[0] != 0:
                    self.phase = Phase.MESSAGES
            if not side.add(data):
                side = None  # the frame being gathered is still incomplete
                continue
            self._current = side

    # --- client side -----------------------------------------------------------------

    def _parse_client(self) -> object:
        side = self._client
        if side.pos >= len(side.buf):
            return NEED_DATA
        if self._client_finished:
            raise DecodeError(f"client sent data after {self._client_finished}")
        phase = self.phase
        if phase is Phase.MESSAGES:
            return self._typed(side)
        if phase is Phase.STARTUP:
            return self._startup_packet(side)
        if phase is Phase.ENCRYPTED:
            raise DecodeError("the connection is encrypted (the server accepted SSLRequest "
                              "or GSSENCRequest); its bytes cannot be decoded")
        raise DecodeError(f"client sent data while the server had to answer "
                          f"{'SSLRequest' if phase is Phase.NEGOTIATING_SSL else 'GSSENCRequest'}")

    def _startup_packet(self, side: _Side) -> object:
        buf, pos = side.buf, side.pos
        if buf[pos] == 0x16:
            raise DecodeError("client started a TLS handshake without SSLRequest "
                              "(sslnegotiation=direct); the stream cannot be decoded")
        if buf[pos] != 0:  # lengths are at most max_startup_size: the top byte is 0
            raise DecodeError(f"startup packet length starts with {buf[pos]:#x}")
        if len(buf) - pos < 8:
            side.need = 8
            return NEED_DATA
        length, code = _HEAD.unpack_from(buf, pos)
        if not 8 <= length <= self.max_startup_size:
            raise DecodeError(f"invalid startup packet length {length}")
        if code in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE) and length != 8:
            raise DecodeError(f"SSLRequest/GSSENCRequest of length {length}")
        if code == CANCEL_REQUEST_CODE and length < 16:
            raise DecodeError(f"CancelRequest of length {length}")
        if len(buf) - pos < length:
            side.need = length
            return NEED_DATA
        side.pos = pos + length
        body = buf[pos + 4:pos + length]
        if code == SSL_REQUEST_CODE:
            self.phase = Phase.NEGOTIATING_SSL
            return fe.SSLRequest()
        if code == GSSENC_REQUEST_CODE:
            self.phase = Phase.NEGOTIATING_GSS
            return fe.GSSENCRequest()
        if code == CANCEL_REQUEST_CODE:
            self._client_finished = "CancelRequest"
            return fe.CancelRequest.parse(Reader(body, "CancelRequest"))
        msg = fe.StartupMessage.parse(Reader(body, "StartupMessage"))
        self.phase = Phase.MESSAGES
        return msg

    def _typed(self, side: _Side) -> object:
        buf, pos = side.buf, side.pos
        if len(buf) - pos < 5:
            side.need = 5
            return NEED_DATA
        type_byte, length = _TYPED.unpack_from(buf, pos)
        if length < 4:
            raise DecodeError(f"{side.direction.value} message {type_byte!r} has invalid "
                              f"length {length}")
        if length > self.max_message_size:
            raise DecodeError(f"{side.direction.value} message {type_byte!r} of {length} bytes "
                              f"exceeds max_message_size {self.max_message_size}")
        end = pos + 1 + length
        if len(buf) < end:
            side.need = 1 + length
            return NEED_DATA
        side.pos = end
        if side is self._client:
            return self._frontend(type_byte, buf[pos + 5:end])
        return self._backend(type_byte, buf[pos + 5:end])

    def _frontend(self, type_byte: bytes, body: bytes) -> object:
        if not body and type_byte in _EMPTY_FRONTEND:
            msg = _EMPTY_FRONTEND[type_byte]
            if type_byte == b"X":
                self._client_finished = "Terminate"
            return msg
        if type_byte == b"d":
            return fe.CopyData(body)
        cls = fe.BY_TYPE.get(type_byte)
        if type_byte == b"p":
            cls = _P_BY_AUTH.get(self._auth, fe.PasswordMessage)  # type: ignore[arg-type]
        if cls is None:
            raise DecodeError(f"unknown frontend message type {type_byte!r}")
        return cls.parse(Reader(body, cls.__name__))

    def _backend(self, type_byte: bytes, body: bytes) -> object:
        if type_byte == b"D":
            return _data_row(body)
        if not body and type_byte in _EMPTY_BACKEND:
            return _EMPTY_BACKEND[type_byte]
        if type_byte == b"Z" and body in _READY:
            return _READY[body]
        if type_byte == b"d":
            return fe.CopyData(body)
        if type_byte == b"R":
            msg = be.parse_authentication(Reader(body, "Authentication"))
            self._auth = type(msg)
            return msg
        bcls = be.BY_TYPE.get(type_byte)
        if bcls is None:
            raise DecodeError(f"unknown backend message type {type_byte!r}")
        return bcls.parse(Reader(body, bcls.__name__))

    # --- server side -----------------------------------------------------------------

    def _parse_server(self) -> object:
        side = self._server
        if side.pos >= len(side.buf):
            return NEED_DATA
        phase = self.phase
        if phase is Phase.MESSAGES:
            return self._typed(side)
        if phase in (Phase.NEGOTIATING_SSL, Phase.NEGOTIATING_GSS):
            code = side.buf[side.pos:side.pos + 1]
            ssl = phase is Phase.NEGOTIATING_SSL
            if code == b"E":  # a server too old to know the request answers with an error
                msg = self._typed(side)
                if msg is not NEED_DATA:
                    self.phase = Phase.STARTUP
                return msg
            accepted = b"S" if ssl else b"G"
            if code not in (accepted, b"N"):
                raise DecodeError(f"invalid answer {code!r} to "
                                  f"{'SSLRequest' if ssl else 'GSSENCRequest'}")
            side.pos += 1
            self.phase = Phase.ENCRYPTED if code == accepted else Phase.STARTUP
            text = code.decode()
            return be.SSLResponse(text) if ssl else be.GSSENCResponse(text)
        if phase is Phase.ENCRYPTED:
            raise DecodeError("the connection is encrypted (the server accepted SSLRequest "
                              "or GSSENCRequest); its bytes cannot be decoded")
        raise DecodeError("server sent data before the client's startup packet")

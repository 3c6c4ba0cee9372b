"""HTTP/1.x message parser for one direction of a connection (sans-I/O).

Heads are parsed by ``mitmproxy.net.http.http1`` (``read_request_head``,
``read_response_head``, ``expected_http_body_size``) and validated against request
smuggling (RFC 9112 §6.1, §6.3); framing is ours and small: a receive buffer that finds
the end of a head, Content-Length bodies counted, chunked bodies (RFC 9112 §7.1) and
bodies delimited by the close (§6.3).

States (``H1State``)::

    HEAD  --head-->  BODY  --end-->  HEAD            (keep-alive, RFC 9112 §9.3)
                              \\-->  WAIT            (request side, after CONNECT or a
                                                     request with Upgrade: until the
                                                     response decides, RFC 9110 §7.8)
    any   --tunnel()-->  TUNNEL                      (after 101 / 2xx to CONNECT:
                                                     bytes are no longer HTTP)
    HEAD  --EOF-->  CLOSED;  mid-message EOF --> CLOSED with ``truncated`` set
    any   --bad bytes-->  ERROR (DecodeError raised, and raised again after)

Bounds: a head (and a chunk-size or trailer line) longer than ``max_head`` bytes is a
``DecodeError``. Bodies are streamed out as ``Data`` events and never buffered here.

Speed: bytes of a Content-Length body fed while nothing else is buffered become ``Data``
without passing through the receive buffer (a 100 MB download is not copied in and out
of it).
"""

from __future__ import annotations

import enum
import re
from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple

from mitmproxy import http
from mitmproxy.net.http import http1, validate

from ..base import NEED_DATA, DecodeError
from .readable import method_text

# mitmproxy type-checks every field of every message it makes unless Python runs with -O
# (``MessageData.__post_init__``, defined under ``if __debug__``): a third of parsing a
# request head. Messages here are made only by this parser, from bytes it split itself,
# so the check is off, as under -O.
if hasattr(http.MessageData, "__post_init__"):
    http.MessageData.__post_init__ = lambda self: None  # type: ignore[method-assign]

Fields = list[tuple[bytes, bytes]]


class RequestHead(NamedTuple):
    """A request head parsed and checked (``request_head``)."""

    message: http.Request
    size: int | None  # of its body: ``expected_http_body_size``
    shared: bool  # the message every head with these bytes gets (no credentials in it)
    upgrade: bool  # CONNECT, or Upgrade: the connection waits for the answer (``is_upgrade_request``)


def request_head(lines: list[bytes]) -> RequestHead:
    """A request head's message, checked (its method a token, RFC 9112's smuggling rules),
    and what the parser asks of it. A head seen before is not parsed again (``_HEADS``):
    clients repeat theirs, and parsing one was a tenth of a replayed request. The message
    is shared between the requests that sent those bytes (nothing changes a parsed
    message), and so may be what is derived from it alone (``h1_replay._KNOWN``); one
    that carries credentials is not (``shared`` False)."""
    key = b"\n".join(lines)  # lines hold no LF: one key per list of lines
    known = _HEADS.get(key)
    if known is not None:
        return known
    message = http1.read_request_head(lines)
    method_text(message.data.method)  # a token, or DecodeError
    validate.validate_headers(message)
    shared = len(key) <= _MAX_HEAD and not _CREDENTIALS.search(key)
    known = RequestHead(message, http1.expected_http_body_size(message), shared, is_upgrade_request(message))
    if shared:
        if len(_HEADS) >= _MAX_HEADS:
            del _HEADS[next(iter(_HEADS))]  # the oldest
        _HEADS[key] = known
    return known


# Request heads remembered (``request_head``): small ones, and none that carries
# credentials (they stay in memory no longer than their request).
_HEADS: dict[bytes, RequestHead] = {}
_MAX_HEADS = 1024
_MAX_HEAD = 4096
_CREDENTIALS = re.compile(rb"^(?:authorization|proxy-authorization|cookie)[ \t]*:", re.IGNORECASE | re.MULTILINE)


class H1State(enum.Enum):
    HEAD = "head"
    BODY = "body"
    WAIT = "wait"
    TUNNEL = "tunnel"
    CLOSED = "closed"
    ERROR = "error"


@dataclass(frozen=True)
class Head:
    """A request or response head (mitmproxy ``Request``/``Response`` without content)."""

    message: Any  # http.Request | http.Response
    shared: bool = False  # a request head's message that others with its bytes get too


@dataclass(frozen=True)
class Data:
    data: bytes


@dataclass(frozen=True)
class End:
    trailers: Fields | None = None


Event = Head | Data | End

_BLANK_LINE = re.compile(rb"\n\r?\n")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(;.*)?")  # RFC 9112 §7.1.1
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class ReceiveBuffer:
    """Bytes received and not yet parsed; finds the end of a head without rescanning."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._searched = 0  # where the next search for a blank line starts

    def __iadd__(self, data: bytes) -> ReceiveBuffer:
        self._data += data
        return self

    def __len__(self) -> int:
        return len(self._data)

    def take(self, n: int) -> bytes:
        out = bytes(self._data[:n])
        del self._data[:n]
        self._searched = 0
        return out

    def lines(self) -> list[bytes] | None:
        """The lines up to the first empty line (taken out), [] for an empty line
        first, None while incomplete. CRLF or bare LF (RFC 9112 §2.2)."""
        for empty in (b"\n", b"\r\n"):
            if self._data.startswith(empty):
                self.take(len(empty))
                return []
        match = _BLANK_LINE.search(self._data, self._searched)
        if match is None:
            self._searched = max(0, len(self._data) - 2)
            return None
        head = self.take(match.end())
        return [line[:-1] if line.endswith(b"\r") else line for line in head.split(b"\n")[:-2]]

    def line(self) -> bytes | None:
        """One CRLF-terminated line without its CRLF (taken out), None while incomplete."""
        end = self._data.find(b"\r\n")
        return None if end < 0 else self.take(end + 2)[:-2]


class _Chunked:
    """A chunked body (RFC 9112 §7.1): ``read`` gives Data, End (with trailers) or None."""

    def __init__(self) -> None:
        self._left = 0  # bytes of the current chunk still to come
        self._crlf = False  # the CRLF after a chunk's data is due
        self._trailers = False

    def read(self, buf: ReceiveBuffer) -> Data | End | None:
        while True:
            if self._trailers:
                lines = buf.lines()
                return None if lines is None else End(_fields(lines) or None)
            if self._crlf:
                if len(buf) < 2:
                    return None
                if buf.take(2) != b"\r\n":
                    raise ValueError("chunk data not followed by CRLF")
                self._crlf = False
            if self._left:
                data = buf.take(self._left)
                if not data:
                    return None
                self._left -= len(data)
                self._crlf = not self._left
                return Data(data)
            header = buf.line()
            if header is None:
                return None
            match = _CHUNK_SIZE.fullmatch(header)
            if match is None:
                raise ValueError(f"illegal chunk header {header[:40]!r}")
            self._left = int(match.group(1), 16)
            self._trailers = not self._left

    @staticmethod
    def at_eof() -> End | None:
        return None  # closed before the last chunk: the message is cut


class _UntilClose:
    """A body delimited by the close of the connection (RFC 9112 §6.3, item 8)."""

    @staticmethod
    def read(buf: ReceiveBuffer) -> Data | None:
        data = buf.take(len(buf))
        return Data(data) if data else None

    @staticmethod
    def at_eof() -> End | None:
        return End()


def _fields(lines: list[bytes]) -> Fields:
    """Trailer fields (RFC 9110 §6.5), names lower-cased (as recordings have always had
    them); an obsolete folded line continues the one before."""
    out: Fields = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and out:
            name, value = out[-1]
            out[-1] = (name, value + b" " + line.strip(b" \t"))
            continue
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise ValueError(f"illegal trailer line {line[:40]!r}")
        out.append((name.lower(), value.strip(b" \t")))
    return out


def is_upgrade_request(request: http.Request) -> bool:
    return request.method.upper() == "CONNECT" or "upgrade" in request.headers


def switches_protocol(request: http.Request, response: http.Response) -> bool:
    """After this response the connection is no longer HTTP (RFC 9110 §15.2.2, §9.3.6)."""
    return response.status_code == 101 or (
        request.method.upper() == "CONNECT" and 200 <= response.status_code < 300)


class H1Parser:
    """Parses requests (``is_request``) or responses from one direction's bytes."""

    def __init__(self, is_request: bool, max_head: int = 64 * 1024) -> None:
        self.is_request = is_request
        self.max_head = max_head
        self.state = H1State.HEAD
        self.truncated = False  # closed in the middle of a message
        self._buf = ReceiveBuffer()
        self._eof = False
        self._reader: _Chunked | _UntilClose | None = None  # None: Content-Length
        self._remaining = 0  # of a Content-Length body (``_reader`` is None)
        self._direct: deque[bytes] = deque()  # body bytes that skipped the buffer
        self._error: DecodeError | None = None
        self.message: Any = None  # the message being read (Request/Response)
        self._upgrade = False  # that request may switch protocols (``is_upgrade_request``)

    # -- input --------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self.state is H1State.ERROR:
            raise self._error or DecodeError("HTTP/1 parser is in its error state")
        if not data:
            self._eof = True
        elif self.state is H1State.BODY and self._reader is None and not self._buf:
            take = min(self._remaining - sum(map(len, self._direct)), len(data))
            if take > 0:
                self._direct.append(bytes(data[:take]))
            if take < len(data):
                self._buf += data[take:]
        elif self.state is not H1State.TUNNEL:
            self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def take_buffer(self) -> bytes:
        """Bytes received but not parsed (e.g. what followed a 101 response)."""
        return self._buf.take(len(self._buf))

    def tunnel(self) -> None:
        self.state = H1State.TUNNEL
        self._buf = ReceiveBuffer()

    def resume(self) -> None:
        """Leave WAIT: the upgrade was refused, the next bytes are a request again."""
        if self.state is H1State.WAIT:
            self.state = H1State.HEAD

    # -- events --------------------------------------------------------------------

    def _fail(self, message: str, cause: Exception | None = None) -> DecodeError:
        self.state = H1State.ERROR
        self._error = DecodeError(message)
        if cause is not None:
            self._error.__cause__ = cause
        return self._error

    def next_event(self, request: http.Request | None = None) -> Event | Any:
        """The next event, or NEED_DATA. Responses need the ``request`` they answer."""
        try:
            if self.state is H1State.HEAD:
                return self._read_head(request)
            if self.state is H1State.BODY:
                return self._read_body()
            if self.state is H1State.WAIT and len(self._buf) > self.max_head:
                raise self._fail("too many bytes after an upgrade request before its response")
            if self.state is H1State.ERROR:
                raise self._error or DecodeError("HTTP/1 parser is in its error state")
            return NEED_DATA
        except DecodeError as e:
            self.state, self._error = H1State.ERROR, e
            raise
        except ValueError as e:
            raise self._fail(f"HTTP/1 {'request' if self.is_request else 'response'}: {e}", e) from e

    def _read_head(self, request: http.Request | None) -> Event | Any:
        while True:
            lines = self._buf.lines()
            if lines is None:
                if len(self._buf) > self.max_head:
                    raise self._fail(f"head longer than {self.max_head} bytes")
                if self._eof:
                    self.truncated = bool(self._buf)
                    self.state = H1State.CLOSED
                return NEED_DATA
            if lines:
                break
            # RFC 9112 §2.2: ignore empty lines before a request-line (and be lenient
            # with responses the same way)
        if sum(len(line) + 2 for line in lines) > self.max_head:
            raise self._fail(f"head longer than {self.max_head} bytes")
        raw = [bytes(line) for line in lines]
        message: http.Request | http.Response
        shared = False
        if self.is_request:
            message, size, shared, self._upgrade = request_head(raw)
        else:
            if request is None:
                raise self._fail("response bytes while no request is outstanding")
            response = http1.read_response_head(raw)
            validate.validate_headers(response)
            size = http1.expected_http_body_size(request, response)
            message = response
        self.message = message
        if size is None:
            self._reader = _Chunked()
        elif size == -1:
            self._reader = _UntilClose()
        else:
            self._reader, self._remaining = None, size
        self.state = H1State.BODY
        return Head(message, shared)

    def _read_counted(self) -> Event | Any:
        """The next piece of a Content-Length body: bytes that skipped the buffer first."""
        if self._direct:
            data = self._direct.popleft()
        elif self._remaining and self._buf:
            data = self._buf.take(self._remaining)
        elif self._remaining:
            if self._eof:  # the peer closed mid-body: not an error of the bytes, an ending
                self.truncated = True
                self.state = H1State.CLOSED
            return NEED_DATA
        else:
            return self._end(None)
        self._remaining -= len(data)
        return Data(data)

    def _read_body(self) -> Event | Any:
        if self._reader is None:
            return self._read_counted()
        event = self._reader.read(self._buf)
        if event is None:
            if len(self._buf) > self.max_head:
                raise self._fail(f"chunk header or trailer longer than {self.max_head} bytes")
            if not self._eof:
                return NEED_DATA
            event = self._reader.at_eof()
            if event is None:  # the peer closed mid-body: not an error of the bytes, an ending
                self.truncated = True
                self.state = H1State.CLOSED
                return NEED_DATA
        if isinstance(event, Data):
            return event
        return self._end(event.trailers)

    def _end(self, trailers: Fields | None) -> End:
        if self.is_request and self._upgrade:
            self.state = H1State.WAIT
        else:
            self.state = H1State.HEAD
        return End(trailers)

"""The HTTP ``Recorder``: picks HTTP/1.x or HTTP/2 from the client's first bytes.

States: ``SNIFF`` (buffering until the client's bytes either start the HTTP/2
connection preface ``PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n`` (RFC 9113 §3.4) or
cannot), then ``H1`` or ``H2`` (delegating to ``H1Recorder`` / ``H2Recorder``), and
``ERROR`` after a ``DecodeError``. Server bytes that arrive while sniffing (an HTTP/2
server may send its SETTINGS first) are held and replayed once the version is known.

Errors: a ``ProtocolError`` moves the recorder to ``ERROR`` and is raised again by
every later ``feed``. If interactions completed in the same ``feed`` call as the bad
bytes, they are returned first and the error is raised by the next call, so nothing
answered is lost.
"""

from __future__ import annotations

import enum

from ..base import BlobStore, Direction, Interaction, ProtocolError
from .config import HttpConfig
from .h1_record import H1Recorder
from .h2_record import H2Recorder
from .sniff import H2_PREFACE


class RecorderState(enum.Enum):
    SNIFF = "sniff"
    H1 = "h1"
    H2 = "h2"
    ERROR = "error"


class HttpRecorder:
    """Record mode for one connection. ``scheme``/``authority`` describe the connection
    (``https`` after TLS interception; the original destination ``host:port``) and are
    used when requests do not carry them (HTTP/1.0 without Host). Bodies over
    ``max_body`` are streamed to ``blobs`` (else only digested)."""

    def __init__(self, config: HttpConfig | None = None, *, scheme: str = "http",
                 authority: str | None = None, blobs: BlobStore | None = None) -> None:
        self.config = config or HttpConfig()
        self.blobs = blobs
        self.scheme = scheme
        self.authority = authority
        self.state = RecorderState.SNIFF
        self._inner: H1Recorder | H2Recorder | None = None
        self._held: list[tuple[Direction, bytes]] = []
        self._held_size = 0  # kept as a sum: adding up ``_held`` per feed is quadratic
        self._sniffed = b""
        self._error: ProtocolError | None = None

    @property
    def http_version(self) -> str | None:
        return {RecorderState.H1: "HTTP/1.1", RecorderState.H2: "HTTP/2.0"}.get(self.state)

    def feed(self, direction: Direction, data: bytes) -> list[Interaction]:
        if self.state is RecorderState.ERROR:
            assert self._error is not None
            raise self._error
        if self.state is RecorderState.SNIFF:
            return self._sniff(direction, data)
        return self._inner_feed([(direction, data)])

    def _sniff(self, direction: Direction, data: bytes) -> list[Interaction]:
        self._held.append((direction, data))
        self._held_size += len(data)
        if direction is Direction.CLIENT:
            self._sniffed += data
        decided = self._sniffed[:len(H2_PREFACE)]
        closed = not data
        if not closed and H2_PREFACE.startswith(decided) and len(decided) < len(H2_PREFACE):
            if self._held_size > self.config.max_head:
                self._fail(ProtocolError("too many bytes before the HTTP version is known"))
            return []
        if decided == H2_PREFACE:
            self.state = RecorderState.H2
            self._inner = H2Recorder(self.config, self.scheme, self.authority, self.blobs)
        else:
            self.state = RecorderState.H1
            self._inner = H1Recorder(self.config, self.scheme, self.authority, self.blobs)
        held, self._held, self._held_size, self._sniffed = self._held, [], 0, b""
        return self._inner_feed(held)

    def _inner_feed(self, chunks: list[tuple[Direction, bytes]]) -> list[Interaction]:
        assert self._inner is not None
        out: list[Interaction] = []
        for direction, data in chunks:
            try:
                self._inner.feed(direction, data, out)
            except ProtocolError as e:
                self.state = RecorderState.ERROR
                self._error = e
                if out:
                    return out
                raise
        return out

    def _fail(self, error: ProtocolError) -> None:
        self.state = RecorderState.ERROR
        self._error = error
        raise error

"""The HTTP ``Replayer``: HTTP/1.x or HTTP/2 from the client's first bytes.

Like the recorder it buffers the client's first bytes until they either are the
HTTP/2 connection preface (RFC 9113 §3.4: after ALPN ``h2`` or with prior
knowledge) or cannot be, then hands everything to ``H1Replayer`` / ``H2Replayer``.
``respond``/``miss`` go to whichever was chosen; their output is always in the live
connection's HTTP version, whatever version the recording was made in. Secrets in a
recorded response reach the app as stand-ins (``secrets.with_standins``).
"""

from __future__ import annotations

from ..base import BlobStore, DecodeError, Failure, Lookup, Readable, Reply
from ..secrets import with_standins
from .config import HttpConfig
from .h1_replay import H1Replayer
from .h2_replay import H2Replayer
from .render import fault_response
from .sniff import H2_PREFACE

_DEFAULT = HttpConfig()  # frozen


class HttpReplayer:
    """Replay mode for one connection (see ``HttpRecorder`` for ``scheme``/``authority``)."""

    def __init__(self, config: HttpConfig | None = None, *, scheme: str = "http",
                 authority: str | None = None, blobs: BlobStore | None = None) -> None:
        self.config = config or _DEFAULT  # one for all: what a request makes is remembered per config
        self.blobs = blobs
        self.scheme = scheme
        self.authority = authority
        self._inner: H1Replayer | H2Replayer | None = None
        self._sniffed = b""

    @property
    def http_version(self) -> str | None:
        if self._inner is None:
            return None
        return "HTTP/2.0" if isinstance(self._inner, H2Replayer) else "HTTP/1.1"

    def feed(self, data: bytes) -> list[Lookup | Reply]:
        if self._inner is None:
            self._sniffed += data
            head = self._sniffed[:len(H2_PREFACE)]
            if data and H2_PREFACE.startswith(head) and len(head) < len(H2_PREFACE):
                return []
            if head == H2_PREFACE:
                self._inner = H2Replayer(self.config, self.scheme, self.authority, self.blobs)
            else:
                self._inner = H1Replayer(self.config, self.scheme, self.authority, self.blobs)
            data, self._sniffed = self._sniffed, b""
        return self._inner.feed(data)

    def respond(self, lookup: Lookup, responses: list[Readable]) -> bytes:
        if self._inner is None:
            raise DecodeError("respond() before any request")
        return self._inner.respond(lookup, [with_standins(r) if isinstance(r, dict) else r
                                            for r in responses])

    def miss(self, lookup: Lookup, reason: str) -> bytes:
        if self._inner is None:
            raise DecodeError("miss() before any request")
        return self._inner.miss(lookup, reason)

    def fault(self, lookup: Lookup, failure: Failure) -> bytes:
        """The status ``failure`` names (fault injection) in the live HTTP version; a
        WebSocket message fails as a miss does (Close 1011)."""
        if self._inner is None:
            raise DecodeError("fault() before any request")
        if lookup.context.private.get("websocket"):
            return self._inner.miss(lookup, "trproxy: injected fault")
        return self._inner.respond(lookup, [fault_response(failure)])

    @property
    def close_after(self) -> bool:
        """The inner replayer answered a WebSocket Close: the proxy hangs up, as a server would."""
        return bool(getattr(self._inner, "close_after", False))

    def pull(self) -> bytes:
        """The next piece of a body streamed from a blob (see ``Replayer``)."""
        return self._inner.pull() if self._inner is not None else b""

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()

"""Fallback dialect for TCP protocols trproxy does not know: turns of opaque bytes.

A *turn* is what the client sends until the server answers, paired with what the
server sends until the client speaks again. That is all that can be said about an
unknown protocol; it replays well only for strictly request/response protocols whose
clients write each request in one piece. Server-speaks-first protocols (SMTP, IMAP)
have a first turn with an empty request.
"""

from __future__ import annotations

from ..base import Dialect, Direction, Interaction, Lookup, Readable, Reply, blob, unblob


class GenericRecorder:
    """Pairs client turns with server turns."""

    def __init__(self) -> None:
        self._request = bytearray()
        self._response = bytearray()

    def feed(self, direction: Direction, data: bytes) -> list[Interaction]:
        out: list[Interaction] = []
        if direction is Direction.CLIENT:
            if self._response or (not data and self._request):
                out.append(self._flush())
            self._request += data
        else:
            self._response += data
            if not data and (self._request or self._response):
                out.append(self._flush())
        return out

    def _flush(self) -> Interaction:
        interaction = Interaction(
            request={"data": blob(bytes(self._request))},
            responses=[{"data": blob(bytes(self._response))}] if self._response else [],
            summary=f"{len(self._request)} bytes",
        )
        self._request.clear()
        self._response.clear()
        return interaction


class GenericReplayer:
    """Answers each chunk the client sends with the recorded turn's response."""

    def feed(self, data: bytes) -> list[Lookup | Reply]:
        if not data:
            return []
        return [Lookup(request={"data": blob(data)}, summary=f"{len(data)} bytes")]

    def respond(self, lookup: Lookup, responses: list[Readable]) -> bytes:
        return b"".join(unblob(r["data"]) for r in responses)

    def miss(self, lookup: Lookup, reason: str) -> bytes:
        return b""  # no protocol-native error exists; the proxy closes the connection


def detect(first_bytes: bytes, port: int) -> bool | None:
    return True


def match_key(request: Readable) -> Readable:
    return request


DIALECT = Dialect(
    name="generic",
    default_ports=(),
    detect=detect,
    recorder=GenericRecorder,
    replayer=GenericReplayer,
    match_key=match_key,
)

"""Build wire conversations from message objects, for recorder and replayer tests."""

from __future__ import annotations

from typing import Any

from trproxy.protocols.base import Direction, Interaction, Lookup, Reply
from trproxy.protocols.postgres import PostgresCodec, PostgresRecorder, PostgresReplayer
from trproxy.protocols.postgres import backend as be
from trproxy.protocols.postgres import frontend as fe
from trproxy.protocols.postgres.identity import Backends

_CODEC = PostgresCodec()


def wire(*messages: Any) -> bytes:
    return b"".join(_CODEC.encode(m) for m in messages)


def client(*messages: Any) -> tuple[str, bytes]:
    return ("client", wire(*messages))


def server(*messages: Any) -> tuple[str, bytes]:
    return ("server", wire(*messages))


STARTUP = fe.StartupMessage((("user", "alice"), ("database", "shop"),
                             ("application_name", "test")))
HANDSHAKE = [
    be.AuthenticationOk(), be.ParameterStatus("server_version", "15.4"),
    be.ParameterStatus("application_name", "test"), be.ParameterStatus("client_encoding", "UTF8"),
    be.BackendKeyData(4242, b"\x01\x02\x03\x04"), be.ReadyForQuery("I"),
]


def logged_in() -> list[tuple[str, bytes]]:
    return [client(STARTUP), server(*HANDSHAKE)]


def record(*chunks: tuple[str, bytes], close: bool = True) -> list[Interaction]:
    recorder = PostgresRecorder()
    out: list[Interaction] = []
    for side, data in chunks:
        out += recorder.feed(Direction(side), data)
    if close:
        out += recorder.feed(Direction.CLIENT, b"")
        out += recorder.feed(Direction.SERVER, b"")
    return out


def server_messages(data: bytes, start: str = "ready") -> list[Any]:
    codec = PostgresCodec(start=start)
    codec.feed(Direction.SERVER, data)
    return [m for _, m in codec.events()]


class Replay:
    """A replayer driven like the proxy drives it, answering Lookups from a list of
    recorded interactions matched by match_key (or missing), as the store does: each
    recording is served once, in order; then the last one of a key again if it is
    ``session`` or the lookup asks so (``repeat_last``).
    Each has its own ``Backends`` unless given one (several connections of one run)."""

    def __init__(self, recorded: list[Interaction] = (), backends: Backends | None = None) -> None:
        from trproxy.protocols.postgres import match_key
        self.replayer = PostgresReplayer(backends=backends or Backends())
        self.recorded = list(recorded)
        self.used: set[int] = set()
        self.key = match_key
        self.lookups: list[Lookup] = []
        self.missed: list[Lookup] = []

    def send(self, *messages: Any, raw: bytes = b"") -> list[Any]:
        """Client messages in; the server messages the replayer answers, decoded."""
        out = b""
        for event in self.replayer.feed(wire(*messages) + raw):
            if isinstance(event, Reply):
                out += event.data
                continue
            self.lookups.append(event)
            key = self.key(event.request)
            candidates = [n for n, i in enumerate(self.recorded) if self.key(i.request) == key]
            match = next((n for n in candidates if n not in self.used), None)
            if match is None and candidates and (
                    self.recorded[candidates[-1]].lifetime == "session" or event.context.get("repeat_last")):
                match = candidates[-1]
            if match is None:
                self.missed.append(event)
                out += self.replayer.miss(event, "not recorded")
            else:
                self.used.add(match)  # positions in ``recorded``
                out += self.replayer.respond(event, self.recorded[match].responses)
        return self.decode(out)

    def decode(self, data: bytes) -> list[Any]:
        if data[:1] == b"N" and len(data) == 1:
            return [be.SSLResponse("N")]
        return server_messages(data)

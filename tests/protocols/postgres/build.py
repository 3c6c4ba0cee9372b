"""Build wire conversations from message objects, for recorder and replayer tests."""

from __future__ import annotations

from typing import Any

from tests.support.replay_server import Mocks
from trproxy.protocols.base import Direction, Interaction, Lookup
from trproxy.protocols.postgres import PostgresCodec, PostgresRecorder, PostgresReplayer
from trproxy.protocols.postgres import backend as be
from trproxy.protocols.postgres import frontend as fe
from trproxy.protocols.postgres.identity import Backends, cancel_key

_CODEC = PostgresCodec()


def wire(*messages: Any) -> bytes:
    return b"".join(_CODEC.encode(m) for m in messages)


def client(*messages: Any) -> tuple[str, bytes]:
    return ("client", wire(*messages))


def server(*messages: Any) -> tuple[str, bytes]:
    return ("server", wire(*messages))


STARTUP = fe.StartupMessage((("user", "alice"), ("database", "shop"),
                             ("application_name", "test")))
KEY = cancel_key(4242)  # the key replay hands out for pid 4242 (``identity``): bytes compare equal
HANDSHAKE = [
    be.AuthenticationOk(), be.ParameterStatus("server_version", "15.4"),
    be.ParameterStatus("application_name", "test"), be.ParameterStatus("client_encoding", "UTF8"),
    be.BackendKeyData(4242, KEY), be.ReadyForQuery("I"),
]


def logged_in() -> list[tuple[str, bytes]]:
    return [client(STARTUP), server(*HANDSHAKE)]


def record(*chunks: tuple[str, bytes], close: bool = True) -> list[Interaction]:
    """The interactions (pushed messages and interrupts, which the proxy records as
    events, are left out: ``tests.support.recording.capture`` keeps them)."""
    recorder = PostgresRecorder()
    out: list = []
    for side, data in chunks:
        out += recorder.feed(Direction(side), data)
    if close:
        out += recorder.feed(Direction.CLIENT, b"")
        out += recorder.feed(Direction.SERVER, b"")
    return [i for i in out if isinstance(i, Interaction)]


def server_messages(data: bytes, start: str = "ready") -> list[Any]:
    codec = PostgresCodec(start=start)
    codec.feed(Direction.SERVER, data)
    return [m for _, m in codec.events()]


class Replay:
    """A replayer driven by the replay engine (``tests.support.replay_server.Mocks``),
    answered from recorded interactions in a real mock pool. Several connections of one
    run share ``mocks`` (what the store served) and ``backends`` (the pids handed out);
    each has its own unless given them."""

    def __init__(self, recorded: list[Interaction] = (), backends: Backends | None = None,
                 mocks: Mocks | None = None) -> None:
        self.mocks = mocks or Mocks("postgres", recorded)
        self.replayer = PostgresReplayer(backends=backends or Backends())
        self.session = self.mocks.session(self.replayer)
        self.closed = False

    @property
    def lookups(self) -> list[Lookup]:
        return self.mocks.lookups

    @property
    def missed(self) -> list[dict]:
        """The misses the engine reported."""
        return self.mocks.misses

    def send(self, *messages: Any, raw: bytes = b"") -> list[Any]:
        """Client messages in; the server messages the engine answers, decoded."""
        out, self.closed = self.mocks.replay(self.session, wire(*messages) + raw)
        return self.decode(out)

    def decode(self, data: bytes) -> list[Any]:
        if data[:1] == b"N" and len(data) == 1:
            return [be.SSLResponse("N")]
        return server_messages(data)

"""Helpers for the Redis dialect tests: feeding strategies, a tee relay, a tiny mock store.

Feeding strategies turn a stream (``[(side, bytes)]`` in wire order) into the same
stream cut differently - whole chunks, one byte at a time, split at one offset - so a
test can assert that decoding does not depend on how TCP cut the bytes.

``TeeRelay`` is a real TCP relay on loopback between a real client and a real server
that keeps a copy of every chunk in wire order. ``MiniStore`` answers lookups with the
matching rules of DESIGN.md (match keys equal; data consumed once in recorded order;
session repeats its last answer) so replay can be exercised without the proxy.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from trproxy.protocols.base import NEED_DATA, Direction, Interaction, Lookup, ProtocolError, Reply
from trproxy.protocols.redis import RedisCodec, RedisRecorder, RedisReplayer, match_key

Chunks = list[tuple[str, bytes]]
CLOSE: Chunks = [("client", b""), ("server", b"")]


def bytewise(chunks: Chunks) -> Chunks:
    return [(side, data[i:i + 1]) for side, data in chunks for i in range(len(data))]


def split_at(chunks: Chunks, offset: int) -> Chunks:
    """The same stream with the chunk holding byte ``offset`` cut in two there."""
    out: Chunks = []
    seen = 0
    for side, data in chunks:
        if seen < offset < seen + len(data):
            cut = offset - seen
            out += [(side, data[:cut]), (side, data[cut:])]
        else:
            out.append((side, data))
        seen += len(data)
    return out


def coalesced(chunks: Chunks) -> Chunks:
    """Consecutive chunks of one side merged: the fewest reads that keep the interleaving."""
    out: Chunks = []
    for side, data in chunks:
        if out and out[-1][0] == side:
            out[-1] = (side, out[-1][1] + data)
        else:
            out.append((side, data))
    return out


def offsets(total: int, every_below: int = 2048) -> list[int]:
    """Every offset of a small stream; evenly spread ones (and the ends) of a big one."""
    if total <= every_below:
        return list(range(1, total))
    step = max(1, total // (48 if total < 65536 else 10))
    return sorted({*range(1, total, step), 1, 2, total - 2, total - 1})


def decode(chunks: Chunks, **limits: int) -> tuple[list, str | None]:
    """Every message the codec yields (side, message), and the error class name if any."""
    codec = RedisCodec(**limits)
    out = []
    try:
        for side, data in chunks + CLOSE:
            codec.feed(Direction(side), data)
            while (m := codec.next_message()) is not NEED_DATA:
                out.append((m.direction.value, m))
    except ProtocolError as exc:
        assert_not_a_bug(exc)
        return out, type(exc).__name__
    return out, None


def assert_not_a_bug(exc: ProtocolError) -> None:
    """The decoders turn a stray ValueError/IndexError into a DecodeError (so the proxy
    survives a decoder bug); in tests such a conversion - it keeps the original as
    ``__cause__`` - is a failure."""
    assert exc.__cause__ is None, f"decoder bug surfaced as {exc!r}: {exc.__cause__!r}"


@dataclass
class Recording:
    interactions: list[Interaction]
    error: str | None
    unanswered: list

    def plain(self) -> list[dict]:
        return [{"request": i.request, "responses": i.responses, "lifetime": i.lifetime,
                 "summary": i.summary} for i in self.interactions]


def record(chunks: Chunks, close: bool = True, **limits: int) -> Recording:
    """Feed a stream to a recorder the way the proxy does; stops at the first error."""
    recorder = RedisRecorder(**limits)
    out: list[Interaction] = []
    error = None
    try:
        for side, data in chunks + (CLOSE if close else []):
            out += recorder.feed(Direction(side), data)
    except ProtocolError as exc:
        assert_not_a_bug(exc)
        error = type(exc).__name__
    return Recording(out, error, recorder.unanswered)


class MiniStore:
    """Recorded interactions answered by match key, with DESIGN.md's consumption rules."""

    def __init__(self, interactions: list[Interaction]) -> None:
        self.entries = [(match_key(i.request), i) for i in interactions]
        self.used: set[int] = set()
        self.misses: list = []

    def find(self, request) -> Interaction | None:  # type: ignore[no-untyped-def]
        key = match_key(request)
        for index, (k, interaction) in enumerate(self.entries):
            if k == key and index not in self.used:
                self.used.add(index)
                return interaction
        for k, interaction in reversed(self.entries):  # session answers repeat the last one
            if k == key and interaction.lifetime == "session":
                return interaction
        self.misses.append(request)
        return None


def replay_bytes(replayer: RedisReplayer, store: MiniStore, data: bytes) -> bytes:
    """What a replaying proxy would send back for ``data`` (no sockets)."""
    out = bytearray()
    for event in replayer.feed(data):
        if isinstance(event, Reply):
            out += event.data
            continue
        assert isinstance(event, Lookup)
        found = store.find(event.request)
        if not event.expects_reply:
            continue
        if found is None:
            out += replayer.miss(event, "no match in the test store")
        else:
            out += replayer.respond(event, found.responses)
    return bytes(out)


# --- sockets ----------------------------------------------------------------------------


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


@dataclass
class TeeRelay:
    """Loopback TCP relay to ``upstream`` that records every chunk of every connection."""

    upstream: tuple[str, int]
    host: str = "127.0.0.1"
    connections: list[Chunks] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._listener = socket.create_server((self.host, 0))
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            chunks: Chunks = []
            with self._lock:
                self.connections.append(chunks)
                self._sockets += [client, server]
            for src, dst, side in ((client, server, "client"), (server, client, "server")):
                t = threading.Thread(target=self._pump, args=(src, dst, side, chunks), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, side: str, chunks: Chunks) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            with self._lock:
                chunks.append((side, data))
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            try:
                dst.sendall(data)
            except OSError:
                return

    def wait_closed(self, timeout: float = 10.0) -> None:
        for t in self._threads:
            t.join(timeout)

    def close(self) -> None:
        _close(self._listener)
        for s in self._sockets:
            _close(s)

    def streams(self) -> list[Chunks]:
        """Each connection's chunks, without the end-of-stream markers."""
        with self._lock:
            return [[(s, d) for s, d in c if d] for c in self.connections]


class ReplayServer:
    """A loopback server that answers real clients from a ``MiniStore`` via ``RedisReplayer``."""

    def __init__(self, store: MiniStore, host: str = "127.0.0.1") -> None:
        self.store = store
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.errors: list[BaseException] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        replayer = RedisReplayer()
        try:
            while data := conn.recv(65536):
                with self._lock:
                    out = replay_bytes(replayer, self.store, data)
                conn.sendall(out)
        except OSError:
            pass
        except Exception as exc:  # surfaced by the test
            self.errors.append(exc)
        finally:
            _close(conn)

    def close(self) -> None:
        _close(self._listener)
        for s in self._sockets:
            _close(s)


def iter_lines(text: str) -> Iterator[str]:
    for line in text.splitlines():
        if line and not line.startswith("#"):
            yield line

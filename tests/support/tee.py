"""A loopback TCP relay between a real client and a real server that keeps every byte.

Each accepted connection is relayed to ``upstream``. ``Relay.streams`` holds, per
connection, a ``Stream`` whose ``chunks`` are ``("client"|"server", bytes)`` in the order
the relay read them, with ``b""`` marking a side's end of stream. A chunk is logged before
it is forwarded, so the log is causal: an answer never precedes what caused it. The relay
does not look at the bytes (it does not use the code under test), except through hooks:

* ``recorder``: a factory of a ``Recorder`` per connection; every chunk (end of stream
  included) is teed into it as it passes. An error stops that connection's capture
  (``Stream.error``), never the relay, as in the proxy.
* ``server_filter``: given the relay, a factory of a per-connection function that turns
  each read from the server into the chunks to log and forward (Kafka rewrites the
  broker addresses advertised in Metadata so that clients come back through the relay).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

from tests.support.services import free_port
from trproxy.protocols.base import Direction, Interaction, Recorder

Chunks = list[tuple[str, bytes]]
ServerFilter = Callable[["Relay"], Callable[[bytes], list[bytes]]]


@dataclass
class Stream:
    """One relayed connection."""

    chunks: Chunks = field(default_factory=list)
    recorder: Recorder | None = None
    interactions: list[Interaction] = field(default_factory=list)
    error: Exception | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def data(self, side: str) -> bytes:
        return b"".join(d for s, d in self.chunks if s == side)

    def data_chunks(self) -> Chunks:
        """The chunks without the end-of-stream markers."""
        return [(s, d) for s, d in self.chunks if d]

    def tee(self, side: str, data: bytes) -> None:
        self.chunks.append((side, data))
        if self.recorder is not None and self.error is None:
            try:
                self.interactions += self.recorder.feed(Direction(side), data)
            except Exception as exc:  # capture stops, the relay goes on
                self.error = exc


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv()/accept()
    with contextlib.suppress(OSError):
        sock.close()


class Listener:
    """A loopback listener (bound at once, so ``port`` is known) that hands each accepted
    connection to ``_connected`` once started; ``close`` also cuts every connection."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        # a port held by free_port(): a replay server may take it again after close()
        self.listener = socket.create_server((host, port or free_port()))  # SO_REUSEADDR
        self.port: int = self.listener.getsockname()[1]
        self.closing = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Self:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.closing = True
        _close(self.listener)
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)

    def track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
        return sock

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self._connected(self.track(sock))

    def _connected(self, sock: socket.socket) -> None:
        raise NotImplementedError


class Relay(Listener):
    def __init__(self, upstream: tuple[str, int], host: str = "127.0.0.1", *,
                 recorder: Callable[[], Recorder] | None = None,
                 server_filter: ServerFilter | None = None) -> None:
        super().__init__(host)
        self.upstream = upstream
        self.recorder = recorder
        self.server_filter = server_filter
        self.streams: list[Stream] = []

    def wait(self, timeout: float = 10.0) -> list[Stream]:
        """Wait until every relayed connection has closed on both sides."""
        for stream in list(self.streams):
            assert stream.done.wait(timeout), "a relayed connection did not close"
        return self.streams

    def interactions(self) -> list[Interaction]:
        """What the recorders made of every connection, connection by connection."""
        return [i for s in self.streams for i in s.interactions]

    def _connected(self, client: socket.socket) -> None:
        try:
            server = self.track(socket.create_connection(self.upstream))
        except OSError:
            _close(client)
            return
        stream = Stream(recorder=self.recorder() if self.recorder else None)
        with self._lock:
            self.streams.append(stream)
        rewrite = self.server_filter(self) if self.server_filter else None
        open_sides = [2]
        for src, dst, side, change in ((client, server, "client", None),
                                       (server, client, "server", rewrite)):
            threading.Thread(target=self._pump, daemon=True,
                             args=(src, dst, side, change, stream, open_sides)).start()

    def _pump(self, src: socket.socket, dst: socket.socket, side: str,
              change: Callable[[bytes], list[bytes]] | None, stream: Stream,
              open_sides: list[int]) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                with self._lock:
                    stream.tee(side, b"")
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                break
            for piece in change(data) if change else [data]:
                with self._lock:
                    stream.tee(side, piece)
                with contextlib.suppress(OSError):
                    dst.sendall(piece)
        with self._lock:
            open_sides[0] -= 1
            last = open_sides[0] == 0
        if last:
            _close(src)
            _close(dst)
            stream.done.set()

"""A threaded TCP relay that keeps every byte of each connection, in wire order.

Each accepted connection is relayed to the upstream server; ``Relay.streams`` holds,
per connection, the chunks as ``("client"|"server", bytes)`` in the order the relay
read them, with ``b""`` marking a side's EOF. A chunk is logged before it is
forwarded, so the log is causal: a response never precedes the request it answers.
The relay does not look at the bytes (it does not use the code under test).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class Stream:
    chunks: list[tuple[str, bytes]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def data(self, side: str) -> bytes:
        return b"".join(d for s, d in self.chunks if s == side)


class Relay:
    def __init__(self, upstream: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self.streams: list[Stream] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closing = False

    def start(self) -> Relay:
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            stream = Stream()
            with self._lock:
                self.streams.append(stream)
            open_sides = [2]

            def pump(src: socket.socket, dst: socket.socket, side: str, stream: Stream = stream,
                     open_sides: list[int] = open_sides, client: socket.socket = client,
                     server: socket.socket = server) -> None:
                while True:
                    try:
                        data = src.recv(65536)
                    except OSError:
                        data = b""
                    with self._lock:
                        stream.chunks.append((side, data))
                    if not data:
                        with contextlib.suppress(OSError):
                            dst.shutdown(socket.SHUT_WR)
                        break
                    with contextlib.suppress(OSError):
                        dst.sendall(data)
                with self._lock:
                    open_sides[0] -= 1
                    if open_sides[0] == 0:
                        client.close()
                        server.close()
                        stream.done.set()

            for args in ((client, server, "client"), (server, client, "server")):
                t = threading.Thread(target=pump, args=args, daemon=True)
                t.start()
                self._threads.append(t)

    def wait(self, timeout: float = 10.0) -> list[Stream]:
        """Wait until every relayed connection has closed on both sides."""
        for stream in list(self.streams):
            assert stream.done.wait(timeout), "a relayed connection did not close"
        return self.streams

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self.listener.close()

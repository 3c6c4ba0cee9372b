"""A TCP relay between a real PostgreSQL client and a real server that keeps every byte.

Each accepted connection is relayed to the server on its own loop thread; the chunks
each side sent are kept per connection in wire order (a chunk is appended before it is
forwarded, so an answer is always after what caused it), and teed into a
``PostgresRecorder`` per connection as they pass. A recorder error stops that
connection's capture (``Captured.error``) but never the relay, like the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field

from trproxy.protocols.base import Direction, Interaction, ProtocolError
from trproxy.protocols.postgres import PostgresRecorder


@dataclass
class Captured:
    chunks: list[tuple[str, bytes]] = field(default_factory=list)  # ("client"|"server", data)
    interactions: list[Interaction] = field(default_factory=list)
    error: ProtocolError | None = None
    recorder: PostgresRecorder = field(default_factory=PostgresRecorder)
    closed: bool = False

    def data(self, side: str) -> bytes:
        return b"".join(d for s, d in self.chunks if s == side)

    def tee(self, side: str, data: bytes) -> None:
        if data:
            self.chunks.append((side, data))
        if self.error is None:
            try:
                self.interactions += self.recorder.feed(Direction(side), data)
            except ProtocolError as exc:
                self.error = exc


class Relay:
    def __init__(self, upstream_host: str, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = 0
        self.streams: list[Captured] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    def dsn(self, user: str = "trproxy", password: str = "trproxy", db: str = "trproxy",
            **params: str) -> str:
        extra = "".join(f"&{k}={v}" for k, v in params.items())
        return (f"postgresql://{user}:{password}@{self.host}:{self.port}/{db}"
                f"?sslmode=disable{extra}")

    def start(self) -> Relay:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def _stop() -> None:
            if self._server is not None:
                self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.sleep(0.05)

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def wait_closed(self, timeout: float = 10.0) -> None:
        """Wait until every relayed connection has closed on both sides."""
        import time
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(s.closed for s in self.streams):
                return
            time.sleep(0.02)
        raise TimeoutError("relayed connections still open")

    def interactions(self) -> list[Interaction]:
        return [i for s in self.streams for i in s.interactions]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        captured = Captured()
        self.streams.append(captured)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            captured.closed = True
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, side: str) -> None:
            try:
                while data := await src.read(65536):
                    captured.tee(side, data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                captured.tee(side, b"")
                with contextlib.suppress(Exception):
                    dst.write_eof()

        try:
            await asyncio.gather(pipe(reader, up_writer, "client"),
                                 pipe(up_reader, writer, "server"))
        finally:
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()
            captured.closed = True
            self._tasks.discard(task)

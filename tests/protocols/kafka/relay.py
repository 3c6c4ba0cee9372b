"""A TCP relay between a real Kafka client and a real broker that keeps every byte.

Each accepted connection is relayed to the broker; the chunks each side sent, in wire
order, are kept per connection (``Relay.streams``), and can be teed into a recorder.
Kafka clients connect to the broker addresses that Metadata and FindCoordinator
responses advertise, which would bypass the relay after bootstrap. The relay therefore
rewrites the broker's port in those responses to its own: it replaces the bytes
``"127.0.0.1"`` (as an int16- or varint-length string) followed by the broker's int32
port with the same string followed by the relay's port. Same length, so framing and
every other byte stay untouched; this does not use the codec under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field


@dataclass
class Captured:
    chunks: list[tuple[str, bytes]] = field(default_factory=list)  # ("client"|"server", data)

    def data(self, side: str) -> bytes:
        return b"".join(d for s, d in self.chunks if s == side)


class Relay:
    def __init__(self, upstream_host: str, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = 0
        self.streams: list[Captured] = []
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._tasks: set[asyncio.Task] = set()

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Relay:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        fut.result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def _stop() -> None:
            if self._server is not None:
                self._server.close()
            tasks = list(self._tasks)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _rewrite(self, frame: bytes) -> bytes:
        host = self.upstream[0].encode()
        old_port = self.upstream[1].to_bytes(4, "big")
        new_port = self.port.to_bytes(4, "big")
        for prefix in (len(host).to_bytes(2, "big"), bytes([len(host) + 1])):
            frame = frame.replace(prefix + host + old_port, prefix + host + new_port)
        return frame

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())
        captured = Captured()
        self.streams.append(captured)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return

        async def client_to_server() -> None:
            while data := await reader.read(65536):
                captured.chunks.append(("client", data))
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def server_to_client() -> None:
            buf = b""
            while data := await up_reader.read(65536):
                buf += data
                while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "big"):
                    end = 4 + int.from_bytes(buf[:4], "big")
                    frame = self._rewrite(buf[:end])
                    buf = buf[end:]
                    captured.chunks.append(("server", frame))
                    writer.write(frame)
                await writer.drain()
            writer.close()

        try:
            await asyncio.gather(client_to_server(), server_to_client())
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()
            self._tasks.discard(asyncio.current_task())

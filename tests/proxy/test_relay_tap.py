"""The relay's copy for the recording is best effort: its failure never ends the bytes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvloop

LOOPS = pytest.mark.parametrize("new_loop", [uvloop.new_event_loop, None], ids=["uvloop", "asyncio"])


@contextlib.asynccontextmanager
async def _through_relay(tap: Callable[[bytes], Any]) -> AsyncIterator[tuple[Any, Any, int]]:
    """An echo server behind ``relay`` with ``tap`` on the client's bytes: the client's
    (reader, writer) and the echo server's port."""
    from trproxy.proxy.relay import relay

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await asyncio.open_connection("127.0.0.1", port)
        await relay((reader, writer), upstream, to_upstream=tap)

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy = await asyncio.start_server(handle, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.sockets[0].getsockname()[1])
    try:
        yield reader, writer, port
    finally:
        writer.close()
        proxy.close()
        server.close()


@LOOPS
def test_a_tap_that_raises_ends_the_copy_not_the_connection(new_loop) -> None:
    """A recorder bug (the Kafka split's IndexError, found by fuzzing) used to escape the
    relay's tap and reset the app's connection; the bytes must keep flowing."""
    seen: list[bytes] = []

    def broken(data: bytes) -> None:
        seen.append(data)
        raise IndexError("a recorder bug")

    async def main() -> None:
        async with _through_relay(broken) as (reader, writer, _port):
            for word in (b"one", b"two", b"three"):
                writer.write(word)
                await writer.drain()
                assert await reader.readexactly(len(word)) == word
            writer.write_eof()
            assert await reader.read() == b""

    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(main())
    assert seen == [b"one"]


@LOOPS
def test_a_tap_may_hold_its_direction_until_the_recording_caught_up(new_loop) -> None:
    """A tap returns a future when the recording's writer is behind: that direction reads
    no more until it is done (backpressure per connection), while the loop goes on."""

    async def main() -> None:
        seen: list[bytes] = []
        hold: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def tap(data: bytes) -> asyncio.Future[None] | None:
            seen.append(data)
            return hold if data and not hold.done() else None

        async with _through_relay(tap) as (reader, writer, port):
            writer.write(b"one")
            assert await reader.readexactly(3) == b"one"  # relayed before the tap held it
            writer.write(b"two")
            await writer.drain()
            other = await asyncio.open_connection("127.0.0.1", port)  # the loop is not held
            other[1].write(b"ping")
            assert await other[0].readexactly(4) == b"ping"
            other[1].close()
            assert seen == [b"one"]  # "two" waits in the socket while the hold is pending
            hold.set_result(None)
            assert await reader.readexactly(3) == b"two"
            writer.write_eof()
            assert await reader.read() == b""
            assert seen == [b"one", b"two", b""]

    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(main())

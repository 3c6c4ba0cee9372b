"""Record and passthrough give up on an upstream that never accepts the connection."""

from __future__ import annotations

import asyncio
import socket

from trproxy.proxy.context import Mode, RunContext
from trproxy.proxy.record import passthrough_or_record


def test_an_upstream_that_never_completes_the_handshake_resets_the_client_after_the_timeout():
    """A full accept queue drops the SYN: the connect hangs until ``connect_timeout``; the
    app's connection is then reset, and the proxy is not stuck on it."""
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    port = full.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue; then SYNs are dropped, connects hang
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)

    async def main() -> bytes | str:
        ctx = RunContext(Mode.RECORD)
        ctx.connect_timeout = 0.5
        loop = asyncio.get_running_loop()
        served: asyncio.Future[float] = loop.create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            started = loop.time()
            await passthrough_or_record(ctx, (reader, writer), "127.0.0.1", port, record=True)
            served.set_result(loop.time() - started)

        proxy = await asyncio.start_server(handle, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", proxy.sockets[0].getsockname()[1])
        # it waited for the handshake as long as it was told (a refused connect: at once)
        assert await asyncio.wait_for(served, 30) >= 0.49
        try:
            got: bytes | str = await asyncio.wait_for(reader.read(), 30)
        except ConnectionResetError:
            got = "reset"
        writer.close()
        proxy.close()
        assert ctx.recorded == {} and ctx.writer is None
        return got

    try:
        assert asyncio.run(main()) == "reset"
    finally:
        for s in fillers:
            s.close()
        full.close()

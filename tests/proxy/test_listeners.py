"""The redirect listeners: 127.0.0.1, ::1 and, for containers, the addresses by which they
reach the host, all on one port; forward listeners are left alone."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from trproxy.proxy.context import Mode, RunContext
from trproxy.proxy.server import Proxy


def test_redirect_port_also_on_a_container_gateway_address() -> None:
    async def main() -> None:
        proxy = Proxy(RunContext(Mode.PASSTHROUGH))
        await proxy.listen_forward(("127.0.0.1", 0), ("127.0.0.1", 9))
        # 127.0.0.2 stands in for a bridge gateway: a local address other than 127.0.0.1
        port = await proxy.listen_redirect(("127.0.0.2",))
        assert proxy.addresses == ["::1", "127.0.0.2"] and len(proxy.servers) == 4
        for host in ("127.0.0.1", "::1", "127.0.0.2"):  # refused if nothing listened there
            _reader, writer = await asyncio.open_connection(host, port)
            writer.close()  # the proxy resets it: not a redirected connection
        with pytest.raises(OSError) as err:  # not an address of this host: said at once
            await Proxy(RunContext(Mode.PASSTHROUGH)).listen_redirect(("198.51.100.1",))
        assert err.value.errno == errno.EADDRNOTAVAIL
        await proxy.close()

    asyncio.run(main())


def test_a_burst_of_connections_is_accepted_in_a_few_loop_iterations() -> None:
    """uvloop's own server accepts one connection per loop iteration: 300 queued connects
    took 300 iterations, and a busy loop's iteration is long (a 1,000-connection soak's
    last connections waited 29 s for their first reply). The listener takes a batch."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        ctx = RunContext(Mode.PASSTHROUGH)
        proxy = Proxy(ctx)
        await proxy.listen_forward(("127.0.0.1", 0), ("127.0.0.1", 9))
        port = proxy.servers[0].sockets[0].getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]  # queued
        try:
            for _ in range(12):  # accept, then each connection's task runs to its handler
                await asyncio.sleep(0)
            assert ctx.connections == 300
        finally:
            for c in clients:
                c.close()
            await proxy.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())

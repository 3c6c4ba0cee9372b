"""The replay driver (``replay._Driver``) behind the proxy's own listener, with a real client."""

from __future__ import annotations

import asyncio

import redis

from trproxy.protocols.registry import match_key
from trproxy.proxy.context import Mode, RunContext
from trproxy.proxy.server import Proxy
from trproxy.store import Exchange, MockPool

_DEST = ("127.0.0.1", 6399)  # never dialled: replay answers from the pool


def test_pipelined_answers_leave_in_one_write_per_read(monkeypatch) -> None:
    """The engine answers a read of 16 pipelined commands with 16 ``Send``s; the driver
    writes them as one (a send per answer made redis-benchmark -P 16 replay at 0.03x)."""
    pool = MockPool(match_key)
    for i in range(16):
        pool.add(Exchange("redis", f"{_DEST[0]}:{_DEST[1]}", ["GET", f"k{i}"], [f"v{i}"],
                          summary="GET", connection=1, seq=i + 1, order=i + 1))
    reads, writes = [0], [0]
    read, write = asyncio.StreamReader.read, asyncio.StreamWriter.write

    async def counted_read(self, n=-1):  # type: ignore[no-untyped-def]
        data = await read(self, n)
        reads[0] += bool(data)
        return data

    def counted_write(self, data):  # type: ignore[no-untyped-def]
        writes[0] += 1
        write(self, data)

    monkeypatch.setattr(asyncio.StreamReader, "read", counted_read)
    monkeypatch.setattr(asyncio.StreamWriter, "write", counted_write)

    async def main() -> list:
        ctx = RunContext(Mode.REPLAY, pool=pool)
        proxy = Proxy(ctx)
        await proxy.listen_forward(("127.0.0.1", 0), _DEST)
        port = proxy.servers[0].sockets[0].getsockname()[1]

        def client() -> list:
            r = redis.Redis(port=port, socket_timeout=30)
            pipe = r.pipeline(transaction=False)
            for i in range(16):
                pipe.get(f"k{i}")
            try:
                return pipe.execute()
            finally:
                r.close()

        try:
            return await asyncio.to_thread(client)
        finally:
            await proxy.close()

    assert asyncio.run(main()) == [f"v{i}".encode() for i in range(16)]
    assert all(e.used for e in pool.entries())
    assert 1 <= writes[0] <= reads[0] < 16  # one write per read of requests, not per answer

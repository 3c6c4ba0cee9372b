"""The replay driver (``replay._Driver``) behind the proxy's own listener, with a real client.

A plain socket is served in protocol callbacks (``_Driver.serve``, ``_Client``); TLS
streams are read as streams (``_Driver.run``), the reference. Each test runs both ways
(``path``) on both event loops (uvloop, the default, and the stdlib's), and the client
must see the same bytes, in the same order, with the same end."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import uvloop

from trproxy.protocols.registry import match_key
from trproxy.proxy import replay
from trproxy.proxy.context import Mode, RunContext
from trproxy.proxy.server import Proxy
from trproxy.store import Exchange, MockPool

_DEST = ("127.0.0.1", 6399)  # never dialled: replay answers from the pool


@pytest.fixture(params=["uvloop", "asyncio"])
def loop(request) -> str:
    return request.param


@pytest.fixture(params=["callbacks", "streams"])
def path(request, monkeypatch) -> str:
    """``callbacks``: plain sockets through ``_Driver.serve``; ``streams``: every socket
    read as a stream (``_Driver.run``, as a TLS stream is), the reference."""
    if request.param == "streams":
        monkeypatch.setattr(replay, "spliceable", lambda streams: False)
    return request.param


def _pool(answers: list[str]) -> MockPool:
    pool = MockPool(match_key)
    for i, value in enumerate(answers):
        pool.add(Exchange("redis", f"{_DEST[0]}:{_DEST[1]}", ["GET", f"k{i}"], [value],
                          summary="GET", connection=1, seq=i + 1, order=i + 1))
    return pool


def _get(i: int) -> bytes:
    key = f"k{i}".encode()
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)


def _bulk(value: str) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value.encode())


def _replayed(pool: MockPool, loop: str, client: Callable[[int, RunContext], Any]) -> tuple[Any, RunContext]:
    """``client(port, ctx)`` (in a thread) against a replaying proxy on ``loop``."""
    ctx = RunContext(Mode.REPLAY, pool=pool)

    async def main() -> Any:
        proxy = Proxy(ctx)
        await proxy.listen_forward(("127.0.0.1", 0), _DEST)
        port = proxy.servers[0].sockets[0].getsockname()[1]
        try:
            return await asyncio.to_thread(client, port, ctx)
        finally:
            await proxy.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop if loop == "uvloop" else None) as runner:
        return runner.run(main()), ctx


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(1 << 20):
        chunks.append(data)
    return b"".join(chunks)


def test_pipelined_answers_leave_in_one_write_per_read(monkeypatch, path) -> None:
    """The engine answers a read of 16 pipelined commands with 16 ``Send``s; the driver
    writes them as one (a send per answer made redis-benchmark -P 16 replay at 0.03x)."""
    pool = _pool([f"v{i}" for i in range(16)])
    reads, writes = [0], [0]
    dispatch = replay._Driver.dispatch
    transport = asyncio.selector_events._SelectorSocketTransport  # type: ignore[attr-defined]
    write = transport.write

    def counted_dispatch(self, event):  # type: ignore[no-untyped-def]
        reads[0] += isinstance(event, replay.ClientData)
        dispatch(self, event)

    def counted_write(self, data):  # type: ignore[no-untyped-def]
        writes[0] += 1
        write(self, data)

    monkeypatch.setattr(replay._Driver, "dispatch", counted_dispatch)
    monkeypatch.setattr(transport, "write", counted_write)  # under both paths' writes

    def client(port: int, _ctx: RunContext) -> list:
        r = redis.Redis(port=port, socket_timeout=30)
        pipe = r.pipeline(transaction=False)
        for i in range(16):
            pipe.get(f"k{i}")
        try:
            return pipe.execute()
        finally:
            r.close()

    got, _ctx = _replayed(pool, "asyncio", client)  # the stdlib's transport counts the writes
    assert got == [f"v{i}".encode() for i in range(16)]
    assert all(e.used for e in pool.entries())
    assert 1 <= writes[0] <= reads[0] < 16  # one write per read of requests, not per answer


def test_a_client_that_half_closes_gets_every_answer_then_the_close(loop, path) -> None:
    answers = [f"value-{i}" * (i + 1) for i in range(20)]

    def client(port: int, _ctx: RunContext) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            for i in range(20):
                s.sendall(_get(i))
            s.shutdown(socket.SHUT_WR)  # nothing more asked: the answers must still come
            return _read_all(s)  # then EOF: the session closes once they are out

    got, ctx = _replayed(_pool(answers), loop, client)
    assert got == b"".join(_bulk(a) for a in answers)
    assert ctx.served_count["redis"] == 20 and not ctx.misses and not ctx.problems


def test_a_client_that_does_not_read_stops_the_replay_not_the_proxys_memory(loop, path) -> None:
    """Reading pauses while the socket's send buffer is full (the stream's ``drain``
    after each read): a client that asks and does not read gets a few answers queued,
    not all of them buffered in the proxy; once it reads, every answer comes, in order."""
    answers = [f"{i:04d}" + "x" * (1 << 20) for i in range(40)]  # 40 answers of 1 MiB

    def client(port: int, ctx: RunContext) -> tuple[int, bytes]:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            s.settimeout(30)
            s.connect(("127.0.0.1", port))
            for i in range(40):  # one request at a time: each may be read on its own
                s.sendall(_get(i))
                time.sleep(0.01)
            time.sleep(0.5)
            served_unread = ctx.served_count["redis"]
            s.shutdown(socket.SHUT_WR)
            return served_unread, _read_all(s)

    (served_unread, got), ctx = _replayed(_pool(answers), loop, client)
    assert served_unread < 20, served_unread  # kernel buffers hold a few MiB, not 40
    assert got == b"".join(_bulk(a) for a in answers)
    assert ctx.served_count["redis"] == 40 and not ctx.misses


def test_a_client_reset_ends_its_session_and_the_proxy_serves_on(loop, path, caplog) -> None:
    answers = [f"v{i}" for i in range(4)]

    def client(port: int, _ctx: RunContext) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(_get(0))
            assert s.recv(100) == _bulk("v0")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        time.sleep(0.2)  # the reset reached the proxy
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(_get(1) + _get(2))
            s.shutdown(socket.SHUT_WR)
            return _read_all(s)

    got, ctx = _replayed(_pool(answers), loop, client)
    assert got == _bulk("v1") + _bulk("v2")
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert ctx.served_count["redis"] == 3 and not ctx.problems

"""The proxy's datagram listener (DNS) without the redirect: queries sent straight to it, with the
server the app "asked" given by ``server_of``. Record asks a real dnsmasq and keeps each
question and answer once; replay answers from those documents with the server gone.
dnsmasq listens on port 53 (the port that says DNS) of a loopback address of its own: root."""

from __future__ import annotations

import asyncio
import os
import random
import socket

import pytest

from tests.support.dnsserver import DnsServer, query
from trproxy.protocols.dns import codec
from trproxy.protocols.registry import match_key
from trproxy.proxy.context import Mode, RunContext
from trproxy.proxy.datagrams import DatagramListener
from trproxy.store import Exchange, MockPool

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="port 53 needs root")]

RECORDS = ["host-record=db.internal,127.0.0.1", "cname=www.internal,db.internal",
           "srv-host=_pg._tcp.internal,db.internal,5432,10,5"]


def _dnsmasq() -> DnsServer:
    return DnsServer(RECORDS, host=f"127.53.{random.randrange(1, 255)}.{random.randrange(1, 255)}", port=53)


class Recorded:
    """Collects what the run records (what the mock writer would write)."""

    def __init__(self) -> None:
        self.items: list[Exchange] = []
        self.count = 0

    def write(self, exchange: Exchange) -> None:
        self.items.append(exchange)


async def _ask(listener: DatagramListener, message: bytes, family: int = socket.AF_INET) -> bytes | None:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    loop = asyncio.get_running_loop()
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        await loop.sock_sendto(s, message, (host, listener.port))
        try:
            return await asyncio.wait_for(loop.sock_recv(s, 4096), 2)
        except TimeoutError:
            return None


async def _session(ctx: RunContext, server: tuple[str, int], messages: list[tuple[bytes, int]]) -> list[bytes | None]:
    listener = DatagramListener(ctx)
    await listener.start()
    listener.server_of = lambda sender, local: server
    try:
        return [await _ask(listener, m, f) for m, f in messages]
    finally:
        await listener.close()


def _record(server: DnsServer, messages: list[tuple[bytes, int]]) -> tuple[list[Exchange], list[bytes | None]]:
    ctx = RunContext(Mode.RECORD)
    ctx.writer = Recorded()  # type: ignore[assignment]
    answers = asyncio.run(_session(ctx, (server.host, server.port), messages))
    return ctx.writer.items, answers  # type: ignore[union-attr]


def test_record_keeps_each_question_and_answer_once_and_replay_answers_them():
    asked = [(query("db.internal", ident=1), socket.AF_INET), (query("WWW.internal", ident=2), socket.AF_INET6),
             (query("db.internal", ident=3), socket.AF_INET), (query("_pg._tcp.internal", 33, 4), socket.AF_INET),
             (query("nope.internal", ident=5), socket.AF_INET)]
    with _dnsmasq() as server:
        recorded, live = _record(server, asked)
    assert [codec.parse(a).id for a in live if a] == [1, 2, 3, 4, 5]
    assert [e.request for e in recorded] == [{"name": "db.internal", "type": "A"}, {"name": "www.internal", "type": "A"},
                                             {"name": "_pg._tcp.internal", "type": "SRV"},
                                             {"name": "nope.internal", "type": "A"}]  # db once
    assert all(e.protocol == "dns" and e.lifetime == "session" for e in recorded)
    assert recorded[-1].responses == [{"rcode": "NXDOMAIN", "answers": []}]

    # replay: the server is gone; another server is asked (another machine's resolver)
    ctx = RunContext(Mode.REPLAY)
    ctx.pool = MockPool.build(recorded, match_key)
    replayed = asyncio.run(_session(ctx, ("127.0.0.99", 53), [*asked, (query("db.internl", ident=6), socket.AF_INET)]))
    for (sent, _f), got, rec in zip(asked, replayed, live, strict=False):
        mine, theirs = codec.parse(got), codec.parse(rec)
        assert mine.id == codec.parse(sent).id and mine.questions == codec.parse(sent).questions
        assert (mine.rcode, mine.answers, mine.additional) == (theirs.rcode, theirs.answers, theirs.additional)
    miss = codec.parse(replayed[-1])
    assert miss.id == 6 and miss.rcode == 2 and not miss.answers  # SERVFAIL
    assert len(ctx.misses) == 1 and ctx.misses[0]["request"] == "A db.internl"
    assert "closest recorded: A db.internal" in ctx.misses[0]["reason"]
    assert ctx.served_count["dns"] == 5


def test_bad_bytes_are_dropped_at_replay_and_forwarded_at_record(monkeypatch):
    monkeypatch.setattr("trproxy.proxy.datagrams.TIMEOUT", 0.5)  # dnsmasq ignores the junk
    junk = b"\x01\x02\x03"
    ctx = RunContext(Mode.REPLAY)
    assert asyncio.run(_session(ctx, ("127.0.0.99", 53), [(junk, socket.AF_INET)])) == [None]
    with _dnsmasq() as server:
        recorded, live = _record(server, [(junk, socket.AF_INET), (query("db.internal"), socket.AF_INET)])
    assert recorded[0].request == {"name": "db.internal", "type": "A"} and len(recorded) == 1
    assert live[1] is not None


def test_a_query_nobody_redirected_is_not_answered():
    async def go() -> bytes | None:
        listener = DatagramListener(RunContext(Mode.REPLAY))
        await listener.start()
        listener.server_of = lambda sender, local: None  # not a socket of the run
        try:
            return await _ask(listener, query("db.internal"))
        finally:
            await listener.close()

    assert asyncio.run(go()) is None


@pytest.mark.parametrize("bad", [{"rcode": "MAYBE"}, {"answers": [{"name": "x", "type": "A", "data": "no"}]}])
def test_a_broken_recorded_answer_is_a_miss_not_a_crash(bad):
    ctx = RunContext(Mode.REPLAY)
    ctx.pool = MockPool.build([Exchange("dns", "127.0.0.1:53", {"name": "db.internal", "type": "A"}, [bad],
                                        lifetime="session")], match_key)
    [got] = asyncio.run(_session(ctx, ("127.0.0.1", 53), [(query("db.internal"), socket.AF_INET)]))
    assert codec.parse(got).rcode == 2
    assert "the recorded answer cannot be replayed" in ctx.misses[0]["reason"]

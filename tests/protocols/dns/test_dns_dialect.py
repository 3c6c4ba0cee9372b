"""DNS over TCP as a dialect, on a real conversation with dnsmasq (two pipelined queries
on one connection, answered in turn): recorded whole, byte by byte and split at every
offset to the same interactions; replayed with the live query ids."""

from __future__ import annotations

import socket

import pytest

from tests.support.chunking import bytewise, offsets, split_at, total
from tests.support.dnsserver import DnsServer, query
from trproxy.protocols.base import Direction
from trproxy.protocols.dns import DIALECT, DnsRecorder, DnsReplayer, codec
from trproxy.protocols.registry import detect

QUERIES = [query("www.internal", 1, 0x0101), query("_pg._tcp.internal", 33, 0x0202)]


@pytest.fixture(scope="module")
def stream():
    """The client's and the server's bytes of one TCP connection to dnsmasq."""
    records = ["host-record=db.internal,127.0.0.1", "cname=www.internal,db.internal",
               "srv-host=_pg._tcp.internal,db.internal,5432,10,5"]
    with DnsServer(records) as server, socket.create_connection((server.host, server.port), timeout=5) as s:
        chunks = []
        for q in QUERIES:
            sent = codec.tcp_frame(q)
            s.sendall(sent)
            chunks.append(("client", sent))
            framer, got = codec.TcpFramer(), b""
            while not framer.feed(data := s.recv(4096)):
                got += data
            chunks.append(("server", got + data))
        return chunks


def _record(chunks) -> list:
    recorder, out = DnsRecorder(), []
    for side, data in chunks:
        out += recorder.feed(Direction(side), data)
    return out


def test_recorded_the_same_however_tcp_cut_the_bytes(stream):
    whole = _record(stream)
    assert [(i.request, i.lifetime) for i in whole] == [({"name": "www.internal", "type": "A"}, "session"),
                                                        ({"name": "_pg._tcp.internal", "type": "SRV"}, "session")]
    assert [a["type"] for a in whole[0].responses[0]["answers"]] == ["CNAME", "A"]
    assert _record(bytewise(stream)) == whole
    for cut in offsets(total(stream), 400, 100):
        assert _record(split_at(stream, cut)) == whole, cut


def test_replayed_with_the_live_ids_whole_and_bytewise(stream):
    recorded = _record(stream)
    live = [query("www.internal", 1, 0x7777), query("_pg._tcp.internal", 33, 0x8888)]
    client = b"".join(codec.tcp_frame(q) for q in live)
    for pieces in ([client], [client[i:i + 1] for i in range(len(client))]):
        replayer, lookups = DnsReplayer(), []
        for piece in pieces:
            lookups += replayer.feed(piece)
        assert [lk.request for lk in lookups] == [i.request for i in recorded]
        answers = [codec.TcpFramer().feed(replayer.respond(lk, i.responses))[0] for lk, i in zip(lookups, recorded, strict=True)]
        theirs = [codec.parse(m) for m in codec.TcpFramer().feed(b"".join(d for s, d in stream if s == "server"))]
        for mine, real, sent in zip(map(codec.parse, answers), theirs, live, strict=True):
            assert mine.id == codec.parse(sent).id
            assert (mine.rcode, mine.answers, mine.additional) == (real.rcode, real.answers, real.additional)
    miss = codec.parse(codec.TcpFramer().feed(replayer.miss(lookups[0], "nothing"))[0])
    assert miss.rcode == 2 and miss.id == 0x7777


def test_detected_on_port_53_only(stream):
    first = stream[0][1]
    assert detect(first, 53) is DIALECT
    assert detect(first[:5], 53) is None  # undecided yet
    assert detect(first, 5353).name == "generic"


def test_malformed_bytes_are_a_protocol_error():
    with pytest.raises(codec.DnsError):
        DnsReplayer().feed(codec.tcp_frame(b"\x00" * 5))
    with pytest.raises(codec.DnsError):
        DnsRecorder().feed(Direction.CLIENT, codec.tcp_frame(b"\x00" * 12))  # no question

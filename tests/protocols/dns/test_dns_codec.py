"""The DNS codec against a real server's answers (dnsmasq on loopback), and bad bytes.

Every answer is parsed, checked, and serialized back: the same bytes where dnsmasq
compresses as we do, always the same message. DNS over TCP is fed whole, byte by byte
and split at every offset (its 2-byte length prefix frames the messages).
"""

from __future__ import annotations

import struct

import pytest

from tests.support.dnsserver import DnsServer, ask_tcp, ask_udp, query
from trproxy.protocols.dns import codec, readable
from trproxy.protocols.dns.codec import DnsError, Message, Question, Record, TcpFramer

RECORDS = ["host-record=db.internal,127.0.0.1", "host-record=v6.internal,::1",
           "cname=www.internal,db.internal", "srv-host=_pg._tcp.internal,db.internal,5432,10,5",
           "txt-record=t.internal,hello world", "mx-host=internal,mail.internal,7"]
ASKED = [("db.internal", 1), ("v6.internal", 28), ("www.internal", 1), ("_pg._tcp.internal", 33),
         ("t.internal", 16), ("internal", 15), ("missing.internal", 1), ("DB.Internal", 1)]


@pytest.fixture(scope="module")
def answers():
    with DnsServer(RECORDS) as server:
        yield {(n, t): ask_udp(server, query(n, t)) for n, t in ASKED} | \
              {"tcp": ask_tcp(server, query("www.internal")) + ask_tcp(server, query("_pg._tcp.internal", 33))}


def test_real_answers_parse_to_their_records(answers):
    got = {k: readable.answer(codec.parse(v)) for k, v in answers.items() if k != "tcp"}
    assert got["db.internal", 1]["answers"] == [{"name": "db.internal", "type": "A", "ttl": 0, "data": "127.0.0.1"}]
    assert got["v6.internal", 28]["answers"][0]["data"] == "::1"
    assert [(r["type"], r["data"]) for r in got["www.internal", 1]["answers"]] == \
        [("CNAME", "db.internal"), ("A", "127.0.0.1")]
    assert got["_pg._tcp.internal", 33]["answers"][0]["data"] == \
        {"priority": 10, "weight": 5, "port": 5432, "target": "db.internal"}
    assert got["internal", 15]["answers"][0]["data"] == {"preference": 7, "exchange": "mail.internal"}
    assert got["t.internal", 16]["answers"][0]["data"] == "\\# 12 0b68656c6c6f20776f726c64"  # kept raw
    assert got["missing.internal", 1] == {"rcode": "NXDOMAIN", "answers": []}
    # the server answers the name as asked; the question is recorded in lower case
    asked = codec.parse(answers["DB.Internal", 1]).questions[0]
    assert asked.name == "DB.Internal" and readable.question(asked) == {"name": "db.internal", "type": "A"}


def test_serialize_gives_the_message_back(answers):
    for key, raw in answers.items():
        if key == "tcp":
            continue
        msg = codec.parse(raw)
        again = codec.serialize(msg)
        assert codec.parse(again) == msg, key
        if key not in (("www.internal", 1), ("internal", 15)):  # dnsmasq does not compress
            # the names inside CNAME and MX data; we do (RFC 1035 4.1.4 allows both)
            assert again == raw, key


def test_readable_answer_round_trips(answers):
    for key, raw in answers.items():
        if key == "tcp":
            continue
        msg = codec.parse(raw)
        rebuilt = readable.reply(msg, readable.answer(msg))
        assert readable.answer(codec.parse(codec.serialize(rebuilt))) == readable.answer(msg), key
        assert rebuilt.id == msg.id and rebuilt.rcode == msg.rcode


def test_tcp_stream_whole_bytewise_and_split_everywhere(answers):
    stream = answers["tcp"]
    expected = TcpFramer().feed(stream)
    assert [codec.parse(m).questions[0].name for m in expected] == ["www.internal", "_pg._tcp.internal"]
    framer = TcpFramer()
    assert [m for b in stream for m in framer.feed(bytes([b]))] == expected and framer.pending == 0
    for cut in range(1, len(stream)):
        framer = TcpFramer()
        assert framer.feed(stream[:cut]) + framer.feed(stream[cut:]) == expected, cut


def test_names_compressed_and_escaped():
    msg = Message(7, 0x8180, [Question("a.example", 1)],
                  [Record("a.example", 5, 1, 60, "b.example"), Record("b.example", 1, 1, 60, "10.0.0.1"),
                   Record("odd\\.dot\\000.example", 1, 1, 1, "10.0.0.2")])
    raw = codec.serialize(msg)
    assert raw.count(b"\x07example") == 1  # every later "example" is a pointer
    assert codec.parse(raw) == msg


@pytest.mark.parametrize("raw, error", [
    (b"\x00" * 11, "shorter than its 12-byte header"),
    (bytes.fromhex("000001000001000000000000") + b"\xc0\x0c\x00\x01\x00\x01", "does not point backwards"),
    (bytes.fromhex("000001000001000000000000") + b"\x05ab", "runs past the end"),
    (bytes.fromhex("000001000001000000000000") + b"\x40", "label type 1"),
    (bytes.fromhex("000001000001000000000000") + b"\x00\x00\x01\x00\x01extra", "bytes after the last"),
    (bytes.fromhex("000081800000000100000000") + b"\x00\x00\x01\x00\x01\x00\x00\x00\x00\x00\x09\x01",
     "RDATA runs past"),
    (bytes.fromhex("000001000001000000000000") + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01",
     "longer than 255"),
])
def test_malformed_bytes_are_a_dns_error(raw, error):
    with pytest.raises(DnsError, match=error):
        codec.parse(raw)


def test_a_pointer_loop_ends():
    # two names whose pointers point at each other: the second points back, the first forward
    head = bytes.fromhex("000001000002000000000000")
    raw = head + b"\x01a\xc0\x13" + b"\x00\x01\x00\x01" + b"\x01b\xc0\x0c" + b"\x00\x01\x00\x01"
    with pytest.raises(DnsError):
        codec.parse(raw)


def test_bad_recorded_answers_are_value_errors():
    q = codec.parse(query("db.internal"))
    for bad in ({"rcode": "MAYBE"}, {"answers": [{"name": "x", "type": "A", "data": "not an ip"}]},
                {"answers": [{"name": "x", "type": "NOPE", "data": "1.2.3.4"}]},
                {"answers": [{"name": "x", "type": "TXT", "data": "\\# 3 00"}]}, []):
        with pytest.raises(ValueError):
            codec.serialize(readable.reply(q, bad))  # type: ignore[arg-type]


def test_unknown_types_are_kept_byte_for_byte():
    rdata = b"\x00\x01\x00\x00\x01\x00\x03\x02h2"  # an HTTPS record (RFC 9460), not decoded
    msg = Message(1, 0x8180, [Question("svc.example", 65)], [Record("svc.example", 65, 1, 5, rdata)])
    text = readable.answer(codec.parse(codec.serialize(msg)))
    assert text["answers"][0] == {"name": "svc.example", "type": "HTTPS", "ttl": 5,
                                  "data": "\\# 10 00010000010003026832"}
    rebuilt = readable.reply(codec.parse(query("svc.example", 65)), text)
    assert rebuilt.answers[0].data == rdata and struct.pack("!H", 65) in codec.serialize(rebuilt)

"""Seed inputs for the fuzz targets, built from real traffic.

Sources: the captures in ``../shared/vectors`` (Zeek and DeepFlow pcaps, see their
README for licences), the HTTP and Kafka streams the test suite captured from real
clients and servers (``tests/protocols/{http/vectors,kafka/data}``), ClientHellos made
by this Python's OpenSSL, and recordings made by the recorders from those streams.
Long streams are cut into windows at chunk boundaries so each seed stays small (the
fuzzer mutates small inputs much faster); ``seeds(target)`` returns them as bytes in
the framing of ``targets.frame``.
"""

from __future__ import annotations

import contextlib
import random
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.fuzz.targets import frame
from trproxy.protocols.base import Direction, ProtocolError

MAX_SEED = 1024
Chunks = list[tuple[str, bytes]]


def windows(chunks: Chunks, limit: int = MAX_SEED) -> Iterator[Chunks]:
    """Consecutive runs of whole chunks (a long one cut) of at most ``limit`` bytes."""
    run: Chunks = []
    size = 0
    for side, data in chunks:
        data = data[:limit]
        if run and size + len(data) > limit:
            yield run
            run, size = [], 0
        run.append((side, data))
        size += len(data)
    if run:
        yield run


def _framed(streams: list[Chunks], rng: random.Random, prefix: bytes = b"") -> list[bytes]:
    out = []
    for chunks in streams:
        for w in windows(chunks):
            out.append(prefix + frame(w, rng.choice([0, 0, 0, 1, 7, 64])))
    return out


def _pcap_streams(protocol: str) -> list[tuple[str, Chunks]]:
    from tests.support.pcap import VECTORS, tcp_streams

    folder = VECTORS / protocol
    out = []
    for path in sorted(folder.glob("*.pcap*")) if folder.is_dir() else []:
        with contextlib.suppress(Exception):  # a capture dpkt cannot read gives no seeds
            out += [(path.name, s.chunks) for s in tcp_streams(path)]
    return out


def postgres() -> list[bytes]:
    rng = random.Random(1)
    out = []
    for name, chunks in _pcap_streams("postgres"):
        start = b"\x01" if name.startswith("deepflow-") else b"\x00"  # mid-session: "ready"
        ws = list(windows(chunks))
        out += _framed(ws[:1], rng, start) + _framed(ws[1:], rng, b"\x01")
    return out


def redis() -> list[bytes]:
    rng = random.Random(2)
    return _framed([c for _, c in _pcap_streams("redis")], rng)


def _kafka_streams() -> list[Chunks]:
    from tests.protocols.kafka.capture import DATA, load

    streams = [c for _, c in _pcap_streams("kafka")]
    for path in sorted(DATA.glob("*.json")):
        streams += load(path)[0]
    return streams


def kafka() -> list[bytes]:
    return _framed(_kafka_streams(), random.Random(3))


def kafka_records() -> list[bytes]:
    """Every ``records`` field of the Produce/Fetch messages in the Kafka streams."""
    from trproxy.protocols.base import NEED_DATA
    from trproxy.protocols.kafka import KafkaCodec
    from trproxy.protocols.kafka.records import encode_record_set

    found: list[bytes] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "records" and isinstance(v, list) and v and isinstance(v[0], dict):
                    with contextlib.suppress(ProtocolError):
                        found.append(encode_record_set(v))
                else:
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for chunks in _kafka_streams():
        codec = KafkaCodec()
        with contextlib.suppress(ProtocolError):
            for side, data in chunks:
                codec.feed(Direction(side), data)
                while (m := codec.next_message()) is not NEED_DATA:
                    walk(m.body)
    return sorted({f[:MAX_SEED] for f in found if f})


def _http_streams(name: str) -> dict[str, Chunks]:
    from tests.protocols.http.capture import load

    return load(name)


def http1() -> list[bytes]:
    return _framed(list(_http_streams("h1").values()), random.Random(4))


def http2() -> list[bytes]:
    from trproxy.protocols.http import H2_PREFACE

    streams = []
    for chunks in _http_streams("h2").values():
        first = next(i for i, (s, _) in enumerate(chunks) if s == "client")
        side, data = chunks[first]
        assert data.startswith(H2_PREFACE)
        streams.append([*chunks[:first], (side, data[len(H2_PREFACE):]), *chunks[first + 1:]])
    return _framed(streams, random.Random(5))


def grpc() -> list[bytes]:
    """gRPC bodies of messages the protobuf runtime made (tests/protocols/http/test_grpc.py),
    each with every header byte; and the descriptor set's own bytes."""
    from tests.protocols.http.test_grpc import BODY, MESSAGES
    from trproxy.protocols.http.grpc import frame as grpc_frame

    bodies = [BODY[:MAX_SEED - 1]] + [grpc_frame(m) for m in MESSAGES.values() if len(m) < MAX_SEED]
    return [bytes([flags]) + b for b in bodies for flags in range(4)]


def grpc_h2() -> list[bytes]:
    """A bidi gRPC call between two h2 connections, as the http2 target reads it."""
    from tests.protocols.http.test_grpc import _conversation
    from trproxy.protocols.http import H2_PREFACE

    out = []
    for end in ("trailers", "client reset", "server reset"):
        chunks = _conversation(end)
        side, data = chunks[0]
        out += _framed([[(side, data[len(H2_PREFACE):]), *chunks[1:]]], random.Random(6))
    return out


def websocket() -> list[bytes]:
    """The captured WebSocket session after its 101, and frames of every kind from wsproto."""
    from wsproto.frame_protocol import CloseReason, FrameProtocol

    rng = random.Random(6)
    out = []
    chunks = _http_streams("h1")["websocket"]
    client = b"".join(d for s, d in chunks if s == "client")
    server = b"".join(d for s, d in chunks if s == "server")
    client = client[client.index(b"\r\n\r\n") + 4:]
    server = server[server.index(b"\r\n\r\n") + 4:]
    out.append(b"\x00" + frame([("client", client), ("server", server)]))
    for deflate in (0, 1):
        c, s = FrameProtocol(client=True, extensions=[]), FrameProtocol(client=False, extensions=[])
        msgs: Chunks = [
            ("client", c.send_data("hello", True)), ("server", s.send_data("world", True)),
            ("client", c.send_data(b"\x00\xff binary", False)),
            ("client", c.send_data(b" more", True)),
            ("server", s.send_data("part", False) + s.send_data(" two", True)),
            ("client", c.ping(b"p")), ("server", s.pong(b"p")),
            ("client", c.send_data('{"a": [1, 2]}', True)),
            ("server", s.send_data("x" * 300, True)),
            ("client", c.close(CloseReason.NORMAL_CLOSURE, "bye")),
            ("server", s.close(CloseReason.NORMAL_CLOSURE, "bye")), ("client", b""),
            ("server", b"")]
        out.append(bytes([deflate]) + frame([(side, bytes(d)) for side, d in msgs],
                                            rng.choice([0, 1, 3])))
    return out


def tls_client_hello() -> list[bytes]:
    """ClientHellos from this Python's OpenSSL: with and without SNI and ALPN, TLS 1.2/1.3."""
    out = []
    for sni, alpn, top in [("example.test", ["h2", "http/1.1"], ssl.TLSVersion.TLSv1_3),
                           ("db.internal", [], ssl.TLSVersion.TLSv1_2),
                           (None, ["postgresql"], ssl.TLSVersion.TLSv1_3),
                           ("a" * 60 + ".b" * 50 + ".test", ["x" * 100, "y"], ssl.TLSVersion.TLSv1_3)]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.maximum_version = top
        if alpn:
            ctx.set_alpn_protocols(alpn)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
        with contextlib.suppress(ssl.SSLWantReadError):
            obj.do_handshake()
        out.append(outgoing.read())
    return out


def store_loader() -> list[bytes]:
    """mocks.yaml files the recorders write for the captured streams, a few documents each."""
    from trproxy.protocols.http import HttpRecorder
    from trproxy.protocols.kafka import KafkaRecorder
    from trproxy.protocols.postgres import PostgresRecorder
    from trproxy.protocols.redis import RedisRecorder
    from trproxy.store.model import Exchange
    from trproxy.store.yamlio import dump

    sources: list[tuple[str, Any, Chunks]] = []
    sources += [("postgres", lambda: PostgresRecorder(start="startup"), c)
                for n, c in _pcap_streams("postgres") if n.startswith("zeek-psql")]
    sources += [("redis", RedisRecorder, c) for _, c in _pcap_streams("redis")[:12]]
    sources += [("kafka", KafkaRecorder, c) for c in _kafka_streams()[:4]]
    sources += [("http", HttpRecorder, c) for c in _http_streams("h1").values()]
    sources += [("http", HttpRecorder, c) for c in _http_streams("h2").values()]
    out = []
    for protocol, make, chunks in sources:
        recorder = make()
        text = ""
        with contextlib.suppress(ProtocolError):
            for seq, (side, data) in enumerate([*chunks, ("client", b""), ("server", b"")]):
                for i in recorder.feed(Direction(side), data):
                    doc = Exchange(protocol, "127.0.0.1:1", i.request, i.responses, i.lifetime,
                                   i.summary, 1, seq, "2024-01-01T00:00:00Z", 1.5,
                                   name=f"mock-{seq}").to_doc()
                    piece = dump(doc)
                    if len(text) + len(piece) > MAX_SEED:
                        break
                    text += piece
        if text:
            out.append(text.encode())
    return out


def mysql() -> list[bytes]:
    """A MySQL 8.4 session (caching_sha2_password, an auth switch; captured by Zeek on
    port 5432) and MariaDB sessions of PyMySQL and mysql-connector-python (this
    project's captures, ``tests/protocols/mysql/data``)."""
    import json

    rng = random.Random(3)
    streams = [c for name, c in _pcap_streams("postgres") if "mysql" in name]
    data = Path(__file__).parents[1] / "protocols" / "mysql" / "data" / "mariadb-sessions.json"
    streams += [[(side, bytes.fromhex(h)) for side, h in s] for s in json.loads(data.read_text())]
    return _framed(streams, rng)


def dns_codec() -> list[bytes]:
    """Queries and answers dnsmasq gave (the corpus keeps them, captured once by
    ``tests/support/dnsserver.py``), and each answer as a DNS-over-TCP stream."""
    from trproxy.protocols.dns.codec import tcp_frame

    captured = [f.read_bytes() for f in sorted(corpus_dir("dns_codec").iterdir())]
    return captured + [tcp_frame(m) for m in captured]


def dns_dialect() -> list[bytes]:
    """dnsmasq's DNS-over-TCP conversations (the corpus keeps them, captured once)."""
    return [f.read_bytes() for f in sorted(corpus_dir("dns_dialect").iterdir())]


SEEDS = {
    "mysql_codec": mysql, "mysql_dialect": mysql,
    "postgres_codec": postgres, "postgres_dialect": postgres,
    "redis_codec": redis, "redis_dialect": redis,
    "kafka_codec": kafka, "kafka_dialect": kafka, "kafka_records": kafka_records,
    "http1": http1, "http2": http2, "websocket": websocket, "grpc": grpc,
    "tls_client_hello": tls_client_hello, "store_loader": store_loader,
    "dns_codec": dns_codec, "dns_dialect": dns_dialect,
}


def seeds(target: str) -> list[bytes]:
    return SEEDS[target]()


def corpus_dir(target: str) -> Path:
    return Path(__file__).parent / "corpus" / target



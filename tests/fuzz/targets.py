"""Fuzz targets: one function per codec, taking the fuzzer's bytes.

Each target feeds the bytes to a codec (and its recorder/replayer) and lets only the
errors that codec documents escape, caught here: ``ProtocolError`` for protocols,
``NotTls`` for the ClientHello parser, ``FormatError`` for the recording loader. Anything
else (IndexError, KeyError, RecursionError, a failed round-trip assertion...) escapes
and is a bug. ``scripts/fuzz.py`` runs them under atheris (``make fuzz``); the pytest
``test_corpus`` runs every file of ``corpus/<target>/`` through its target in CI.

Two-sided inputs use a small framing so mutations also move the chunk boundaries: a
sequence of ``header byte, 2-byte big-endian length, payload``; header bit 0 is the
sender (0 client, 1 server), bits 1-7 a piece size to cut the payload into (0 = whole),
since the codecs are incremental and must not depend on how TCP cut the bytes. A payload
longer than ``MAX_PIECES`` pieces is cut into pieces of that size at ``MAX_PIECES`` places
spread over it and kept whole in between: cut every byte, a 1 KiB input was fed a thousand
times to the recorder and again to the replayer, which made the dialect targets spend
most of their time in per-call overhead (redis_dialect: 138 pieces an input on average).
An empty payload is that side's end of stream. A truncated last frame keeps what is there.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trproxy.protocols.base import Direction, Interaction, Interrupt, Lookup, ProtocolError, Reply
from trproxy.store.errors import FormatError
from trproxy.tls.errors import NotTls

CLIENT, SERVER = Direction.CLIENT, Direction.SERVER
Chunks = list[tuple[Direction, bytes]]


def frame(chunks: list[tuple[str, bytes]], step: int = 0) -> bytes:
    """The framing of ``chunks`` (``("client"|"server", bytes)``), pieces of ``step`` bytes."""
    out = bytearray()
    for side, data in chunks:
        for i in range(0, max(len(data), 1), 0xFFFF):
            piece = data[i:i + 0xFFFF]
            out += bytes([(side == "server") | (step & 0x7F) << 1]) + len(piece).to_bytes(2, "big")
            out += piece
    return bytes(out)


MAX_PIECES = 16


def unframe(data: bytes) -> Chunks:
    out: Chunks = []
    pos = 0
    while pos < len(data):
        head = data[pos]
        size = int.from_bytes(data[pos + 1:pos + 3], "big")
        payload = data[pos + 3:pos + 3 + size]
        pos += 3 + size
        side = SERVER if head & 1 else CLIENT
        step = head >> 1
        if not payload or not step:
            out.append((side, payload))
            continue
        n = len(payload)
        if n <= step * MAX_PIECES:
            cuts = range(0, n, step)
        else:  # a piece of ``step`` bytes at MAX_PIECES places, whole in between
            starts = [k * n // MAX_PIECES for k in range(MAX_PIECES)]
            cuts = sorted({c for s in starts for c in (s, s + step)})
        out.extend((side, payload[a:b]) for a, b in zip(cuts, [*cuts[1:], n], strict=True))
    return out


def client_bytes(chunks: Chunks) -> bytes:
    return b"".join(d for s, d in chunks if s is CLIENT)


def check_readable(value: Any, depth: int = 0) -> None:
    """Recorded data must be YAML-safe: no bytes, no objects (see ``protocols.base``)."""
    assert depth < 200, "readable data nested too deep"
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str | int), f"key {k!r}"
            check_readable(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            check_readable(v, depth + 1)
    else:
        assert value is None or isinstance(value, str | int | float | bool), repr(value)[:80]


def record(recorder: Any, chunks: Chunks) -> list[Any]:
    """Interactions recorded from ``chunks`` then both sides' close; stops at a ProtocolError."""
    out: list[Any] = []
    with contextlib.suppress(ProtocolError):
        for side, data in [*chunks, (CLIENT, b""), (SERVER, b"")]:
            for i in recorder.feed(side, data):
                if isinstance(i, Interrupt):  # which request a new connection interrupts
                    continue
                if isinstance(i, Interaction):  # else a Pushed: responses only
                    check_readable(i.request)
                check_readable(i.responses)
                out.append(i)
    return out


def replay(replayer: Any, chunks: Chunks, answers: list[list[Any]]) -> None:
    """Client bytes in as cut; each Lookup answered with the next recorded responses,
    every third one missed (a replay miss must be answered too)."""
    n = 0
    for side, data in chunks:
        if side is not CLIENT or not data:
            continue
        for event in replayer.feed(data):
            if isinstance(event, Lookup):
                if answers and n % 3 != 2:
                    out = replayer.respond(event, answers[n % len(answers)])
                else:
                    out = replayer.miss(event, "fuzz")
                assert isinstance(out, bytes)
                n += 1
            elif not isinstance(event, Interrupt):
                assert isinstance(event, Reply) and isinstance(event.data, bytes)
        pull = getattr(replayer, "pull", None)
        while pull is not None and pull():
            pass
    close = getattr(replayer, "close", None)
    if close is not None:
        close()


# -- PostgreSQL ---------------------------------------------------------------------------

_PG_STARTS = ("startup", "ready", "auto")


def postgres_codec(data: bytes) -> None:
    from trproxy.protocols.postgres import PostgresCodec

    if not data:
        return
    codec = PostgresCodec(start=_PG_STARTS[data[0] % 3], max_message_size=1 << 20)
    events: list[Any] = []
    with contextlib.suppress(ProtocolError):
        for side, chunk in unframe(data[1:]):
            codec.feed(side, chunk)
            events += codec.events()
    for direction, message in events:  # decode(encode(x)) == x
        encoded = codec.encode(message)
        type_byte = getattr(type(message), "TYPE", None)
        typed = bool(type_byte)
        if type_byte == b"p":
            continue  # which 'p' message it is depends on the authentication asked for
        again = PostgresCodec(start="ready" if typed else "startup")
        if direction is SERVER and not typed:
            continue  # SSLResponse: a one-byte answer, only meaningful after SSLRequest
        again.feed(direction, encoded)
        decoded = again.events()
        assert [m for _, m in decoded] == [message], (message, decoded)


def postgres_dialect(data: bytes) -> None:
    from trproxy.protocols.postgres import PostgresRecorder, PostgresReplayer

    if not data:
        return
    start = _PG_STARTS[data[0] % 3]
    chunks = unframe(data[1:])
    recorded = record(PostgresRecorder(start=start), chunks)
    answers = [i.responses for i in recorded]
    with contextlib.suppress(ProtocolError):
        replay(PostgresReplayer(), chunks, answers)


# -- MySQL ----------------------------------------------------------------------------------

def mysql_codec(data: bytes) -> None:
    from trproxy.protocols.base import NEED_DATA
    from trproxy.protocols.mysql import MySQLCodec
    from trproxy.protocols.mysql import packets as p

    codec = MySQLCodec(max_packet=1 << 20)
    events: list[Any] = []
    with contextlib.suppress(ProtocolError):
        for side, chunk in unframe(data):
            codec.feed(side, chunk)
            while (event := codec.next_event()) is not NEED_DATA:
                events.append(event)
    for _side, message, _done in events:  # decode(encode(x)) == x
        check_readable({k: v for k, v in message.items()
                        if k not in ("HandshakeResponse", "COM_CHANGE_USER", "AuthData")})  # raw proofs
        name, value = next(iter(message.items()))
        if name == "OK":
            assert p.parse_ok(p.build_ok(value, codec.caps), codec.caps) == value
        elif name == "ERR" and "state" in value:
            assert p.parse_err(p.build_err(value)) == value
        elif name == "ResultSet":
            columns = value["columns"]
            for column in columns:
                assert p.parse_column(p.build_column(column, codec.caps), codec.caps) == column
            for row in value["rows"]:
                again = (p.parse_binary_row(p.build_binary_row(row, columns), columns) if value.get("binary")
                         else p.parse_text_row(p.build_text_row(row), columns))
                assert again == row or row != row, (row, again)  # NaN is not itself


def mysql_dialect(data: bytes) -> None:
    from trproxy.protocols.mysql import MySQLRecorder, MySQLReplayer

    chunks = unframe(data)
    recorded = record(MySQLRecorder(max_packet=1 << 20), chunks)
    answers = [i.responses for i in recorded]
    replayer = MySQLReplayer()
    with contextlib.suppress(ProtocolError):
        [hello] = replayer.opened()
        assert isinstance(replayer.respond(hello, answers[0] if answers else []), bytes)
        replay(replayer, chunks, answers)


# -- Redis --------------------------------------------------------------------------------

def redis_codec(data: bytes) -> None:
    from trproxy.protocols.base import NEED_DATA
    from trproxy.protocols.redis import RedisCodec

    codec = RedisCodec(max_bulk_length=1 << 20, max_elements=1 << 16)
    messages: list[Any] = []
    with contextlib.suppress(ProtocolError):
        for side, chunk in unframe(data):
            if not chunk:
                continue  # the RESP codec has no end of stream
            codec.feed(side, chunk)
            while (m := codec.next_message()) is not NEED_DATA:
                messages.append(m)
    for m in messages:  # decode(encode(x)) == x
        again = RedisCodec()
        direction = SERVER if getattr(m, "direction", None) is SERVER else CLIENT
        again.feed(direction, codec.encode(m))
        assert again.next_message() == m, m


def redis_dialect(data: bytes) -> None:
    from trproxy.protocols.redis import RedisRecorder, RedisReplayer

    chunks = unframe(data)
    recorded = record(RedisRecorder(), chunks)
    with contextlib.suppress(ProtocolError):
        replay(RedisReplayer(), chunks, [i.responses for i in recorded])


# -- Kafka --------------------------------------------------------------------------------

def kafka_codec(data: bytes) -> None:
    from trproxy.protocols.base import NEED_DATA
    from trproxy.protocols.kafka import KafkaCodec, KafkaRequest
    from trproxy.protocols.kafka.codec import decode_response_body
    from trproxy.protocols.kafka.primitives import Reader
    from trproxy.protocols.kafka.schema import Context

    codec = KafkaCodec(max_frame_size=1 << 20, max_decompressed=1 << 20)
    messages: list[Any] = []
    with contextlib.suppress(ProtocolError):
        for side, chunk in unframe(data):
            codec.feed(side, chunk)
            while (m := codec.next_message()) is not NEED_DATA:
                messages.append(m)
    for m in messages:  # decode(encode(x)) == x
        frame_ = codec.encode(m)[4:]
        if isinstance(m, KafkaRequest):
            again = KafkaCodec(max_decompressed=1 << 20).decode_request(frame_)
        else:  # as the request it answered said: a correlation id can be used again later
            r = Reader(frame_)
            r.int32()
            again = decode_response_body(m.api_key, m.api_version, m.correlation_id, r,
                                         Context(1 << 20))
        assert again == m, m


def kafka_records(data: bytes) -> None:
    """A record set; magic-2 CRCs are fixed up first so mutations get past the check."""
    from trproxy.protocols.kafka.records import crc32c, decode_record_set, encode_record_set
    from trproxy.protocols.kafka.schema import Context

    buf = bytearray(data)
    pos = 0
    while pos + 21 <= len(buf):
        length = int.from_bytes(buf[pos + 8:pos + 12], "big", signed=True)
        end = pos + 12 + length
        if length < 9 or end > len(buf):
            break
        if buf[pos + 16] == 2:
            buf[pos + 17:pos + 21] = crc32c(bytes(buf[pos + 21:end])).to_bytes(4, "big")
        pos = end
    try:
        entries = decode_record_set(bytes(buf), Context(1 << 20))
    except ProtocolError:
        return
    check_readable(entries)
    try:
        encoded = encode_record_set(entries)
    except ProtocolError:
        return
    assert decode_record_set(encoded, Context(1 << 20)) == entries


def kafka_dialect(data: bytes) -> None:
    from trproxy.protocols.kafka import KafkaRecorder, KafkaReplayer

    chunks = unframe(data)
    recorded = record(KafkaRecorder(max_frame_size=1 << 20, max_decompressed=1 << 20), chunks)
    with contextlib.suppress(ProtocolError):
        replay(KafkaReplayer(max_frame_size=1 << 20, max_decompressed=1 << 20), chunks,
               [i.responses for i in recorded])


# -- HTTP ---------------------------------------------------------------------------------

def _http_config() -> Any:
    from trproxy.protocols.http import HttpConfig

    return HttpConfig(max_body=1 << 16, max_head=1 << 14, max_header_table=1 << 14)


def _http(chunks: Chunks) -> None:
    from trproxy.protocols.http import HttpRecorder, HttpReplayer

    config = _http_config()
    recorded = record(HttpRecorder(config, authority="127.0.0.1:80"), chunks)
    with contextlib.suppress(ProtocolError):
        replay(HttpReplayer(config, authority="127.0.0.1:80"), chunks,
               [i.responses for i in recorded])


def http1(data: bytes) -> None:
    """The bare request parser on the client's bytes, then the recorder and replayer."""
    from trproxy.protocols.base import NEED_DATA
    from trproxy.protocols.http.h1 import H1Parser

    chunks = unframe(data)
    parser = H1Parser(is_request=True, max_head=1 << 14)
    with contextlib.suppress(ProtocolError):
        for side, chunk in chunks:
            if side is CLIENT:
                parser.feed(chunk)
                while parser.next_event() is not NEED_DATA:
                    parser.resume()  # an upgrade request: take the next one as refused
    _http(chunks)


def http2(data: bytes) -> None:
    """HTTP/2 with prior knowledge: the client's preface is always there."""
    from trproxy.protocols.http import H2_PREFACE

    _http([(CLIENT, H2_PREFACE), *unframe(data)])


def websocket(data: bytes) -> None:
    """Frames after the 101; header byte 0 bit 0 chooses permessage-deflate."""
    from trproxy.protocols.http.websocket import WsRecorder, WsReplayer

    if not data:
        return
    ext = "permessage-deflate" if data[0] & 1 else None
    chunks = unframe(data[1:])
    config = _http_config()
    recorded = record(WsRecorder("ws://127.0.0.1/ws", ext, config), chunks)
    with contextlib.suppress(ProtocolError):
        replay(WsReplayer("ws://127.0.0.1/ws", ext, config), chunks,
               [i.responses for i in recorded])


# -- gRPC ---------------------------------------------------------------------------------

_GRPC_NAMES: list[Any] = []


def _grpc_names() -> Any:
    """A FileDescriptorSet written as a field tree (package trproxy.fuzz, message M with a
    sint32, a double, a nested M, a float and an int64; service S, method M: M -> M)."""
    from trproxy.protocols.http import grpc

    if not _GRPC_NAMES:
        fields = [[2, [[1, n], [3, i], [5, t], *([[6, ".trproxy.fuzz.M"]] if t == 11 else [])]]
                  for i, (n, t) in enumerate([("a", 17), ("b", 1), ("c", 11), ("d", 2), ("e", 3)], 1)]
        fds = [[1, [[2, "trproxy.fuzz"], [4, [[1, "M"], *fields]],
                    [6, [[1, "S"], [2, [[1, "M"], [2, ".trproxy.fuzz.M"], [3, ".trproxy.fuzz.M"]]]]]]]]
        _GRPC_NAMES.append(grpc.Names.from_descriptor_set(grpc.encode_fields(fds)))
    return _GRPC_NAMES[0]


def grpc(data: bytes) -> None:
    """A gRPC body (after one header byte: bit 0 names fields from a descriptor set, bit 1
    reads it as a response): the readable form must give back the exact bytes; the bytes
    as one protobuf message and as a descriptor set; the body cut short."""
    from trproxy.protocols.http import grpc

    if not data:
        return
    body = data[1:]
    names = _grpc_names() if data[0] & 1 else None
    form = grpc.body_readable(body, names, "/trproxy.fuzz.S/M", response=bool(data[0] & 2))
    if form is not None:
        check_readable(form)
        assert grpc.body_bytes(form) == body
    tree = grpc.decode_message(body)
    assert grpc.encode_fields(tree) == body if isinstance(tree, list) else "base64" in tree
    with contextlib.suppress(ValueError):  # not a descriptor set: its documented error
        grpc.Names.from_descriptor_set(body)
    whole = grpc.split_messages(body)
    for cut in (len(body) // 3, len(body) // 2, len(body) - 1):  # a body cut short
        part = grpc.split_messages(body[:cut]) if cut > 0 else None
        if part is not None and whole is not None:
            assert whole[:len(part)] == part


# -- TLS ----------------------------------------------------------------------------------

def tls_client_hello(data: bytes) -> None:
    """Whole, and each prefix a reader could have buffered: None, NotTls or the info."""
    from trproxy.tls.endpoint import ClientHelloInfo, parse_client_hello

    cuts = {len(data)} | {len(data) * k // 7 for k in range(7)}
    for cut in sorted(cuts):
        try:
            info = parse_client_hello(data[:cut])
        except NotTls:
            continue
        if info is not None:
            assert isinstance(info, ClientHelloInfo)
            assert info.sni is None or isinstance(info.sni, str)
            assert all(isinstance(p, str) for p in info.alpn)


# -- DNS ----------------------------------------------------------------------------------

def dns_codec(data: bytes) -> None:
    """The bytes as one message (UDP), re-encoded to the same message and through its
    readable form; and as a DNS-over-TCP stream cut at every offset of its first 64 bytes."""
    from trproxy.protocols.dns import codec, readable

    try:
        msg = codec.parse(data)
    except codec.DnsError:
        msg = None
    if msg is not None:
        assert codec.parse(codec.serialize(msg)) == msg
        text = readable.answer(msg)
        check_readable(text)
        with contextlib.suppress(ValueError):  # e.g. a label too long for the text form
            again = readable.reply(msg, text)
            assert readable.answer(codec.parse(codec.serialize(again))) == text
    whole = codec.TcpFramer().feed(data)
    for cut in range(1, min(len(data), 64)):
        framer = codec.TcpFramer()
        assert framer.feed(data[:cut]) + framer.feed(data[cut:]) == whole


def dns_dialect(data: bytes) -> None:
    """DNS over TCP: DnsRecorder on both sides, DnsReplayer on the client's bytes."""
    from trproxy.protocols.dns import DnsRecorder, DnsReplayer

    chunks = unframe(data)
    recorded = record(DnsRecorder(), chunks)
    with contextlib.suppress(ProtocolError):
        replay(DnsReplayer(), chunks, [i.responses for i in recorded])


# -- the recording loader -----------------------------------------------------------------

_STORE_DIR: list[Path] = []


def store_loader(data: bytes) -> None:
    """The bytes as a test set's ``mocks.yaml``, loaded as ``trproxy replay`` does: parsed
    (writing the cache), loaded again from that cache (the same exchanges), and made into
    the replay's pool of mocks."""
    from trproxy.protocols.registry import has_volatile_rules, match_key, volatile_rules
    from trproxy.store.matcher import MockPool
    from trproxy.store.model import Exchange
    from trproxy.store.recording import MOCKS, load_mocks

    if not _STORE_DIR:  # in memory when there is a tmpfs: a disk's open/fsync cost more
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # than the loading itself
        _STORE_DIR.append(Path(tempfile.mkdtemp(prefix="trproxy-fuzz-store-", dir=shm)))
        atexit.register(shutil.rmtree, _STORE_DIR[0], True)
    root = _STORE_DIR[0]
    path = root / MOCKS
    path.write_bytes(data)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(root / (MOCKS + ".cache"))
    try:
        mocks = load_mocks(root)
    except FormatError:
        return
    for m in mocks:
        assert isinstance(m, Exchange)
    if (root / (MOCKS + ".cache")).exists():
        assert load_mocks(root) == mocks
    MockPool.build(mocks, match_key, volatile_rules, has_volatile_rules)


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    what: str


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("postgres_codec", postgres_codec, "PostgresCodec both sides + re-decode of encode"),
    Target("postgres_dialect", postgres_dialect, "PostgresRecorder, PostgresReplayer"),
    Target("mysql_codec", mysql_codec, "MySQLCodec both sides + re-decode of encode"),
    Target("mysql_dialect", mysql_dialect, "MySQLRecorder, MySQLReplayer"),
    Target("redis_codec", redis_codec, "RESP request/reply parsers + re-decode of encode"),
    Target("redis_dialect", redis_dialect, "RedisRecorder, RedisReplayer"),
    Target("kafka_codec", kafka_codec, "KafkaCodec frames + re-decode of encode"),
    Target("kafka_records", kafka_records, "record batches, compression, re-encode"),
    Target("kafka_dialect", kafka_dialect, "KafkaRecorder, KafkaReplayer"),
    Target("http1", http1, "H1Parser, HttpRecorder/HttpReplayer over HTTP/1"),
    Target("http2", http2, "HttpRecorder/HttpReplayer over HTTP/2"),
    Target("websocket", websocket, "WsRecorder, WsReplayer (with/without deflate)"),
    Target("grpc", grpc, "gRPC framing, protobuf without a schema, descriptor-set names"),
    Target("tls_client_hello", tls_client_hello, "tls.endpoint.parse_client_hello"),
    Target("dns_dialect", dns_dialect, "DnsRecorder, DnsReplayer (DNS over TCP)"),
    Target("dns_codec", dns_codec, "DNS message parse/serialize, readable form, TCP framing"),
    Target("store_loader", store_loader, "mocks.yaml -> yamlio -> Exchange.from_doc"),
)}

"""Hypothesis: round trips of every RESP2/RESP3 type and of requests; mutation fuzzing."""

from __future__ import annotations

import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.protocols.redis.redis_support import assert_not_a_bug, decode, record
from tests.support.pcap import VECTORS, tcp_streams
from trproxy.protocols.base import NEED_DATA, Direction, Lookup, ProtocolError
from trproxy.protocols.redis import (
    DIALECT,
    Array,
    Attribute,
    BigNumber,
    Boolean,
    BulkError,
    BulkString,
    Command,
    Double,
    Integer,
    Map,
    Null,
    Push,
    RedisCodec,
    RedisRecorder,
    RedisReplayer,
    Set,
    SimpleError,
    SimpleString,
    VerbatimString,
    from_readable,
    to_readable,
)
from trproxy.protocols.redis.readable import downgrade, request_from_readable, request_to_readable

# TRPROXY_FUZZ_EXAMPLES=20000 for a long run; the default keeps the suite to seconds
EXAMPLES = int(os.environ.get("TRPROXY_FUZZ_EXAMPLES", "150"))
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

line = st.binary(max_size=24).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
text_or_binary = st.one_of(st.text(max_size=24).map(str.encode), st.binary(max_size=24))
double = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["inf", "-inf", "nan", "0", "-1", "1e+300", "3.0000000000000004"]),
)
leaves = st.one_of(
    line.map(SimpleString),
    line.map(SimpleError),
    st.integers(-(2**63), 2**63 - 1).map(Integer),
    st.one_of(st.none(), text_or_binary).map(BulkString),
    st.just(Array(None)),
    st.just(Null()),
    st.booleans().map(Boolean),
    double.map(Double),
    st.integers(-(10**60), 10**60).map(lambda n: BigNumber(str(n))),
    text_or_binary.map(BulkError),
    st.tuples(st.binary(min_size=3, max_size=3).filter(lambda f: b":" not in f),
              text_or_binary).map(lambda t: VerbatimString(*t)),
)


def _aggregates(children):  # type: ignore[no-untyped-def]
    items = st.lists(children, max_size=4).map(tuple)
    pairs = st.lists(st.tuples(children, children), max_size=3).map(tuple)
    return st.one_of(items.map(Array), pairs.map(Map), items.map(Set), items.map(Push),
                     st.tuples(pairs, children).map(lambda t: Attribute(*t)))


values = st.recursive(leaves, _aggregates, max_leaves=24)
commands = st.builds(Command, st.lists(st.binary(max_size=16), min_size=1, max_size=6).map(tuple),
                     st.booleans())


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at the given points (no empty pieces: an empty feed means "closed")."""
    points = sorted({p % (len(data) + 1) for p in points} - {0, len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@FAST
@given(st.lists(values, min_size=1, max_size=4), st.lists(st.integers(0, 10**6), max_size=6))
def test_values_round_trip_whatever_the_cuts(messages: list, points: list[int]) -> None:
    codec = RedisCodec()
    wire = b"".join(codec.encode(m) for m in messages)
    chunks = [("server", piece) for piece in cut(wire, points)]
    assert decode(chunks) == ([("server", m) for m in messages], None)


@FAST
@given(values)
def test_readable_form_round_trips_through_yaml(value) -> None:  # type: ignore[no-untyped-def]
    readable = to_readable(value)
    assert yaml.safe_load(yaml.safe_dump(readable)) == readable
    assert from_readable(readable) == value
    assert RedisCodec().encode(from_readable(readable)) == RedisCodec().encode(value)


@FAST
@given(values)
def test_downgrade_gives_resp2_only(value) -> None:  # type: ignore[no-untyped-def]
    resp2 = downgrade(value)
    wire = RedisCodec().encode(resp2)
    assert not any(wire.startswith(t) for t in (b"_", b"#", b",", b"(", b"!", b"=", b"%", b"~", b">", b"|"))
    assert downgrade(resp2) == resp2
    assert decode([("server", wire)]) == ([("server", resp2)], None)


@FAST
@given(st.lists(commands, min_size=1, max_size=4), st.lists(st.integers(0, 10**6), max_size=6))
def test_requests_round_trip_whatever_the_cuts(requests: list, points: list[int]) -> None:
    codec = RedisCodec()
    wire = b"".join(codec.encode(m) for m in requests)
    chunks = [("client", piece) for piece in cut(wire, points)]
    assert decode(chunks) == ([("client", m) for m in requests], None)
    for m in requests:
        readable = request_to_readable(m)
        assert yaml.safe_load(yaml.safe_dump(readable)) == readable
        assert request_from_readable(readable).args == m.args


# --- mutation fuzzing -------------------------------------------------------------------


def _seeds() -> list[list[tuple[str, bytes]]]:
    seeds = []
    for name in ("zeek-pubsub.pcap", "zeek-reply-off-on.pcap", "zeek-attr.pcap", "zeek-stream.pcap",
                 "zeek-pipeline-quotes.pcap", "zeek-auth.pcap", "deepflow-redis-debug.pcap"):
        seeds += [s.chunks for s in tcp_streams(VECTORS / "redis" / name)]
    seeds.append([("client", b"HELLO 3\r\nHGETALL h\r\n"),
                  ("server", b"%1\r\n$5\r\nproto\r\n:3\r\n|1\r\n+ttl\r\n:1\r\n%1\r\n$1\r\nf\r\n,1.5\r\n"
                             b"=7\r\ntxt:abc\r\n(123\r\n!3\r\nERR\r\n~1\r\n#t\r\n_\r\n")])
    return seeds


SEEDS = _seeds()


@st.composite
def mutated(draw):  # type: ignore[no-untyped-def]
    chunks = list(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(chunks) - 1))
        side, data = chunks[i]
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "truncate", "swap"]))
        if op == "flip" and data:
            pos = min(pos, len(data) - 1)
            data = data[:pos] + bytes([data[pos] ^ draw(st.integers(1, 255))]) + data[pos + 1:]
        elif op == "insert":
            extra = draw(st.one_of(st.binary(max_size=8), st.sampled_from(
                [b"\r\n", b"*", b"$-1", b"*99999999999\r\n", b"$999999999\r\n", b">", b"|1\r\n", b"\x00"])))
            data = data[:pos] + extra + data[pos:]
        elif op == "delete":
            data = data[:pos] + data[pos + draw(st.integers(1, 8)):]
        elif op == "duplicate":
            data = data[:pos] + data[pos:pos + 16] + data[pos:]
        elif op == "truncate":
            data = data[:pos]
        elif op == "swap":
            side = "server" if side == "client" else "client"
        chunks[i] = (side, data)
    return [c for c in chunks if c[1]]


@settings(max_examples=EXAMPLES * 3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
@pytest.mark.timeout(120)
def test_mutated_streams_only_raise_protocol_errors(chunks) -> None:  # type: ignore[no-untyped-def]
    decode(chunks)  # decode() itself catches only ProtocolError: anything else fails here
    record(chunks)
    replayer = RedisReplayer()
    client = b"".join(d for s, d in chunks if s == "client")
    DIALECT.detect(client[:64], 6379)
    recorded = record(chunks).interactions
    try:
        for event in replayer.feed(client):
            assert isinstance(event, Lookup)
            DIALECT.match_key(event.request)
            replayer.miss(event, "fuzz")
            for interaction in recorded[:3]:
                replayer.respond(event, interaction.responses)
    except ProtocolError as exc:
        assert_not_a_bug(exc)


@FAST
@given(st.lists(st.tuples(st.sampled_from(["client", "server"]), st.binary(max_size=64)), max_size=12))
def test_random_bytes_only_raise_protocol_errors(chunks) -> None:  # type: ignore[no-untyped-def]
    decode(chunks)
    record(chunks)
    recorder = RedisRecorder()
    try:
        for side, data in chunks:
            recorder.feed(Direction(side), data)
    except ProtocolError:
        pass
    replayer = RedisReplayer()
    try:
        replayer.feed(b"".join(d for _, d in chunks))
    except ProtocolError as exc:
        assert_not_a_bug(exc)


@FAST
@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5),
                              st.floats(allow_nan=False)),
                    lambda c: st.one_of(st.lists(c, max_size=3),
                                        st.dictionaries(st.sampled_from(
                                            ["hex", "simple", "int", "map", "set", "push", "null",
                                             "attribute", "value", "verbatim", "format", "text",
                                             "array", "double", "bignum", "bool", "error"]), c,
                                            max_size=2)),
                    max_leaves=8))
def test_malformed_readable_data_is_an_encode_error(data) -> None:  # type: ignore[no-untyped-def]
    """Hand-edited recordings: from_readable either converts or raises ProtocolError."""
    try:
        value = from_readable(data)
    except ProtocolError:
        return
    try:
        RedisCodec().encode(value)
    except ProtocolError:
        pass
    replayer = RedisReplayer()
    (lookup,) = replayer.feed(b"GET k\r\n")
    try:
        replayer.respond(lookup, [data])
    except ProtocolError:
        pass


def test_codec_returns_need_data_on_an_empty_buffer() -> None:
    assert RedisCodec().next_message() is NEED_DATA


# --- pieces decoded before (record remembers them) --------------------------------------

pieces = st.one_of(st.binary(max_size=48), values.map(RedisCodec().encode), commands.map(RedisCodec().encode))


@FAST
@given(st.lists(st.tuples(st.sampled_from(["client", "server"]), pieces), max_size=10))
def test_a_remembering_codec_decodes_what_a_plain_one_does(chunks) -> None:  # type: ignore[no-untyped-def]
    """Decoded twice (the second time from memory where the pieces are known), the same
    messages and the same error, whatever the pieces."""
    plain = decode(chunks)
    assert decode(chunks, remember=True) == plain
    assert decode(chunks, remember=True) == plain
    assert decode(chunks[::-1], remember=True) == decode(chunks[::-1])


def test_a_piece_seen_before_is_not_decoded_again(monkeypatch) -> None:
    from trproxy.protocols.redis import codec as module

    monkeypatch.setitem(module._DECODED, Direction.CLIENT, {})
    monkeypatch.setitem(module._DECODED, Direction.SERVER, {})
    request = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n" * 2
    first = decode([("client", request), ("server", b"+OK\r\n$-1\r\n")], remember=True)
    parsed: list[bytes] = []
    feed = module.RequestParser.feed
    monkeypatch.setattr(module.RequestParser, "feed", lambda self, data: parsed.append(data) or feed(self, data))
    assert decode([("client", request), ("server", b"+OK\r\n$-1\r\n")], remember=True) == first
    assert parsed == [b""]  # only the end of the stream reached the parser
    assert len(first[0]) == 4
    # a piece that ends inside a message, or bytes after the end, are decoded each time
    assert decode([("client", request[:-3]), ("client", request[-3:])], remember=True) == \
        decode([("client", request)])
    assert request[:-3] not in module._DECODED[Direction.CLIENT]
    # a password is not remembered, nor an aggregate reply (CONFIG GET requirepass)
    auth, config = b"*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n", b"*2\r\n$11\r\nrequirepass\r\n$6\r\nsecret\r\n"
    decode([("client", auth), ("server", config)], remember=True)
    assert auth not in module._DECODED[Direction.CLIENT] and config not in module._DECODED[Direction.SERVER]
    assert request in module._DECODED[Direction.CLIENT]
    codec = RedisCodec(remember=lambda m: True)
    codec.feed(Direction.CLIENT, b"")
    with pytest.raises(ProtocolError):
        codec.feed(Direction.CLIENT, request)

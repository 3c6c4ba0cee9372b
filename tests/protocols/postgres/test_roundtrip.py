"""Hypothesis: decode(encode(m)) == m for every message, fed whole or split anywhere;
readable forms survive YAML and render back to the same backend message."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.protocols.postgres import strategies as S
from tests.support.chunking import bytewise, offsets, split_at, total
from trproxy.protocols.base import NEED_DATA, DecodeError, Direction, EncodeError
from trproxy.protocols.postgres import PostgresCodec, match_key
from trproxy.protocols.postgres import backend as be
from trproxy.protocols.postgres import frontend as fe
from trproxy.protocols.postgres.readable import (
    REDACTED,
    RowShape,
    request_item,
    response_item,
    response_message,
)
from trproxy.protocols.postgres.values import BINARY_TYPES, readable_value, wire_value

CLIENT, SERVER = Direction.CLIENT, Direction.SERVER
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_one(codec: PostgresCodec, direction: Direction, data: bytes, cut: int) -> object:
    cut = min(max(cut, 1), len(data))  # (feeding b"" would mean "closed")
    codec.feed(direction, data[:cut])
    first = codec.next_event()
    if first is not NEED_DATA:  # complete before the cut: nothing may be left over
        assert cut == len(data)
        return first[1]
    if cut < len(data):
        codec.feed(direction, data[cut:])
    event = codec.next_event()
    assert event is not NEED_DATA and event[0] is direction
    assert codec.next_event() is NEED_DATA
    return event[1]


def _yaml(value):
    return yaml.safe_load(yaml.safe_dump(value, allow_unicode=True, sort_keys=False))  # as the store


@FAST
@given(S.frontend, st.integers(0, 80))
def test_frontend_roundtrip(msg, cut):
    codec = PostgresCodec(start="ready")
    assert decode_one(codec, CLIENT, codec.encode(msg), cut) == msg


@FAST
@given(S.startup, st.integers(0, 80))
def test_startup_roundtrip(msg, cut):
    codec = PostgresCodec(start="startup")
    assert decode_one(codec, CLIENT, codec.encode(msg), cut) == msg


@FAST
@given(S.authenticated, st.integers(0, 80))
def test_authentication_answers_roundtrip(pair, cut):
    request, answer = pair
    codec = PostgresCodec(start="ready")
    codec.feed(SERVER, codec.encode(request))
    assert codec.next_message() == request
    assert decode_one(codec, CLIENT, codec.encode(answer), cut) == answer


@FAST
@given(S.backend, st.integers(0, 80))
def test_backend_roundtrip(msg, cut):
    codec = PostgresCodec(start="ready")
    assert decode_one(codec, SERVER, codec.encode(msg), cut) == msg


@pytest.mark.parametrize("request_, answer", [
    (fe.SSLRequest(), be.SSLResponse("N")), (fe.SSLRequest(), be.SSLResponse("S")),
    (fe.GSSENCRequest(), be.GSSENCResponse("N")), (fe.GSSENCRequest(), be.GSSENCResponse("G")),
])
def test_negotiation_answers_roundtrip(request_, answer):
    codec = PostgresCodec(start="startup")
    codec.feed(CLIENT, codec.encode(request_))
    codec.feed(SERVER, codec.encode(answer))
    assert [m for _, m in codec.events()] == [request_, answer]


@FAST
@given(st.lists(S.backend, max_size=8), st.data())
def test_backend_readable_survives_yaml_and_renders_back(messages, data):
    shape = RowShape(tuple(data.draw(st.lists(S.fmt, max_size=8))),
                     tuple(data.draw(st.lists(st.sampled_from([0, *BINARY_TYPES]), max_size=8))))
    codec = PostgresCodec(start="ready")
    for msg in messages:
        item = response_item(msg, shape)
        assert _yaml(item) == item
        if REDACTED in str(item):
            continue  # secrets are not kept, so they cannot be rendered back
        assert codec.encode(response_message(_yaml(item))) == codec.encode(msg)


@FAST
@given(st.lists(S.frontend, max_size=8))
def test_frontend_readable_survives_yaml(messages):
    items = [request_item(m) for m in messages]
    assert _yaml(items) == items
    if items:
        assert _yaml(match_key(items)) == match_key(items)


@FAST
@given(st.sampled_from([0, *BINARY_TYPES]), st.sampled_from([0, 1]), st.binary(max_size=20))
def test_values_are_invertible(oid, fmt, raw):
    readable = readable_value(raw, fmt, oid)
    assert wire_value(_yaml(readable)) == raw


def test_known_binary_values_are_readable():
    assert readable_value(b"\x00\x00\x00\x07", 1, 23) == {"binary": "int4", "value": 7}
    assert readable_value(b"\x01", 1, 16) == {"binary": "bool", "value": True}
    assert readable_value(b"alice", 1, 25) == {"binary": "text", "value": "alice"}
    assert readable_value(b"\x00\x07", 1, 23) == {"binary": 23, "hex": "0007"}  # wrong size
    nan = b"\x7f\xf8\x00\x00\x00\x00\x00\x00"
    assert readable_value(nan, 1, 701) == {"binary": 701, "hex": nan.hex()}  # NaN != NaN
    ts = bytes.fromhex("0003040f83e6361b")  # what now() looked like in a recording
    assert readable_value(ts, 1, 1184) == {"binary": "timestamptz",
                                           "value": "2026-11-25T02:40:14.054939+00:00"}
    assert readable_value(b"\x7f\xff\xff\xff\xff\xff\xff\xff", 1, 1114) == {
        "binary": 1114, "hex": "7fffffffffffffff"}  # 'infinity'
    assert readable_value(b"\x00\x00\x22\x56", 1, 1082) == {"binary": "date", "value": "2024-01-25"}
    assert readable_value(b'\x01{"a": 1}', 1, 3802) == {"binary": "jsonb", "value": '{"a": 1}'}
    assert readable_value(b"7", 0, 23) == "7"
    assert readable_value(b"\xff\x00", 0, 17) == {"hex": "ff00"}
    assert readable_value(None, 1, 23) is None


@pytest.mark.parametrize("bad", [be.ReadyForQuery("X"), be.SSLResponse("G"), object(),
                                 be.ParameterStatus("a\0b", ""), be.DataRow((b"x",) * 70000)])  # counts are UInt16
def test_encode_rejects_what_it_cannot_send(bad):
    with pytest.raises(EncodeError):
        PostgresCodec().encode(bad)


def test_frame_size_is_bounded():
    codec = PostgresCodec(start="ready", max_message_size=100)
    codec.feed(SERVER, b"D\x00\x00\x01\x00")  # a 256-byte DataRow announced in its header
    with pytest.raises(DecodeError, match="exceeds max_message_size 100"):
        codec.next_message()
    with pytest.raises(DecodeError, match="error state"):
        codec.feed(SERVER, b"Z\x00\x00\x00\x05I")
    startup = PostgresCodec(start="startup", max_startup_size=64)
    startup.feed(CLIENT, b"\x00\x00\x01\x00\x00\x03\x00\x00")
    with pytest.raises(DecodeError, match="invalid startup packet length 256"):
        startup.next_message()


def test_counts_are_unsigned_up_to_65535():
    """libpq and the server read Int16 counts as unsigned: a Bind may carry up to 65535
    parameters (psycopg sends them for a big IN list). Fed whole, cut, and the Bind byte
    by byte."""
    n = 32770
    types = (23,) * n
    params = tuple(None if i % 7 else b"7" for i in range(n))
    bind = fe.Bind("", "s", (0,), params, (1,))
    messages = [fe.Parse("s", f"SELECT ${n}", types), bind, fe.Describe("S", "s"), fe.Execute(), fe.Sync()]
    answers = [be.ParseComplete(), be.ParameterDescription(types), be.RowDescription(()),
               be.BindComplete(), be.DataRow(params), be.CommandComplete("SELECT 1"),
               be.ReadyForQuery("I")]
    codec = PostgresCodec(start="ready")
    chunks = [("client", b"".join(codec.encode(m) for m in messages)),
              ("server", b"".join(codec.encode(m) for m in answers))]
    assert b"\x80\x02" in codec.encode(bind)[:30]  # 32770 as UInt16, where Int16 is negative
    expected = [(CLIENT, m) for m in messages] + [(SERVER, m) for m in answers]

    def decode(pieces) -> list:
        codec = PostgresCodec(start="ready")
        for side, data in pieces:
            codec.feed(Direction(side), data)
        return codec.events()

    assert decode(chunks) == expected
    for offset in offsets(total(chunks), every_up_to=0, samples=12, ends=8):
        assert decode(split_at(chunks, offset)) == expected
    assert decode(bytewise([("client", codec.encode(bind))])) == [(CLIENT, bind)]
    with pytest.raises(EncodeError):
        codec.encode(fe.Bind("", "", (), (None,) * 65536))

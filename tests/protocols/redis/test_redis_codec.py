"""The RESP codec on hand-written bytes: every type, inline quoting, limits, states."""

from __future__ import annotations

import pytest

from tests.protocols.redis.redis_support import decode
from tests.support.chunking import bytewise
from trproxy.protocols.base import NEED_DATA, DecodeError, Direction, EncodeError
from trproxy.protocols.redis import (
    Array,
    Attribute,
    BigNumber,
    Boolean,
    BulkError,
    BulkString,
    Command,
    Double,
    Integer,
    InvalidInline,
    Map,
    Null,
    ParserState,
    Push,
    RedisCodec,
    Set,
    SimpleError,
    SimpleString,
    VerbatimString,
)
from trproxy.protocols.redis.parser import split_inline

# (wire bytes, message) pairs straight from the RESP2/RESP3 specification's examples
SERVER_CASES = [
    (b"+OK\r\n", SimpleString(b"OK")),
    (b"-ERR unknown command 'foo'\r\n", SimpleError(b"ERR unknown command 'foo'")),
    (b":1000\r\n", Integer(1000)),
    (b":-9223372036854775808\r\n", Integer(-(2**63))),
    (b"$5\r\nhello\r\n", BulkString(b"hello")),
    (b"$0\r\n\r\n", BulkString(b"")),
    (b"$-1\r\n", BulkString(None)),
    (b"$4\r\na\r\nb\r\n", BulkString(b"a\r\nb")),
    (b"*2\r\n$5\r\nhello\r\n$5\r\nworld\r\n", Array((BulkString(b"hello"), BulkString(b"world")))),
    (b"*0\r\n", Array(())),
    (b"*-1\r\n", Array(None)),
    (b"*2\r\n*1\r\n:1\r\n*1\r\n+x\r\n", Array((Array((Integer(1),)), Array((SimpleString(b"x"),))))),
    (b"_\r\n", Null()),
    (b"#t\r\n", Boolean(True)),
    (b"#f\r\n", Boolean(False)),
    (b",1.23\r\n", Double("1.23")),
    (b",inf\r\n", Double("inf")),
    (b",-inf\r\n", Double("-inf")),
    (b",nan\r\n", Double("nan")),
    (b",1e+300\r\n", Double("1e+300")),
    (b"(3492890328409238509324850943850943825024385\r\n",
     BigNumber("3492890328409238509324850943850943825024385")),
    (b"!21\r\nSYNTAX invalid syntax\r\n", BulkError(b"SYNTAX invalid syntax")),
    (b"=15\r\ntxt:Some string\r\n", VerbatimString(b"txt", b"Some string")),
    (b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n",
     Map(((SimpleString(b"first"), Integer(1)), (SimpleString(b"second"), Integer(2))))),
    (b"~2\r\n+a\r\n:1\r\n", Set((SimpleString(b"a"), Integer(1)))),
    (b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n",
     Push((BulkString(b"message"), BulkString(b"c"), BulkString(b"hi")))),
    (b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*1\r\n:2\r\n",
     Attribute(((SimpleString(b"key-popularity"), Map(((BulkString(b"a"), Double("0.19")),))),),
               Array((Integer(2),)))),
    (b"*2\r\n:1\r\n|1\r\n+ttl\r\n:3600\r\n:3\r\n",  # an attribute on an element
     Array((Integer(1), Attribute(((SimpleString(b"ttl"), Integer(3600)),), Integer(3))))),
    (b"|0\r\n:1\r\n", Attribute((), Integer(1))),
    (b"%0\r\n", Map(())),
]


@pytest.mark.parametrize(("wire", "message"), SERVER_CASES)
def test_server_messages_decode_and_encode(wire: bytes, message) -> None:  # type: ignore[no-untyped-def]
    for chunks in ([("server", wire)], bytewise([("server", wire)])):
        assert decode(chunks) == ([("server", message)], None)
    assert RedisCodec().encode(message) == wire


@pytest.mark.parametrize(("wire", "args"), [
    (b"*1\r\n$4\r\nPING\r\n", (b"PING",)),
    (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n", (b"SET", b"k", b"")),
    (b"*2\r\n$3\r\nGET\r\n$3\r\n\x00\r\n\r\n", (b"GET", b"\x00\r\n")),
])
def test_multibulk_requests(wire: bytes, args: tuple) -> None:
    assert decode([("client", wire)]) == ([("client", Command(args))], None)
    assert RedisCodec().encode(Command(args)) == wire


@pytest.mark.parametrize(("line", "args"), [
    (b"PING", [b"PING"]),
    (b"  SET  k   v ", [b"SET", b"k", b"v"]),
    (b'SET k "a b"', [b"SET", b"k", b"a b"]),
    (b"SET k 'a \"b\"'", [b"SET", b"k", b'a "b"']),
    (b'SET k "a\\"b\\\\"', [b"SET", b"k", b'a"b\\']),
    (b"SET k 'it\\'s'", [b"SET", b"k", b"it's"]),
    (b'SET k "\\x41\\x00\\n\\t"', [b"SET", b"k", b"A\x00\n\t"]),
    (b'SET k "\\xZZ"', [b"SET", b"k", b"xZZ"]),  # not hex: an escaped 'x'
    (b'SET k ""', [b"SET", b"k", b""]),
    (b'SET k ab"cd"', [b"SET", b"k", b"abcd"]),  # a quote inside a word opens quoting
    (b"SET k a\x00b c", [b"SET", b"k", b"a"]),  # C string: the line ends at NUL
    (b'SET k "unclosed', None),
    (b"SET k 'unclosed", None),
    (b'SET k "a"b', None),  # a closing quote must be followed by a space
    (b"", []),
    (b" \t ", []),
])
def test_split_inline_follows_sdssplitargs(line: bytes, args: list | None) -> None:
    assert split_inline(line) == args


def test_inline_requests() -> None:
    wire = b"PING\r\n\r\nset k 'v w'\nGET k\r\nSET bad \"x\r\n"
    got = decode([("client", wire)])
    assert got == ([
        ("client", Command((b"PING",), inline=True)),
        ("client", Command((b"set", b"k", b"v w"), inline=True)),
        ("client", Command((b"GET", b"k"), inline=True)),
        ("client", InvalidInline(b'SET bad "x', "unbalanced quotes in request")),
    ], None)
    assert decode(bytewise([("client", wire)])) == got
    codec = RedisCodec()
    assert codec.encode(Command((b"SET", b"k", b"v w\x00\"'"), inline=True)) == b'SET k "v w\\x00\\"\'"\r\n'
    assert codec.encode(InvalidInline(b'SET bad "x', "")) == b'SET bad "x\r\n'
    assert decode([("client", codec.encode(Command((b"*", b"x"), inline=True)))])[0] == [
        ("client", Command((b"*", b"x"), inline=True))]


def test_zero_and_negative_multibulk_counts_are_ignored_like_redis() -> None:
    assert decode([("client", b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n")]) == (
        [("client", Command((b"PING",)))], None)


@pytest.mark.parametrize(("side", "wire", "limits"), [
    ("server", b"$11\r\nhello world\r\n", {"max_bulk_length": 10}),
    ("server", b"+" + b"x" * 100, {"max_line_length": 64}),
    ("server", b"+" + b"x" * 100 + b"\r\n", {"max_line_length": 64}),
    ("server", b"*3\r\n*1\r\n*1\r\n:1\r\n", {"max_depth": 2}),
    ("server", b"*1001\r\n", {"max_elements": 1000}),
    ("client", b"*1\r\n$11\r\nhello world\r\n", {"max_bulk_length": 10}),
    ("client", b"GET " + b"k" * 100, {"max_inline_length": 64}),
    ("client", b"*1001\r\n", {"max_elements": 1000}),
])
def test_limits_bound_every_buffer(side: str, wire: bytes, limits: dict) -> None:
    codec = RedisCodec(**limits)
    with pytest.raises(DecodeError):
        codec.feed(Direction(side), wire)
        while codec.next_message() is not NEED_DATA:
            pass
    assert codec.state(Direction(side)) is ParserState.ERROR
    with pytest.raises(DecodeError):  # the error state is sticky
        codec.next_message()


def test_limits_allow_what_fits() -> None:
    assert decode([("server", b"$10\r\nhelloworld\r\n")], max_bulk_length=10)[1] is None
    assert decode([("server", b"*1\r\n*1\r\n:1\r\n")], max_depth=2)[1] is None


@pytest.mark.parametrize(("side", "wire"), [
    ("server", b"?\r\n"),  # unknown type
    ("server", b"$?\r\n;4\r\nHell\r\n;0\r\n"),  # streamed strings: not supported
    ("server", b":12a\r\n"),
    ("server", b":99999999999999999999\r\n"),  # beyond 64 bits
    ("server", b"$5\r\nhelloXX"),  # payload not followed by CRLF
    ("server", b"$-2\r\n"),
    ("server", b"%-1\r\n"),
    ("server", b"#x\r\n"),
    ("server", b",1.2.3\r\n"),
    ("server", b",1_0\r\n"),
    ("server", b"(12a\r\n"),
    ("server", b"_x\r\n"),
    ("server", b"=3\r\ntxt\r\n"),  # verbatim without "fmt:"
    ("server", b"+a\rb\r\n"),  # bare CR in a simple string
    ("client", b"*1\r\n:1\r\n"),  # requests are arrays of bulk strings
    ("client", b"*x\r\n"),
    ("client", b"*1\r\n$-1\r\n"),
])
def test_malformed_input_is_a_decode_error(side: str, wire: bytes) -> None:
    assert decode([(side, wire)])[1] == "DecodeError"


def test_closing_mid_message_is_an_error_and_closing_between_is_not() -> None:
    assert decode([("server", b"*2\r\n:1\r\n")])[1] == "DecodeError"
    assert decode([("client", b"*1\r\n$4\r\nPI")])[1] == "DecodeError"
    codec = RedisCodec()
    codec.feed(Direction.SERVER, b":1\r\n")
    codec.feed(Direction.SERVER, b"")
    assert codec.next_message() == Integer(1)
    assert codec.next_message() is NEED_DATA
    assert codec.state(Direction.SERVER) is ParserState.CLOSED
    with pytest.raises(DecodeError):
        codec.feed(Direction.SERVER, b"+late\r\n")


def test_states_follow_the_bytes() -> None:
    codec = RedisCodec()
    assert codec.state(Direction.CLIENT) is ParserState.IDLE
    codec.feed(Direction.CLIENT, b"*1\r\n$4\r\nPI")
    assert codec.next_message() is NEED_DATA
    assert codec.state(Direction.CLIENT) is ParserState.PARTIAL
    codec.feed(Direction.CLIENT, b"NG\r\n")
    assert codec.next_message() == Command((b"PING",))
    assert codec.state(Direction.CLIENT) is ParserState.IDLE


def test_messages_come_out_in_the_order_directions_were_fed() -> None:
    codec = RedisCodec()
    codec.feed(Direction.CLIENT, b"PING\r\n")
    codec.feed(Direction.SERVER, b"+PONG\r\n")
    codec.feed(Direction.CLIENT, b"PING\r\n")
    got = []
    while (m := codec.next_message()) is not NEED_DATA:
        got.append(m)
    assert got == [Command((b"PING",), True), Command((b"PING",), True), SimpleString(b"PONG")]
    assert [m.direction for m in got] == [Direction.CLIENT, Direction.CLIENT, Direction.SERVER]


@pytest.mark.parametrize("message", [
    SimpleString(b"a\r\nb"), SimpleError(b"x\ny"), Integer(2**63), Double("1,5"),
    BigNumber("12x"), VerbatimString(b"text", b"x"), Command(()), "not a message",
])
def test_unencodable_messages_raise_encode_error(message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EncodeError):
        RedisCodec().encode(message)


def test_a_large_value_arrives_in_pieces_in_linear_time() -> None:
    value = bytes(range(256)) * 4096  # 1 MiB, every byte value
    wire = b"$%d\r\n%b\r\n" % (len(value), value)
    codec = RedisCodec()
    for i in range(0, len(wire), 1000):
        codec.feed(Direction.SERVER, wire[i:i + 1000])
        message = codec.next_message()
    assert message == BulkString(value)
    assert codec.replies.buffered == 0

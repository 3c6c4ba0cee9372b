"""WebSocket recording and replay (``trproxy/protocols/http/websocket.py``), sans-I/O.

Every frame here is produced by wsproto's own connection objects (``WSConnection``
as client and as server), so masking, fragmentation and permessage-deflate are the
real thing; the replayer's output is decoded by a real client connection.
"""

from __future__ import annotations

import hashlib
import json
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol

from tests.support.replay_server import Mocks
from trproxy.protocols.base import DecodeError, Direction, Interaction, Lookup, Reply
from trproxy.protocols.http import HttpConfig, HttpRecorder, HttpReplayer, match_key
from trproxy.protocols.http.websocket import WsRecorder, WsReplayer, is_websocket_upgrade

URL = "http://example.com/ws?room=1"
CONFIG = HttpConfig()
C, S = Direction.CLIENT, Direction.SERVER


class Pair:
    """A wsproto client and server after their handshake; ``upgrade``/``accept`` are
    the handshake's bytes, ``extensions`` the 101's Sec-WebSocket-Extensions."""

    def __init__(self, deflate: bool = False) -> None:
        self.client = WSConnection(ConnectionType.CLIENT)
        self.server = WSConnection(ConnectionType.SERVER)
        self.upgrade = self.client.send(Request(
            host="example.com", target="/ws?room=1",
            extensions=[PerMessageDeflate()] if deflate else []))
        self.server.receive_data(self.upgrade)
        assert isinstance(next(self.server.events()), Request)
        self.accept = self.server.send(AcceptConnection(
            extensions=[PerMessageDeflate()] if deflate else []))
        self.client.receive_data(self.accept)
        assert isinstance(next(self.client.events()), AcceptConnection)
        head = self.accept.decode().lower()
        self.extensions = (head.split("sec-websocket-extensions: ", 1)[1].split("\r\n", 1)[0]
                           if deflate else None)

    def c(self, event: Event) -> bytes:
        return self.client.send(event)

    def s(self, event: Event) -> bytes:
        return self.server.send(event)


def new_client(deflate: bool = True) -> tuple[WSConnection, bytes]:
    """A client that has only sent its upgrade request (another Sec-WebSocket-Key)."""
    client = WSConnection(ConnectionType.CLIENT)
    upgrade = client.send(Request(host="example.com", target="/ws?room=1",
                                  extensions=[PerMessageDeflate()] if deflate else []))
    return client, upgrade


def received(conn: WSConnection, data: bytes) -> list[Event]:
    conn.receive_data(data)
    return list(conn.events())


def record(rec: WsRecorder, steps: list[tuple[Direction, bytes]]) -> list[Interaction]:
    out = []
    for direction, data in steps:
        out += rec.feed(direction, data)
    return out


def text(body: object) -> dict:
    return {"message": "text", "body": body}


def request(message: str, **rest: object) -> dict:
    return {"method": "WEBSOCKET", "url": URL, "message": message, **rest}


# -- recording ----------------------------------------------------------------------


def test_records_greeting_messages_and_close_as_interactions():
    p = Pair()
    steps = [
        (S, p.s(TextMessage("welcome"))),
        (C, p.c(TextMessage('{"op":"add","n":1}'))),
        (S, p.s(TextMessage('{"count":1}')) + p.s(BytesMessage(b"\x00\x01\xff"))),
        (C, p.c(BytesMessage(b"\x02\x03"))),
        (S, p.s(TextMessage("binary seen"))),
        (C, p.c(CloseConnection(1000, "bye"))),
        (S, p.s(CloseConnection(1000, "bye"))),
        (S, b""), (C, b""),
    ]
    got = record(WsRecorder(URL, None, CONFIG), steps)
    assert [(i.request, i.responses) for i in got] == [
        (request("open"), [text("welcome")]),
        (request("text", body={"json": {"op": "add", "n": 1}}),
         [text({"json": {"count": 1}}), {"message": "binary", "body": {"base64": "AAH/"}}]),
        (request("binary", body={"base64": "AgM="}), [text("binary seen")]),
        (request("close", body={"close": 1000, "reason": "bye"}), [{"close": 1000, "reason": "bye"}]),
    ]
    assert [i.summary for i in got] == ["WS /ws open", "WS /ws text", "WS /ws binary", "WS /ws close 1000"]
    assert {i.lifetime for i in got} == {"data"}
    json.dumps([(i.request, i.responses) for i in got])  # plain data, YAML-safe


def test_interactions_are_emitted_when_the_next_client_message_completes():
    p = Pair()
    rec = WsRecorder(URL, None, CONFIG)
    assert rec.feed(C, p.c(TextMessage("one"))) == []  # no greeting: no "open"
    assert rec.feed(S, p.s(TextMessage("1"))) == []
    first = rec.feed(C, p.c(TextMessage("two")))
    assert [(i.request["body"], i.responses) for i in first] == [("one", [text("1")])]
    assert rec.feed(C, b"") == []  # one side ended: the server may still answer
    assert rec.feed(S, p.s(TextMessage("2"))) == []
    last = rec.feed(S, b"")
    assert [(i.request["body"], i.responses) for i in last] == [("two", [text("2")])]


def test_fragments_are_reassembled_and_pings_are_not_recorded():
    p = Pair()
    client_bytes = (p.c(TextMessage("hel", message_finished=False))
                    + p.c(Ping(b"are you there"))
                    + p.c(TextMessage("lo ", message_finished=False))
                    + p.c(TextMessage("wörld", message_finished=True)))
    server_bytes = (p.s(Pong(b"are you there"))
                    + p.s(BytesMessage(b"ab", message_finished=False))
                    + p.s(BytesMessage(b"cd", message_finished=True)))
    # byte by byte: frame boundaries never line up with the chunks
    steps = [(C, client_bytes[i:i + 1]) for i in range(len(client_bytes))]
    steps += [(S, server_bytes[i:i + 3]) for i in range(0, len(server_bytes), 3)]
    got = record(WsRecorder(URL, None, CONFIG), [*steps, (C, b""), (S, b"")])
    assert [(i.request, i.responses) for i in got] == [
        (request("text", body="hello wörld"), [{"message": "binary", "body": {"base64": "YWJjZA=="}}]),
    ]


def test_permessage_deflate_is_decompressed():
    p = Pair(deflate=True)
    assert p.extensions is not None and p.extensions.startswith("permessage-deflate")
    words = " ".join(["trproxy"] * 50)
    steps = []
    for n in range(3):  # several messages: the compression context carries over
        frame = p.c(TextMessage(f'{{"n":{n},"words":"{words}"}}'))
        assert frame[0] & 0x40, "RSV1: the client compressed the message"
        assert len(frame) < len(words)
        steps += [(C, frame), (S, p.s(TextMessage(words + str(n))))]
    got = record(WsRecorder(URL, p.extensions, CONFIG), [*steps, (C, b""), (S, b"")])
    assert [(i.request["body"], i.responses) for i in got] == [
        ({"json": {"n": n, "words": words}}, [text(words + str(n))]) for n in range(3)]


def test_server_close_is_a_response_and_secrets_are_redacted():
    p = Pair()
    steps = [
        (C, p.c(TextMessage('{"user":"ann","password":"hunter2"}'))),
        (S, p.s(CloseConnection(4001, "unauthorized"))),
        (C, p.c(CloseConnection(4001, "unauthorized"))),
        (C, b""), (S, b""),
    ]
    got = record(WsRecorder(URL, None, CONFIG), steps)
    assert [(i.request, i.responses) for i in got] == [
        (request("text", body={"json": {"user": "ann", "password": "<redacted>"}}),
         [{"close": 4001, "reason": "unauthorized"}]),
        (request("close", body={"close": 4001, "reason": "unauthorized"}), []),
    ]
    assert "hunter2" not in json.dumps([i.request for i in got])


def test_a_message_over_max_body_keeps_only_its_digest():
    p = Pair()
    rec = WsRecorder(URL, None, HttpConfig(max_body=10))
    got = record(rec, [(C, p.c(BytesMessage(b"x" * 11))), (C, b""), (S, b"")])
    body = got[0].request["body"]
    assert body["omitted"] is True and body["size"] == 11
    assert body["sha256"] == hashlib.sha256(b"x" * 11).hexdigest()


def test_a_compressed_bomb_costs_bounded_memory():
    p = Pair(deflate=True)
    frame = p.c(BytesMessage(bytes(200 * 1024 * 1024)))  # 200 MB of zeros, ~200 KB on the wire
    assert len(frame) < 512 * 1024
    rec = WsRecorder(URL, p.extensions, HttpConfig(max_body=1024 * 1024))
    tracemalloc.start()
    try:
        got = record(rec, [(C, frame), (C, b""), (S, b"")])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got[0].request["body"]["size"] == 200 * 1024 * 1024
    assert got[0].request["body"]["sha256"] == hashlib.sha256(bytes(200 * 1024 * 1024)).hexdigest()
    assert peak < 40 * 1024 * 1024, peak


@pytest.mark.parametrize("direction,data,why", [
    (C, b"\x81\x02hi", "unmasked client frame"),
    (S, b"\x81\x82\x00\x00\x00\x00hi", "masked server frame"),
    (S, b"\x81\x02\xff\xfe", "text that is not UTF-8"),
    (S, b"\x83\x00", "reserved opcode"),
    (S, b"\xc1\x00", "RSV1 without permessage-deflate"),
    (S, b"\x89\x7e\x00\x80" + b"x" * 128, "control frame over 125 bytes"),
])
def test_bad_frames_raise_decode_error(direction, data, why):
    with pytest.raises(DecodeError):
        WsRecorder(URL, None, CONFIG).feed(direction, data)


def test_bad_frames_after_the_upgrade_stop_the_http_recorder_with_decode_error():
    p = Pair()
    rec = HttpRecorder(CONFIG, authority="example.com:80")
    assert rec.feed(C, p.upgrade) == []
    assert len(rec.feed(S, p.accept)) == 1
    with pytest.raises(DecodeError):
        rec.feed(S, b"\x83\x00")


def test_http_recorder_hands_the_bytes_after_101_to_websocket():
    p = Pair(deflate=True)
    rec = HttpRecorder(CONFIG, authority="example.com:80")
    out = rec.feed(C, p.upgrade)
    # the 101 and the greeting arrive in one chunk
    out += rec.feed(S, p.accept + p.s(TextMessage("hi")))
    out += rec.feed(C, p.c(TextMessage("ping?")))
    out += rec.feed(S, p.s(TextMessage("pong!")))
    out += rec.feed(C, p.c(CloseConnection(1000)))
    out += rec.feed(S, p.s(CloseConnection(1000)))
    out += rec.feed(S, b"") + rec.feed(C, b"")
    assert out[0].request["method"] == "GET" and out[0].responses[0]["status"] == 101
    assert [(i.request, i.responses) for i in out[1:]] == [
        (request("open"), [text("hi")]),
        (request("text", body="ping?"), [text("pong!")]),
        (request("close", body={"close": 1000, "reason": ""}), [{"close": 1000, "reason": ""}]),
    ]


def test_http_recorder_keeps_client_frames_sent_before_the_101():
    p = Pair()
    early = bytes(FrameProtocol(client=True, extensions=[]).send_data("early"))
    rec = HttpRecorder(CONFIG, authority="example.com:80")
    out = rec.feed(C, p.upgrade + early)
    out += rec.feed(S, p.accept)
    out += rec.feed(C, b"") + rec.feed(S, b"")
    assert [i.request.get("body") for i in out] == ["", "early"]


def test_other_upgrades_are_still_ignored_after_101():
    rec = HttpRecorder(CONFIG, authority="example.com:80")
    rec.feed(C, b"GET / HTTP/1.1\r\nHost: example.com\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
    out = rec.feed(S, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n\x00\x00\x00")
    assert [i.responses[0]["status"] for i in out] == [101]
    assert rec.feed(C, b"\x81\x02hi not a websocket") == []  # no DecodeError: ignored


def test_match_keys_tell_the_messages_apart():
    keys = [match_key(r) for r in (
        request("open"),
        request("text", body="hello"),
        request("binary", body={"base64": "aGVsbG8="}),
        request("text", body={"json": {"a": 1, "b": [1, 2]}}),
        request("close", body={"close": 1000, "reason": ""}),
    )]
    assert len({json.dumps(k, sort_keys=True) for k in keys}) == len(keys)
    assert keys[0] == {"method": "WEBSOCKET", "host": "example.com", "path": "/ws",
                       "query": [["room", "1"]], "body": "", "message": "open"}
    assert match_key(request("text", body="")) != keys[0]  # an empty message is not the greeting
    # JSON compares as data: key order does not matter
    assert match_key(request("text", body={"json": {"b": [1, 2], "a": 1}})) == keys[3]


def test_is_websocket_upgrade():
    assert is_websocket_upgrade("WebSocket")
    assert is_websocket_upgrade("foo, websocket")
    assert not is_websocket_upgrade("h2c")
    assert not is_websocket_upgrade(None)


# -- replay ---------------------------------------------------------------------------


def test_replayer_lookups_have_the_recorders_shape():
    p = Pair(deflate=True)
    client_bytes = [p.c(TextMessage('{"op":"add","n":1}')),
                    p.c(BytesMessage(b"\x02\x03", message_finished=False)) + p.c(BytesMessage(b"")),
                    p.c(CloseConnection(1000, "bye"))]
    rec = record(WsRecorder(URL, p.extensions, CONFIG),
                 [*[(C, b) for b in client_bytes], (C, b""), (S, b"")])
    p2 = Pair(deflate=True)
    again = [p2.c(TextMessage('{"op":"add","n":1}')),
             p2.c(BytesMessage(b"\x02\x03", message_finished=False)) + p2.c(BytesMessage(b"")),
             p2.c(CloseConnection(1000, "bye"))]
    rep = WsReplayer(URL, p2.extensions, CONFIG)
    lookups = [e for data in again for e in rep.feed(data)]
    assert [lk.request for lk in lookups] == [i.request for i in rec]
    assert [lk.summary for lk in lookups] == [i.summary for i in rec]


def test_replayer_answers_pings_and_renders_responses_the_client_reads():
    p = Pair(deflate=True)
    rep = WsReplayer(URL, p.extensions, CONFIG)
    events = rep.feed(p.c(Ping(b"hb")) + p.c(TextMessage("q")))
    assert isinstance(events[0], Reply) and isinstance(events[1], Lookup)
    assert received(p.client, events[0].data) == [Pong(b"hb")]
    out = rep.respond(events[1], [text({"json": {"count": 1}}), {"message": "binary", "body": {"base64": "AAH/"}},
                                  text("x" * 500)])
    assert out[0] & 0x40, "compressed as negotiated"
    assert out[1] & 0x80 == 0, "server frames are not masked"
    got = received(p.client, out)
    assert got == [TextMessage('{"count":1}'), BytesMessage(b"\x00\x01\xff"), TextMessage("x" * 500)]
    assert rep.close_after is False


def test_replayer_recorded_close_and_client_close():
    p = Pair()
    rep = WsReplayer(URL, None, CONFIG)
    [lookup] = rep.feed(p.c(TextMessage("go away")))
    out = rep.respond(lookup, [text("bye"), {"close": 4001, "reason": "done"}, text("never sent")])
    assert received(p.client, out) == [TextMessage("bye"), CloseConnection(4001, "done")]
    assert rep.close_after
    assert rep.feed(p.c(CloseConnection(4001, "done"))) == []  # after our Close: ignored

    p = Pair()
    rep = WsReplayer(URL, None, CONFIG)
    [close] = rep.feed(p.c(CloseConnection(1000, "")))
    assert isinstance(close, Lookup)
    assert close.request == request("close", body={"close": 1000, "reason": ""})
    assert received(p.client, rep.respond(close, [{"close": 1000, "reason": ""}])) == [CloseConnection(1000, "")]
    assert rep.close_after


def test_a_close_without_status_code_replays_without_one():
    p = Pair()
    empty_close = b"\x88\x00"  # RFC 6455 §7.1.5: no code is "1005" to the receiver
    got = record(WsRecorder(URL, None, CONFIG), [
        (C, p.c(TextMessage("x"))), (S, empty_close), (C, b""), (S, b"")])
    assert got[0].responses == [{"close": 1005, "reason": ""}]
    rep = WsReplayer(URL, None, CONFIG)
    [lookup] = rep.feed(Pair().c(TextMessage("x")))
    assert isinstance(lookup, Lookup)
    assert rep.respond(lookup, got[0].responses) == empty_close


def test_replayer_sends_nothing_after_its_close():
    p = Pair()
    rep = WsReplayer(URL, None, CONFIG)
    first, second = rep.feed(p.c(TextMessage("one")) + p.c(TextMessage("two")))  # one chunk
    assert isinstance(first, Lookup) and isinstance(second, Lookup)
    assert received(p.client, rep.respond(first, [{"close": 1001, "reason": ""}])) == [
        CloseConnection(1001, "")]
    assert rep.respond(second, [text("too late")]) == b""
    assert rep.miss(second, "no recorded request matches") == b""


def test_frames_right_behind_the_upgrade_request_are_kept():
    client, upgrade = new_client(deflate=False)
    # sent before the 101 arrived (RFC 6455 says wait; WSConnection refuses, so a bare frame)
    early = bytes(FrameProtocol(client=True, extensions=[]).send_data("early"))
    replayer = HttpReplayer(CONFIG, authority="example.com:80")
    lookup, greeting = replayer.feed(upgrade + early)
    assert isinstance(lookup, Lookup) and isinstance(greeting, Lookup)
    response = {"status": 101, "reason": "Switching Protocols", "http_version": "HTTP/1.1",
                "headers": [["Upgrade", "websocket"], ["Connection", "Upgrade"],
                            ["Sec-WebSocket-Accept", "recorded-for-another-key"]], "body": ""}
    assert isinstance(received(client, replayer.respond(lookup, [response]))[0], AcceptConnection)
    messages = replayer.feed(client.send(TextMessage("later")))
    assert [m.request["body"] for m in messages if isinstance(m, Lookup)] == ["early", "later"]


def test_replayer_miss_is_close_1011_with_a_short_reason():
    p = Pair()
    rep = WsReplayer(URL, None, CONFIG)
    [lookup] = rep.feed(p.c(TextMessage("never recorded")))
    assert isinstance(lookup, Lookup)
    out = rep.miss(lookup, "no recorded request matches " + "é" * 200)
    [event] = received(p.client, out)
    assert isinstance(event, CloseConnection) and event.code == 1011
    assert event.reason.startswith("trproxy: no recording for WS /ws text")
    assert len(event.reason.encode()) <= 123
    assert rep.close_after


def test_replayer_cannot_send_an_omitted_message():
    p = Pair()
    rep = WsReplayer(URL, None, CONFIG)
    [lookup] = rep.feed(p.c(TextMessage("big please")))
    assert isinstance(lookup, Lookup)
    out = rep.respond(lookup, [{"message": "binary", "body": {"omitted": True, "size": 9, "sha256": "00"}}])
    [event] = received(p.client, out)
    assert isinstance(event, CloseConnection) and event.code == 1011
    assert lookup.context.unreplayable


def test_replayer_bad_frame_raises_decode_error():
    with pytest.raises(DecodeError):
        WsReplayer(URL, None, CONFIG).feed(b"\x81\x02hi")  # unmasked client frame


# -- record, then replay through the HTTP dialect ------------------------------------------


class Store:
    """Recorded interactions answered through the replay engine (``Mocks``), one session."""

    def __init__(self, interactions: list[Interaction]) -> None:
        self.mocks = Mocks("http", interactions, destination="example.com:80")
        self.session = None

    @property
    def misses(self) -> list[str]:
        return [m["request"] for m in self.mocks.misses]

    @property
    def left(self) -> list:
        return self.mocks.unused()

    def run(self, replayer: HttpReplayer, data: bytes) -> bytes:
        if self.session is None:
            self.session = self.mocks.session(replayer)
        return self.mocks.replay(self.session, data)[0]


def _conversation(greeting: bool) -> tuple[list[Interaction], Pair]:
    p = Pair(deflate=True)
    rec = HttpRecorder(CONFIG, authority="example.com:80")
    out = rec.feed(C, p.upgrade)
    out += rec.feed(S, p.accept + (p.s(TextMessage("welcome")) if greeting else b""))
    out += rec.feed(C, p.c(TextMessage('{"n":1}')))
    out += rec.feed(S, p.s(TextMessage('{"count":1}')))
    out += rec.feed(C, p.c(CloseConnection(1000)))
    out += rec.feed(S, p.s(CloseConnection(1000)))
    out += rec.feed(S, b"") + rec.feed(C, b"")
    return out, p


@pytest.mark.parametrize("greeting", [True, False])
def test_record_then_replay_through_the_http_dialect(greeting):
    recorded, _ = _conversation(greeting)
    store = Store(recorded)
    client, upgrade = new_client()
    replayer = HttpReplayer(CONFIG, authority="example.com:80")
    events = received(client, store.run(replayer, upgrade))
    assert isinstance(events[0], AcceptConnection)  # our Sec-WebSocket-Accept fits the live key
    assert events[1:] == ([TextMessage("welcome")] if greeting else [])
    message = client.send(TextMessage('{"n": 1}'))  # json.dumps's layout, recorded compact
    assert received(client, store.run(replayer, message)) == [TextMessage('{"count":1}')]
    close = client.send(CloseConnection(1000))
    assert received(client, store.run(replayer, close)) == [CloseConnection(1000, "")]
    assert replayer._inner is not None and replayer._inner.close_after
    assert store.misses == [] and store.left == []


def test_replay_of_an_unrecorded_message_closes_with_1011():
    recorded, _ = _conversation(greeting=False)
    store = Store(recorded)
    client, upgrade = new_client()
    replayer = HttpReplayer(CONFIG, authority="example.com:80")
    assert isinstance(received(client, store.run(replayer, upgrade))[0], AcceptConnection)
    [event] = received(client, store.run(replayer, client.send(TextMessage("something else"))))
    assert isinstance(event, CloseConnection) and event.code == 1011
    assert store.misses == ["WS /ws text"]


def test_open_lookup_is_a_quiet_partial_handshake():
    _, data = new_client()
    replayer = HttpReplayer(CONFIG, authority="example.com:80")
    upgrade, greeting = replayer.feed(data)
    assert isinstance(upgrade, Lookup) and isinstance(greeting, Lookup)
    assert greeting.request == request("open")
    assert greeting.context.handshake and greeting.context.partial
    # upgrade refused (no 101): the greeting lookup sends nothing either way
    replayer.respond(upgrade, [{"status": 403, "reason": "Forbidden", "http_version": "HTTP/1.1",
                                "headers": [], "body": ""}])
    assert replayer.miss(greeting, "none") == b""
    assert replayer.respond(greeting, [text("hi")]) == b""


def test_a_server_that_streams_alone_is_kept_to_max_body_and_says_so():
    """A feed the client never answers: held messages stop at ``max_body`` bytes, the rest
    are counted, and replaying the recording reports what it could not send."""
    p = Pair()
    config = HttpConfig(max_body=10_000)
    rec = WsRecorder(URL, None, config)
    steps = [(S, p.s(BytesMessage(bytes([i]) * 1000))) for i in range(50)]
    steps += [(C, p.c(TextMessage("bye"))), (C, b""), (S, b"")]
    greeting, bye = record(rec, steps)
    kept, marker = greeting.responses[:-1], greeting.responses[-1]
    assert len(kept) == 10 and all(m["message"] == "binary" for m in kept)
    assert marker["dropped"] == 40 and marker["size"] == 40_000 and "not kept" in marker["note"]
    assert bye.request["body"] == "bye" and bye.responses == []

    replayer = WsReplayer(URL, None, config)
    lookup = Lookup(request=greeting.request)
    client = Pair()  # a fresh client to decode what the replayer sends
    got = received(client.client, replayer.respond(lookup, greeting.responses))
    assert [bytes(e.data) for e in got] == [bytes([i]) * 1000 for i in range(10)]
    assert "not kept" in lookup.context.unreplayable


@given(st.lists(st.tuples(st.sampled_from([C, S]), st.binary(min_size=1, max_size=200)),
                max_size=8), st.booleans())
def test_any_bytes_give_messages_or_a_decode_error(steps, deflate):
    """Malformed frames never raise anything but ``DecodeError`` (the proxy then stops
    capturing that connection and keeps relaying it)."""
    extensions = Pair(deflate=True).extensions if deflate else None
    rec, replayer = WsRecorder(URL, extensions, CONFIG), WsReplayer(URL, extensions, CONFIG)
    try:
        for direction, data in steps:
            rec.feed(direction, data)
    except DecodeError:
        pass
    try:
        for _direction, data in steps:
            for event in replayer.feed(data):
                if isinstance(event, Lookup):
                    replayer.respond(event, [text("ok")])
    except DecodeError:
        pass


@given(st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
                min_size=1, max_size=4), st.booleans())
def test_corrupted_real_frames_give_messages_or_a_decode_error(flips, deflate):
    p = Pair(deflate=deflate)
    client = bytearray(p.c(TextMessage('{"a": 1}')) + p.c(BytesMessage(b"x" * 300))
                       + p.c(Ping(b"p")) + p.c(CloseConnection(1000, "bye")))
    server = bytearray(p.s(TextMessage("hello " * 40)) + p.s(BytesMessage(b"\x00" * 70000)))
    for where, value in flips:
        target = client if where % 2 else server
        target[where % len(target)] = value
    rec = WsRecorder(URL, p.extensions, CONFIG)
    replayer = WsReplayer(URL, p.extensions, CONFIG)
    try:
        record(rec, [(S, bytes(server)), (C, bytes(client)), (C, b""), (S, b"")])
    except DecodeError:
        pass
    try:
        for event in replayer.feed(bytes(client)):
            if isinstance(event, Lookup):
                replayer.respond(event, [text("ok")])
    except DecodeError:
        pass

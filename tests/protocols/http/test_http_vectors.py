"""The recorder and replayer on real captured HTTP/1.1 and HTTP/2 byte streams.

Streams in ``vectors/`` were captured from real servers (http.server, an h2 server)
and real clients (requests, curl, urllib3, raw sockets, httpx with http2) through a
relay; see ``capture.py``. Each is fed whole, one byte at a time and cut at many
offsets, and must give the same interactions; replayed responses are parsed by h11 /
an h2 client connection and must carry the recorded status, headers and body.
"""

from __future__ import annotations

import base64
import json

import h2.config
import h2.connection
import h2.events
import h11
import pytest
import yaml

from tests.support.chunking import bytewise, offsets, side_bytes, split_at, total
from trproxy.protocols.base import Lookup, Reply
from trproxy.protocols.http import HttpReplayer, match_key
from trproxy.protocols.http.body import body_from_readable, decode_body
from trproxy.protocols.http.render import CONNECTION_FIELDS

from . import capture
from .servers import JSON_DOC, pattern
from .streams import as_data, headers, record, yaml_roundtrip

H1 = capture.load("h1")
H2 = capture.load("h2")
ALL = {**H1, **H2}


@pytest.fixture(scope="module")
def recorded():
    return {name: as_data(record(chunks)) for name, chunks in ALL.items()}


# -- chunking invariance ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ALL))
def test_whole_equals_bytewise(name, recorded):
    assert recorded[name], "no interaction recorded"
    assert as_data(record(bytewise(ALL[name]))) == recorded[name]


@pytest.mark.parametrize("name", sorted(ALL))
def test_cut_at_offsets(name, recorded):
    """Every offset for streams up to 1 KB; a stride (plus the first/last 120 bytes,
    where heads are) for larger ones, to keep this test fast; test_http_fuzz cuts
    the large streams at random offsets."""
    chunks = ALL[name]
    for k in offsets(total(chunks), every_up_to=1024, samples=200, ends=120):
        assert as_data(record(split_at(chunks, k))) == recorded[name], f"cut at {k}"


@pytest.mark.parametrize("name", sorted(ALL))
def test_yaml_roundtrip_and_no_secrets(name, recorded):
    data = recorded[name]
    assert yaml_roundtrip(data) == data
    text = yaml.safe_dump(data)
    for secret in ("secret-token", "abc123", "hunter2", "tok-123", '"pw"', "Bearer t"):
        assert secret not in text


# -- what was recorded ----------------------------------------------------------------------


def _by_path(interactions):
    return {(i["request"]["method"], i["request"]["url"].split("/", 3)[3]): i for i in interactions}


def test_keepalive_sequence(recorded):
    items = recorded["keepalive"]
    assert [i["request"]["url"].split("/", 3)[3] for i in items] == [
        "json", "cookies", "chunked", "nocontent", "notmodified", "early", "gzip", "deflate",
        "br", "zstd", "binary", "secret", "json", "echo?b=2&a=1"]
    by = _by_path(items)
    # json.dumps' layout (", " and ": ") is named so replay sends the same bytes
    assert by["GET", "json"]["responses"][0]["body"] == {"json": JSON_DOC, "style": "spaced"}
    # two Set-Cookie stay two, in order, values redacted but names/attributes kept
    assert headers(by["GET", "cookies"]["responses"][0], "set-cookie") == [
        "session=<redacted>; Path=/; HttpOnly", "theme=<redacted>; Max-Age=3600"]
    chunked = by["GET", "chunked"]["responses"][0]
    assert chunked["body"] == "first second third"
    assert chunked["trailers"] == [["x-checksum", "42"]]
    assert [r["status"] for r in by["GET", "early"]["responses"]] == [103, 200]
    assert by["GET", "early"]["responses"][0]["headers"] == [["Link", "</style.css>; rel=preload"]]
    for status, path in ((204, "nocontent"), (304, "notmodified")):
        assert by["GET", path]["responses"][0]["status"] == status
        assert by["GET", path]["responses"][0]["body"] == ""
    head = by["HEAD", "json"]["responses"][0]
    assert head["body"] == "" and headers(head, "content-length") == ["77"]
    for coding in ("gzip", "deflate", "br", "zstd"):
        resp = by["GET", coding]["responses"][0]
        assert resp["body"]["json"] == JSON_DOC and resp["encoding"] == coding
        assert headers(resp, "content-encoding") == [coding]
    assert base64.b64decode(by["GET", "binary"]["responses"][0]["body"]["base64"]) == pattern(1024)
    assert by["GET", "secret"]["responses"][0]["body"]["json"] == ({
        "access_token": "<redacted>", "user": "ann", "nested": {"password": "<redacted>"}})
    post = by["POST", "echo?b=2&a=1"]
    assert post["request"]["body"]["json"] == {"name": "ann", "password": "<redacted>"}
    assert headers(post["request"], "authorization") == ["Bearer <redacted>"]
    assert headers(post["request"], "cookie") == ["session=<redacted>; theme=<redacted>"]
    assert all(i["lifetime"] == "data" for i in items)


def test_expect_100_continue(recorded):
    [item] = recorded["expect100"]
    assert headers(item["request"], "expect") == ["100-continue"]
    assert item["request"]["body"]["json"] == {"k": "v" * 2000}
    assert [r["status"] for r in item["responses"]] == [100, 200]
    assert item["responses"][1]["body"]["json"]["received"] == {"k": "v" * 2000}


def test_pipelined_requests_pair_in_order(recorded):
    items = recorded["pipelined"]
    assert [i["request"]["url"] for i in items] == ["http://x/json", "http://x/text", "http://x/cookies"]
    assert items[1]["responses"][0]["body"] == "hello, world\n"


def test_chunked_upload(recorded):
    [item] = recorded["chunked_upload"]
    assert headers(item["request"], "transfer-encoding") == ["chunked"]
    assert item["request"]["body"]["json"] == {"parts": [1, 2, 3]}


def test_body_delimited_by_close_is_emitted_at_eof():
    chunks = H1["until_close"]
    last_server_eof = max(i for i, (s, d) in enumerate(chunks) if s == "server" and not d)
    assert record(chunks[:last_server_eof]) == []
    [item] = as_data(record(chunks))
    assert item["request"]["http_version"] == "HTTP/1.0"
    assert item["responses"][0]["body"] == "delimited by close\n"


def test_websocket_upgrade_hands_the_frames_to_websocket(recorded):
    upgrade, greeting = recorded["websocket"]
    assert upgrade["responses"][0]["status"] == 101
    assert upgrade["summary"].endswith("-> 101")
    # the frame that came with the 101 is the server's greeting, not HTTP
    assert greeting["request"] == {"method": "WEBSOCKET", "url": "http://x/ws", "message": "open"}
    assert greeting["responses"] == [{"message": "text", "body": "hello"}]
    # a client frame after it is a message of its own (test_websocket.py has the rest)
    chunks = H1["websocket"]
    eofs = [c for c in chunks if not c[1]]
    body = [c for c in chunks if c[1]]
    items = as_data(record(body + [("client", b"\x81\x85\x00\x00\x00\x00hello")] + eofs))
    assert items[:2] == recorded["websocket"]
    assert items[2]["request"]["body"] == "hello" and items[2]["responses"] == []


def test_h2_streams(recorded):
    items = recorded["h2_multiplexed"]
    by = _by_path(items)
    assert len(items) == 8
    assert all(i["request"]["http_version"] == "HTTP/2.0" for i in items)
    assert by["GET", "json"]["responses"][0]["body"]["json"] == JSON_DOC
    big = by["GET", "big?n=70000"]["responses"][0]
    assert base64.b64decode(big["body"]["base64"]) == pattern(70000)
    assert by["GET", "trailers"]["responses"][0]["trailers"] == [["x-checksum", "42"]]
    assert [r["status"] for r in by["GET", "early"]["responses"]] == [103, 200]
    assert headers(by["GET", "cookies"]["responses"][0], "set-cookie") == [
        "session=<redacted>; Path=/", "theme=<redacted>"]
    assert by["GET", "gzip"]["responses"][0]["encoding"] == "gzip"
    post = by["POST", "echo"]
    assert post["request"]["body"]["json"] == {"q": [1, 2, 3], "password": "<redacted>"}
    assert headers(post["request"], "authorization") == ["Bearer <redacted>"]
    assert by["GET", "nocontent"]["responses"][0]["status"] == 204


# -- replay round trips -------------------------------------------------------------------


def _recorded_body(message: dict) -> bytes:
    return body_from_readable(message["body"])


def _semantic_headers(fields) -> list[tuple[str, str]]:
    skip = {f.decode() for f in CONNECTION_FIELDS} | {"content-length"}
    return [(n.lower(), v) for n, v in fields if n.lower() not in skip]


def _h11_read(conn: h11.Connection) -> tuple[list, h11.Response, bytes, list]:
    infos, body = [], b""
    while True:
        event = conn.next_event()
        assert event is not h11.NEED_DATA, "replayed response is incomplete"
        if isinstance(event, h11.InformationalResponse):
            infos.append(event)
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return infos, response, body, [(n.decode(), v.decode()) for n, v in event.headers]


def _check_h1(recorded_response: dict, response: h11.Response, body: bytes, trailers: list) -> None:
    assert response.status_code == recorded_response["status"]
    got = _semantic_headers([(n.decode(), v.decode()) for n, v in response.headers])
    assert got == _semantic_headers(recorded_response["headers"])
    coding = recorded_response.get("encoding")
    assert (decode_body(body, coding, 10**8) if coding else body) == _recorded_body(recorded_response)
    assert trailers == [tuple(t) for t in recorded_response.get("trailers", [])]


@pytest.mark.parametrize("name", ["keepalive", "expect100", "pipelined", "chunked_upload"])
def test_replay_h1_parsed_by_h11(name, recorded):
    items = recorded[name]
    replayer = HttpReplayer()
    events = replayer.feed(side_bytes(H1[name], "client"))
    lookups = [e for e in events if isinstance(e, Lookup)]
    assert [match_key(lk.request) for lk in lookups] == [match_key(i["request"]) for i in items]
    if name == "expect100":  # our own 100 Continue went out before the Lookup
        assert events[0] == Reply(b"HTTP/1.1 100 Continue\r\n\r\n")
    conn = h11.Connection(h11.CLIENT)
    for lookup, item in zip(lookups, items, strict=True):
        conn.send(h11.Request(method=lookup.context.private["method"], target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        conn.receive_data(replayer.respond(lookup, item["responses"]))
        infos, response, body, trailers = _h11_read(conn)
        final = item["responses"][-1]
        assert [i.status_code for i in infos] == [r["status"] for r in item["responses"][:-1]
                                                  if r["status"] != 100]
        _check_h1(final, response, body, trailers)
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()


def test_replay_h2_recording_to_h11_client(recorded):
    """An HTTP/2 recording served to an HTTP/1.1 client: reason phrases made up,
    Content-Length computed, trailers sent chunked."""
    replayer = HttpReplayer()
    conn = h11.Connection(h11.CLIENT)
    for item in recorded["h2_multiplexed"]:
        req = item["request"]
        authority, _, target = req["url"].partition("//")[2].partition("/")
        body = _recorded_body(req)
        wire = (f"{req['method']} /{target} HTTP/1.1\r\nHost: {authority}\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"Content-Type: application/json\r\n\r\n").encode() + body
        [lookup] = replayer.feed(wire)
        assert match_key(lookup.request) == match_key(req)
        conn.send(h11.Request(method=req["method"], target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        conn.receive_data(replayer.respond(lookup, item["responses"]))
        infos, response, resp_body, trailers = _h11_read(conn)
        _check_h1(item["responses"][-1], response, resp_body, trailers)
        assert response.reason  # h2 has no reason phrase; one was supplied
        conn.start_next_cycle()


class H2Client:
    """An in-memory HTTP/2 client (the h2 library) talking to a replayer."""

    def __init__(self, replayer: HttpReplayer) -> None:
        self.replayer = replayer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.streams: dict[int, dict] = {}
        self.lookups: list[Lookup] = []

    def pump_client(self) -> None:
        for event in self.replayer.feed(self.conn.data_to_send()):
            if isinstance(event, Reply):
                self.receive(event.data)
            else:
                self.lookups.append(event)

    def receive(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            s = self.streams.setdefault(getattr(event, "stream_id", 0) or 0,
                                        {"infos": [], "body": b"", "trailers": [], "ended": False})
            if isinstance(event, h2.events.InformationalResponseReceived):
                s["infos"].append(dict(event.headers))
            elif isinstance(event, h2.events.ResponseReceived):
                s["headers"] = event.headers
            elif isinstance(event, h2.events.DataReceived):
                s["body"] += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                s["trailers"] = event.headers
            elif isinstance(event, h2.events.StreamEnded):
                s["ended"] = True

    def request(self, method: str, url: str, body: bytes = b"") -> int:
        scheme, _, rest = url.partition("://")
        authority, _, path = rest.partition("/")
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(b":method", method.encode()), (b":scheme", scheme.encode()),
                                     (b":authority", authority.encode()),
                                     (b":path", b"/" + path.encode()),
                                     (b"content-type", b"application/json")],
                               end_stream=not body)
        if body:
            self.conn.send_data(sid, body, end_stream=True)
        return sid

    def until_ended(self, sid: int) -> dict:
        for _ in range(1000):
            self.pump_client()
            if self.streams.get(sid, {}).get("ended"):
                return self.streams[sid]
        raise AssertionError(f"stream {sid} never ended")


def _check_h2(recorded_response: dict, stream: dict, method: str) -> None:
    headers_ = [(n.decode(), v.decode()) for n, v in stream["headers"]]
    assert headers_[0] == (":status", str(recorded_response["status"]))
    assert _semantic_headers(headers_[1:]) == _semantic_headers(recorded_response["headers"])
    body = stream["body"]
    coding = recorded_response.get("encoding")
    assert (decode_body(body, coding, 10**8) if coding else body) == _recorded_body(recorded_response)
    length = dict(headers_).get("content-length")
    if method != "HEAD" and recorded_response["status"] != 304:
        assert length is None or int(length) == len(body)
    assert [(n.decode(), v.decode()) for n, v in stream["trailers"]] == \
        [tuple(t) for t in recorded_response.get("trailers", [])]


@pytest.mark.parametrize("name", ["h2_multiplexed", "keepalive", "expect100"])
def test_replay_to_h2_client(name, recorded):
    """HTTP/2 and HTTP/1.1 recordings served to an HTTP/2 client (flow control included:
    the 70 KB body is larger than the client's initial 64 KiB window)."""
    client = H2Client(HttpReplayer())
    for item in recorded[name]:
        req = item["request"]
        sid = client.request(req["method"], req["url"], _recorded_body(req))
        client.pump_client()
        [lookup] = client.lookups
        client.lookups.clear()
        assert match_key(lookup.request) == match_key(req)
        client.receive(client.replayer.respond(lookup, item["responses"]))
        stream = client.until_ended(sid)
        _check_h2(item["responses"][-1], stream, req["method"])
        assert [int(i[b":status"]) for i in stream["infos"]] == [
            r["status"] for r in item["responses"][:-1] if r["status"] not in (100, 101)]


def test_replay_h1_miss_is_a_502_with_the_reason():
    replayer = HttpReplayer()
    [lookup] = replayer.feed(b"GET /nothing?x=1 HTTP/1.1\r\nHost: api.test\r\n\r\n")
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(replayer.miss(lookup, "closest: GET api.test/something (path differs)"))
    _, response, body, _ = _h11_read(conn)
    assert response.status_code == 502
    assert b"GET api.test/nothing" in body and b"path differs" in body


def test_replay_h2_miss_is_a_502():
    client = H2Client(HttpReplayer())
    sid = client.request("POST", "http://api.test/x", json.dumps({"a": 1}).encode())
    client.pump_client()
    [lookup] = client.lookups
    client.receive(client.replayer.miss(lookup, "no recording for this host"))
    stream = client.until_ended(sid)
    assert dict(stream["headers"])[b":status"] == b"502"
    assert b"no recording for this host" in stream["body"]

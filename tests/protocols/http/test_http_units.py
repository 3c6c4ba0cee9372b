"""Focused behaviour of the HTTP dialect: redaction, matching, bounds, replay details."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import tracemalloc

import h2.config
import h2.connection
import h2.events
import pytest

from trproxy.protocols.base import NEED_DATA, DecodeError, Direction, Lookup, ProtocolError, Reply
from trproxy.protocols.http import (
    DEFAULT_SECRET_HEADERS,
    DIALECT,
    HttpConfig,
    HttpRecorder,
    HttpReplayer,
    Noise,
    Redaction,
    detect,
    dialect_with,
    match_key,
    match_key_with,
)
from trproxy.protocols.http.body import BodyBuffer, decode_body, encode_body
from trproxy.protocols.http.h1 import Data, End, H1Parser, H1State, Head
from trproxy.protocols.http.matching import drop_json_path, parse_json_path
from trproxy.protocols.http.render import ws_accept
from trproxy.protocols.registry import detect as detect_dialect

from .streams import headers, record

C, S = Direction.CLIENT, Direction.SERVER


def _exchange(request: bytes, response: bytes, config: HttpConfig | None = None, **kw):
    return record([("client", request), ("server", response), ("client", b""), ("server", b"")],
                  config, **kw)


# -- detection ---------------------------------------------------------------------------


@pytest.mark.parametrize("data,verdict", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
    (b"POST /a?b=1 HTTP/1.0\r\n", True),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", True),
    (b"PRI * HT", None),
    (b"GET /some/pa", None),
    (b"", None),
    (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", False),      # Postgres SSLRequest
    (b"*1\r\n$4\r\nPING\r\n", False),                 # Redis RESP
    (b"PING\r\n", False),                             # Redis inline
    (b"SET a b\r\n", False),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", False),  # TLS ClientHello
    (b"GET / HTTP/3.0\r\n", False),
])
def test_detect(data, verdict):
    assert detect(data, 80) is verdict


def test_detect_is_registered_with_the_proxy():
    assert detect_dialect(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 8080).name == "http"
    assert DIALECT.name == "http" and 80 in DIALECT.default_ports


# -- redaction ----------------------------------------------------------------------------


def test_redaction_of_headers_cookies_query_and_bodies():
    body = b'{"token": "t-1", "data": [{"client_secret": "cs-1"}]}'
    [item] = _exchange(
        b"POST /login?access_token=abc&page=2 HTTP/1.1\r\nHost: api.test\r\n"
        b"Authorization: Basic dXNlcjpwdw==\r\nProxy-Authorization: Bearer p\r\n"
        b"X-Api-Key: k-1\r\nX-Custom-Secret: c-1\r\nCookie: sid=s-1; lang=en\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 29\r\n\r\n"
        b"user=ann&password=pw&remember",
        b"HTTP/1.1 200 OK\r\nSet-Cookie: sid=s-2; Secure; HttpOnly\r\nSet-Cookie: lang=en\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
        HttpConfig(redaction=Redaction.with_extra(headers=["X-Custom-Secret"], fields=["token"])))
    req, [resp] = item.request, item.responses
    assert req["url"] == "http://api.test/login?access_token=<redacted>&page=2"
    assert headers(req, "authorization") == ["Basic <redacted>"]  # the scheme is not a secret
    assert headers(req, "proxy-authorization") == ["Bearer <redacted>"]
    for name in ("x-api-key", "x-custom-secret"):
        assert headers(req, name) == ["<redacted>"]
    assert headers(req, "cookie") == ["sid=<redacted>; lang=<redacted>"]
    assert req["body"] == "user=ann&password=<redacted>&remember="
    assert headers(resp, "set-cookie") == ["sid=<redacted>; Secure; HttpOnly", "lang=<redacted>"]
    assert resp["body"]["json"] == {"token": "<redacted>", "data": [{"client_secret": "<redacted>"}]}
    for secret in ("dXNlcjpwdw", "k-1", "c-1", "s-1", "s-2", "pw&", "t-1", "cs-1", "=abc"):
        assert secret not in json.dumps(item.request) + json.dumps(item.responses)
    assert "authorization" in DEFAULT_SECRET_HEADERS


def test_default_secret_fields_cover_common_token_and_key_names_but_not_cursors():
    doc = {"session_token": "st", "refreshToken": "rt", "x-client-secret": "cs", "private_key": "pk",
           "aws_secret_access_key": "ak", "new_password": "np", "password2": "p2",
           "githubAuthToken": "gh", "jwt": "j", "token": "t",
           "page_token": "cursor-1", "csrf_token": "form-1", "token_type": "bearer", "key": "k"}
    body = json.dumps(doc).encode()
    [item] = _exchange(
        b"POST /api HTTP/1.1\r\nHost: api.test\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
        b"HTTP/1.1 204 No Content\r\n\r\n", HttpConfig())
    got = item.request["body"]["json"]
    secret = {k for k, v in got.items() if v == "<redacted>"}
    assert secret == {"session_token", "refreshToken", "x-client-secret", "private_key",
                      "aws_secret_access_key", "new_password", "password2", "githubAuthToken",
                      "jwt", "token"}
    assert {k: got[k] for k in ("page_token", "csrf_token", "token_type", "key")} == {
        "page_token": "cursor-1", "csrf_token": "form-1", "token_type": "bearer", "key": "k"}


# -- matching -----------------------------------------------------------------------------


def _req(url: str, body=None, method="GET", hdrs=None) -> dict:
    return {"method": method, "url": url, "http_version": "HTTP/1.1",
            "headers": hdrs or [], "body": body if body is not None else ""}


def test_match_key_normalizes_query_order_json_and_default_port():
    a = _req("http://API.test:80/p?b=2&a=1", {"json": {"x": 1, "y": [1, 2]}}, "post")
    b = _req("http://api.test/p?a=1&b=2", {"json": {"y": [1, 2], "x": 1}}, "POST")
    assert match_key(a) == match_key(b)
    assert match_key(a) != match_key(_req("http://api.test/p?a=1&b=3", {"json": {"x": 1, "y": [1, 2]}}, "POST"))
    assert match_key(a) != match_key(_req("http://api.test:8080/p?a=1&b=2", {"json": {"x": 1, "y": [1, 2]}}, "POST"))
    assert match_key(a) != match_key(_req("http://api.test/p?a=1&b=2", {"json": {"x": 2, "y": [1, 2]}}, "POST"))
    # h1 and h2 forms of one request have one key
    h2_form = dict(b, http_version="HTTP/2.0", headers=[["content-type", "application/json"]])
    assert match_key(h2_form) == match_key(b)


def test_match_key_with_noise():
    noise = Noise(query={"ts"}, json_paths=("$.meta.request_id", "items[*].id"),
                  headers={"x-trace"}, match_headers=True)
    a = _req("http://h/p?ts=1&q=x", {"json": {"meta": {"request_id": 1, "v": 1},
                                               "items": [{"id": 1, "n": "a"}]}},
             hdrs=[["Accept", "json"], ["X-Trace", "1"], ["User-Agent", "a"]])
    b = _req("http://h/p?q=x&ts=2", {"json": {"meta": {"request_id": 2, "v": 1},
                                               "items": [{"id": 9, "n": "a"}]}},
             hdrs=[["accept", "json"], ["x-trace", "2"], ["User-Agent", "b"]])
    assert match_key_with(a, noise) == match_key_with(b, noise)
    assert match_key(a) != match_key(b)
    c = dict(b, headers=[["accept", "xml"]])
    assert match_key_with(a, noise) != match_key_with(c, noise)
    assert dialect_with(HttpConfig(noise=noise)).match_key(a) == match_key_with(b, noise)


@pytest.mark.parametrize("recorded", [
    ["EXISTS", "k"], "GET /", None, {"url": 5}, {"url": "http://h/", "headers": "x"},
    {"url": "http://h/", "headers": [["content-type"]]},
    {"url": "http://h/", "headers": [["content-type", 7]], "body": "{}"},
    {"url": "http://h/", "headers": [["content-type", {"hex": "zz"}]], "body": "{}"},
])
def test_a_recorded_request_without_an_http_shape_is_its_own_key(recorded):
    # a recording is untrusted: its key is computed at load (the cache) and must not raise
    assert match_key(recorded) == recorded
    assert match_key_with(recorded, Noise(match_headers=True)) == recorded
    assert match_key(_req("http://h/", "{}", hdrs=[["content-type", {"hex": "6a736f6e"}]]))["path"] == "/"


def test_json_paths():
    assert parse_json_path("$.a.b[0].c") == ["a", "b", 0, "c"]
    assert parse_json_path("items[*].id") == ["items", "*", "id"]
    doc = {"a": [{"id": 1, "k": 2}, {"id": 3}], "b": {"c": 1, "d": 2}}
    assert drop_json_path(doc, ["a", "*", "id"]) == {"a": [{"k": 2}, {}], "b": {"c": 1, "d": 2}}
    assert drop_json_path(doc, ["b", "*"]) == {"a": doc["a"], "b": {}}
    assert drop_json_path(doc, ["a", 1]) == {"a": [{"id": 1, "k": 2}, None], "b": doc["b"]}
    assert doc["a"][0] == {"id": 1, "k": 2}  # not modified in place


def test_form_bodies_match_as_pairs():
    ct = [["Content-Type", "application/x-www-form-urlencoded"]]
    assert match_key(_req("http://h/", "a=1&b=2", "POST", ct)) == match_key(_req("http://h/", "b=2&a=1", "POST", ct))


# -- bounds ---------------------------------------------------------------------------------


def test_100mb_response_is_digested_in_bounded_memory():
    size, chunk = 100 * 1024 * 1024, b"x" * 65536
    config = HttpConfig(max_body=1024 * 1024)
    rec = HttpRecorder(config)
    rec.feed(C, b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
    rec.feed(S, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        out = []
        for _ in range(size // len(chunk)):
            digest.update(chunk)
            out += rec.feed(S, chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes while recording 100 MB"
    [item] = out
    body = item.responses[0]["body"]
    assert body["omitted"] is True and body["size"] == size
    assert body["sha256"] == digest.hexdigest()


def test_decompression_bomb_is_bounded():
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))
    assert decode_body(bomb, "gzip", 1024 * 1024) is None
    [item] = _exchange(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
                       b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
                       % len(bomb) + bomb, HttpConfig(max_body=1024 * 1024))
    body = item.responses[0]["body"]
    assert body["omitted"] and body["size"] == len(bomb) and "decodes to more" in body["note"]


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_codings_roundtrip(coding):
    data = json.dumps({"k": list(range(500))}).encode()
    assert decode_body(encode_body(data, coding), coding, len(data)) == data
    assert decode_body(encode_body(data, coding), coding, len(data) - 1) is None
    with pytest.raises(ValueError):
        decode_body(b"\x01not compressed", coding, 100)


def test_corrupt_coding_is_kept_as_received():
    [item] = _exchange(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
                       b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope")
    resp = item.responses[0]
    assert resp["body"] == "nope" and "encoding" not in resp
    replayer = HttpReplayer()
    [lookup] = replayer.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert replayer.respond(lookup, item.responses).endswith(b"Content-Length: 4\r\n\r\nnope")


def test_body_buffer_keeps_small_bodies_and_digests_large():
    buf = BodyBuffer(10)
    buf.add(b"12345")
    assert not buf.overflow and buf.data() == b"12345"
    buf.add(b"678901")
    assert buf.overflow and buf.stored()["sha256"] == hashlib.sha256(b"12345678901").hexdigest()


def test_head_too_large_is_a_decode_error():
    rec = HttpRecorder(HttpConfig(max_head=1024))
    with pytest.raises(DecodeError):
        rec.feed(C, b"GET / HTTP/1.1\r\n" + b"X-Filler: " + b"a" * 2000)
    with pytest.raises(DecodeError):  # and it stays in its error state
        rec.feed(C, b"\r\n\r\n")


# -- errors -----------------------------------------------------------------------------------


def test_completed_interactions_come_out_before_an_error():
    rec = HttpRecorder()
    rec.feed(C, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    out = rec.feed(S, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 nonsense\r\n\r\n")
    assert [i.request["url"] for i in out] == ["http://h/a"]
    with pytest.raises(ProtocolError):
        rec.feed(C, b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",  # smuggling
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
    b"GET / HTTP/1.1 extra\r\nHost: h\r\n\r\n",
    b"GET / SPDY/3\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\n: novalue\r\n\r\n",
])
def test_bad_requests_raise_protocol_errors(request_bytes):
    with pytest.raises(ProtocolError):
        HttpRecorder().feed(C, request_bytes)
    with pytest.raises(ProtocolError):
        HttpReplayer().feed(request_bytes)


def test_response_without_request_is_an_error():
    rec = HttpRecorder()
    rec.feed(C, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    rec.feed(S, b"HTTP/1.1 204 No Content\r\n\r\n")
    with pytest.raises(DecodeError):
        rec.feed(S, b"HTTP/1.1 200 OK\r\n\r\n")


def test_unanswered_request_is_kept_unanswered_and_truncated_request_marked():
    [unanswered] = record([("client", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"), ("client", b""),
                           ("server", b"")])
    assert unanswered.unanswered and unanswered.responses == []
    [item] = record([("client", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc"),
                     ("server", b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n"),
                     ("client", b""), ("server", b"")])
    assert item.request["truncated"] is True and item.request["body"] == "abc"


def test_connection_aware_dialect_gets_scheme_and_authority():
    rec = DIALECT.recorder_for(True, "api.test:443")
    rec.feed(C, b"GET /x HTTP/1.0\r\n\r\n")
    [item] = rec.feed(S, b"HTTP/1.0 204 No Content\r\n\r\n")
    assert item.request["url"] == "https://api.test/x"
    [lookup] = DIALECT.replayer_for(True, "api.test:443").feed(b"GET /x HTTP/1.0\r\n\r\n")
    assert match_key(lookup.request) == match_key(item.request)


def test_h2_server_speaking_first_is_held_until_the_preface():
    """An HTTP/2 server may send SETTINGS before the client's preface arrives."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    server.initiate_connection()
    rec = HttpRecorder()
    assert rec.feed(S, server.data_to_send()) == []
    client.initiate_connection()
    client.send_headers(1, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"h"),
                            (b":path", b"/a")], end_stream=True)
    wire = client.data_to_send()
    assert rec.feed(C, wire[:10]) == []  # still a prefix of the preface
    assert rec.feed(C, wire[10:]) == [] and rec.http_version == "HTTP/2.0"
    server.receive_data(wire)
    server.send_headers(1, [(b":status", b"200")], end_stream=True)
    [item] = rec.feed(S, server.data_to_send())
    assert item.request["url"] == "https://h/a" and item.responses[0]["status"] == 200


def test_scheme_and_authority_come_from_the_connection():
    [item] = _exchange(b"GET /x HTTP/1.0\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\nhi",
                       scheme="https", authority="api.test:443")
    assert item.request["url"] == "https://api.test/x"


# -- replay details ---------------------------------------------------------------------------


def test_expect_100_continue_is_answered_before_the_body():
    replayer = HttpReplayer()
    head = (b"PUT /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n"
            b"Content-Type: text/plain\r\n\r\n")
    assert replayer.feed(head) == [Reply(b"HTTP/1.1 100 Continue\r\n\r\n")]
    [lookup] = replayer.feed(b"hello")
    assert lookup.request["body"] == "hello"
    recorded = [{"status": 100, "reason": "Continue", "http_version": "HTTP/1.1", "headers": [], "body": ""},
                {"status": 201, "reason": "Created", "http_version": "HTTP/1.1", "headers": [], "body": ""}]
    assert replayer.respond(lookup, recorded) == b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"


def test_websocket_101_gets_the_live_accept_key_and_then_frames_are_messages():
    replayer = HttpReplayer()
    key = "x3JJHMbDL1EzLkh9GBhXDw=="
    [lookup, greeting] = replayer.feed(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key.encode() + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    recorded = [{"status": 101, "reason": "Switching Protocols", "http_version": "HTTP/1.1",
                 "headers": [["Upgrade", "websocket"], ["Connection", "Upgrade"],
                             ["Sec-WebSocket-Accept", "recorded-for-another-key"]], "body": ""}]
    out = replayer.respond(lookup, recorded)
    assert out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert f"Sec-WebSocket-Accept: {ws_accept(key)}".encode() in out
    assert ws_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3
    assert greeting.request == {"method": "WEBSOCKET", "url": "http://h/ws", "message": "open"}
    assert greeting.context.handshake and replayer.miss(greeting, "none recorded") == b""


def test_websocket_key_that_is_not_ascii_is_hashed_as_received():
    """Found by `make fuzz` (http1): a Sec-WebSocket-Key with a byte that is not UTF-8
    made the replayer raise UnicodeEncodeError instead of answering."""
    replayer = HttpReplayer()
    key = b"x3JJHMbDL1Ez\xe7kh9GBhXDw=="
    [lookup, _greeting] = replayer.feed(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    recorded = [{"status": 101, "reason": "Switching Protocols", "http_version": "HTTP/1.1",
                 "headers": [["Upgrade", "websocket"], ["Connection", "Upgrade"],
                             ["Sec-WebSocket-Accept", "recorded-for-another-key"]], "body": ""}]
    out = replayer.respond(lookup, recorded)
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    assert b"Sec-WebSocket-Accept: " + accept + b"\r\n" in out
    [message] = replayer.feed(b"\x81\x85\x00\x00\x00\x00hello")  # a masked text frame
    assert message.request["body"] == "hello"


def test_omitted_body_replays_as_502():
    replayer = HttpReplayer()
    [lookup] = replayer.feed(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
    recorded = [{"status": 200, "reason": "OK", "http_version": "HTTP/1.1", "headers": [],
                 "body": {"omitted": True, "size": 10**9, "sha256": "ab" * 32, "note": "big"}}]
    out = replayer.respond(lookup, recorded)
    assert out.startswith(b"HTTP/1.1 502 ") and b"1000000000 bytes was not stored" in out


def test_head_miss_has_no_body():
    replayer = HttpReplayer()
    [lookup] = replayer.feed(b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n")
    out = replayer.miss(lookup, "nothing recorded")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 ") and body == b""


def test_http10_client_gets_http10_response():
    replayer = HttpReplayer()
    [lookup] = replayer.feed(b"GET / HTTP/1.0\r\n\r\n")
    recorded = [{"status": 200, "reason": "OK", "http_version": "HTTP/2.0", "headers": [],
                 "body": "hi", "trailers": [["x-t", "1"]]}]
    assert replayer.respond(lookup, recorded) == b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi"


def test_h2_replay_waits_for_window_and_forgets_reset_streams():
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    replayer = HttpReplayer()
    req = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"h"), (b":path", b"/big")]
    client.send_headers(1, req, end_stream=True)
    client.send_headers(3, req, end_stream=True)
    events = replayer.feed(client.data_to_send())
    assert isinstance(events[0], Reply)  # our SETTINGS
    client.receive_data(events[0].data)
    lookups = [e for e in events if isinstance(e, Lookup)]
    assert [lk.context.private["stream_id"] for lk in lookups] == [1, 3]
    body = bytes(200_000)
    recorded = [{"status": 200, "reason": "OK", "http_version": "HTTP/1.1",
                 "headers": [["Content-Type", "application/octet-stream"]], "body": {"base64": ""}}]
    recorded[0]["body"] = {"hex": body.hex()}
    got = {1: b"", 3: b""}
    ended = set()

    def deliver(data: bytes, ack: bool) -> None:
        for ev in client.receive_data(data):
            if isinstance(ev, h2.events.DataReceived):
                got[ev.stream_id] += ev.data
                if ack:
                    client.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                ended.add(ev.stream_id)

    deliver(replayer.respond(lookups[0], recorded), ack=False)
    deliver(replayer.respond(lookups[1], recorded), ack=False)
    assert len(got[1]) + len(got[3]) <= 65535  # the connection window, nothing more
    client.reset_stream(3)
    client.acknowledge_received_data(len(got[1]), 1)  # now grant more window
    for _ in range(100):
        for ev in replayer.feed(client.data_to_send()):
            assert isinstance(ev, Reply)
            deliver(ev.data, ack=True)
        if 1 in ended:
            break
    assert got[1] == body and 1 in ended and 3 not in ended


def test_h2_recorder_rejects_garbage_after_preface():
    rec = HttpRecorder()
    rec.feed(C, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    with pytest.raises(ProtocolError):
        rec.feed(C, b"\x00\x00\x04\x09\x00\x00\x00\x00\x01garbage-frame-type")


def test_content_length_bodies_split_anywhere_with_pipelining():
    """Bodies fed while nothing is buffered skip the receive buffer; the events stay the same
    whatever the cut: pipelined requests, a body ending mid-chunk, a close mid-body."""
    wire = (b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789"
            b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nabcde"
            b"PUT /c HTTP/1.1\r\nHost: h\r\nContent-Length: 8\r\n\r\nxyz")

    def events(cuts: list[int]) -> list:
        parser, out, last = H1Parser(is_request=True), [], 0
        for cut in [*cuts, len(wire), None]:
            parser.feed(wire[last:cut] if cut is not None else b"")
            last = cut if cut is not None else last
            while (e := parser.next_event()) is not NEED_DATA:
                out.append(e)
        body: dict[str, bytes] = {}
        shape = []
        for e in out:
            if isinstance(e, Head):
                shape.append(e.message.path)
                body[e.message.path] = b""
            elif isinstance(e, Data):
                assert e.data, "no empty Data events"
                body[shape[-1]] += e.data
            elif isinstance(e, End):
                shape.append("end")
        assert parser.state is H1State.CLOSED and parser.truncated
        return [shape, body]

    expected = [["/a", "end", "/b", "end", "/c"], {"/a": b"0123456789", "/b": b"abcde", "/c": b"xyz"}]
    for cut in range(1, len(wire)):
        assert events([cut]) == expected, cut
    assert events(list(range(1, len(wire)))) == expected  # a byte at a time


def test_forward_request_is_the_unredacted_request_framed_afresh():
    from trproxy.protocols.http.forward import forward_request

    replayer = HttpReplayer()
    [lookup] = replayer.feed(b"POST /v1/items?x=1 HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer s3\r\n"
                             b"Connection: keep-alive\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}")[-1:]
    assert headers(lookup.request, "authorization") == ["Bearer <redacted>"]  # what is recorded
    fwd = lookup.context.forward()
    assert fwd.send() == (b"POST /v1/items?x=1 HTTP/1.1\r\nHost: api.test\r\n"
                          b"Authorization: Bearer s3\r\ncontent-length: 2\r\n\r\n{}")  # sent as is
    big = BodyBuffer(4)
    big.add(b"12345")
    assert forward_request("PUT", "/u", [], big) is None  # only a digest: cannot be sent
    h2 = forward_request("GET", None, [(b"accept", b"*/*")], BodyBuffer(4),
                         url="https://api.test:8443/")
    assert h2 is not None and h2.headers == [(b"host", b"api.test:8443"), (b"accept", b"*/*")]


def test_redact_message_redacts_what_recording_would():
    from trproxy.protocols.http.readable import redact_message

    response = {"status": 200, "headers": [["Set-Cookie", "sid=abc; Path=/"], ["Content-Type", "application/json"]],
                "body": '{ "access_token" :"t0k", "n": 1 }'}  # a layout kept as text
    out = redact_message(response, Redaction())
    assert out["headers"][0] == ["Set-Cookie", "sid=<redacted>; Path=/"]
    assert "t0k" not in json.dumps(out) and response["body"].endswith("1 }")  # the input is untouched


def test_h2_lookups_forward_with_the_authority_as_host():
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    client.send_headers(1, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"api.test:8443"),
                            (b":path", b"/v1/x?y=2"), (b"authorization", b"Bearer s3")], end_stream=True)
    [lookup] = [e for e in HttpReplayer(scheme="https").feed(client.data_to_send()) if isinstance(e, Lookup)]
    fwd = lookup.context.forward()
    assert fwd.send() == (b"GET /v1/x?y=2 HTTP/1.1\r\nhost: api.test:8443\r\n"
                          b"authorization: Bearer s3\r\n\r\n")  # no Content-Length on a GET
    assert fwd.alpn == ("http/1.1",)


def test_a_forward_records_the_response_redacted_and_answers_it_unredacted():
    [lookup] = HttpReplayer().feed(b"GET /me HTTP/1.1\r\nHost: api.test\r\nCookie: sid=s3\r\n\r\n")
    fwd = lookup.context.forward()
    fwd.send()
    assert not fwd.answered
    fwd.receive(b"HTTP/1.1 200 OK\r\nSet-Cookie: sid=new; Path=/\r\nContent-Length: 9\r\n\r\n")
    assert fwd.answered and not fwd.done
    fwd.receive(b'{"t":"x"}')
    assert fwd.done and fwd.reusable
    recorded, [live] = fwd.result()
    assert recorded.request == lookup.request and recorded.summary == "GET api.test/me -> 200"
    assert headers(recorded.responses[0], "set-cookie") == ["sid=<redacted>; Path=/"]
    assert headers(live, "set-cookie") == ["sid=new; Path=/"]  # the app sees its real cookie


def test_a_forward_cut_mid_response_is_a_decode_error():
    [lookup] = HttpReplayer().feed(b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n")
    fwd = lookup.context.forward()
    fwd.send()
    fwd.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")
    with pytest.raises(DecodeError):
        fwd.receive(b"")


def _parse(wire: bytes, cut: int | None = None) -> tuple[list, H1Parser]:
    parser, out = H1Parser(is_request=True), []
    pieces = [wire] if cut is None else [wire[:cut], wire[cut:]]
    for piece in [*pieces, b""]:
        parser.feed(piece)
        while (e := parser.next_event()) is not NEED_DATA:
            out.append(e)
    return out, parser


def test_chunked_bodies_extensions_trailers_and_cuts():
    """Our chunked reader (RFC 9112 §7.1): extensions ignored, trailers folded and
    lower-cased, the same events wherever the bytes are cut."""
    wire = (b"POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4;name=value\r\nWiki\r\n5 \r\npedia\r\n0\r\nX-Sum: 1\r\n  2\r\nEtag: x\r\n\r\n"
            b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
    whole, parser = _parse(wire)
    body = b"".join(e.data for e in whole if isinstance(e, Data))
    ends = [e for e in whole if isinstance(e, End)]
    assert body == b"Wikipedia" and ends[0].trailers == [(b"x-sum", b"1 2"), (b"etag", b"x")]
    assert [e.message.path for e in whole if isinstance(e, Head)] == ["/u", "/next"]
    assert not parser.truncated
    for cut in range(1, len(wire)):
        events, _ = _parse(wire, cut)
        assert b"".join(e.data for e in events if isinstance(e, Data)) == body, cut
        assert [e for e in events if isinstance(e, End)] == ends, cut


def test_chunked_body_cut_by_the_close_is_truncated_and_bad_chunks_are_decode_errors():
    _events, parser = _parse(b"POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
    assert parser.state is H1State.CLOSED and parser.truncated
    for bad in (b"zz\r\n", b"3\r\nabcX\r\n", b"0\r\nno colon\r\n\r\n"):
        with pytest.raises(DecodeError):
            _parse(b"POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + bad)


def test_a_response_body_delimited_by_the_close_ends_at_eof():
    parser = H1Parser(is_request=False)
    request = H1Parser(is_request=True)
    request.feed(b"GET / HTTP/1.0\r\n\r\n")
    head = request.next_event()
    parser.feed(b"HTTP/1.0 200 OK\r\n\r\nall of it")
    events = [parser.next_event(head.message), parser.next_event(head.message)]
    parser.feed(b"")
    events.append(parser.next_event(head.message))
    assert [type(e) for e in events] == [Head, Data, End] and not parser.truncated


@pytest.mark.timeout(60)
def test_server_bytes_held_while_sniffing_cost_linear_time():
    """Found by `make fuzz` (http1): a client that stops inside the HTTP/2 preface and a
    server sending tiny pieces made each feed add up everything held so far (quadratic:
    minutes of CPU for 64 KiB in 1-byte pieces, stalling the whole proxy). The bound still
    holds, counted as it grows."""
    recorder = HttpRecorder()
    client = b"PRI * HTTP/2.0\r\n"
    assert recorder.feed(Direction.CLIENT, client) == []
    for _ in range(recorder.config.max_head - len(client)):
        assert recorder.feed(Direction.SERVER, b"\x00") == []
    with pytest.raises(ProtocolError, match="before the HTTP version is known"):
        recorder.feed(Direction.SERVER, b"\x00")


def test_a_request_head_is_parsed_without_mitmproxys_debug_type_checks(monkeypatch):
    """mitmproxy checks every message's field types unless Python runs with -O: a third
    of a replayed request's parse. The parser's messages skip it, as under -O."""
    from mitmproxy.utils import typecheck

    def refuse(*_args):
        raise AssertionError("type-checked")

    monkeypatch.setattr(typecheck, "check_option_type", refuse)
    parser = H1Parser(is_request=True)
    parser.feed(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    head = parser.next_event()
    assert isinstance(head, Head) and head.message.path == "/a?b=1"


@pytest.mark.parametrize("reason", [None, "Not Found", "", "d\u00e9j\u00e0"])
def test_a_response_head_is_what_mitmproxy_assembles(reason):
    """The head is written directly, byte for byte as ``assemble_response_head`` did."""
    from mitmproxy import http
    from mitmproxy.net.http import http1, status_codes

    from trproxy.protocols.http.render import render_h1

    response = {"status": 404, "headers": [["content-type", "text/plain"], ["x-a", "1"]],
                "body": "gone"}
    if reason is not None:
        response["reason"] = reason
    wire = render_h1(response, "GET", "HTTP/1.1")
    fields = [(b"content-type", b"text/plain"), (b"x-a", b"1"), (b"Content-Length", b"4")]
    expected = http1.assemble_response_head(http.Response(
        b"HTTP/1.1", 404, (reason or status_codes.RESPONSES[404]).encode("latin-1"),
        http.Headers(fields), None, None, 0.0, None))
    assert wire == expected + b"gone"


REQUEST_HEADS = [
    b"GET /item.json HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    b"POST /u?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nX-A: 1\r\nX-A: 2\r\n\r\nabc",
    b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"GET http://other.test/p HTTP/1.1\r\nHost: other.test\r\n\r\n",
    b"GET /ws HTTP/1.1\nHost: h\nUpgrade: websocket\nConnection: Upgrade\n\n",
    b"CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\n\r\n",
    b"GET /old HTTP/1.0\r\n\r\n",
]


def _events(wire: bytes) -> list:
    """The parser's events as plain values (messages by their fields)."""
    out = []
    for e in _parse(wire)[0]:
        if isinstance(e, Head):
            m = e.message
            out.append(("head", m.method, m.scheme, m.authority, m.path, m.http_version,
                        m.headers.fields))
        else:
            out.append(e)
    return out


def test_a_request_head_seen_before_gives_what_parsing_it_gives():
    """Request heads are remembered by their lines (``h1._HEADS``): a client repeats its
    own. What the memo gives is what a parse gives, head and body framing alike; a bad
    head is never remembered, so it fails every time."""
    from trproxy.protocols.http import h1

    h1._HEADS.clear()
    parsed = [_events(wire) for wire in REQUEST_HEADS]
    assert len(h1._HEADS) == len(REQUEST_HEADS)
    for wire, events in zip(REQUEST_HEADS, parsed, strict=True):
        assert _events(wire) == events  # from the memo
        h1._HEADS.clear()
        assert _events(wire) == events  # parsed again
    smuggling = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc"
    for _ in range(2):
        with pytest.raises(DecodeError):
            _parse(smuggling)


def test_request_heads_with_credentials_are_not_remembered_and_the_memo_is_bounded():
    from trproxy.protocols.http import h1

    h1._HEADS.clear()
    for secret in (b"Authorization: Bearer t0k3n", b"cookie: sid=1", b"Proxy-Authorization: Basic eA=="):
        _parse(b"GET / HTTP/1.1\r\nHost: h\r\n" + secret + b"\r\n\r\n")
    _parse(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"x" * h1._MAX_HEAD + b"\r\n\r\n")
    assert h1._HEADS == {}
    for i in range(h1._MAX_HEADS + 10):
        _parse(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)
    assert len(h1._HEADS) == h1._MAX_HEADS
    assert b"GET /0 HTTP/1.1\nHost: h" not in h1._HEADS  # the oldest went first


def test_what_the_parser_and_replayer_read_of_a_head_is_what_mitmproxy_reads():
    """``request_head``'s ``upgrade`` is ``is_upgrade_request``, and the replayer's
    ``Expect: 100-continue`` test reads the fields as ``headers.get`` does (values joined,
    whitespace stripped, any case; HTTP/1.1 only), on heads with and without the field."""
    from trproxy.protocols.http import h1
    from trproxy.protocols.http.h1_replay import _expects_continue

    expects = [b"Expect: 100-continue", b"expect:  100-Continue ", b"Expect: 100-continue\r\nExpect: x",
               b"Expect: nothing", b"X-Expect: 100-continue"]
    wires = REQUEST_HEADS + [b"POST / HTTP/1.1\r\nHost: h\r\n%s\r\nContent-Length: 0\r\n\r\n" % e for e in expects]
    wires.append(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n")
    seen = []
    for wire in wires:
        h1._HEADS.clear()
        buf = h1.ReceiveBuffer()
        buf += wire
        head = h1.request_head(buf.lines() or [])
        message = head.message
        assert head.upgrade == h1.is_upgrade_request(message)
        plain = (message.headers.get("expect", "").strip().lower() == "100-continue"
                 and message.http_version == "HTTP/1.1")
        assert _expects_continue(message) == plain
        seen.append(plain)
    assert seen.count(True) == 2

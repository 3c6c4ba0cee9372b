"""gRPC over HTTP/2: the length-prefixed framing, protobuf without a schema, the field
names of a descriptor set, and gRPC calls through the HTTP/2 recorder and replayer.

Messages are made by the protobuf runtime (well-known types, descriptor protos, and
``tests/e2e/apps/grpc/echo.proto`` compiled by grpc_tools' protoc); conversations by two
real ``h2`` connections talking to each other. Each is fed whole, one byte at a time and
cut at every offset.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
from google.protobuf import descriptor_pb2, struct_pb2, timestamp_pb2, wrappers_pb2

from tests.support.chunking import bytewise, offsets, split_at, total
from trproxy.protocols.base import Lookup, Reply
from trproxy.protocols.http import HttpConfig, HttpReplayer, match_key
from trproxy.protocols.http import grpc as g
from trproxy.protocols.http.body import BodyBuffer, body_from_readable
from trproxy.protocols.http.readable import request_readable
from trproxy.protocols.http.volatile import volatile

from .streams import as_data, record, yaml_roundtrip

PROTO = Path(__file__).parents[2] / "e2e" / "apps" / "grpc" / "echo.proto"


def _descriptor_proto(module) -> bytes:  # type: ignore[no-untyped-def]
    fdp = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(fdp)
    return fdp.SerializeToString()


MESSAGES = {
    "timestamp": timestamp_pb2.Timestamp(seconds=1764700000, nanos=5).SerializeToString(),
    "negative int64": wrappers_pb2.Int64Value(value=-5).SerializeToString(),
    "double": wrappers_pb2.DoubleValue(value=1.5).SerializeToString(),
    "float": wrappers_pb2.FloatValue(value=0.1).SerializeToString(),
    "short text": wrappers_pb2.StringValue(value="hi").SerializeToString(),
    "bytes": wrappers_pb2.BytesValue(value=b"\xff\x00\x10").SerializeToString(),
    "struct": struct_pb2.Struct(fields={"a": struct_pb2.Value(number_value=2.5),
                                        "b": struct_pb2.Value(string_value="x\ny")}).SerializeToString(),
    "descriptor": _descriptor_proto(timestamp_pb2),
    "empty": b"",
}


# -- protobuf without a schema ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_every_message_decodes_to_a_tree_that_encodes_back_exactly(name: str) -> None:
    data = MESSAGES[name]
    tree = g.decode_message(data)
    assert isinstance(tree, list), tree
    assert g.encode_fields(tree) == data
    assert yaml_roundtrip(tree) == tree


def test_the_tree_is_readable() -> None:
    assert g.decode_message(MESSAGES["timestamp"]) == [[1, 1764700000], [2, 5]]
    assert g.decode_message(MESSAGES["negative int64"]) == [[1, 2**64 - 5]]
    assert g.decode_message(MESSAGES["double"]) == [[1, {"fixed64": 0x3FF8000000000000}]]
    assert g.decode_message(MESSAGES["short text"]) == [[1, "hi"]]  # not {13: 105}
    assert g.decode_message(MESSAGES["bytes"]) == [[1, {"base64": "/wAQ"}]]
    assert sorted(g.decode_message(MESSAGES["struct"])) == [  # a map: any order
        [1, [[1, "a"], [2, [[2, {"fixed64": 0x4004000000000000}]]]]],
        [1, [[1, "b"], [2, [[3, "x\ny"]]]]]]
    tree = g.decode_message(MESSAGES["descriptor"])
    assert [1, "google/protobuf/timestamp.proto"] in tree and [2, "google.protobuf"] in tree


@pytest.mark.parametrize("data", [
    b"\x08\x80\x00",          # a varint not in its minimal form
    b"\x0b\x08\x01\x0c",      # a group (wire type 3/4)
    b"\x0a\x05abc",           # a length past the end
    b"\x08",                  # a field without its value
    b"\x00\x01",              # field number 0
    b"\x0e\x01",              # wire type 6
], ids=["non-minimal", "group", "cut", "no value", "field 0", "wire type 6"])
def test_what_does_not_round_trip_stays_bytes(data: bytes) -> None:
    assert g.decode_message(data) == {"base64": base64.b64encode(data).decode()}
    body = g.frame(data)
    assert g.body_bytes(g.body_readable(body)) == body


@pytest.mark.parametrize("tree", [
    [[0, 1]], [["1", 1]], [[1, True]], [[1, {"fixed32": 2**40}]], [[1, {"float": "x"}]],
    [[1, {"base64": "%%"}]], [[1, {"nope": 1}]], [[1, 2**64]], [[1, None]], [1],
    [[1, {"double": 1e400}], [2, {"fixed64": -1}]],
])
def test_a_hand_edited_tree_that_cannot_be_encoded_is_a_value_error(tree) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        g.encode_fields(tree)


# -- the length-prefixed framing ---------------------------------------------------------


BODY = b"".join(g.frame(m) for m in MESSAGES.values()) + g.frame(b"\x1f\x8b\x08", compressed=True)


def test_the_body_form_round_trips_exactly() -> None:
    form = g.body_readable(BODY)
    assert form is not None and len(form["grpc"]) == len(MESSAGES) + 1
    assert form["grpc"][-1] == {"compressed": base64.b64encode(b"\x1f\x8b\x08").decode()}
    assert g.body_bytes(form) == BODY
    assert body_from_readable(yaml_roundtrip(form)) == BODY


def test_a_message_that_is_text_not_protobuf_stays_text() -> None:
    """application/grpc+json: a JSON message is not protobuf (``{`` is a group's tag)."""
    body = g.frame(b'{"name": "x"}') + g.frame(b"\xff\xfe")
    form = g.body_readable(body)
    assert form == {"grpc": ['{"name": "x"}', {"base64": "//4="}]}
    assert g.body_bytes(form) == body


@pytest.mark.parametrize("cut", [1, 4, 5, 9, len(BODY) - 1])
def test_a_cut_body_is_not_grpc(cut: int) -> None:
    assert g.split_messages(BODY[:cut]) is None
    assert g.body_readable(BODY[:cut]) is None
    assert g.split_messages(b"\x02\x00\x00\x00\x00") is None  # flag 2


def test_the_framing_splits_only_whole_bodies_at_every_offset() -> None:
    """Every prefix of a body either is not a whole sequence of messages, or is exactly
    the messages the whole body starts with (the body cut between two messages)."""
    whole = g.split_messages(BODY)
    assert whole is not None and len(whole) == len(MESSAGES) + 1
    ends = set()
    pos = 0
    for _compressed, message in whole:
        pos += 5 + len(message)
        ends.add(pos)
    for k in range(1, len(BODY)):
        part = g.split_messages(BODY[:k])
        assert (part is not None) == (k in ends), k
        if part is not None:
            assert part == whole[:len(part)]


# -- names from a descriptor set -----------------------------------------------------------


@pytest.fixture(scope="module")
def echo(tmp_path_factory):  # type: ignore[no-untyped-def]
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("echo")
    assert protoc.main(["protoc", f"-I{PROTO.parent}", f"--descriptor_set_out={out / 'echo.pb'}",
                        f"--python_out={out}", str(PROTO)]) == 0
    import importlib.util
    spec = importlib.util.spec_from_file_location("echo_pb2", out / "echo_pb2.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return g.Names.from_descriptor_set((out / "echo.pb").read_bytes()), module


def test_names_and_types_come_from_the_descriptor_set(echo) -> None:  # type: ignore[no-untyped-def]
    names, pb = echo
    assert names.methods["trproxy.echo.Echo/Get"] == ("trproxy.echo.Query", "trproxy.echo.Item")
    item = pb.Item(name="n", count=-7, price=12.5, tags=["a", "b"], blob=b"\x00", delta=-3,
                   kind=1, child=pb.Item(name="c"), ratio=0.25).SerializeToString()
    form = g.body_readable(g.frame(item), names, "/trproxy.echo.Echo/Get", response=True)
    assert form == {"grpc": [[
        [1, "n", "name"], [2, -7, "count"], [3, {"double": 12.5}, "price"], [4, "a", "tags"],
        [4, "b", "tags"], [5, {"base64": "AA=="}, "blob"], [6, {"sint": -3}, "delta"],
        [7, 1, "kind"], [8, [[1, "c", "name"]], "child"], [9, {"float": 0.25}, "ratio"]]]}
    assert g.body_bytes(form) == g.frame(item)
    # the request's type for the request; an unknown method keeps the numbers
    query = pb.Query(text="t", limit=2).SerializeToString()
    assert g.body_readable(g.frame(query), names, "/trproxy.echo.Echo/Get") == {
        "grpc": [[[1, "t", "text"], [2, 2, "limit"]]]}
    assert g.body_readable(g.frame(query), names, "/other.Svc/Get") == {"grpc": [[[1, "t"], [2, 2]]]}


def test_a_descriptor_set_that_is_not_one_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="FileDescriptorSet"):
        g.Names.from_descriptor_set(b"\x08\x80\x00")


# -- calls through the HTTP/2 recorder and replayer ---------------------------------------

PATH = b"/trproxy.echo.Echo/Chat"
REQUEST_BODY = g.frame(b"\x0a\x02hi\x10\x01") + g.frame(b"\x0a\x05there\x10\x02")
RESPONSE_BODY = g.frame(b"\x0a\x02HI\x10\x01") + g.frame(b"\x0a\x05THERE\x10\x02")
TRAILERS = [(b"grpc-status", b"0"), (b"grpc-message", b"")]


def _request_headers(path: bytes = PATH) -> list[tuple[bytes, bytes]]:
    return [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"127.0.0.1:50051"),
            (b":path", path), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
            (b"grpc-timeout", b"9S")]


def _conversation(end: str = "trailers") -> list[tuple[str, bytes]]:
    """A bidi call between two real h2 connections: the client sends two messages in two
    DATA frames and half-closes; the server answers, then (``end``) sends its trailers,
    or the client resets the stream, or the server does."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    chunks: list[tuple[str, bytes]] = []

    def send(side: str) -> None:
        conn, peer = (client, server) if side == "client" else (server, client)
        data = conn.data_to_send()
        if data:
            chunks.append((side, data))
            peer.receive_data(data)

    client.initiate_connection()
    send("client")
    server.initiate_connection()
    send("server")
    send("client")
    client.send_headers(1, _request_headers())
    half = len(REQUEST_BODY) // 2
    client.send_data(1, REQUEST_BODY[:half])
    send("client")
    client.send_data(1, REQUEST_BODY[half:], end_stream=True)
    send("client")
    server.send_headers(1, [(b":status", b"200"), (b"content-type", b"application/grpc")])
    if end == "trailers":
        server.send_data(1, RESPONSE_BODY)
        server.send_headers(1, TRAILERS, end_stream=True)
    elif end == "client reset":
        server.send_data(1, RESPONSE_BODY[:12])
        send("server")
        client.reset_stream(1, 8)
        send("client")
    else:
        server.reset_stream(1, 8)
    send("server")
    send("client")
    return chunks


def test_a_call_is_recorded_with_its_messages_decoded_however_the_bytes_come() -> None:
    chunks = _conversation()
    recorded = as_data(record(chunks))
    [call] = recorded
    assert call["summary"] == "gRPC 127.0.0.1:50051 trproxy.echo.Echo/Chat -> grpc-status 0"
    assert call["request"]["body"] == {"grpc": [[[1, "hi"], [2, 1]], [[1, "there"], [2, 2]]]}
    [response] = call["responses"]
    assert response["body"] == {"grpc": [[[1, "HI"], [2, 1]], [[1, "THERE"], [2, 2]]]}
    assert response["trailers"] == [["grpc-status", "0"], ["grpc-message", ""]]
    assert yaml_roundtrip(recorded) == recorded
    assert as_data(record(bytewise(chunks))) == recorded
    for k in offsets(total(chunks), every_up_to=4096, samples=400):
        assert as_data(record(split_at(chunks, k))) == recorded, f"cut at {k}"


def test_a_deadline_the_client_gave_up_at_is_recorded_without_an_answer() -> None:
    [call] = as_data(record(_conversation("client reset")))
    [partial] = call["responses"]  # what had come: headers and a part of a message
    assert partial["truncated"] is True and partial["status"] == 200
    assert base64.b64decode(partial["body"]["base64"]) == RESPONSE_BODY[:12]
    assert call["summary"].endswith("-> no grpc-status")
    [call] = as_data(record(_conversation("server reset")))
    assert call["responses"][-1] == {"reset": 8}


class _Client:
    """A real h2 client connection making the bidi call, reading what the replayer sends."""

    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.conn.send_headers(1, _request_headers())
        self.conn.send_data(1, REQUEST_BODY, end_stream=True)
        self.client_bytes = self.conn.data_to_send()
        self.headers: list = []
        self.data = b""
        self.trailers: list = []
        self.ended = False
        self.reset: int | None = None

    def read(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                self.headers = event.headers
            elif isinstance(event, h2.events.DataReceived):
                self.data += event.data
            elif isinstance(event, h2.events.TrailersReceived):
                self.trailers = event.headers
            elif isinstance(event, h2.events.StreamEnded):
                self.ended = True
            elif isinstance(event, h2.events.StreamReset):
                self.reset = event.error_code
        self.conn.data_to_send()


def _replay(answer) -> _Client:  # type: ignore[no-untyped-def]
    """Feed the client's bytes one at a time; ``answer(lookup)`` gives the responses (None:
    a miss)."""
    client = _Client()
    replayer = HttpReplayer(HttpConfig())
    for i in range(len(client.client_bytes)):
        for item in replayer.feed(client.client_bytes[i:i + 1]):
            if isinstance(item, Reply):
                client.read(item.data)
            else:
                assert isinstance(item, Lookup)
                responses = answer(item)
                client.read(replayer.respond(item, responses) if responses is not None
                            else replayer.miss(item, "no recording has this body\nmore"))
    return client


def test_replay_answers_with_the_recorded_messages_and_trailers() -> None:
    conversation = _conversation()
    [call] = record(conversation)

    def answer(lookup: Lookup):  # type: ignore[no-untyped-def]
        assert match_key(lookup.request) == match_key(call.request)
        assert lookup.summary == "gRPC 127.0.0.1:50051 trproxy.echo.Echo/Chat"
        assert lookup.context.forward is None  # new-episodes fetches over HTTP/1.1: not gRPC
        return call.responses

    client = _replay(answer)
    assert client.data == RESPONSE_BODY and client.ended
    assert client.trailers == [(b"grpc-status", b"0"), (b"grpc-message", b"")]
    assert (b"content-type", b"application/grpc") in client.headers


def test_a_miss_is_unavailable_with_the_reason() -> None:
    client = _replay(lambda lookup: None)
    assert client.ended and client.data == b"" and client.trailers == []
    headers = dict(client.headers)
    assert headers[b":status"] == b"200" and headers[b"grpc-status"] == b"14"
    assert headers[b"grpc-message"] == (b"trproxy: no recording for gRPC 127.0.0.1:50051 "
                                        b"trproxy.echo.Echo/Chat: no recording has this body")


def test_recorded_resets_and_cut_answers_replay_as_recorded() -> None:
    [call] = record(_conversation("server reset"))
    client = _replay(lambda lookup: call.responses)
    assert client.reset == 8 and not client.ended
    [call] = record(_conversation("client reset"))
    client = _replay(lambda lookup: call.responses)
    assert client.data == RESPONSE_BODY[:12] and not client.ended and client.reset is None


def test_values_the_app_generates_in_a_message_are_volatile() -> None:
    token = str(uuid.uuid4())
    request = {"method": "POST", "url": "http://h/pkg.S/M", "headers": [],
               "body": g.body_readable(g.frame(b"\x0a\x24" + token.encode() + b"\x10\x01"))}
    assert volatile(request, datetime.now(UTC)) == [token]
    raw = {**request, "body": {"grpc": [{"base64": base64.b64encode(token.encode()).decode()}]}}
    assert volatile(raw, datetime.now(UTC)) == []


def test_secret_fields_named_by_the_schema_are_redacted() -> None:
    """A field named like a secret (the schema says its name) never reaches the recording;
    the tree still encodes (the placeholder in its place), and a live request redacted
    the same way matches."""
    # a schema where the text field is called "password"
    fds = [[1, [[2, "p"], [4, [[1, "Login"], [2, [[1, "password"], [3, 1], [5, 9]]],
                               [2, [[1, "n"], [3, 2], [5, 5]]]]],
                [6, [[1, "S"], [2, [[1, "In"], [2, ".p.Login"], [3, ".p.Login"]]]]]]]]
    config = HttpConfig(grpc_names=g.Names.from_descriptor_set(g.encode_fields(fds)))
    buf = BodyBuffer(1 << 20)
    buf.add(g.frame(g.encode_fields([[1, "hunter2-password"], [2, 5]])))
    request = request_readable("POST", "http://h/p.S/In", "HTTP/2.0",
                               [(b"content-type", b"application/grpc")], buf, None, config)
    assert request["body"] == {"grpc": [[[1, "<redacted>", "password"], [2, 5, "n"]]]}
    assert "hunter2" not in str(request)
    assert g.body_bytes(request["body"]) == g.frame(g.encode_fields([[1, "<redacted>"], [2, 5]]))


def test_ignore_json_paths_name_fields_of_grpc_messages() -> None:
    """``match.ignore_json_paths`` drops fields by name or number, at any depth given by
    the path; everything else still compares."""
    from trproxy.protocols.http import Noise, match_key_with

    def request(sent_at: int, text: str) -> dict:
        tree = [[1, text, "text"], [2, [[1, sent_at, "sent_at"], [2, "eu", "region"]], "meta"],
                [3, sent_at], [3, sent_at + 1]]
        return {"method": "POST", "url": "http://h/pkg.S/M", "body": {"grpc": [tree, tree]}}

    noise = Noise(json_paths=("meta.sent_at", "3"))
    assert match_key_with(request(1, "a"), noise) == match_key_with(request(2, "a"), noise)
    assert match_key_with(request(1, "a"), noise) != match_key_with(request(1, "b"), noise)
    assert match_key_with(request(1, "a"), Noise()) != match_key_with(request(2, "a"), Noise())
    key = match_key_with(request(1, "a"), noise)["body"]
    assert key == {"grpc": [[[1, "a", "text"], [2, [[2, "eu", "region"]], "meta"]]] * 2}
    assert g.drop_field_path([[1, [[2, 5]]], "junk"], ["*", "2"]) == [[1, []], "junk"]


def test_the_time_left_to_a_deadline_is_not_compared_with_the_headers() -> None:
    from trproxy.protocols.http import Noise, match_key_with

    def request(timeout: str) -> dict:
        return {"method": "POST", "url": "http://h/pkg.S/M", "body": {"grpc": [[[1, 1]]]},
                "headers": [["content-type", "application/grpc"], ["grpc-timeout", timeout],
                            ["x-user", "ann"]]}

    noise = Noise(match_headers=True)
    assert match_key_with(request("9960m"), noise) == match_key_with(request("9S"), noise)
    other = {**request("9S"), "headers": [["x-user", "bob"]]}
    assert match_key_with(other, noise) != match_key_with(request("9S"), noise)

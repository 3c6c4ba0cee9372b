"""Property tests: round trips through wire bytes and YAML, random chunkings, mutations.

Only ``ProtocolError`` may escape the recorder and the replayer, whatever the bytes.
Example counts are bounded so the module runs in a few seconds; set
``TRPROXY_FUZZ_SCALE=50`` (say) for a long run.
"""

from __future__ import annotations

import json
import os

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.chunking import side_bytes, split_at, total
from trproxy.protocols.base import Lookup, ProtocolError
from trproxy.protocols.http import HttpConfig, HttpReplayer, Redaction, detect, match_key
from trproxy.protocols.http.body import body_from_readable, body_to_readable
from trproxy.protocols.http.render import CONNECTION_FIELDS, render_h1
from trproxy.store.yamlio import dump, load_one

from . import capture
from .streams import as_data, record

VECTORS = {**capture.load("h1"), **capture.load("h2")}
EXPECTED = {name: as_data(record(chunks)) for name, chunks in VECTORS.items()}
SCALE = int(os.environ.get("TRPROXY_FUZZ_SCALE", "1"))
FAST = settings(max_examples=40 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=150 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NO_REDACTION = HttpConfig(redaction=Redaction(headers=frozenset(), fields=frozenset()))

token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).filter(
    lambda s: s.strip("-"))
field_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e),
                      max_size=30).map(str.strip)
# JSON strings may hold any character but lone surrogates and NEL (see body.py)
json_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x85"),
                    max_size=20)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12)
    | st.floats(allow_nan=False, allow_infinity=False, width=64) | json_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4),
    max_leaves=12)
body_bytes = st.binary(max_size=300)


# -- chunking ---------------------------------------------------------------------------


@FAST
@given(st.sampled_from(sorted(VECTORS)), st.lists(st.floats(0, 1, exclude_max=True), max_size=25))
def test_random_cuts_give_the_same_interactions(name, fractions):
    chunks = VECTORS[name]
    n = total(chunks)
    cut = split_at(chunks, *[1 + int(f * (n - 1)) for f in fractions])
    assert as_data(record(cut)) == EXPECTED[name]


# -- mutation fuzzing -------------------------------------------------------------------


def _mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in ops:
        if not buf:
            break
        pos %= len(buf)
        if kind == 0:
            buf[pos] = value
        elif kind == 1:
            del buf[pos:pos + 1 + value % 8]
        elif kind == 2:
            buf[pos:pos] = bytes([value]) * (1 + value % 5)
        else:
            buf[pos:pos] = buf[pos:pos + 1 + value % 64]  # duplicate a slice
    return bytes(buf)


mutations = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2**32), st.integers(0, 255)),
                     min_size=1, max_size=6)


@MANY
@given(st.sampled_from(sorted(VECTORS)), st.integers(0, 2**16), mutations)
def test_mutated_streams_raise_only_protocol_errors(name, which, ops):
    chunks = [c for c in VECTORS[name] if c[1]]
    i = which % len(chunks)
    side, data = chunks[i]
    mutated = [*chunks[:i], (side, _mutate(data, ops)), *chunks[i + 1:], ("client", b""), ("server", b"")]
    try:
        for interaction in record(mutated):
            yaml.safe_dump(interaction.request)  # whatever came out is still safe data
            yaml.safe_dump(interaction.responses)
    except ProtocolError:
        pass
    replayer = HttpReplayer()
    try:
        for event in replayer.feed(side_bytes(mutated, "client")):
            if isinstance(event, Lookup):
                replayer.miss(event, "fuzz")
    except ProtocolError:
        pass


@MANY
@given(st.binary(max_size=200), st.binary(max_size=200))
@example(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00", b"\x00")
@example(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
def test_random_bytes_raise_only_protocol_errors(client, server):
    try:
        record([("client", client), ("server", server), ("client", b""), ("server", b"")])
    except ProtocolError:
        pass
    try:
        HttpReplayer().feed(client)
    except ProtocolError:
        pass


# -- round trips ------------------------------------------------------------------------


def _semantic(fields):
    skip = {f.decode() for f in CONNECTION_FIELDS} | {"content-length"}
    return [[n, v] for n, v in fields if n.lower() not in skip]


bodies = st.one_of(
    body_bytes.map(lambda b: ("application/octet-stream", b)),
    st.text(max_size=200).map(lambda t: ("text/plain; charset=utf-8", t.encode())),
    json_value.map(lambda v: ("application/json", json.dumps(v).encode())),
)


@FAST
@given(status=st.sampled_from([200, 201, 204, 301, 304, 404, 500]),
       fields=st.lists(st.tuples(token, field_value), max_size=5),
       body=bodies, coding=st.sampled_from([None, "gzip", "deflate", "br", "zstd"]),
       method=st.sampled_from(["GET", "POST", "HEAD"]))
def test_readable_response_wire_readable(status, fields, body, coding, method):
    """readable -> render_h1 -> wire -> recorder -> readable: same status, headers, body."""
    ctype, data = body
    no_body = method == "HEAD" or status in (204, 304)
    headers = [["Content-Type", ctype], *[[n, v] for n, v in fields]]
    if coding:
        headers.append(["Content-Encoding", coding])
    response = {"status": status, "reason": "R", "http_version": "HTTP/1.1", "headers": headers,
                "body": "" if no_body else body_to_readable(data, ctype, NO_REDACTION.redaction)}
    if coding and not no_body and data:
        response["encoding"] = coding
    response = yaml.safe_load(yaml.safe_dump(response))
    wire = render_h1(response, method, "HTTP/1.1")
    request = f"{method} / HTTP/1.1\r\nHost: h\r\n\r\n".encode()
    [item] = record([("client", request), ("server", wire), ("client", b""), ("server", b"")],
                    NO_REDACTION)
    [got] = item.responses
    assert got["status"] == status
    assert _semantic(got["headers"]) == _semantic(response["headers"])
    assert body_from_readable(got["body"]) == body_from_readable(response["body"])
    assert got.get("encoding") == response.get("encoding")


@FAST
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
       path=st.lists(token, max_size=3).map(lambda p: "/" + "/".join(p)),
       query=st.lists(st.tuples(token, token), max_size=4),
       fields=st.lists(st.tuples(token, field_value), max_size=4),
       body=json_value, chunked=st.booleans())
def test_request_wire_readable_and_match_keys_agree(method, path, query, fields, body, chunked):
    qs = "&".join(f"{k}={v}" for k, v in query)
    data = json.dumps(body).encode()
    head = [f"{method} {path}{'?' + qs if qs else ''} HTTP/1.1", "Host: api.test",
            "Content-Type: application/json", *[f"{n}: {v}" for n, v in fields]]
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(data)}"
    wire_body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data) if chunked else data
    wire = ("\r\n".join([*head, framing]) + "\r\n\r\n").encode() + wire_body
    [item] = record([("client", wire), ("server", b"HTTP/1.1 204 No Content\r\n\r\n")], NO_REDACTION)
    req = item.request
    assert req["method"] == method
    assert req["url"] == f"http://api.test{path}{'?' + qs if qs else ''}"
    assert req["headers"][2:2 + len(fields)] == [[n, v] for n, v in fields]
    assert req["body"]["json"] == body
    assert yaml.safe_load(yaml.safe_dump(req)) == req
    # the replayer builds the same readable request, so keys are equal
    [lookup] = HttpReplayer(NO_REDACTION).feed(wire)
    assert match_key(lookup.request) == match_key(req)


@FAST
@given(st.one_of(body_bytes, st.text(max_size=100).map(str.encode)),
       st.sampled_from(["", "text/plain", "application/json", "application/octet-stream"]))
def test_body_readable_is_yaml_safe_and_lossless(data, ctype):
    readable = body_to_readable(data, ctype, NO_REDACTION.redaction)
    back = yaml.safe_load(yaml.safe_dump(readable, allow_unicode=True))
    assert back == readable
    assert load_one(dump(readable)) == readable
    out = body_from_readable(back)
    if isinstance(readable, dict) and "json" in readable:
        assert json.loads(out) == json.loads(data)
    else:
        assert out == data


@FAST
@given(json_value)
def test_json_bodies_survive_yaml(value):
    for kw in ({}, {"separators": (",", ":"), "ensure_ascii": False}, {"indent": 2}):
        text = json.dumps(value, **kw).encode()
        readable = body_to_readable(text, "application/json", NO_REDACTION.redaction)
        assert readable["json"] == value
        assert body_from_readable(readable) == text  # the layout is kept: same bytes
        assert yaml.safe_load(yaml.safe_dump(readable)) == readable
        assert load_one(dump(readable)) == readable  # the store's own YAML writer


# -- detection --------------------------------------------------------------------------


def test_detect_never_refuses_a_prefix_of_real_http():
    for name, chunks in VECTORS.items():
        data = side_bytes(chunks, "client")
        assert detect(data, 0) is True, name
        for k in range(0, min(len(data), 300)):
            assert detect(data[:k], 0) in (None, True), (name, k)


@MANY
@given(st.binary(max_size=64))
def test_detect_answers_for_any_bytes(data):
    assert detect(data, 80) in (True, False, None)



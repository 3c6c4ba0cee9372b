"""Golden decoding of every Redis capture in ../shared/vectors/redis.

Each stream is decoded whole, one byte at a time and split at every offset (small
streams) or at evenly spread offsets (big ones), with identical results. What each
capture must give is stated below, and the decoded commands and replies agree with
Zeek's logs (zeek-expected/) and DeepFlow's ``.result`` files.
"""

from __future__ import annotations

import pytest

from tests.protocols.redis.redis_support import decode, record, redis_offsets
from tests.support.chunking import Chunks, bytewise, coalesced, split_at
from tests.support.pcap import VECTORS, tcp_streams
from trproxy.protocols.base import NEED_DATA, Direction, ProtocolError
from trproxy.protocols.redis import DIALECT, RedisCodec, RedisRecorder, to_readable

REDIS = VECTORS / "redis"
CAPTURES = sorted(p.name for p in REDIS.glob("*.pcap*"))

# capture -> per stream (interactions recorded, error the recorder ends with)
OUTCOMES: dict[str, list[tuple[int, str | None]]] = {
    "deepflow-redis-debug.pcap": [(1, None)],
    "deepflow-redis-error.pcap": [(1, None)],
    # the last stream's 490493-byte value lacks its final CRLF in the capture
    "deepflow-redis.pcap": [(3, None), (3, None), (3, None), (0, "DecodeError")],
    "zeek-almost-resp.pcap": [(2, "DecodeError")],  # "not RESP" after two +OK
    "zeek-array-element-object-exhaustion.pcap": [(1, None)],  # *1000 of RESP3 nulls
    "zeek-attr.pcap": [(1, "DecodeError"), (1, "DecodeError")],  # a stray "\n" after each reply
    "zeek-auth.pcap": [(3, None)],
    "zeek-bulk-loading.pcap": [(1001, None)],
    "zeek-client-skip-while-off.pcap": [(7, None)],
    "zeek-django-cloud.pcapng": [(158, None)],
    "zeek-excessive-pipelining.pcap": [(12, None)],
    "zeek-large-requests-responses.pcap": [(5, None)],
    "zeek-oss-fuzz-473580107.pcap": [(0, "DecodeError")],
    "zeek-pipeline-quotes.pcap": [(8, None)],  # the last one unanswered (the server closed)
    "zeek-pipeline-with-commands.pcap": [(4, None)],
    "zeek-pipelining-example.pcap": [(3, None)],
    "zeek-pubsub-resp3.pcap": [(6, None), (4, None)],
    "zeek-pubsub.pcap": [(4, None), (1, None), (1, None), (1, None)],
    "zeek-reply-off-on-2conn.pcap": [(3, None), (3, None)],
    "zeek-reply-off-on.pcap": [(8, None)],
    "zeek-set.pcap": [(3, None)],
    "zeek-start-with-server.pcapng": [(0, "UnexpectedMessage")],  # a reply before any request
    "zeek-stream.pcap": [(4, None)],
}

ZEEK_LOGS = {
    "almost-redis": "zeek-almost-resp.pcap",
    "attributes": "zeek-attr.pcap",
    "client-reply-off-2conn": "zeek-reply-off-on-2conn.pcap",
    "client-reply-off": "zeek-reply-off-on.pcap",
    "client-skip-while-off": "zeek-client-skip-while-off.pcap",
    "django-cloud": "zeek-django-cloud.pcapng",
    "excessive-pipelining": "zeek-excessive-pipelining.pcap",
    "pipeline-with-quotes": "zeek-pipeline-quotes.pcap",
    "pipelined-with-commands": "zeek-pipeline-with-commands.pcap",
    "pipelined": "zeek-pipelining-example.pcap",
    "pubsub": "zeek-pubsub.pcap",
    "stream": "zeek-stream.pcap",
}


def streams(name: str) -> list[Chunks]:
    # the capture that starts with the server's bytes has no SYN: say which side serves
    port = 6379 if name == "zeek-start-with-server.pcapng" else None
    return [s.chunks for s in tcp_streams(REDIS / name, server_port=port)]


def test_every_capture_has_an_expected_outcome() -> None:
    assert sorted(OUTCOMES) == CAPTURES
    assert {f"{k}.redis.log" for k in ZEEK_LOGS} == {p.name for p in (REDIS / "zeek-expected").iterdir()}


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_records_as_expected(name: str) -> None:
    got = [record(chunks) for chunks in streams(name)]
    assert [(len(r.interactions), r.error) for r in got] == OUTCOMES[name]


@pytest.mark.parametrize("name", CAPTURES)
def test_decoding_does_not_depend_on_how_bytes_are_cut(name: str) -> None:
    for chunks in streams(name):
        messages = decode(chunks)
        recording = record(chunks)
        assert messages[0] or messages[1], "nothing decoded"
        total = sum(len(d) for _, d in chunks)
        variants = [coalesced(chunks), bytewise(chunks)]
        variants += [split_at(chunks, k) for k in redis_offsets(total)]
        for variant in variants:
            assert decode(variant) == messages
            again = record(variant)
            assert (again.plain(), again.error, again.unanswered) == (
                recording.plain(), recording.error, recording.unanswered)


@pytest.mark.parametrize("name", CAPTURES)
def test_reencoding_gives_the_captured_bytes(name: str) -> None:
    """Decoded messages encode back to the captured bytes.

    Exactly for multi-bulk requests and for replies; inline requests are re-quoted (and
    empty lines dropped), so for them re-encoding must decode to the same command.
    """
    codec = RedisCodec()
    for chunks in streams(name):
        messages, error = decode(chunks)
        server = [m for s, m in messages if s == "server"]
        wire = b"".join(d for s, d in chunks if s == "server")
        encoded = b"".join(codec.encode(m) for m in server)
        assert wire.startswith(encoded) and (error or encoded == wire)
        client = [m for s, m in messages if s == "client"]
        wire = b"".join(d for s, d in chunks if s == "client")
        if name == "zeek-bulk-loading.pcap":  # an empty inline line, which redis ignores
            wire = wire.replace(b"Value999\r\n\r\n", b"Value999\r\n", 1)
        encoded = b"".join(codec.encode(m) for m in client)
        if not any(getattr(m, "inline", True) for m in client):
            assert wire.startswith(encoded) and (error or encoded == wire)
        assert [m for _, m in decode([("client", encoded)])[0]] == client


# --- Zeek ---------------------------------------------------------------------------


def zeek_rows(log: str) -> dict[int, list[dict]]:
    """Rows of a Zeek redis.log per client port, in log order."""
    text = (REDIS / "zeek-expected" / f"{log}.redis.log").read_text()
    fields: list[str] = []
    rows: dict[int, list[dict]] = {}
    for line in text.splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            row = dict(zip(fields, line.split("\t"), strict=True))
            rows.setdefault(int(row["id.orig_p"]), []).append(row)
    return rows


def zeek_text(value) -> str:  # type: ignore[no-untyped-def]
    """How Zeek prints a reply (reply.value) from our readable form."""
    if value is None:
        return "(empty)"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + ", ".join(zeek_text(v) for v in value) + "]"
    if "attribute" in value:
        return zeek_text(value["value"])
    (kind, payload), = value.items()
    return str(payload) if kind in ("simple", "error", "int") else f"{kind}:{payload}"


def zeek_unquote(text: str) -> str:
    """Zeek logs inline values raw (quotes kept) with backslashes doubled."""
    text = text.replace("\\\\", "\\")
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1].replace("\\" + text[0], text[0])
    return text


@pytest.mark.parametrize("log", sorted(ZEEK_LOGS))
def test_agrees_with_zeek(log: str) -> None:
    name = ZEEK_LOGS[log]
    rows_by_port = zeek_rows(log)
    ports = [s.client[1] for s in tcp_streams(REDIS / name)]
    assert sorted(rows_by_port) == sorted(set(ports) & set(rows_by_port))
    compared = 0
    for port, chunks in zip(ports, streams(name), strict=True):
        rows = rows_by_port.get(port, [])
        rec = record(chunks)
        ours = [(i.request, i.responses) for i in rec.interactions]
        assert len(ours) == len(rows), f"{port}: {len(ours)} interactions, zeek has {len(rows)}"
        for (request, responses), row in zip(ours, rows, strict=True):
            if isinstance(request, dict):  # an inline line with unbalanced quotes: Zeek splits it raw
                words = request["inline"].split(" ", 2)
            else:
                words = request
            if row["cmd.name"] != "-":  # "-": Zeek stopped tracking (excessive pipelining)
                assert words[0].upper() == row["cmd.name"]
            if row["cmd.key"] != "-":
                assert words[1] == row["cmd.key"]
            if row["cmd.value"] != "-":
                value = row["cmd.value"] if isinstance(request, dict) else zeek_unquote(row["cmd.value"])
                assert words[2] == value
            replies = [r for r in responses if not (isinstance(r, (dict, list)) and _confirmation(r))]
            if row["success"] == "-":
                assert replies == [], row
            else:
                assert replies, row
                reply = replies[0]
                is_error = isinstance(reply, dict) and "error" in reply
                assert row["success"] == ("F" if is_error else "T")
                assert zeek_text(reply) == row["reply.value"]
            compared += 1
    assert compared == sum(len(r) for r in rows_by_port.values())


def _confirmation(reply) -> bool:  # type: ignore[no-untyped-def]
    items = reply.get("push", []) if isinstance(reply, dict) else reply
    return bool(items) and items[0] in ("subscribe", "psubscribe", "message", "pmessage")


# --- DeepFlow --------------------------------------------------------------------------


def deepflow_rows(name: str) -> list[str]:
    return (REDIS / name).with_suffix(".result").read_text().splitlines()


def deepflow_type(reply) -> str:  # type: ignore[no-untyped-def]
    if isinstance(reply, list):
        return "Array"
    if isinstance(reply, dict) and "int" in reply:
        return "Integer"
    if isinstance(reply, dict) and "error" in reply:
        return "Error"
    return "BulkString"


@pytest.mark.parametrize("name", ["deepflow-redis-debug.pcap", "deepflow-redis-error.pcap",
                                  "deepflow-redis.pcap"])
def test_agrees_with_deepflow(name: str) -> None:
    expected: list[tuple[str, str, str, str]] = []
    rows = deepflow_rows(name)
    redis_rows = [r for r in rows if r.endswith("is_redis: true")]
    for request_row, response_row in zip(redis_rows[0::2], redis_rows[1::2], strict=True):
        request = request_row.split('request: "', 1)[1].split('"', 1)[0]
        kind = request_row.split('request_type: "', 1)[1].split('"', 1)[0]
        result = response_row.split("response_result: ", 1)[1].split(",", 1)[0]
        error = response_row.split('error: "', 1)[1].split('"', 1)[0]
        expected.append((request, kind, result, error))
    ours: list[tuple[str, str, str, str]] = []
    continuation_packets = 0
    for chunks in streams(name):
        rec = record(chunks)
        for i in rec.interactions:
            reply = i.responses[0]
            error = "-" + reply["error"] if deepflow_type(reply) == "Error" else ""
            ours.append((" ".join(i.request), i.request[0], deepflow_type(reply), error))
        if rec.error:  # the truncated stream: its request and the type of its partial reply
            codec = RedisCodec()
            for side, data in chunks:
                codec.feed(Direction(side), data)
                while (m := codec.next_message()) is not NEED_DATA:
                    if m.direction is Direction.CLIENT:
                        request = [a.decode() for a in m.args]
            ours.append((" ".join(request), request[0], codec.replies.partial_type or "", ""))
            continuation_packets += sum(1 for s, _ in chunks if s == "server") - 1
    assert sorted(ours) == sorted(expected)
    assert continuation_packets == sum(1 for r in rows if r.endswith("is_redis: false"))


# --- detection and garbage ---------------------------------------------------------------


@pytest.mark.parametrize("name", CAPTURES)
def test_detect_on_captures(name: str) -> None:
    for chunks in streams(name):
        first = b"".join(d for s, d in chunks if s == "client")[:64]
        verdict = DIALECT.detect(first, 6379)
        if name == "zeek-attr.pcap":  # FAKE COMMAND: not a Redis command name
            assert verdict is False
        elif name in ("zeek-oss-fuzz-473580107.pcap", "zeek-start-with-server.pcapng"):
            # fuzz garbage; and a client whose first bytes went uncaptured (mid-stream):
            # its first request still is a multi-bulk array, so that one says yes
            assert verdict is (name == "zeek-start-with-server.pcapng")
        else:
            assert verdict is True, first


@pytest.mark.parametrize("name", ["zeek-almost-resp.pcap", "zeek-oss-fuzz-473580107.pcap"])
def test_garbage_is_a_protocol_error_whatever_the_cuts(name: str) -> None:
    for chunks in streams(name):
        for variant in (chunks, bytewise(chunks)[:20000]):
            recorder = RedisRecorder()
            with pytest.raises(ProtocolError):
                for side, data in variant + [("client", b""), ("server", b"")]:
                    recorder.feed(Direction(side), data)


def test_readable_forms_of_captures_are_yaml_safe() -> None:
    import yaml

    for name in CAPTURES:
        for chunks in streams(name):
            for i in record(chunks).interactions:
                doc = {"request": i.request, "responses": i.responses}
                text = yaml.dump(doc, Dumper=yaml.CSafeDumper)  # libyaml: same rules, faster
                assert yaml.load(text, Loader=yaml.CSafeLoader) == doc
    messages, _ = decode(streams("zeek-pubsub-resp3.pcap")[0])
    assert any("map" in to_readable(m) for s, m in messages if s == "server" and
               isinstance(to_readable(m), dict))

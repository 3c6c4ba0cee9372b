"""Golden decoding: DeepFlow's Kafka captures (against their .result files) and the
streams captured here from the librdkafka mock broker (aiokafka, confluent-kafka).

Every stream decodes fed whole, one byte at a time and split at every offset (every 5th
offset of the longer local captures), with identical messages; re-encoding gives back
the wire bytes exactly, except for compressed batches, whose recompression differs in
bytes (gzip header, lz4 frame options) but decodes to the same records.
"""

from __future__ import annotations

import pytest

from tests.protocols.kafka.streams import (
    CAPTURE_FILES,
    VECTOR_FILES,
    all_streams,
    capture_streams,
    decode,
    parse_result,
    vector_streams,
)
from tests.support.chunking import bytewise, split_at
from trproxy.protocols.kafka.codec import KafkaCodec, KafkaRequest, KafkaResponse

STREAMS = all_streams()
IDS = [name for name, _ in STREAMS]


def test_there_are_streams():
    assert len(VECTOR_FILES) == 11 and len(CAPTURE_FILES) >= 6
    assert len(STREAMS) >= 11 + 6 * 5


def _first_topic(m) -> tuple[str, int | None, int | None]:
    """(topic, partition, offset) as DeepFlow reports them for this message."""
    b = m.body
    if m.api == "Produce" and isinstance(m, KafkaRequest):
        t = b["topic_data"][0]
        return t["name"], t["partition_data"][0]["index"], None
    if m.api == "Produce":
        t = b["responses"][0]
        p = t["partition_responses"][0]
        return t["name"], p["index"], p["base_offset"]
    if m.api == "Fetch" and isinstance(m, KafkaRequest) and b["topics"]:
        t = b["topics"][0]
        return t["topic"], t["partitions"][0]["partition"], t["partitions"][0]["fetch_offset"]
    return "", None, None


def _status(m: KafkaResponse) -> int | None:
    b = m.body
    if "error_code" in b:
        return b["error_code"]
    if m.api == "Produce":
        return b["responses"][0]["partition_responses"][0]["error_code"]
    return None


@pytest.mark.parametrize("path", [p for p in VECTOR_FILES if p.with_suffix(".result").exists()],
                         ids=lambda p: p.name)
def test_vectors_agree_with_deepflow_results(path):
    expected = parse_result(path.with_suffix(".result"))
    codec = KafkaCodec()
    got = {}
    for chunks in vector_streams(path):
        for m in decode(chunks):
            got[(type(m).__name__, m.correlation_id)] = m
    assert expected
    for e in expected:
        kind = "KafkaRequest" if e["msg_type"] == "Request" else "KafkaResponse"
        m = got[(kind, int(e["correlation_id"]))]
        assert m.api == e["api_key"]
        assert m.api_version == int(e["api_version"])
        assert not m.opaque
        frame = codec.encode(m)
        if kind == "KafkaRequest":
            assert m.client_id == e["client_id"]
            assert len(frame) - 4 == int(e["req_msg_size"])
            assert len(frame) == int(e["captured_request_byte"])
            if e["group_id"]:
                assert m.body["group_id"] == e["group_id"]
        else:
            assert len(frame) - 4 == int(e["resp_msg_size"])
            assert len(frame) == int(e["captured_response_byte"])
            # DeepFlow leaves -2 where it did not parse the status (OffsetCommit, Heartbeat)
            if e["status_code"] is not None and e["status_code"] != "-2":
                assert _status(m) == int(e["status_code"])
        topic, partition, offset = _first_topic(m)
        if e["topic_name"]:
            assert (topic, partition) == (e["topic_name"], int(e["partition"]))
        if e["offset"] not in (None, "0"):
            assert offset == int(e["offset"])


def test_vector_contents():
    """Spot checks of decoded values beyond what DeepFlow reports."""
    (chunks,) = vector_streams(next(p for p in VECTOR_FILES if p.name == "deepflow-00-produce-v9.pcap"))
    req, resp = decode(chunks)
    batch = req.body["topic_data"][0]["partition_data"][0]["records"][0]
    assert batch["compression"] == "none" and batch["records"][0]["key"] is None
    assert resp.body["responses"][0]["partition_responses"][0]["base_offset"] == 35
    (chunks,) = vector_streams(next(p for p in VECTOR_FILES if p.name == "deepflow-00-produce-v2.pcap"))
    req, _ = decode(chunks)
    assert req.body["topic_data"][0]["partition_data"][0]["records"][0]["magic"] == 1
    (chunks,) = vector_streams(next(p for p in VECTOR_FILES if "sync-group" in p.name))
    req, resp = decode(chunks)
    assignment = resp.body["assignment"]["consumer_protocol_assignment"]
    assert assignment["assigned_partitions"] == [{"topic": "zqy-topic1", "partitions": [0, 1, 2]}]


@pytest.mark.parametrize("name,chunks", STREAMS, ids=IDS)
def test_whole_equals_byte_at_a_time(name, chunks):
    messages = decode(chunks)
    assert messages
    assert decode(bytewise(chunks)) == messages


@pytest.mark.parametrize("name,chunks", STREAMS, ids=IDS)
def test_split_at_every_offset(name, chunks):
    messages = decode(chunks)
    # every offset of the DeepFlow vectors; a stride over the (longer) local captures
    stride = 1 if name.endswith(".pcap#0") or ".pcap#" in name else 5
    base = 0
    for i, (_, data) in enumerate(chunks):
        for offset in range(1, len(data), stride):
            assert decode(split_at(chunks, base + offset)) == messages, (i, offset)
        base += len(data)


@pytest.mark.parametrize("name,chunks", STREAMS, ids=IDS)
def test_reencode_gives_the_wire_bytes(name, chunks):
    codec = KafkaCodec()
    messages = decode(chunks)
    encoded = [(m.direction.value, codec.encode(m)) for m in messages]
    assert decode(encoded) == messages
    compressed = any(b["compression"] != "none" for m in messages for b in _batches(m))
    if not compressed:  # recompression is not canonical: then only the meaning is kept
        for side in ("client", "server"):
            wire = b"".join(d for s, d in chunks if s == side)
            assert b"".join(d for s, d in encoded if s == side) == wire


def test_captures_cover_the_client_apis():
    seen = set()
    for path in CAPTURE_FILES:
        for chunks in capture_streams(path):
            seen |= {(m.api, m.opaque) for m in decode(chunks)}
    apis = {api for api, _ in seen}
    assert {"ApiVersions", "Metadata", "Produce", "Fetch", "ListOffsets", "FindCoordinator",
            "JoinGroup", "SyncGroup", "Heartbeat", "LeaveGroup", "OffsetCommit",
            "OffsetFetch"} <= apis
    assert not any(opaque for _, opaque in seen if _ != "ApiVersions")
    batches = [b for path in CAPTURE_FILES for chunks in capture_streams(path)
               for m in decode(chunks) if m.api in ("Produce", "Fetch")
               for b in _batches(m)]
    assert {b["compression"] for b in batches} == {"none", "gzip", "snappy", "lz4", "zstd"}
    assert any(r["headers"] == [{"key": "h", "value": {"hex": "000130"}}]
               for b in batches for r in b["records"])


def _batches(m):
    topics = m.body.get("topic_data") or m.body.get("responses") or []
    for t in topics:
        for p in t.get("partition_data") or t.get("partitions") or []:
            for entry in p.get("records") or []:
                if "records" in entry:
                    yield entry

"""The Kafka dialect on real streams: pairing, lifetimes, match keys, replay, misses, detection."""

from __future__ import annotations

import pytest
import yaml

from tests.protocols.kafka.streams import CAPTURE_FILES, all_streams, capture_streams, decode
from trproxy.protocols.base import DecodeError, Direction, Lookup
from trproxy.protocols.kafka import DIALECT, KafkaRecorder, KafkaReplayer, detect, match_key
from trproxy.protocols.kafka.codec import KafkaCodec, KafkaRequest, KafkaResponse
from trproxy.protocols.kafka.readable import readable_to_request, request_to_readable

STREAMS = all_streams()
IDS = [name for name, _ in STREAMS]
SESSION = {"ApiVersions", "Metadata", "FindCoordinator", "GetTelemetrySubscriptions", "Heartbeat"}


def record(chunks) -> list:
    rec = KafkaRecorder()
    out = []
    for side, data in chunks:
        out += rec.feed(Direction(side), data)
    return out + rec.feed(Direction.CLIENT, b"")


@pytest.mark.parametrize("name,chunks", STREAMS, ids=IDS)
def test_recorder_pairs_requests_with_responses(name, chunks):
    messages = decode(chunks)
    requests = [m for m in messages if isinstance(m, KafkaRequest)]
    responses = {m.correlation_id: m for m in messages if isinstance(m, KafkaResponse)}
    interactions = record(chunks)
    unanswered_session = {r.correlation_id for r in requests if r.correlation_id not in responses
                          and r.api in SESSION}
    assert sorted({i.request["correlation_id"] for i in interactions}) == \
        sorted(r.correlation_id for r in requests if r.correlation_id not in unanswered_session)
    for i in interactions:
        cid = i.request["correlation_id"]
        if cid in responses:
            (resp,) = i.responses
            assert resp["correlation_id"] == cid and resp["api"] == i.request["api"]
        else:
            assert i.responses == []  # still waiting when the connection closed
            assert i.lifetime == "data"  # unanswered session exchanges are not kept
        if i.request["api"] == "Fetch":  # one partition per interaction
            assert sum(len(t["partitions"]) for t in i.request["body"]["topics"]) <= 1
        assert i.lifetime == ("session" if i.request["api"] in SESSION else "data")
        assert i.summary.startswith(i.request["api"])
        doc = {"request": i.request, "responses": i.responses}
        assert yaml.safe_load(yaml.safe_dump(doc)) == doc


def test_consumer_long_poll_at_close_is_recorded_without_response():
    fetches = [i for p in CAPTURE_FILES for chunks in capture_streams(p) for i in record(chunks)
               if i.request["api"] == "Fetch"]
    assert any(i.responses == [] for i in fetches)
    assert any(i.responses for i in fetches)


def _produce(acks: int, cid: int = 7, value: str = "v", ts: int = 1, producer_id: int = -1,
             client_id: str = "app-1234") -> KafkaRequest:
    batch = {"base_offset": 0, "partition_leader_epoch": -1, "compression": "none",
             "timestamp_type": "create", "transactional": False, "control": False,
             "last_offset_delta": 0, "base_timestamp": ts, "max_timestamp": ts,
             "producer_id": producer_id, "producer_epoch": 0, "base_sequence": 0,
             "records": [{"timestamp_delta": 0, "offset_delta": 0, "key": "k", "value": value,
                          "headers": []}]}
    body = {"transactional_id": None, "acks": acks, "timeout_ms": 1000, "topic_data": [
        {"name": "t", "partition_data": [{"index": 0, "records": [batch]}]}]}
    return KafkaRequest(0, 9, cid, client_id, body)


def test_produce_acks0_gets_no_response():
    frame = KafkaCodec().encode(_produce(acks=0))
    rec = KafkaRecorder()
    (interaction,) = rec.feed(Direction.CLIENT, frame)
    assert interaction.responses == [] and interaction.lifetime == "data"
    (lookup,) = KafkaReplayer().feed(frame)
    assert lookup.expects_reply is False
    (lookup,) = KafkaReplayer().feed(KafkaCodec().encode(_produce(acks=1)))
    assert lookup.expects_reply is True


def test_produce_match_key_ignores_run_specific_values():
    base = match_key(request_to_readable(_produce(1)))
    assert base == match_key(request_to_readable(
        _produce(1, cid=99, ts=555, producer_id=42, client_id="app-9999")))
    assert base != match_key(request_to_readable(_produce(1, value="other")))
    assert base != match_key(request_to_readable(_produce(0)))


def test_fetch_match_key_is_topics_partitions_offsets():
    def fetch(offset: int, wait: int, session: int, epoch: int) -> dict:
        return {"api": "Fetch", "version": 12, "correlation_id": wait, "client_id": "c",
                "body": {"replica_id": -1, "max_wait_ms": wait, "min_bytes": 1,
                         "max_bytes": 1 << 20, "isolation_level": 0, "session_id": session,
                         "session_epoch": epoch, "topics": [{"topic": "t", "partitions": [
                             {"partition": 0, "current_leader_epoch": epoch,
                              "fetch_offset": offset, "last_fetched_epoch": -1,
                              "log_start_offset": -1, "partition_max_bytes": 1000}]}],
                         "forgotten_topics_data": [], "rack_id": ""}}

    assert match_key(fetch(3, 500, 0, -1)) == match_key(fetch(3, 100, 77, 5))
    assert match_key(fetch(3, 500, 0, -1)) != match_key(fetch(4, 500, 0, -1))


def test_group_ids_are_normalized():
    def heartbeat(member: str, generation: int) -> dict:
        return {"api": "Heartbeat", "version": 4, "correlation_id": 1, "client_id": "c",
                "body": {"group_id": "g", "generation_id": generation, "member_id": member,
                         "group_instance_id": None}}

    assert match_key(heartbeat("rdkafka-1f", 3)) == match_key(heartbeat("rdkafka-2e", 9))
    assert match_key(heartbeat("", -1)) != match_key(heartbeat("rdkafka-1f", 3))
    joins = [i for p in CAPTURE_FILES for chunks in capture_streams(p) for i in record(chunks)
             if i.request["api"] in ("JoinGroup", "SyncGroup")]
    assert joins
    named = [i for i in joins if i.request["body"]["member_id"]]
    assert named
    for i in named:
        body = match_key(i.request)["body"]
        assert body["member_id"] == "<member-id>"
        if "generation_id" in body and i.request["body"]["generation_id"] >= 0:
            assert body["generation_id"] == "<generation>"


def _serve(chunks, renumber: int = 0) -> tuple[bytes, bytes]:
    """Replay a stream's client bytes against its own recording: (served, expected)."""
    interactions = record(chunks)
    queue = list(interactions)
    codec = KafkaCodec()
    client = b"".join(d for s, d in chunks if s == "client")
    if renumber:  # the live client numbers its requests differently
        codec.feed(Direction.CLIENT, client)
        msgs = []
        while isinstance(m := codec.next_message(), KafkaRequest):
            msgs.append(m)
        client = b"".join(codec.encode(KafkaRequest(m.api_key, m.api_version,
                                                    m.correlation_id + renumber, m.client_id,
                                                    m.body, m.header_tagged, m.opaque))
                          for m in msgs)
    replayer = KafkaReplayer()
    served = b""
    for event in replayer.feed(client):
        assert isinstance(event, Lookup)
        found = next((i for i in queue if match_key(i.request) == match_key(event.request)), None)
        if found is None:  # an unanswered session request: not recorded, nothing was sent
            assert event.lifetime == "session"
            continue
        queue.remove(found)
        doc = yaml.safe_load(yaml.safe_dump(found.responses))  # as stored
        served += replayer.respond(event, doc)
    expected = b"".join(d for s, d in chunks if s == "server")
    return served, expected


@pytest.mark.parametrize("name,chunks", [s for s in STREAMS if "gzip" not in s[0]
                                         and "lz4" not in s[0] and "snappy" not in s[0]
                                         and "zstd" not in s[0]],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_replayer_answers_with_the_recorded_bytes(name, chunks):
    served, expected = _serve(chunks)
    assert served == expected


@pytest.mark.parametrize("name,chunks", STREAMS[-5:], ids=IDS[-5:])
def test_replayer_rewrites_correlation_ids(name, chunks):
    served, _ = _serve(chunks, renumber=1000)
    codec = KafkaCodec(track_responses=False)
    ids = []
    while served:
        size = int.from_bytes(served[:4], "big")
        ids.append(int.from_bytes(served[4:8], "big"))
        served = served[4 + size:]
    recorded = list(dict.fromkeys(i.request["correlation_id"] for i in record(chunks)
                                  if i.responses))
    assert sorted(ids) == sorted(c + 1000 for c in recorded)
    assert codec is not None


def test_every_miss_is_the_apis_own_error_response():
    seen = set()
    for _name, chunks in STREAMS:
        for m in decode(chunks):
            if not isinstance(m, KafkaRequest) or (m.api, m.api_version) in seen:
                continue
            seen.add((m.api, m.api_version))
            replayer = KafkaReplayer()
            lookups = replayer.feed(KafkaCodec().encode(m))
            assert len(lookups) >= 1
            # a Fetch is looked up per partition; the last miss completes the response
            out = b"".join(replayer.miss(lookup, "no recording matches") for lookup in lookups)
            if m.opaque:
                assert out == b""
                continue
            codec = KafkaCodec()
            codec.feed(Direction.CLIENT, KafkaCodec().encode(m))
            codec.next_message()
            codec.feed(Direction.SERVER, out)
            resp = codec.next_message()
            assert (resp.api, resp.api_version, resp.correlation_id) == \
                (m.api, m.api_version, m.correlation_id)
            text = yaml.safe_dump(resp.body)
            if m.api == "ApiVersions":
                assert resp.body["error_code"] == 0 and resp.body["api_keys"]
            elif m.api == "Metadata" and not m.body.get("topics") and m.api_version < 13:
                assert resp.body["brokers"] == []  # nowhere to go: the client asks again
            else:
                assert "error_code: -1" in text, (m.api, text)
    assert {"Produce", "Fetch", "Metadata", "JoinGroup", "SyncGroup", "Heartbeat",
            "LeaveGroup", "OffsetCommit", "OffsetFetch", "ListOffsets",
            "FindCoordinator"} <= {a for a, _ in seen}


def test_fetch_is_recorded_and_replayed_per_partition():
    """A live Fetch grouping partitions differently from the recording is still served."""
    streams = [chunks for p in CAPTURE_FILES if "confluent-none" in p.name
               for chunks in capture_streams(p)]
    recorded = [i for chunks in streams for i in record(chunks) if i.request["api"] == "Fetch"
                and i.responses and any(p.get("records") for t in i.responses[0]["body"]["responses"]
                                        for p in t["partitions"])]
    assert recorded
    part = recorded[0]
    (topic,) = part.request["body"]["topics"]
    (wanted,) = topic["partitions"]
    # the live client asks for that partition together with another one, in one Fetch
    other = {**wanted, "partition": wanted["partition"] + 1, "fetch_offset": 0}
    live_body = {**part.request["body"], "topics": [{**topic, "partitions": [other, wanted]}]}
    live = readable_to_request({**part.request, "body": live_body, "correlation_id": 4242})
    replayer = KafkaReplayer()
    first, second = replayer.feed(KafkaCodec().encode(live))
    assert match_key(second.request) == match_key(part.request)
    assert first.context.partial and not second.context.partial
    assert replayer.miss(first, "not recorded") == b""  # waits for the other part
    frame = replayer.respond(second, part.responses)
    codec = KafkaCodec()
    codec.in_flight[4242] = (1, live.api_version)
    codec.feed(Direction.SERVER, frame)
    resp = codec.next_message()
    parts = {p["partition_index"]: p for t in resp.body["responses"] for p in t["partitions"]}
    assert parts[other["partition"]]["error_code"] == -1
    assert parts[wanted["partition"]]["records"] == \
        part.responses[0]["body"]["responses"][0]["partitions"][0]["records"]


def test_readable_request_roundtrips_through_the_encoder():
    m = _produce(1)
    assert readable_to_request(request_to_readable(m)) == m


def test_sasl_secrets_are_redacted():
    m = KafkaRequest(36, 2, 5, "c", {"auth_bytes": {"hex": "00757365720070617373"}})
    frame = KafkaCodec().encode(m)
    (i,) = KafkaRecorder().feed(Direction.CLIENT, frame) or [None]
    assert i is None  # waits for its response
    rec = KafkaRecorder()
    rec.feed(Direction.CLIENT, frame)
    (i,) = rec.feed(Direction.SERVER, KafkaCodec().encode(
        KafkaResponse(36, 2, 5, {"error_code": 0, "error_message": None,
                                 "auth_bytes": "", "session_lifetime_ms": 0})))
    assert i.request["body"]["auth_bytes"] == "<redacted>"
    assert "7061737" not in yaml.safe_dump(i.request)


def test_detect():
    for _name, chunks in STREAMS:
        first = next(d for s, d in chunks if s == "client")
        assert detect(first, 9092) is True
        assert detect(first, 1234) is True
        for n in range(0, 14):
            assert detect(first[:n], 9092) in (None, True)
    for other in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"*1\r\n$4\r\nPING\r\n",
                  b"\x00\x00\x00\x08\x04\xd2\x16\x2f",  # Postgres SSLRequest
                  b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 20):  # TLS
        assert detect(other, 9092) is False
    assert DIALECT.name == "kafka" and 9092 in DIALECT.default_ports


def test_api_versions_unsupported_version_answer_is_read_as_v0():
    """KIP-511: a broker answers an ApiVersions version it does not know in v0."""
    codec = KafkaCodec()
    req = KafkaRequest(18, 4, 1, "c", {"client_software_name": "x", "client_software_version": "1"})
    v0 = KafkaResponse(18, 0, 1, {"error_code": 35, "api_keys": [
        {"api_key": 18, "min_version": 0, "max_version": 3}]})
    codec.feed(Direction.CLIENT, codec.encode(req))
    codec.next_message()
    codec.feed(Direction.SERVER, codec.encode(v0))
    assert codec.next_message() == v0
    # the librdkafka mock's answer parses as no version: kept exactly, as opaque bytes
    mock = bytes.fromhex("000000110000000100230100120000000200000000")
    codec.feed(Direction.CLIENT, codec.encode(req))
    codec.next_message()
    codec.feed(Direction.SERVER, mock)
    resp = codec.next_message()
    assert resp.opaque and codec.encode(resp) == mock


def _produce_to(partitions: list[int], cid: int) -> KafkaRequest:
    base = _produce(1, cid=cid)
    (topic,) = base.body["topic_data"]
    (template,) = topic["partition_data"]
    data = [{"index": p, "records": [{**template["records"][0], "records": [
        {**template["records"][0]["records"][0], "value": f"to {p}"}]}]} for p in partitions]
    return KafkaRequest(0, 9, cid, "app", {**base.body, "topic_data": [
        {"name": "t", "partition_data": data}]})


def _produce_response(req: KafkaRequest, offsets: dict[int, int]) -> KafkaResponse:
    return KafkaResponse(0, 9, req.correlation_id, {"responses": [{"name": "t", "partition_responses": [
        {"index": p, "error_code": 0, "base_offset": offsets[p], "log_append_time_ms": -1,
         "log_start_offset": 0, "record_errors": [], "error_message": None}
        for p in sorted(offsets)]}], "throttle_time_ms": 0})


def test_produce_batched_differently_at_replay_gets_the_recorded_offsets():
    # recorded: one Produce to partitions 0 and 1 (linger gathered both batches)
    req = _produce_to([0, 1], cid=3)
    rec = KafkaRecorder()
    rec.feed(Direction.CLIENT, KafkaCodec().encode(req))
    parts = rec.feed(Direction.SERVER, KafkaCodec().encode(_produce_response(req, {0: 10, 1: 20})))
    assert len(parts) == 2
    # replayed: the producer sends partition 1 first, alone, then partition 0
    replayer = KafkaReplayer()
    acks = {}
    for p, cid in ((1, 8), (0, 9)):
        (lookup,) = replayer.feed(KafkaCodec().encode(_produce_to([p], cid=cid)))
        found = next(i for i in parts if match_key(i.request) == match_key(lookup.request))
        frame = replayer.respond(lookup, yaml.safe_load(yaml.safe_dump(found.responses)))
        codec = KafkaCodec()
        codec.in_flight[cid] = (0, 9)
        codec.feed(Direction.SERVER, frame)
        resp = codec.next_message()
        assert resp.correlation_id == cid
        (pr,) = resp.body["responses"][0]["partition_responses"]
        acks[pr["index"]] = pr["base_offset"]
    assert acks == {0: 10, 1: 20}


def test_metadata_match_key_is_the_topics_asked_about():
    def metadata(auto: bool, topics: list[str] | None) -> dict:
        return {"api": "Metadata", "version": 12, "correlation_id": 1, "client_id": "c",
                "body": {"topics": None if topics is None else [
                    {"topic_id": "00000000-0000-0000-0000-000000000000", "name": n} for n in topics],
                    "allow_auto_topic_creation": auto, "include_topic_authorized_operations": False}}

    assert match_key(metadata(True, ["a", "b"])) == match_key(metadata(False, ["b", "a"]))
    assert match_key(metadata(True, ["a"])) != match_key(metadata(True, ["a", "b"]))
    assert match_key(metadata(True, None)) != match_key(metadata(True, []))


def _fetches() -> tuple[object, object]:
    """A recorded Fetch answered with records, and one answered with none (max_wait > 0)."""
    fetches = [i for _n, chunks in STREAMS for i in record(chunks)
               if i.request["api"] == "Fetch" and i.responses
               and i.request["body"].get("max_wait_ms", 0) > 0 and i.request["body"]["topics"]]
    def records(i) -> bool:
        return any(p.get("records") for t in i.responses[0]["body"]["responses"]
                   for p in t["partitions"])
    return next(i for i in fetches if records(i)), next(i for i in fetches if not records(i))


def _answer(interaction, repeat: bool, partitions: int = 1) -> tuple[bytes, list[Lookup]]:
    """Replay ``interaction``'s Fetch (its partition listed ``partitions`` times, as a live
    request for several partitions), each part answered by the recording."""
    body = interaction.request["body"]
    topic = dict(body["topics"][0])
    topic["partitions"] = [dict(topic["partitions"][0], partition=n) for n in range(partitions)]
    req = readable_to_request({**interaction.request, "body": {**body, "topics": [topic]}})
    replayer = KafkaReplayer()
    lookups = replayer.feed(KafkaCodec().encode(req))
    out = b""
    for lookup in lookups:
        assert lookup.context.repeat_last  # the pool may serve its last answer again
        if repeat:
            lookup.context.repeat = True
        out += replayer.respond(lookup, yaml.safe_load(yaml.safe_dump(interaction.responses)))
    return out, lookups


def test_a_repeated_fetch_with_nothing_new_is_held_max_wait_ms():
    full, empty = _fetches()
    wait = empty.request["body"]["max_wait_ms"]
    out, [lookup] = _answer(empty, repeat=True)
    assert out and lookup.context.hold_ms == wait  # a broker waits for new records
    out, [lookup] = _answer(empty, repeat=False)
    assert out and lookup.context.hold_ms is None  # as recorded: at once
    out, [lookup] = _answer(full, repeat=True)
    assert out and lookup.context.hold_ms is None  # records: at once
    # split per partition: the whole answer is held only when every part is a repeat
    out, lookups = _answer(empty, repeat=True, partitions=3)
    assert out and len(lookups) == 3 and lookups[-1].context.hold_ms == wait


@pytest.mark.parametrize("name,chunks", STREAMS[:1], ids=IDS[:1])
def test_responses_after_the_client_closed_are_not_an_error(name, chunks):
    """Found by `make fuzz` (kafka_dialect): a client that half-closes while requests are
    in flight had them recorded unanswered, then their responses raised KeyError (which
    the proxy's capture does not expect)."""
    rec = KafkaRecorder()
    out = []
    for side, data in chunks:
        if side == "client" and data:
            out += rec.feed(Direction.CLIENT, data)
    out += rec.feed(Direction.CLIENT, b"")
    for side, data in chunks:
        if side == "server" and data:
            out += rec.feed(Direction.SERVER, data)
    assert out and all(i.responses == [] and i.lifetime == "data" for i in out)


def test_a_fetch_whose_topics_name_no_partition_stays_whole():
    """Found by fuzzing (kafka_dialect): a topic with an empty partition list made the
    per-partition split index an empty list (IndexError out of the recorder)."""
    from trproxy.protocols.kafka.split import LAYOUTS, split_request, split_response

    layout = LAYOUTS["Fetch"]
    request = {"max_wait_ms": 500, "topics": [{"topic": "t", "partitions": []}]}
    response = {"error_code": 0, "responses": [
        {"topic": "t", "partitions": [{"partition_index": 0, "records": None}]}]}
    parts = split_request(layout, request)
    assert parts == [request]
    assert split_response(layout, parts, response) == [response]


def test_a_response_cut_short_between_fields_is_recorded_readable_and_replayed_exactly():
    """The librdkafka mock broker answers kafkajs' LeaveGroup v3 with the v1 body (no
    ``members``): the client copes, so the recording keeps it readable (the error code
    shows) and replay sends the very bytes; the rest of the connection stays decoded.
    A body that ends inside a field is still an error."""
    leave = KafkaRequest(13, 3, 12, "trp-node", {"group_id": "g", "members": [
        {"member_id": "m-1", "group_instance_id": None}]})
    short = bytes.fromhex("0000000a0000000c000000000019")  # throttle 0, error 25, nothing more
    heartbeat = KafkaRequest(12, 3, 13, "trp-node", {"group_id": "g", "generation_id": 1,
                                                     "member_id": "m-1", "group_instance_id": None})
    hb_answer = KafkaResponse(12, 3, 13, {"throttle_time_ms": 0, "error_code": 0})
    codec = KafkaCodec()
    chunks = [("client", codec.encode(leave)), ("server", short),
              ("client", codec.encode(heartbeat)), ("server", codec.encode(hb_answer))]
    recorded = record(chunks)
    assert [i.request["api"] for i in recorded] == ["LeaveGroup", "Heartbeat"]
    (answer,) = recorded[0].responses
    assert answer["body"] == {"throttle_time_ms": 0, "error_code": 25, "_cut_short": True}
    served, expected = _serve(chunks)
    assert served == expected
    codec.feed(Direction.CLIENT, codec.encode(leave))
    codec.next_message()
    codec.feed(Direction.SERVER, bytes.fromhex("0000000b0000000c00000000001900"))  # inside members' count
    with pytest.raises(DecodeError):
        codec.next_message()

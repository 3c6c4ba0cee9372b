"""Real clients against the librdkafka mock broker (slow): capture through a relay,
record, stop the broker, replay with the real client, compare what it saw."""

from __future__ import annotations

import asyncio

import pytest

from tests.protocols.kafka import capture
from tests.support.kafka_broker import KafkaBroker
from tests.support.replay_server import ReplayServer
from trproxy.protocols.base import Direction
from trproxy.protocols.kafka import KafkaRecorder

pytestmark = pytest.mark.slow


def test_broker_serves_aiokafka_producer_and_group_consumer():
    with KafkaBroker() as broker:
        assert broker.host == "127.0.0.1" and broker.port > 0
        seen = asyncio.run(capture.aiokafka_session(broker.bootstrap, "direct", "g-direct"))
    assert [a[2] for a in seen["acks"]] == [0, 1, 2]
    assert [c[:3] for c in seen["consumed"]] == [
        [k.decode(), v.decode(), i] for i, (k, v, _) in enumerate(capture.MESSAGES)]


def _record(streams) -> list:
    interactions = []
    for chunks in streams:
        rec = KafkaRecorder()
        for side, data in chunks:
            interactions += rec.feed(Direction(side), data)
        interactions += rec.feed(Direction.CLIENT, b"")
    return interactions


def _run(client: str, bootstrap: str, compression: str, tag: str) -> dict:
    topic, group = f"trp-{tag}", f"g-{tag}"
    if client == "aiokafka":
        return asyncio.run(capture.aiokafka_session(
            bootstrap, topic, group, None if compression == "none" else compression))
    return capture.confluent_session(bootstrap, topic, group, compression)


@pytest.mark.parametrize("client,compression", [("aiokafka", "none"), ("aiokafka", "lz4"),
                                                ("confluent", "none"), ("confluent", "zstd")])
def test_record_then_replay_without_broker(client, compression):
    tag = f"live-{client}-{compression}"
    with KafkaBroker() as broker:
        streams, seen = capture.capture(client, broker.host, broker.port, compression, tag)
    # the broker is gone now
    assert len(seen["acks"]) == 3 and len(seen["consumed"]) == 3
    interactions = _record(streams)
    apis = {i.request["api"] for i in interactions}
    assert {"ApiVersions", "Metadata", "Produce", "Fetch", "JoinGroup", "SyncGroup",
            "OffsetCommit", "FindCoordinator"} <= apis
    metadata = next(i for i in interactions if i.request["api"] == "Metadata")
    port = metadata.responses[0]["body"]["brokers"][0]["port"]  # the relay's, as recorded
    server = ReplayServer("kafka", interactions, port=port).start()
    try:
        replayed = _run(client, f"127.0.0.1:{port}", compression, tag)
    finally:
        server.close()
    assert replayed == seen
    assert len(server.lookups) > 0
    assert not [m for m in server.misses if m.request["api"] != "Fetch"]

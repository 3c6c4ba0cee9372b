"""Capture real client <-> broker streams through a ``Relay`` (aiokafka and confluent-kafka).

Each scenario produces a few keyed messages with headers, then consumes them back in a
consumer group and commits, against the librdkafka mock broker. ``capture`` returns the
relay's streams and what the client saw (acks and consumed messages), so a test can
compare a replay with the recording. ``python -m tests.protocols.kafka.capture`` rewrites
the captures in ``data/`` that the fast tests read.

Kafka clients connect to the broker addresses that Metadata and FindCoordinator
responses advertise, which would bypass the relay after bootstrap. ``broker_ports``
therefore rewrites the broker's port in those responses to the relay's: it replaces the
bytes ``"127.0.0.1"`` (as an int16- or varint-length string) followed by the broker's
int32 port with the same string followed by the relay's port. Same length, so framing and
every other byte stay untouched; this does not use the codec under test.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.chunking import Chunks
from tests.support.tee import Relay

DATA = Path(__file__).parent / "data"
# values long enough that librdkafka compresses them (it sends tiny batches uncompressed)
MESSAGES = [(b"k%d" % i, b"value %d " % i + b"abc" * 40, [("h", b"\x00\x01%d" % i)])
            for i in range(3)]


async def aiokafka_session(bootstrap: str, topic: str, group: str,
                           compression: str | None = None) -> dict:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=compression,
                                client_id="trp-aio")
    await producer.start()
    acks = []
    try:
        for key, value, headers in MESSAGES:
            md = await producer.send_and_wait(topic, value, key=key, headers=headers,
                                              partition=0)
            acks.append([md.topic, md.partition, md.offset])
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                client_id="trp-aio", auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    got: list = []
    try:
        deadline = time.monotonic() + 30
        while len(got) < len(MESSAGES) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for msgs in batches.values():
                got += [[m.key.decode(), m.value.decode(), m.offset,
                         [[k, v.hex()] for k, v in m.headers]] for m in msgs]
        await consumer.commit()
    finally:
        await consumer.stop()
    return {"acks": acks, "consumed": got}


def confluent_session(bootstrap: str, topic: str, group: str,
                      compression: str = "none") -> dict:
    import confluent_kafka

    acks: list = []

    def on_delivery(err, msg) -> None:
        acks.append([msg.topic(), msg.partition(), msg.offset(), None if err is None else str(err)])

    producer = confluent_kafka.Producer({
        "bootstrap.servers": bootstrap, "client.id": "trp-ck", "linger.ms": 0,
        "compression.type": compression, "enable.idempotence": False, "log_level": 2,
        "api.version.request": True,
    })
    for key, value, headers in MESSAGES:
        producer.produce(topic, value, key, partition=0, headers=headers,
                         on_delivery=on_delivery)
        producer.flush(10)
    debug = {"debug": os.environ["TRP_KAFKA_DEBUG"], "log_level": 7} \
        if os.environ.get("TRP_KAFKA_DEBUG") else {}
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "client.id": "trp-ck", "group.id": group,
        "auto.offset.reset": "earliest", "enable.auto.commit": False, "log_level": 2,
        **debug,
    })
    consumer.subscribe([topic])
    got: list = []
    deadline = time.monotonic() + 30
    while len(got) < len(MESSAGES) and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is None or m.error():
            continue
        got.append([m.key().decode(), m.value().decode(), m.offset(),
                    [[k, v.hex()] for k, v in (m.headers() or [])]])
    consumer.commit(asynchronous=False)
    consumer.close()
    return {"acks": acks, "consumed": got}


def broker_ports(relay: Relay) -> Callable[[bytes], list[bytes]]:
    """Per connection: the broker's bytes as whole frames, its advertised port made the relay's."""
    host = relay.upstream[0].encode()
    old_port, new_port = relay.upstream[1].to_bytes(4, "big"), relay.port.to_bytes(4, "big")
    prefixes = (len(host).to_bytes(2, "big"), bytes([len(host) + 1]))
    buf = b""

    def frames(data: bytes) -> list[bytes]:
        nonlocal buf
        buf += data
        out = []
        while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "big"):
            end = 4 + int.from_bytes(buf[:4], "big")
            frame, buf = buf[:end], buf[end:]
            for prefix in prefixes:
                frame = frame.replace(prefix + host + old_port, prefix + host + new_port)
            out.append(frame)
        return out

    return frames


def capture(client: str, bootstrap_host: str, bootstrap_port: int, compression: str,
            tag: str) -> tuple[list[Chunks], dict]:
    """Each connection's chunks (no end-of-stream markers) and what the client saw."""
    relay = Relay((bootstrap_host, bootstrap_port), server_filter=broker_ports).start()
    try:
        topic, group = f"trp-{tag}", f"g-{tag}"
        if client == "aiokafka":
            seen = asyncio.run(aiokafka_session(relay.address, topic, group,
                                                None if compression == "none" else compression))
        else:
            seen = confluent_session(relay.address, topic, group, compression)
        time.sleep(0.2)  # let the relay see the last bytes and closes
    finally:
        relay.close()
    return [s.data_chunks() for s in relay.streams], seen


SCENARIOS = [("aiokafka", "none"), ("aiokafka", "gzip"), ("confluent", "none"),
             ("confluent", "snappy"), ("confluent", "lz4"), ("confluent", "zstd")]


def save(name: str, streams: list[Chunks], seen: dict) -> Path:
    path = DATA / f"{name}.json"
    path.write_text(json.dumps({
        "seen": seen,
        "streams": [[[side, data.hex()] for side, data in s] for s in streams if s],
    }, indent=0))
    return path


def load(path: Path) -> tuple[list[Chunks], dict]:
    doc = json.loads(path.read_text())
    return [[(side, bytes.fromhex(h)) for side, h in s] for s in doc["streams"]], doc["seen"]


def main() -> None:
    from tests.support.kafka_broker import KafkaBroker

    DATA.mkdir(exist_ok=True)
    with KafkaBroker() as broker:
        for client, compression in SCENARIOS:
            tag = f"{client}-{compression}"
            streams, seen = capture(client, broker.host, broker.port, compression, tag)
            print(save(tag, streams, seen), seen)


if __name__ == "__main__":
    main()

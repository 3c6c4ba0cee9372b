"""A Kafka producer whose records carry values it generates, for
``tests/e2e/test_kafka_volatile.py``: ``python -m tests.e2e.apps.kafka_volatile BOOTSTRAP
TOPIC [QTY]``.

aiokafka produces two records keyed by a fresh uuid4, with a ``trace-id`` header (a
random hex token) and a JSON value (the id, the time in milliseconds, a random nonce and
``QTY``, default 2) whose keys are in a random order; then a consumer group reads them
back and the app checks that it got its own keys and ids (at replay: the recorded Fetch
answer, rewritten with the live values).

It prints only what does not change between runs, so a replay prints the same.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import sys
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError


async def main(bootstrap: str, topic: str, qty: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id="volatile-app")
    await producer.start()
    sent = []
    try:
        for _ in range(2):
            oid = str(uuid.uuid4())
            fields = [("id", oid), ("at", int(time.time() * 1000)), ("nonce", secrets.token_hex(16)),
                      ("qty", qty)]
            random.shuffle(fields)  # JSON object keys in another order in each run
            try:
                md = await producer.send_and_wait(
                    topic, json.dumps(dict(fields)).encode(), key=oid.encode(), partition=0,
                    headers=[("trace-id", secrets.token_hex(16).encode())])
                print("produced", md.offset)
                sent.append(oid)
            except KafkaError as exc:
                print("produce failed", type(exc).__name__)
    finally:
        await producer.stop()
    if not sent:
        return
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="volatile-app",
                                client_id="volatile-app", auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    got: list = []
    try:
        deadline = time.monotonic() + 30
        while len(got) < len(sent) and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                got += messages
    finally:
        await consumer.stop()
    print("consumed", [m.key.decode() for m in got] == sent,
          [json.loads(m.value)["id"] for m in got] == sent)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 2))

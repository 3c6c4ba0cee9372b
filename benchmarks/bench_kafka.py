"""Kafka codec decode throughput beside kafka-python's protocol classes, same bytes.

Two messages, built with our encoder and checked to decode the same in kafka-python:
a Produce v9 request (one batch of 200 records with headers) and a Fetch v12 response
(4 partitions x 5 batches of 100 records). Timed, in one run:

* ``trproxy``: ``KafkaCodec`` decoding the frame (header, body, record batches, records);
* ``kafka-python body``: ``ProduceRequest/FetchResponse.decode`` (its compiled,
  JSON-schema-driven decoder), which leaves the records as bytes;
* ``kafka-python body+records``: the same plus ``MemoryRecords`` iterating every record's
  key, value and headers — the same work trproxy does.

Printed as MB/s and as throughput ratios (trproxy MB/s / kafka-python MB/s: above 1
means trproxy is faster).
Run: ``python -m benchmarks.bench_kafka`` (or ``main()``).
"""

from __future__ import annotations

import time

from trproxy.protocols.base import Direction
from trproxy.protocols.kafka.codec import KafkaCodec, KafkaRequest, KafkaResponse


def _batch(base: int, n: int) -> dict:
    return {"base_offset": base, "partition_leader_epoch": 0, "compression": "none",
            "timestamp_type": "create", "transactional": False, "control": False,
            "last_offset_delta": n - 1, "base_timestamp": 1700000000000,
            "max_timestamp": 1700000000000 + n, "producer_id": -1, "producer_epoch": -1,
            "base_sequence": -1,
            "records": [{"timestamp_delta": i, "offset_delta": i, "key": f"key-{base + i}",
                         "value": f"value {base + i} " + "x" * 80,
                         "headers": [{"key": "trace", "value": {"hex": "0102030405"}}]}
                        for i in range(n)]}


def produce_frame() -> bytes:
    body = {"transactional_id": None, "acks": -1, "timeout_ms": 30000, "topic_data": [
        {"name": "orders", "partition_data": [{"index": 0, "records": [_batch(0, 200)]}]}]}
    return KafkaCodec().encode(KafkaRequest(0, 9, 42, "bench", body))


def fetch_frame() -> bytes:
    body = {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": [
        {"topic": "orders", "partitions": [
            {"partition_index": p, "error_code": 0, "high_watermark": 500,
             "last_stable_offset": 500, "log_start_offset": 0, "aborted_transactions": None,
             "preferred_read_replica": -1,
             "records": [_batch(b * 100, 100) for b in range(5)]} for p in range(4)]}]}
    return KafkaCodec().encode(KafkaResponse(1, 12, 43, body))


def ours_request(frame: bytes) -> int:
    codec = KafkaCodec()
    codec.feed(Direction.CLIENT, frame)
    m = codec.next_message()
    return sum(len(b["records"]) for t in m.body["topic_data"] for p in t["partition_data"]
               for b in p["records"])


def ours_response(frame: bytes) -> int:
    codec = KafkaCodec()
    codec.in_flight[43] = (1, 12)
    codec.feed(Direction.SERVER, frame)
    m = codec.next_message()
    return sum(len(b["records"]) for t in m.body["responses"] for p in t["partitions"]
               for b in p["records"])


def _iterate(records: bytes) -> int:
    from kafka.record import MemoryRecords

    n = 0
    for batch in MemoryRecords(records):
        for rec in batch:
            _ = (rec.key, rec.value, rec.headers)
            n += 1
    return n


def kp_produce(frame: bytes, records: bool) -> int:
    from kafka.protocol.producer import ProduceRequest

    m = ProduceRequest.decode(frame[4:], version=9, header=True)
    if not records:
        return 0
    return sum(_iterate(bytes(p.records)) for t in m.topic_data for p in t.partition_data)


def kp_fetch(frame: bytes, records: bool) -> int:
    from kafka.protocol.consumer import FetchResponse

    m = FetchResponse.decode(frame[4:], version=12, header=True)
    if not records:
        return 0
    return sum(_iterate(bytes(p.records)) for t in m.responses for p in t.partitions)


def _rate(fn, frame: bytes, seconds: float = 1.0) -> float:
    fn(frame)  # warm up (kafka-python compiles its decoders on first use)
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn(frame)
        n += 1
    return n * len(frame) / elapsed / 1e6


def main(seconds: float = 1.0) -> dict:
    produce, fetch = produce_frame(), fetch_frame()
    # same bytes, same meaning: both decoders see every record
    assert ours_request(produce) == kp_produce(produce, True) == 200
    assert ours_response(fetch) == kp_fetch(fetch, True) == 2000
    results = {}
    for name, frame, ours, theirs in (
            ("Produce v9 request", produce, ours_request, kp_produce),
            ("Fetch v12 response", fetch, ours_response, kp_fetch)):
        r_ours = _rate(ours, frame, seconds)
        r_body = _rate(lambda f, t=theirs: t(f, False), frame, seconds)
        r_full = _rate(lambda f, t=theirs: t(f, True), frame, seconds)
        results[name] = (r_ours, r_body, r_full)
        print(f"{name} ({len(frame)} bytes): trproxy {r_ours:.1f} MB/s | kafka-python body "
              f"{r_body:.1f} MB/s, body+records {r_full:.1f} MB/s")
        print(f"  ratio trproxy/kafka-python throughput: vs body-only {r_ours / r_body:.2f}x, "
              f"vs body+records {r_ours / r_full:.2f}x")
    return results


if __name__ == "__main__":
    main()

"""Clients that retry the way their libraries document, for fault injection e2e tests.

``python retrying_clients.py PROTOCOL HOST:PORT``: does its work, retrying on the failure
its dependency is known for, then prints the result on stdout and on stderr one line
``attempts: N`` (how many tries the retried operation took).

* postgres: psycopg, a transaction retried on SerializationFailure (40001);
* redis: redis-py with ``Retry`` on ``BusyLoadingError`` (``-LOADING``);
* kafka: aiokafka's producer (its own retries on NOT_LEADER_OR_FOLLOWER), one message;
* http: requests with urllib3's ``Retry`` on 503, honouring ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import sys


def postgres(host: str, port: int) -> tuple[str, int]:
    import psycopg

    attempts = 0
    with psycopg.connect(host=host, port=port, user="trproxy", password="trproxy",
                         dbname="trproxy") as conn:
        while True:
            attempts += 1
            try:
                with conn.transaction():
                    row = conn.execute("SELECT 40 + 2 AS answer").fetchone()
                break
            except psycopg.errors.SerializationFailure:
                continue
    assert row is not None
    return str(row[0]), attempts


def redis(host: str, port: int) -> tuple[str, int]:
    import redis as redis_py
    from redis.backoff import NoBackoff
    from redis.exceptions import BusyLoadingError
    from redis.retry import Retry

    class Counting(Retry):
        """redis-py's Retry, counting the failures it retried."""

        failures = 0

        def call_with_retry(self, do, fail, *args, **kwargs):  # type: ignore[no-untyped-def]
            def failed(error: Exception, *more) -> None:  # type: ignore[no-untyped-def]
                Counting.failures += 1
                fail(error, *more)
            return super().call_with_retry(do, failed, *args, **kwargs)

    client = redis_py.Redis(host=host, port=port, retry=Counting(NoBackoff(), 3),
                            retry_on_error=[BusyLoadingError], decode_responses=True)
    client.set("fault:key", "value-1")
    value = client.get("fault:key")
    return str(value), Counting.failures + 1


def kafka(host: str, port: int) -> tuple[str, int]:
    from aiokafka import AIOKafkaProducer

    async def produce() -> str:
        producer = AIOKafkaProducer(bootstrap_servers=f"{host}:{port}", client_id="trp-fault",
                                    retry_backoff_ms=50)
        await producer.start()
        try:
            md = await producer.send_and_wait("faults", b"v", key=b"k", partition=0)
        finally:
            await producer.stop()
        return f"{md.topic} {md.partition} {md.offset}"

    return asyncio.run(produce()), 0  # aiokafka retries inside: the report shows the fault


def http(host: str, port: int) -> tuple[str, int]:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(total=3, status_forcelist=[503], backoff_factor=0,
                  respect_retry_after_header=True)
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    response = session.get(f"http://{host}:{port}/answer", timeout=10)
    history = response.raw.retries.history if response.raw.retries else ()
    return f"{response.status_code} {response.text.strip()}", len(history) + 1


def main() -> None:
    protocol, address = sys.argv[1:3]
    host, port = address.rsplit(":", 1)
    result, attempts = globals()[protocol](host, int(port))
    print(result)
    print(f"attempts: {attempts}", file=sys.stderr)


if __name__ == "__main__":
    main()

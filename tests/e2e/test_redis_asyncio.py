"""redis-py's asyncio client through the real CLI with the eBPF redirect, RESP2 and RESP3.

``trproxy record`` runs the client against a real redis-server, the server is stopped,
``trproxy replay`` runs it again, and both runs must print the same thing: a pipeline,
a MULTI/EXEC transaction (``pipeline(transaction=True)``), concurrent GETs spread over
the client's connection pool, a counter INCR'd and read three times, and pub/sub (a
subscription that receives two messages published by another client).
"""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

from tests.support.proc import run_trproxy

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)


CLIENT = r'''
import asyncio, sys, time
import redis.asyncio as redis

port, protocol = int(sys.argv[1]), int(sys.argv[2])


async def messages(pubsub, count, timeout=5.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        message = await pubsub.get_message(timeout=0.2)
        if message is not None:
            got.append(message)
    return got


async def main():
    r = redis.Redis(host="127.0.0.1", port=port, protocol=protocol, socket_timeout=10)
    other = redis.Redis(host="127.0.0.1", port=port, protocol=protocol, socket_timeout=10)
    print("ping", await r.ping())
    async with r.pipeline(transaction=False) as p:  # one write, 20 replies
        for i in range(10):
            p.set(f"k{i}", i * i)
        for i in range(10):
            p.get(f"k{i}")
        print("pipeline", await p.execute())
    async with r.pipeline(transaction=True) as p:  # MULTI ... EXEC
        p.incr("tx")
        p.rpush("list", "a", "b")
        p.lrange("list", 0, -1)
        p.hset("h", mapping={"f": "1", "g": "2"})
        p.hgetall("h")
        print("transaction", await p.execute())
    # concurrent commands: the pool opens several connections
    print("gather", await asyncio.gather(*(r.get(f"k{i}") for i in range(10))))
    for _ in range(3):
        print("counter", await r.incr("counter"), await r.get("counter"))

    pubsub = r.pubsub()
    await pubsub.subscribe("news")
    print("subscribed", await messages(pubsub, 1))
    print("published", await other.publish("news", "first"), await other.publish("news", "second"))
    print("messages", await messages(pubsub, 2))
    await pubsub.unsubscribe("news")
    print("unsubscribed", await messages(pubsub, 1))
    await pubsub.aclose()
    print("after", await r.get("counter"), await other.hgetall("h"))
    await r.aclose()
    await other.aclose()


asyncio.run(main())
'''


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_asyncio_replays_what_it_recorded(tmp_path, redis_server, protocol: int) -> None:
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(CLIENT))
    command = [sys.executable, str(script), str(redis_server.port), str(protocol)]
    rec = tmp_path / "rec"
    recorded = run_trproxy("record", "--dir", str(rec), "--", *command, timeout=60)
    redis_server.stop()
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    lines = recorded.stdout.splitlines()
    assert lines[0] == "ping True", recorded.stderr
    assert lines[1] == "pipeline " + repr([True] * 10 + [str(i * i).encode() for i in range(10)])
    assert lines[2].startswith("transaction [1, 2, [b'a', b'b'], 2, {")
    assert lines[4:7] == ["counter 1 b'1'", "counter 2 b'2'", "counter 3 b'3'"]
    assert lines[7] == "subscribed [{'type': 'subscribe', 'pattern': None, 'channel': b'news', 'data': 1}]"
    assert lines[8] == "published 1 1"
    assert lines[9] == ("messages [{'type': 'message', 'pattern': None, 'channel': b'news', 'data': b'first'}, "
                        "{'type': 'message', 'pattern': None, 'channel': b'news', 'data': b'second'}]")
    assert lines[10] == "unsubscribed [{'type': 'unsubscribe', 'pattern': None, 'channel': b'news', 'data': 0}]"
    assert lines[11] == "after b'3' {b'f': b'1', b'g': b'2'}" and len(lines) == 12

    replayed = run_trproxy("replay", "--dir", str(rec), "--", *command, timeout=60)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert replayed.stdout == recorded.stdout
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr
    mocks = (rec / "test-set-0" / "mocks.yaml").read_text()
    assert "kind: redis" in mocks and "kind: generic" not in mocks
    assert "simple: QUEUED" in mocks
    if protocol == 3:
        assert "request: [HELLO, '3']" in mocks and "push: [message, news, first]" in mocks

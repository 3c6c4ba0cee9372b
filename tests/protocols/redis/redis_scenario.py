"""A redis-py session that exercises what the Redis dialect must handle; returns its results.

Used by the live codec tests (through a tee relay, then a replay server) and by the
end-to-end tests (as a program run under ``trproxy record`` / ``trproxy replay``):
``python redis_scenario.py PORT PROTOCOL`` prints one ``repr`` per result.
"""

from __future__ import annotations

import sys
import threading
import time

import redis


def collect(pubsub, count: int, timeout: float = 5.0) -> list:  # type: ignore[no-untyped-def]
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message is not None:
            got.append(message)
    return got


def scenario(port: int, protocol: int) -> list:
    """What an application might do; returns everything redis-py handed back."""
    out: list = []
    r = redis.Redis(host="127.0.0.1", port=port, protocol=protocol, socket_timeout=10)
    other = redis.Redis(host="127.0.0.1", port=port, protocol=protocol, socket_timeout=10)
    out += [r.ping(), r.set("greeting", "hello"), r.get("greeting"), r.get("missing"),
            r.incr("counter"), r.incr("counter")]
    with r.pipeline(transaction=False) as p:  # pipelining: 60 requests in one write
        for i in range(30):
            p.set(f"k{i}", i)
        for i in range(30):
            p.get(f"k{i}")
        out.append(p.execute())
    with r.pipeline(transaction=True) as p:  # MULTI ... EXEC: +QUEUED replies
        p.incr("counter")
        p.rpush("list", "a", "b")
        p.lrange("list", 0, -1)
        p.hset("h", mapping={"f": "1", "g": "2"})
        p.hgetall("h")
        out.append(p.execute())
    out += [r.zadd("z", {"a": 1.5, "b": 2}), r.zrange("z", 0, -1, withscores=True),
            r.zscore("z", "a"), sorted(r.smembers("nothing")), r.hgetall("h"),
            r.execute_command("HELLO") if protocol == 3 else None]
    big = bytes(range(256)) * 8192  # 2 MiB
    out += [r.set("big", big), r.get("big") == big]
    out += [r.xadd("race", {"rider": "Castilla", "speed": "30.2"}, id="1-1"),
            r.xadd("race", {"rider": "Norem", "speed": "28.8"}, id="2-1"),
            r.xrange("race"), r.xgroup_create("race", "group", id="0"),
            r.xreadgroup("group", "c1", {"race": ">"}, count=10)]
    out.append(r.blpop(["empty"], timeout=0.1))  # a blocking command that times out

    def push_later() -> None:
        time.sleep(0.3)
        other.rpush("jobs", "job-1")

    pusher = threading.Thread(target=push_later)
    pusher.start()
    out.append(r.blpop(["jobs"], timeout=5))  # blocks until the other connection pushes
    pusher.join()

    pubsub = r.pubsub()
    pubsub.subscribe("news")
    pubsub.psubscribe("n*")
    out.append(collect(pubsub, 2))
    out.append(other.publish("news", "hi"))
    out.append(collect(pubsub, 2))
    pubsub.unsubscribe()
    pubsub.punsubscribe()
    out.append(collect(pubsub, 2))
    pubsub.close()

    conn = r.connection_pool.get_connection()  # CLIENT REPLY through the low-level API
    for args in (("CLIENT", "REPLY", "OFF"), ("SET", "silent", "1"), ("CLIENT", "REPLY", "ON")):
        conn.send_command(*args)
    out.append(conn.read_response())
    for args in (("CLIENT", "REPLY", "SKIP"), ("INCR", "counter"), ("GET", "silent")):
        conn.send_command(*args)
    out.append(conn.read_response())
    r.connection_pool.release(conn)
    out.append(r.get("counter"))
    r.close()
    other.close()
    return out


if __name__ == "__main__":
    for item in scenario(int(sys.argv[1]), int(sys.argv[2])):
        print(repr(item))

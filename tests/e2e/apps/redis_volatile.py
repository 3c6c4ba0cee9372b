"""A redis-py client whose requests carry values it generates, for
``tests/e2e/test_redis_volatile.py``: ``python -m tests.e2e.apps.redis_volatile PORT
[PREFIX [PAYLOAD]]``.

* ``Lock`` acquired and released twice: ``SET name <uuid1 hex> NX PX 10000``, ``GET name``
  (``owned()`` compares the reply with its own token) and the release script
  (``EVALSHA <sha> 1 name <token>``);
* a session stored under ``<PREFIX>:<uuid4>`` (default ``session``) holding a random CSRF
  token and the time, then read back: the reply must carry the live values.

``python -m tests.e2e.apps.redis_volatile PORT counter [PREFIX]`` stores ``pending`` under
``<PREFIX>:<6 random digits>`` (default ``order``) and reads it back.

``python -m tests.e2e.apps.redis_volatile PORT pin`` stores a random 4-digit job number
(``SET job <n>``: too short for any detector; config.yaml's ``redis.volatile_arguments``
names it) and reads it back.

``python -m tests.e2e.apps.redis_volatile PORT tags [EXTRA]`` sends a Python ``set`` with
``SADD``, ``SMISMEMBER`` and ``SREM``: its iteration order, and so the order of the
arguments, changes with the process's string hash seed (``PYTHONHASHSEED``). ``EXTRA`` adds
a member, for the negative test.

It prints only what does not change between runs (booleans, the payload), so a replay
prints the same.
"""

from __future__ import annotations

import json
import random
import secrets
import sys
import time
import uuid

import redis


def main(port: int, prefix: str, payload: str) -> None:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
    for _ in range(2):
        lock = client.lock("resource", timeout=10)
        acquired = lock.acquire(blocking=False)
        print("lock", acquired, lock.owned(), lock.locked())
        lock.release()
        print("released", lock.locked())
    sid, csrf, now = str(uuid.uuid4()), secrets.token_hex(16), int(time.time())
    key = f"{prefix}:{sid}"
    client.set(key, json.dumps({"csrf": csrf, "at": now, "payload": payload}), ex=60)
    stored = json.loads(client.get(key) or b"{}")
    print("session", stored.get("csrf") == csrf, abs(stored.get("at", 0) - now) < 60,
          stored.get("payload"))
    print("ttl", 0 < client.ttl(key) <= 60)
    client.delete(key)


def pin(port: int) -> None:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
    number = str(random.randint(1000, 9999))
    client.set("job", number)
    print("job", client.get("job") == number.encode())


def counter(port: int, prefix: str) -> None:
    """``SET <prefix>:<6 random digits> pending``, then ``GET`` it: no detector calls a
    6-digit number generated; the similarity fallback serves (and maps) it."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
    key = f"{prefix}:{random.randint(100000, 999999)}"
    client.set(key, "pending")
    print("order", client.get(key) == b"pending")


TAGS = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"}


def tags(port: int, extra: list[str]) -> None:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
    members = TAGS | set(extra)
    print("added", client.sadd("tags", *members))
    print("member", client.smismember("tags", *{"alpha", "eta", "omega"}).count(1))
    print("removed", client.srem("tags", *{"beta", "gamma"}))
    print("left", sorted(m.decode() for m in client.smembers("tags")))
    client.delete("tags")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[1:2] == ["tags"]:
        tags(int(args[0]), args[2:])
        sys.exit()
    if args[1:] == ["pin"]:
        pin(int(args[0]))
        sys.exit()
    if args[1:2] == ["counter"]:
        counter(int(args[0]), args[2] if len(args) > 2 else "order")
        sys.exit()
    main(int(args[0]), args[1] if len(args) > 1 else "session", args[2] if len(args) > 2 else "hello")

"""An app that keeps calling Redis: a new redis-py connection per call, ``INCR counter``.

``python redis_loop.py PORT OUT [COUNT]``: COUNT calls (0, the default: until killed), 0.1 s
apart. OUT gets ``cgroup <path in the cgroup2 mount>`` first, then one line per call:
``ok <reply>`` (an error reply too: a replay miss still answered) or ``fail <error>`` when
the connection could not be made.
"""

from __future__ import annotations

import sys
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def main(port: int, out: str, count: int) -> None:
    with open(out, "a", buffering=1) as f, open("/proc/self/cgroup") as cg:
        f.write("cgroup " + next(line[3:].strip() for line in cg if line.startswith("0::")) + "\n")
        n = 0
        while count == 0 or n < count:
            n += 1
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, retry=Retry(NoBackoff(), 0))
            try:
                f.write(f"ok {client.incr('counter')}\n")
            except redis.ConnectionError as exc:
                f.write(f"fail {exc}\n")
            except redis.RedisError as exc:
                f.write(f"ok {exc}\n")
            finally:
                client.close()
            time.sleep(0.1)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)

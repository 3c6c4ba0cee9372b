"""An app configured with host names (argv: redis port, postgres DSN with host pg.internal):
it resolves them with getaddrinfo (glibc: /etc/hosts, then DNS), then talks to Redis
(redis-py) and Postgres (psycopg) by name, and prints what it saw."""

import socket
import sys

import psycopg
import redis


def addresses(name: str) -> str:
    try:
        infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"error {exc.errno}"
    return " ".join(sorted({i[4][0] for i in infos}))


for name in ("redis.internal", "pg.internal", "www.internal", "localhost", "cache.local",
             "missing.internal"):
    print(name, addresses(name))
r = redis.Redis(host="redis.internal", port=int(sys.argv[1]))
r.set("greeting", "hello from a name")
print(r.get("greeting"))
with psycopg.connect(sys.argv[2]) as conn:
    print(conn.execute("select 40 + 2, current_database()").fetchone())

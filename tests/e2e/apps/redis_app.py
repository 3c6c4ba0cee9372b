"""A small HTTP app whose start-up and whose handlers call Redis (redis-py, one connection).

``python redis_app.py PORT`` with ``REDIS_PORT`` (Redis on 127.0.0.1). At start-up, before
it listens, it reads ``app:greeting`` and sets ``app:started``: start-up calls, made
before any request. Endpoints::

    GET /visit/NAME   INCR visits:NAME -> {"greeting", "name", "visits"}
    GET /greeting     GET app:greeting -> {"greeting"}

A start-up failure (Redis unreachable, or a replay with no recording for it) exits with
status 3 before listening.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

import redis


def main(port: int) -> None:
    try:
        client = redis.Redis(host="127.0.0.1", port=int(os.environ["REDIS_PORT"]), decode_responses=True,
                             socket_timeout=10)
        greeting = client.get("app:greeting")
        client.set("app:started", "yes")
    except redis.RedisError as exc:
        print(f"redis_app: start-up failed: {exc}", file=sys.stderr, flush=True)
        sys.exit(3)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            parts = self.path.strip("/").split("/")
            if parts[0] == "visit" and len(parts) == 2:
                answer = {"greeting": greeting, "name": parts[1], "visits": client.incr(f"visits:{parts[1]}")}
            elif parts == ["greeting"]:
                answer = {"greeting": client.get("app:greeting")}
            else:
                answer = {"error": "not found"}
            body = json.dumps(answer).encode()
            self.send_response(404 if "error" in answer else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]))

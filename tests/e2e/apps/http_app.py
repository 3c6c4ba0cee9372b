"""Small stdlib HTTP apps for the inbound (``--app-port``) tests, in the shapes real servers take.

``python http_app.py MODE ...``:

* ``serve PORT [PORT ...]``: one process listening on every PORT (a thread each).
* ``prefork PORT WORKERS``: the parent binds and listens, then forks WORKERS processes
  that all accept on the inherited socket (gunicorn's model); the parent only supervises.
* ``reloader PORT``: the parent binds nothing; it spawns ``serve PORT`` as a child
  process and waits for it (uvicorn ``--reload``'s model).

``GET /self`` makes the app call itself (``GET /inner`` on its own port, as a health
check or an internal API call would) and answers that answer under ``"inner"``.

Every answer is JSON ``{"path", "port", "role", "host"}``: ``port`` is the port the app
was *configured* with (not the shadow port the redirect gave it), ``role`` says which kind
of process answered (``server``, ``worker``, ``child``), ``host`` what the client sent in
``Host``, minus the port. Answers never depend on pids or time, so replays compare equal.

``HOST`` (default ``127.0.0.1``) is the address to bind. ``PID_FILE``: every process
appends ``role pid`` to it when it starts serving (the tests check they are gone
afterwards). ``ORPHAN_WORKERS=1``: on SIGTERM the pre-fork parent exits without stopping
its workers, which ignore SIGTERM (an app that leaves processes behind).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer


def _note(role: str) -> None:
    if path := os.environ.get("PID_FILE"):
        with open(path, "a") as out:
            out.write(f"{role} {os.getpid()}\n")


def handler(port: int, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like real servers

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received = self.rfile.read(length).decode() if length else ""
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
            answer = {"path": self.path, "port": port, "role": role, "host": host, "received": received}
            if self.path == "/self":
                answer["inner"] = _call_self(port)
            body = json.dumps(answer).encode()
            self.send_response(404 if self.path.startswith("/missing") else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    return Handler


def _call_self(port: int) -> dict:
    host = os.environ.get("HOST", "127.0.0.1")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/inner"
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def serve(ports: list[int], role: str = "server") -> None:
    host = os.environ.get("HOST", "127.0.0.1")
    servers = []
    for port in ports:
        cls = type("Server", (ThreadingHTTPServer,), {"address_family": _family(host)})
        servers.append(cls((host, port), handler(port, role)))
    _note(role)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()


def prefork(port: int, workers: int) -> None:
    host = os.environ.get("HOST", "127.0.0.1")
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    orphan = os.environ.get("ORPHAN_WORKERS") == "1"
    pids = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # a worker: accept on the parent's socket
            if orphan:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            else:
                signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
            server = HTTPServer((host, port), handler(port, "worker"), bind_and_activate=False)
            server.socket.close()
            server.socket = sock
            _note("worker")
            server.serve_forever()
            os._exit(0)
        pids.append(pid)
    sock.close()  # the parent never accepts
    _note("parent")

    def stop(signum: int, frame: object) -> None:
        if not orphan:
            for pid in pids:
                os.kill(pid, signal.SIGTERM)
            for pid in pids:
                os.waitpid(pid, 0)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        signal.pause()


def reloader(port: int) -> None:
    _note("reloader")
    child = subprocess.Popen([sys.executable, __file__, "serve-child", str(port)])

    def stop(signum: int, frame: object) -> None:
        child.terminate()  # the wait below returns when the child has gone

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = child.wait()
    sys.exit(0 if status == -signal.SIGTERM else status)


if __name__ == "__main__":
    mode, args = sys.argv[1], [int(a) for a in sys.argv[2:]]
    if mode == "serve":
        serve(args)
    elif mode == "serve-child":
        serve(args, role="child")
    elif mode == "prefork":
        prefork(args[0], args[1])
    elif mode == "reloader":
        reloader(args[0])
    else:
        raise SystemExit(f"unknown mode {mode}")

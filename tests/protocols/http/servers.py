"""Real HTTP servers on 127.0.0.1 for the HTTP dialect's tests.

* ``H1Server``: the standard library's ``http.server`` (HTTP/1.1, keep-alive) with
  routes covering what the recorder must handle: JSON, text, two Set-Cookie, chunked
  with trailers, gzip/deflate/br/zstd bodies, HEAD, 204, 304, 103 Early Hints,
  ``Expect: 100-continue`` (http.server answers it itself), chunked uploads, a body
  delimited by close, a WebSocket upgrade, large bodies.
* ``H2Server``: a small server on the ``h2`` library (cleartext, prior knowledge;
  optionally TLS with ALPN) with the same kind of routes, honouring flow control.

Both run in daemon threads and are stopped with ``close()``.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import ssl
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import brotli
import h2.config
import h2.connection
import h2.events
import zstandard

from trproxy.protocols.http.render import ws_accept

JSON_DOC = {"id": 1, "name": "widget", "tags": ["a", "b"], "price": 9.5, "active": True}
JSON_BYTES = json.dumps(JSON_DOC).encode()
SECRET_DOC = {"access_token": "tok-123", "user": "ann", "nested": {"password": "hunter2"}}

ENCODERS = {
    "gzip": lambda b: gzip.compress(b, mtime=0),
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
}


def pattern(n: int) -> bytes:
    """``n`` deterministic bytes, not text."""
    block = bytes(range(256))
    return (block * (n // 256 + 1))[:n]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]] = (),
              ctype: str = "application/json") -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for name, value in headers:
            self.send_header(name, value)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        if path == "/json":
            self._send(200, JSON_BYTES)
        elif path == "/text":
            self._send(200, b"hello, world\n", ctype="text/plain; charset=utf-8")
        elif path == "/cookies":
            self._send(200, b"ok", [("Set-Cookie", "session=abc123; Path=/; HttpOnly"),
                                    ("Set-Cookie", "theme=dark; Max-Age=3600")], "text/plain")
        elif path == "/secret":
            self._send(200, json.dumps(SECRET_DOC).encode())
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "X-Checksum")
            self.end_headers()
            for part in (b"first ", b"second ", b"third"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\nX-Checksum: 42\r\n\r\n")
        elif path.lstrip("/") in ENCODERS:
            coding = path.lstrip("/")
            self._send(200, ENCODERS[coding](JSON_BYTES),
                       [("Content-Encoding", coding), ("Vary", "Accept-Encoding")])
        elif path == "/binary":
            self._send(200, pattern(1024), ctype="application/octet-stream")
        elif path == "/big":
            self._send(200, pattern(int(query.get("n", ["100000"])[0])),
                       ctype="application/octet-stream")
        elif path == "/nocontent":
            self._send(204, b"", ctype="")
        elif path == "/notmodified":
            self._send(304, b"", [("ETag", '"v1"')], ctype="")
        elif path == "/early":
            self.wfile.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            self._send(200, b"<html>hi</html>", ctype="text/html")
        elif path == "/close":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Connection: close\r\n\r\ndelimited by close\n")
            self.close_connection = True
        elif path == "/ws":
            key = self.headers["Sec-WebSocket-Key"]
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", ws_accept(key))
            self.end_headers()
            self.wfile.write(b"\x81\x05hello")  # one text frame, then close
            self.wfile.flush()
            self.close_connection = True
        else:
            self._send(404, b"not found\n", ctype="text/plain")

    def do_POST(self) -> None:
        body = self._read_body()
        try:
            received = json.loads(body)
        except ValueError:
            received = body.decode("latin-1")
        self._send(200, json.dumps({"method": self.command, "path": self.path,
                                    "received": received}).encode())

    do_PUT = do_POST


class H1Server:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.httpd = ThreadingHTTPServer((host, 0), _Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> H1Server:
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- HTTP/2 --------------------------------------------------------------------------


def h2_route(method: bytes, path: bytes, body: bytes) -> tuple[list, bytes, list | None, list]:
    """(headers, body, trailers, informational header blocks) for an HTTP/2 request."""
    url = urlsplit(path.decode())
    query = parse_qs(url.query)
    json_h = [(b"content-type", b"application/json")]
    if url.path == "/json":
        return [(b":status", b"200"), *json_h], JSON_BYTES, None, []
    if url.path == "/echo":
        try:
            received = json.loads(body)
        except ValueError:
            received = body.decode("latin-1")
        out = json.dumps({"method": method.decode(), "received": received}).encode()
        return [(b":status", b"200"), *json_h], out, None, []
    if url.path == "/cookies":
        return [(b":status", b"200"), (b"set-cookie", b"session=abc123; Path=/"),
                (b"set-cookie", b"theme=dark"), (b"content-type", b"text/plain")], b"ok", None, []
    if url.path == "/gzip":
        return [(b":status", b"200"), *json_h, (b"content-encoding", b"gzip")], \
            ENCODERS["gzip"](JSON_BYTES), None, []
    if url.path == "/big":
        n = int(query.get("n", ["200000"])[0])
        return [(b":status", b"200"), (b"content-type", b"application/octet-stream")], \
            pattern(n), None, []
    if url.path == "/trailers":
        return [(b":status", b"200"), (b"content-type", b"text/plain")], b"with trailers", \
            [(b"x-checksum", b"42")], []
    if url.path == "/early":
        return [(b":status", b"200"), (b"content-type", b"text/html")], b"<html>hi</html>", None, \
            [[(b":status", b"103"), (b"link", b"</style.css>; rel=preload")]]
    if url.path == "/nocontent":
        return [(b":status", b"204")], b"", None, []
    return [(b":status", b"404"), (b"content-type", b"text/plain")], b"not found\n", None, []


class _H2Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.requests: dict[int, dict] = {}
        self.pending: dict[int, list] = {}  # sid -> [body, offset, trailers]

    def run(self) -> None:
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        with contextlib.suppress(OSError):
            while data := self.sock.recv(65536):
                for event in self.conn.receive_data(data):
                    self.event(event)
                self.flush()
                self.sock.sendall(self.conn.data_to_send())
        self.sock.close()

    def event(self, event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self.requests[event.stream_id] = {"headers": dict(event.headers), "body": b""}
        elif isinstance(event, h2.events.DataReceived):
            self.requests[event.stream_id]["body"] += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            req = self.requests.pop(event.stream_id)
            headers, body, trailers, infos = h2_route(
                req["headers"][b":method"], req["headers"][b":path"], req["body"])
            for info in infos:
                self.conn.send_headers(event.stream_id, info)
            if not body and not trailers:
                self.conn.send_headers(event.stream_id, headers, end_stream=True)
            else:
                if not trailers:
                    headers = [*headers, (b"content-length", b"%d" % len(body))]
                self.conn.send_headers(event.stream_id, headers)
                self.pending[event.stream_id] = [body, 0, trailers]
        elif isinstance(event, h2.events.StreamReset):
            self.pending.pop(event.stream_id, None)

    def flush(self) -> None:
        for sid in list(self.pending):
            body, offset, trailers = self.pending[sid]
            while offset < len(body):
                n = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size,
                        len(body) - offset)
                if n <= 0:
                    break
                self.conn.send_data(sid, body[offset:offset + n])
                offset += n
            self.pending[sid][1] = offset
            if offset >= len(body):
                if trailers:
                    self.conn.send_headers(sid, trailers, end_stream=True)
                else:
                    self.conn.end_stream(sid)
                del self.pending[sid]


class H2Server:
    """HTTP/2 server; with ``ssl_context`` it speaks TLS (set ALPN ``h2`` on it)."""

    def __init__(self, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None) -> None:
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self.ssl_context = ssl_context
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> H2Server:
        self.thread.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            if self.ssl_context is not None:
                try:
                    sock = self.ssl_context.wrap_socket(sock, server_side=True)
                except (OSError, ssl.SSLError):
                    sock.close()
                    continue
            threading.Thread(target=_H2Conn(sock).run, daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self.listener.close()

"""HTTP/1.1 parse throughput of trproxy's HTTP recorder beside h11, on the same bytes.

Corpora are keep-alive conversations (request, response, request, ...) fed in the
order a proxy sees them, in 64 KiB pieces per direction:

* ``small-json``: GET with browser-like headers, 1 KiB JSON response (Content-Length);
* ``chunked-text``: GET, 16 KiB text response in 1 KiB chunks;
* ``post-json``: POST with a 4 KiB JSON body, small JSON response;
* ``large-binary``: GET, 1 MiB binary response.

Contenders, each must find every exchange or the run fails:

* ``recorder``: ``HttpRecorder`` producing ``Interaction``s (parsing with mitmproxy's
  head reader and h11's body readers, pairing, readable conversion: JSON parsing,
  redaction, base64) — what record mode costs;
* ``parser``: trproxy's ``H1Parser`` alone on both directions (framing only);
* ``h11``: a server-role ``h11.Connection`` parsing requests and a client-role one
  parsing the responses (it must be told each request, so it also encodes them).

Numbers are MB/s of wire bytes and exchanges/s, best of several rounds, and the
ratio recorder/h11 and parser/h11. Run: ``.venv/bin/python benchmarks/bench_http.py``
(``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h11

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trproxy.protocols.base import NEED_DATA, Direction  # noqa: E402
from trproxy.protocols.http import HttpRecorder  # noqa: E402
from trproxy.protocols.http.h1 import End, H1Parser, Head  # noqa: E402

CHUNK = 65536
Conversation = list[tuple[bytes, bytes]]  # (request bytes, response bytes) per exchange

REQUEST_HEADERS = (
    b"Host: api.example.test\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) bench/1.0\r\n"
    b"Accept: application/json, text/plain, */*\r\nAccept-Language: en-US,en;q=0.9\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n"
    b"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.ZRrHA1JJJW8opsbCGfG_HACGpVUMN_a9IV7pAx_Zmeo\r\n"
)


def _json_doc(size: int) -> bytes:
    items = [{"id": i, "name": f"item-{i}", "price": i * 1.5, "tags": ["a", "b"]} for i in range(size // 60)]
    return json.dumps({"items": items, "total": len(items)}).encode()


def _response(body: bytes, ctype: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nServer: bench\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
            b"Content-Type: " + ctype + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def small_json(n: int) -> Conversation:
    req = b"GET /v1/items?page=2&limit=20 HTTP/1.1\r\n" + REQUEST_HEADERS + b"\r\n"
    return [(req, _response(_json_doc(1024), b"application/json"))] * n


def chunked_text(n: int) -> Conversation:
    req = b"GET /feed.txt HTTP/1.1\r\n" + REQUEST_HEADERS + b"\r\n"
    chunk = b"lorem ipsum dolor sit amet " * 38 + b"\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(16)) + b"0\r\n\r\n"
    resp = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    return [(req, resp)] * n


def post_json(n: int) -> Conversation:
    body = _json_doc(4096)
    req = (b"POST /v1/orders HTTP/1.1\r\n" + REQUEST_HEADERS + b"Content-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return [(req, _response(b'{"ok": true, "id": 42}', b"application/json"))] * n


def large_binary(n: int) -> Conversation:
    req = b"GET /blob.bin HTTP/1.1\r\n" + REQUEST_HEADERS + b"\r\n"
    return [(req, _response(bytes(range(256)) * 4096, b"application/octet-stream"))] * n


def _pieces(data: bytes) -> list[bytes]:
    return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]


# -- contenders -----------------------------------------------------------------------------


def run_recorder(conv: Conversation) -> int:
    rec = HttpRecorder()
    found = 0
    for req, resp in conv:
        for piece in _pieces(req):
            found += len(rec.feed(Direction.CLIENT, piece))
        for piece in _pieces(resp):
            found += len(rec.feed(Direction.SERVER, piece))
    return found


def run_parser(conv: Conversation) -> int:
    requests, responses = H1Parser(True), H1Parser(False)
    found = 0
    request = None
    for req, resp in conv:
        for piece in _pieces(req):
            requests.feed(piece)
            while (event := requests.next_event()) is not NEED_DATA:
                if isinstance(event, Head):
                    request = event.message
        for piece in _pieces(resp):
            responses.feed(piece)
            while (event := responses.next_event(request)) is not NEED_DATA:
                found += isinstance(event, End)
    return found


def run_h11(conv: Conversation) -> int:
    server, client = h11.Connection(h11.SERVER), h11.Connection(h11.CLIENT)
    found = 0
    for req, resp in conv:
        for piece in _pieces(req):
            server.receive_data(piece)
        request = None
        while (event := server.next_event()) is not h11.NEED_DATA:
            if isinstance(event, h11.Request):
                request = event
                client.send(h11.Request(method=event.method, target=event.target, headers=event.headers))
            elif isinstance(event, h11.Data):
                client.send(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                client.send(h11.EndOfMessage())
                break
        assert request is not None
        for piece in _pieces(resp):
            client.receive_data(piece)
        while (event := client.next_event()) is not h11.NEED_DATA:
            if isinstance(event, h11.EndOfMessage):
                found += 1
                break
        # h11 needs to be told about the response on the server side to go on
        server.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
        server.send(h11.EndOfMessage())
        server.start_next_cycle()
        client.start_next_cycle()
    return found


CONTENDERS: dict[str, Callable[[Conversation], int]] = {
    "recorder": run_recorder, "parser": run_parser, "h11": run_h11}


def measure(conv: Conversation, fn: Callable[[Conversation], int], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        found = fn(conv)
        best = min(best, time.perf_counter() - start)
        if found != len(conv):
            raise AssertionError(f"{fn.__name__} found {found} exchanges, expected {len(conv)}")
    return best


def main(argv: list[str] | None = None) -> None:
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("--quick", action="store_true", help="few exchanges, one round")
    opts = args.parse_args(argv if argv is not None else [])
    scale, rounds = (0.05, 1) if opts.quick else (1.0, 5)
    corpora = [("small-json", small_json(int(2000 * scale) or 1)),
               ("chunked-text", chunked_text(int(1000 * scale) or 1)),
               ("post-json", post_json(int(1000 * scale) or 1)),
               ("large-binary", large_binary(int(40 * scale) or 1))]
    print(f"{'corpus':14} {'MB':>6} {'exchanges':>9} | {'recorder':>9} {'parser':>9} {'h11':>9} MB/s | "
          f"{'recorder/h11':>12} {'parser/h11':>10} | {'recorder ex/s':>13}")
    for name, conv in corpora:
        mb = sum(len(a) + len(b) for a, b in conv) / 1e6
        times = {k: measure(conv, fn, rounds) for k, fn in CONTENDERS.items()}
        speed = {k: mb / t for k, t in times.items()}
        print(f"{name:14} {mb:6.2f} {len(conv):9d} | {speed['recorder']:9.1f} {speed['parser']:9.1f} "
              f"{speed['h11']:9.1f}      | {speed['recorder'] / speed['h11']:12.2f} "
              f"{speed['parser'] / speed['h11']:10.2f} | {len(conv) / times['recorder']:13.0f}")


if __name__ == "__main__":
    main(sys.argv[1:])

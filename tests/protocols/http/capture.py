"""Capture real HTTP byte streams: real clients -> ``Relay`` -> real servers.

``capture_h1()`` and ``capture_h2()`` run the scenarios below and return
``{name: [(side, bytes), ...]}`` (one connection per name, wire order, ``b""`` =
that side's EOF). ``save``/``load`` keep them in ``vectors/*.json`` so the codec
tests run without servers; ``TRPROXY_UPDATE_VECTORS=1 pytest -m slow
tests/protocols/http/test_http_live.py`` captures them afresh.

HTTP/1.1 scenarios: ``keepalive`` (requests.Session: one pooled connection, 14
requests: JSON, two Set-Cookie, chunked+trailers, HEAD, 204, 304, 103, gzip,
deflate, br, zstd, binary, POST JSON, secrets), ``expect100`` (curl with ``Expect:
100-continue``), ``pipelined`` (three requests in one write), ``chunked_upload``
(urllib3 chunked request body), ``until_close`` (HTTP/1.0, body delimited by close),
``websocket`` (upgrade, 101, a frame after it). HTTP/2: ``h2_multiplexed`` (httpx,
http2, prior knowledge, concurrent streams incl. a 70 KB body (beyond the 64 KiB default window), 103, trailers).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
from pathlib import Path

import httpx
import requests
import urllib3

from tests.support.tee import Relay

from .servers import H1Server, H2Server

VECTORS = Path(__file__).parent / "vectors"
Streams = dict[str, list[tuple[str, bytes]]]


def save(name: str, streams: Streams) -> None:
    VECTORS.mkdir(exist_ok=True)
    data = {k: [[side, base64.b64encode(chunk).decode()] for side, chunk in v]
            for k, v in streams.items()}
    (VECTORS / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")


def load(name: str) -> Streams:
    data = json.loads((VECTORS / f"{name}.json").read_text())
    return {k: [(side, base64.b64decode(chunk)) for side, chunk in v] for k, v in data.items()}


def _one(relay: Relay, before: int) -> list[tuple[str, bytes]]:
    relay.wait()
    assert len(relay.streams) == before + 1, f"expected one new connection, got {len(relay.streams) - before}"
    return relay.streams[-1].chunks


def _raw(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def keepalive_requests(base: str) -> list[requests.Response]:
    out = []
    with requests.Session() as s:
        for path in ("/json", "/cookies", "/chunked", "/nocontent", "/notmodified", "/early",
                     "/gzip", "/deflate", "/br", "/zstd", "/binary", "/secret"):
            out.append(s.get(base + path, headers={"Accept-Encoding": "gzip, deflate, br, zstd"}))
        out.append(s.head(base + "/json"))
        out.append(s.post(base + "/echo?b=2&a=1", json={"name": "ann", "password": "pw"},
                          headers={"Authorization": "Bearer secret-token",
                                   "Cookie": "session=abc123; theme=dark"}))
    return out


def capture_h1() -> Streams:
    server = H1Server().start()
    relay = Relay(("127.0.0.1", server.port)).start()
    base = f"http://127.0.0.1:{relay.port}"
    streams: Streams = {}
    try:
        n = len(relay.streams)
        keepalive_requests(base)
        streams["keepalive"] = _one(relay, n)

        n = len(relay.streams)
        subprocess.run(["curl", "-sS", "-o", "/dev/null", "-H", "Expect: 100-continue",
                        "-H", "Content-Type: application/json",
                        "--data-binary", json.dumps({"k": "v" * 2000}), base + "/echo"],
                       check=True, timeout=30)
        streams["expect100"] = _one(relay, n)

        n = len(relay.streams)
        _raw(relay.port, b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /cookies HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        streams["pipelined"] = _one(relay, n)

        n = len(relay.streams)
        with urllib3.PoolManager() as pool:
            pool.request("POST", base + "/echo", body=iter([b'{"parts": ', b"[1, 2, 3]}"]),
                         headers={"Content-Type": "application/json"}, chunked=True)
        streams["chunked_upload"] = _one(relay, n)

        n = len(relay.streams)
        _raw(relay.port, b"GET /close HTTP/1.0\r\nHost: x\r\n\r\n")
        streams["until_close"] = _one(relay, n)

        n = len(relay.streams)
        _raw(relay.port, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         b"Sec-WebSocket-Version: 13\r\n\r\n")
        streams["websocket"] = _one(relay, n)
    finally:
        relay.close()
        server.close()
    return streams


async def _h2_requests(base: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(http1=False, http2=True, base_url=base) as client:
        first = await client.get("/json")  # opens the connection
        rest = await asyncio.gather(
            client.post("/echo", json={"q": [1, 2, 3], "password": "pw"},
                        headers={"authorization": "Bearer t"}),
            client.get("/cookies"),
            client.get("/gzip", headers={"accept-encoding": "gzip"}),
            client.get("/big", params={"n": "70000"}),
            client.get("/trailers"),
            client.get("/early"),
            client.get("/nocontent"),
        )
        return [first, *rest]


def capture_h2() -> Streams:
    server = H2Server().start()
    relay = Relay(("127.0.0.1", server.port)).start()
    try:
        asyncio.run(_h2_requests(f"http://127.0.0.1:{relay.port}"))
        streams = {"h2_multiplexed": _one(relay, 0)}
    finally:
        relay.close()
        server.close()
    return streams


def update_vectors() -> None:
    save("h1", capture_h1())
    save("h2", capture_h2())


if __name__ == "__main__":  # pragma: no cover - python -m tests.protocols.http.capture
    update_vectors()

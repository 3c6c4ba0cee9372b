"""WebSocket end to end through the real ``trproxy`` CLI with the eBPF redirect.

A real aiohttp WebSocket server runs in this test process on 127.0.0.1 (outside the
child's cgroup): it greets each connection, answers every JSON message with a
server-side counter that keeps growing across connections, echoes binary messages,
and echoes the client's Close. A real aiohttp client (offering permessage-deflate,
which the server accepts) runs as the child of ``trproxy record``; then the server is
stopped and the same client runs under ``trproxy replay`` and must print the same
messages. A client that sends a message never recorded gets Close 1011 and the run's
summary reports one miss. ``TRPROXY_HOME`` points at a temporary directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import yaml
from aiohttp import WSMsgType, web

from tests.support.proc import run_trproxy
from tests.support.services import free_port

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)

CLIENT = r'''
import asyncio, json, sys
import aiohttp

async def main(url, extra):
    out = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, compress=15) as ws:
            out.append(["greeting", (await ws.receive_str())])
            for n in (1, 2, 3):
                await ws.send_json({"op": "add", "n": n, "password": "hunter2-password"})
                out.append(["json", await ws.receive_json()])
            await ws.send_bytes(bytes(range(8)))
            out.append(["binary", (await ws.receive_bytes()).hex()])
            if extra:
                await ws.send_str(extra)
                msg = await ws.receive()
                out.append(["after extra", msg.type.name, msg.data, msg.extra])
            else:
                await ws.close()
            out.append(["close code", ws.close_code])
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
'''


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "trproxy-home"
    monkeypatch.setenv("TRPROXY_HOME", str(path))
    return path


class WsServer:
    """aiohttp's WebSocket server on its own event loop in a thread."""

    def __init__(self) -> None:
        self.port = free_port()
        self.count = 0
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/ws", self.handle)
        self.runner = web.AppRunner(app)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._call(self._start())

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()  # accepts permessage-deflate when offered
        await ws.prepare(request)
        self.connections += 1
        await ws.send_str(f"welcome, connection {self.connections}")
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                self.count += 1
                await ws.send_json({"count": self.count, "got": json.loads(msg.data)["n"]})
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws

    def close(self) -> None:
        self._call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _trproxy(mode: str, rec: Path, *args: str):
    result = run_trproxy(mode, "--dir", str(rec), *args, timeout=120)
    assert result.returncode == 0, f"trproxy {mode} failed\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def _record(tmp_path: Path) -> tuple[Path, Path, str, str]:
    client = tmp_path / "client.py"
    client.write_text(textwrap.dedent(CLIENT))
    server = WsServer()
    url = f"http://127.0.0.1:{server.port}/ws"
    rec = tmp_path / "rec"
    try:
        recorded = _trproxy("record", rec, "--", sys.executable, str(client), url)
        assert server.connections == 1, recorded.stderr
    finally:
        server.close()
    return client, rec, url, recorded.stdout


def test_websocket_record_then_replay(tmp_path):
    client, rec, url, recorded = _record(tmp_path)
    got = json.loads(recorded)
    assert got == [
        ["greeting", "welcome, connection 1"],
        ["json", {"count": 1, "got": 1}], ["json", {"count": 2, "got": 2}],
        ["json", {"count": 3, "got": 3}],
        ["binary", "0706050403020100"],
        ["close code", 1000],
    ]
    text = (rec / "test-set-0" / "mocks.yaml").read_text()
    assert "hunter2-password" not in text
    docs = [d["spec"] for d in yaml.safe_load_all(text) if d]
    ws = [d for d in docs if d.get("request") and d["request"]["method"] == "WEBSOCKET"]
    assert docs[0]["responses"][0]["status"] == 101
    assert [d["summary"] for d in ws] == ["WS /ws open", "WS /ws text", "WS /ws text", "WS /ws text",
                                          "WS /ws binary", "WS /ws close 1000"]
    assert ws[1]["request"] == {
        "method": "WEBSOCKET", "url": url, "message": "text",
        "body": {"json": {"op": "add", "n": 1, "password": "<secret:password>"}, "style": "spaced"}}
    assert ws[1]["responses"] == [{"message": "text", "body": {"json": {"count": 1, "got": 1},
                                                                "style": "spaced"}}]
    assert ws[5]["request"]["body"] == {"close": 1000, "reason": ""}
    assert ws[5]["responses"] == [{"close": 1000, "reason": ""}]
    # the 101 negotiated permessage-deflate: the messages above were decompressed
    headers = {n.lower(): v for n, v in docs[0]["responses"][0]["headers"]}
    assert headers["sec-websocket-extensions"].startswith("permessage-deflate")

    replayed = _trproxy("replay", rec, "--", sys.executable, str(client), url)
    assert replayed.stdout == recorded  # the counter is the recorded one: no server now
    assert "trproxy: 0 misses" in replayed.stderr


def test_websocket_message_never_recorded_gets_close_1011(tmp_path):
    client, rec, url, recorded = _record(tmp_path)
    replayed = _trproxy("replay", rec, "--", sys.executable, str(client), url, "never recorded")
    got = json.loads(replayed.stdout)
    assert got[:5] == json.loads(recorded)[:5]  # the recorded part is still served
    assert got[5][:3] == ["after extra", "CLOSE", 1011]
    assert got[5][3].startswith("trproxy: no recording for WS /ws text: ")
    assert got[6] == ["close code", 1011]
    assert "trproxy: 1 misses" in replayed.stderr

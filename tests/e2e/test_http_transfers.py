"""HTTP transfers through the real CLI with the eBPF redirect: connections the server
closes while idle, and 100 MB bodies.

* A server that closes idle keep-alive connections after 0.3 s: pooled clients
  (``requests.Session``, ``urllib3.PoolManager``) send a request, sleep 1 s (the server
  has closed the connection meanwhile), and send again. Directly, under ``trproxy
  record`` and under ``trproxy replay`` every request completes in well under 5 s (the
  clients' timeouts turn a stall into an error) and the answers are the same.
* A 100 MB download and a 100 MB upload under ``trproxy record``: the client checks
  SHA-256s, trproxy's peak RSS (VmHWM, read while the client waits before exiting)
  stays bounded, and the recording refers to both bodies as ``bodies/<sha256>`` (one
  file: the same bytes went each way). At replay the download is streamed back from
  the file and the upload is matched by size and digest: the client sees the same
  answers, and trproxy's peak RSS is as bounded as when recording.

Servers run in this test process, outside the child's cgroup, on 127.0.0.1.
``TRPROXY_HOME`` points at a temporary directory (no CA in the user's home).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.support.proc import run_trproxy, stop, trproxy

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)

MB = 1 << 20
SIZE = 100 * MB
BLOCK = hashlib.shake_256(b"trproxy transfer").digest(MB)  # the body is 100 copies of it
EXPECTED_SHA = hashlib.sha256(BLOCK * 100).hexdigest()
RSS_LIMIT_KB = 200 * 1024


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "trproxy-home"
    monkeypatch.setenv("TRPROXY_HOME", str(path))
    return path


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.port = self.server_address[1]
        self.connections = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


# -- idle keep-alive connections closed by the server ----------------------------------


class _ShortKeepAlive(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive; a connection idle for 0.3 s is closed (the socket timeout
    makes ``handle_one_request`` give up and close, like nginx's keepalive_timeout)."""

    protocol_version = "HTTP/1.1"
    timeout = 0.3

    def setup(self) -> None:
        super().setup()
        self.served = 0
        self.server.connections += 1  # type: ignore[attr-defined]

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        received = self.rfile.read(length).decode() if length else ""
        self.served += 1
        # nth request on this connection: 1 for each request below, since the server
        # closed the idle connection before the client's second request
        body = json.dumps({"method": self.command, "path": self.path, "received": received,
                           "nth_on_connection": self.served}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def log_error(self, format: str, *args: object) -> None:  # "Request timed out"
        pass


KEEPALIVE_CLIENT = r'''
import json, sys, time
import requests, urllib3

base = sys.argv[1]
out = []


def timed(label, call):
    started = time.monotonic()
    try:
        status, body = call()
    except Exception as e:  # a stall ends in the clients' 5 s timeouts
        status, body = "error", f"{type(e).__name__}: {e}"
    elapsed = time.monotonic() - started
    out.append([label, status, body, "fast" if elapsed < 5 else f"slow {elapsed:.1f}s"])


with requests.Session() as s:
    timed("requests GET", lambda: (lambda r: (r.status_code, r.json()))(s.get(base + "/a", timeout=5)))
    time.sleep(1)  # the server closes the idle pooled connection after 0.3 s
    timed("requests POST", lambda: (lambda r: (r.status_code, r.json()))(
        s.post(base + "/b", data="after idle", timeout=5)))
    time.sleep(1)
    timed("requests GET again", lambda: (lambda r: (r.status_code, r.json()))(s.get(base + "/c", timeout=5)))

pm = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=5), retries=False)
timed("urllib3 GET", lambda: (lambda r: (r.status, r.json()))(pm.request("GET", base + "/d")))
time.sleep(1)
timed("urllib3 POST", lambda: (lambda r: (r.status, r.json()))(pm.request("POST", base + "/e", body=b"idle")))
pm.clear()
print(json.dumps(out, indent=1))
'''


def _script(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_idle_keepalive_connections_closed_by_the_server(tmp_path) -> None:
    client = _script(tmp_path, "keepalive.py", KEEPALIVE_CLIENT)
    server = _Server(_ShortKeepAlive)
    base = f"http://127.0.0.1:{server.port}"
    rec = tmp_path / "rec"
    try:
        direct = subprocess.run([sys.executable, str(client), base], capture_output=True, text=True,
                                timeout=60)
        assert direct.returncode == 0, direct.stderr
        before = server.connections
        started = time.monotonic()
        recorded = run_trproxy("record", "--dir", str(rec), "--", sys.executable, str(client), base,
                               timeout=60)
        record_time = time.monotonic() - started
        connections = server.connections - before
    finally:
        server.close()
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    rows = json.loads(direct.stdout)
    assert [r[1] for r in rows] == [200] * 5 and all(r[3] == "fast" for r in rows), rows
    assert all(r[2]["nth_on_connection"] == 1 for r in rows)  # each on a fresh connection
    assert rows[1][2]["received"] == "after idle"
    assert recorded.stdout == direct.stdout, recorded.stderr
    assert connections == 5  # the proxy opened one upstream connection per request
    assert record_time < 30
    mocks = (rec / "test-set-0" / "mocks.yaml").read_text()
    assert mocks.count("kind: http") - mocks.count("lifetime: event") == 5  # the closes aside

    started = time.monotonic()
    replayed = run_trproxy("replay", "--dir", str(rec), "--", sys.executable, str(client), base,
                           timeout=60)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert replayed.stdout == recorded.stdout
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr
    assert time.monotonic() - started < 30


# -- 100 MB each way ---------------------------------------------------------------------


class _Transfers(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # /download: 100 MB, streamed
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(SIZE))
        self.end_headers()
        for _ in range(SIZE // MB):
            self.wfile.write(BLOCK)

    def do_POST(self) -> None:  # /upload: digests what it receives
        remaining = int(self.headers["Content-Length"])
        digest, size = hashlib.sha256(), 0
        while remaining:
            data = self.rfile.read(min(remaining, MB))
            if not data:
                break
            digest.update(data)
            size += len(data)
            remaining -= len(data)
        body = json.dumps({"size": size, "sha256": digest.hexdigest()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


TRANSFER_CLIENT = r'''
import hashlib, json, os, sys, time
import requests

base, go = sys.argv[1], sys.argv[2]
MB = 1 << 20
BLOCK = hashlib.shake_256(b"trproxy transfer").digest(MB)
expected = hashlib.sha256(BLOCK * 100).hexdigest()


class Upload:  # an iterable with a length: sent with Content-Length, 1 MB at a time
    def __len__(self):
        return 100 * MB

    def __iter__(self):
        for _ in range(100):
            yield BLOCK


with requests.Session() as s:
    r = s.get(base + "/download", stream=True, timeout=60)
    digest, size, head = hashlib.sha256(), 0, b""
    for chunk in r.iter_content(MB):
        digest.update(chunk)
        size += len(chunk)
        head = (head + chunk)[:4096]
    row = ["download", r.status_code, r.headers.get("X-Trproxy"), size, digest.hexdigest() == expected]
    if r.status_code != 200:
        row.append(head.decode())
    print(json.dumps(row), flush=True)
    r = s.post(base + "/upload", data=Upload(), timeout=60)
    answer = r.json()
    print(json.dumps(["upload", r.status_code, answer, answer.get("sha256") == expected]), flush=True)
print("done", flush=True)
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:  # trproxy's VmHWM is read now
    time.sleep(0.02)
'''


def _vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def _run_transfers(mode: str, rec: Path, client: Path, base: str, go: Path) -> tuple[list, str, int]:
    """``trproxy MODE`` the transfer client; returns (printed rows, stderr, trproxy's VmHWM in kB)."""
    go.unlink(missing_ok=True)
    proc = trproxy(mode, "--dir", str(rec), "--", sys.executable, str(client), base, str(go))
    killer = threading.Timer(120, proc.kill)  # a hang fails the test instead of blocking it
    killer.start()
    try:
        rows, hwm = [], 0
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.strip() == "done":
                hwm = _vm_hwm_kb(proc.pid)  # the proxy lives in the trproxy process
                go.touch()
                break
            rows.append(json.loads(line))
        _out, err = proc.communicate(timeout=60)
    finally:
        killer.cancel()
        stop(proc)
    assert proc.returncode == 0, f"trproxy {mode}: {rows}\n{err}"
    assert hwm, f"the client never finished: {rows}\n{err}"
    return rows, err, hwm


def test_100mb_download_and_upload(tmp_path) -> None:
    client = _script(tmp_path, "transfers.py", TRANSFER_CLIENT)
    server = _Server(_Transfers)
    base = f"http://127.0.0.1:{server.port}"
    rec, go = tmp_path / "rec", tmp_path / "go"
    try:
        rows, err, hwm = _run_transfers("record", rec, client, base, go)
    finally:
        server.close()
    assert rows == [["download", 200, None, SIZE, True],
                    ["upload", 200, {"size": SIZE, "sha256": EXPECTED_SHA}, True]], err
    print(f"record VmHWM {hwm} kB")
    assert hwm < RSS_LIMIT_KB, f"trproxy record peaked at {hwm} kB"

    test_set = rec / "test-set-0"
    docs = [d for d in yaml.safe_load_all((test_set / "mocks.yaml").read_text()) if d]
    assert [d["kind"] for d in docs] == ["http", "http"]
    download, upload = (d["spec"] for d in docs)
    stored = {"file": f"bodies/{EXPECTED_SHA}", "size": SIZE, "sha256": EXPECTED_SHA}
    assert download["responses"][-1]["body"] == stored
    assert upload["request"]["body"] == stored  # the same bytes each way: one file
    assert upload["responses"][-1]["body"] == {"json": {"size": SIZE, "sha256": EXPECTED_SHA},
                                               "style": "spaced"}
    assert [p.name for p in (test_set / "bodies").iterdir()] == [EXPECTED_SHA]
    assert _file_sha(test_set / "bodies" / EXPECTED_SHA) == EXPECTED_SHA

    # replay: the download is streamed back from the file, the upload matches by size and
    # digest; both answers are the recorded ones, with memory as bounded as in recording
    replayed, err, hwm = _run_transfers("replay", rec, client, base, go)
    assert replayed == rows, err
    print(f"replay VmHWM {hwm} kB")
    assert hwm < RSS_LIMIT_KB, f"trproxy replay peaked at {hwm} kB"
    assert "trproxy: served 2 http from 2 mocks" in err and "trproxy: 0 misses" in err, err
    assert "could not replay" not in err, err


def _file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MB):
            digest.update(block)
    return digest.hexdigest()

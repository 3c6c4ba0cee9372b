"""Large HTTP bodies through trproxy: throughput and peak memory, beside a direct run.

A server on 127.0.0.1 (``http.server``, its own process) answers ``GET /download``
with ``BENCH_TRANSFER_MB`` (default 200) MiB of pseudo-random bytes, written 1 MiB at
a time. A client process streams it with ``requests`` (1 MiB reads), hashing it, and
prints its throughput. It runs directly, under ``trproxy run --mode passthrough`` (the
plain relay, the reference for the proxy's own cost), ``--mode record`` (the body
goes to ``bodies/<sha256>``) and, with the server stopped, ``--mode replay`` (streamed
back from that file).

Printed: MiB/s and the ratio to direct; trproxy's peak RSS (its ``VmHWM``, read by the
client, its child, once the body is through) and the client's; whether the client saw
the same SHA-256. Memory must not grow with the body: a 200 MiB
transfer should peak where a small one does. Root is needed (eBPF redirect).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from benchmarks.common import ROOT, TRPROXY, run  # noqa: E402  (puts ROOT on sys.path)
from tests.support.services import free_port, wait_port  # noqa: E402

MB = 1 << 20
SIZE_MB = int(os.environ.get("BENCH_TRANSFER_MB", "200"))

SERVER = textwrap.dedent("""
    import hashlib, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    MB = 1 << 20
    BLOCK = hashlib.shake_256(b"bench transfer").digest(MB)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            n = int(sys.argv[2])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n * MB))
            self.end_headers()
            for _ in range(n):
                self.wfile.write(BLOCK)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
""")

CLIENT = textwrap.dedent("""
    import hashlib, json, sys, time
    import requests
    t = time.perf_counter()
    r = requests.get(f"http://127.0.0.1:{sys.argv[1]}/download", stream=True, timeout=120)
    digest, size = hashlib.sha256(), 0
    for chunk in r.iter_content(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    elapsed = time.perf_counter() - t

    def hwm(pid):  # peak RSS of a process in KiB (VmHWM: set anew at exec, unlike ru_maxrss)
        with open(f"/proc/{pid}/status") as f:
            return int(next(l.split()[1] for l in f if l.startswith("VmHWM:")))

    import os
    print(json.dumps({"status": r.status_code, "size": size, "seconds": elapsed,
                      "digest": digest.hexdigest(), "client_kb": hwm(os.getpid()),
                      "parent_kb": hwm(os.getppid())}))
""")


def client_run(port: int, wrap: list[str]) -> dict:
    """Run the client (wrapped); its result, with the peak RSS of trproxy (the client's
    parent when wrapped) read by the client once the body is through."""
    proc = run([*wrap, sys.executable, "-c", CLIENT, str(port)], dict(os.environ, PYTHONPATH=str(ROOT)), 600)
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    if os.geteuid() != 0:
        print("skipped: trproxy run needs root for the eBPF redirect")
        return
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="trproxy-bench-transfer-"))
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(SIZE_MB)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wrap = [*TRPROXY, "run", "--dir", str(workdir), "--mode"]
    rows: dict[str, dict] = {}
    try:
        wait_port("127.0.0.1", port, proc=server)
        rows["direct"] = client_run(port, [])
        rows["trproxy passthrough"] = client_run(port, [*wrap, "passthrough", "--"])
        rows["trproxy record"] = client_run(port, [*wrap, "record", "--"])
        server.send_signal(signal.SIGTERM)
        server.wait(10)
        rows["trproxy replay (no server)"] = client_run(port, [*wrap, "replay", "--"])
        files = sorted(p.stat().st_size // MB for p in workdir.glob("test-set-*/bodies/*"))
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    direct = rows["direct"]
    print(f"GET of a {SIZE_MB} MiB body, streamed by requests in 1 MiB reads, eBPF redirect; "
          f"body files written: {files} MiB")
    print(f"{'path':28}{'MiB/s':>9}{'ratio':>8}{'trproxy peak RSS MiB':>22}"
          f"{'client':>8}  same body")
    for path, r in rows.items():
        if "error" in r:
            print(f"{path:28}  FAILED {r['error']}")
            continue
        rate = r["size"] / MB / r["seconds"]
        ratio = rate / (direct["size"] / MB / direct["seconds"]) if "size" in direct else float("nan")
        same = "yes" if r["status"] == 200 and r["digest"] == direct.get("digest") else "NO"
        proxy = f"{r['parent_kb'] / 1024:.0f}" if path != "direct" else "-"
        print(f"{path:28}{rate:>9.0f}{ratio:>7.2f}x{proxy:>22}{r['client_kb'] / 1024:>8.0f}  {same}")


if __name__ == "__main__":
    main()

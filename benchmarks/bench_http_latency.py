"""HTTP/1.1 request latency through trproxy: direct, ``--mode record``, ``--mode replay``.

A keep-alive server on 127.0.0.1 (``http.server``'s ``ThreadingHTTPServer`` speaking
HTTP/1.1, a ~1 KiB JSON body with ``Content-Length``) in its own process, and a client
process making ``BENCH_HTTP_N`` (default 500) sequential GETs of ``/items/<i>`` over one
keep-alive connection, timing each request. Two clients: ``requests.Session`` (what
apps use) and the standard library's ``http.client`` (thin, so the proxy's share of the
latency shows more). Each client runs directly, wrapped by ``trproxy run --mode record``
(eBPF redirect), and — after the server is stopped — by ``trproxy run --mode replay``.
The first ``WARMUP`` requests of each run are not counted (connection set-up, imports);
they are recorded and replayed like the others.

Printed per client and path: median and p99 latency per request in microseconds and their
ratios to direct, the misses of the trproxy summary, and whether every response body
matched what the server sent. Everything is measured in the same run; root is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from benchmarks.common import ROOT, TRPROXY, run  # noqa: E402  (puts ROOT on sys.path)
from tests.support.services import free_port, wait_port  # noqa: E402

N = int(os.environ.get("BENCH_HTTP_N", "500"))
WARMUP = 20

SERVER = textwrap.dedent("""
    import json, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive
        disable_nagle_algorithm = True  # head and body are two writes: no 40 ms delayed-ACK stall

        def do_GET(self):
            item = self.path.rsplit("/", 1)[-1]
            body = json.dumps({"id": item, "name": f"item {item}", "tags": ["a", "b", "c"],
                               "description": "x" * 900}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
""")

CLIENT = textwrap.dedent("""
    import hashlib, json, sys, time
    client, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    base = f"http://127.0.0.1:{port}"
    digest = hashlib.sha256()
    times = []
    if client == "requests":
        import requests
        session = requests.Session()
        def get(i):
            r = session.get(f"{base}/items/{i}")
            r.raise_for_status()
            return r.content
    else:
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", port)
        def get(i):
            conn.request("GET", f"/items/{i}")
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise SystemExit(f"status {r.status}: {body[:200]!r}")
            return body
    for i in range(n):
        t = time.perf_counter()
        body = get(i)
        times.append(time.perf_counter() - t)
        digest.update(body)
    print(json.dumps({"times": times, "digest": digest.hexdigest()}))
""")


def client_run(client: str, port: int, wrap: list[str]) -> dict:
    cmd = [*wrap, sys.executable, "-c", CLIENT, client, str(port), str(N + WARMUP)]
    proc = run(cmd, dict(os.environ, PYTHONPATH=str(ROOT)), 300)
    missed = [line for line in proc.stderr.splitlines() if line.startswith("trproxy:") and "misses" in line]
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    times = sorted(out["times"][WARMUP:])
    return {"median": statistics.median(times), "p99": times[min(len(times) - 1, int(len(times) * 0.99))],
            "digest": out["digest"],
            "misses": missed[0].removeprefix("trproxy: ").split()[0] if missed else "-",
            "stderr": proc.stderr}


def wrap(mode: str, recordings: Path) -> list[str]:
    return [*TRPROXY, "run", "--mode", mode, "--dir", str(recordings), "--"]


def main() -> None:
    if os.geteuid() != 0:
        print("skipped: trproxy run needs root for the eBPF redirect")
        return
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="trproxy-bench-http-"))
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clients = ["requests", "http.client"]
    results: dict[str, dict[str, dict]] = {c: {} for c in clients}
    try:
        wait_port("127.0.0.1", port, proc=server)
        for c in clients:
            results[c]["direct"] = client_run(c, port, [])
            results[c]["trproxy record"] = client_run(c, port, wrap("record", workdir / c))
        server.send_signal(signal.SIGTERM)
        server.wait(10)
        for c in clients:
            results[c]["trproxy replay (no server)"] = client_run(c, port, wrap("replay", workdir / c))
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"{N} sequential GETs over one keep-alive connection (after {WARMUP} warm-up), "
          "1 KiB JSON responses, eBPF redirect; latency per request")
    print(f"{'client':13}{'path':28}{'median us':>10}{'ratio':>8}{'p99 us':>10}{'ratio':>8}"
          f"{'misses':>8}{'  same bodies'}")
    for c, rows in results.items():
        direct = rows["direct"]
        for path, r in rows.items():
            if "error" in r:
                print(f"{c:13}{path:28}  FAILED {r['error']}")
                continue
            same = "yes" if "digest" in direct and r["digest"] == direct["digest"] else "NO"
            print(f"{c:13}{path:28}{r['median'] * 1e6:>10.0f}{r['median'] / direct['median']:>7.2f}x"
                  f"{r['p99'] * 1e6:>10.0f}{r['p99'] / direct['p99']:>7.2f}x{r['misses']:>8}  {same}")
            if r["misses"] not in ("-", "0"):
                print("  " + "\n  ".join(line for line in r["stderr"].splitlines() if "- http" in line)[:800])


if __name__ == "__main__":
    main()

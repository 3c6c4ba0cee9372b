"""Proxy overhead: redis-benchmark direct, through socat, and through trproxy.

trproxy runs as users run it: ``trproxy run`` wrapping redis-benchmark, with the eBPF
redirect when root (else a ``--forward`` listener), in passthrough, record and replay
modes; and record/replay against a server with ``requirepass`` (``-a``: every connection
logs in, and replay hashes the password to match it). Also the start-up cost of
``trproxy run -- true``. Everything is printed as ratios to the direct connection
measured in the same run.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, TRPROXY, check  # noqa: E402  (puts ROOT on sys.path)
from tests.support.proc import stop  # noqa: E402
from tests.support.services import RedisServer, free_port, wait_port  # noqa: E402

N = int(os.environ.get("BENCH_REDIS_N", "20000"))
TIMEOUT = 600  # s, per redis-benchmark run (a replay first loads its recording)


def redis_benchmark(port: int, wrap: list[str] | None = None, password: str | None = None) -> dict[str, float]:
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", str(N), "-c", "20",
           "-t", "set,get,incr,lpush", "--csv", *(["-a", password] if password else [])]
    start = time.perf_counter()
    out = check((wrap or []) + cmd, dict(os.environ, PYTHONPATH=str(ROOT)), TIMEOUT).stdout
    # progress, so that a slow step is seen as such (a replay of a recording over
    # store.recording.CACHE_ON_CLOSE_BYTES first parses its YAML: minutes on a busy machine)
    print(f"  {' '.join(wrap[3:6]) if wrap else 'direct'} {port}: {time.perf_counter() - start:.0f} s",
          flush=True)
    rows = [r for r in csv.reader(io.StringIO(out)) if r and r[0] != "test"]
    return {r[0]: float(r[1]) for r in rows}


def wrap(mode: str, recordings: Path, port: int) -> list[str]:
    base = [*TRPROXY, "run", "--mode", mode, "--dir", str(recordings)]
    if os.geteuid() != 0:
        base += ["--no-redirect", "--forward", f"127.0.0.1:{port}=127.0.0.1:{port}"]
    return base + ["--"]


def startup(samples: int = 5) -> tuple[float, float]:
    if os.geteuid() != 0:
        return float("nan"), float("nan")
    times = []
    for _ in range(samples):
        t = time.perf_counter()
        check([*TRPROXY, "run", "--", "true"], dict(os.environ, PYTHONPATH=str(ROOT)), 120)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    check([sys.executable, "-c", "import trproxy.cli"], timeout=120)
    return statistics.median(times), time.perf_counter() - t


def main() -> None:
    server = RedisServer().start()
    recordings = Path(tempfile.mkdtemp(prefix="trproxy-bench-"))
    socat_port = free_port()
    socat = subprocess.Popen(["socat", f"TCP-LISTEN:{socat_port},bind=127.0.0.1,reuseaddr,fork,backlog=512",
                              f"TCP:127.0.0.1:{server.port}"])
    try:
        wait_port("127.0.0.1", socat_port)
        results = {
            "direct": redis_benchmark(server.port),
            "socat relay": redis_benchmark(socat_port),
            "trproxy passthrough": redis_benchmark(server.port, wrap("passthrough", recordings, server.port)),
            "trproxy record": redis_benchmark(server.port, wrap("record", recordings, server.port)),
        }
        server.stop()
        results["trproxy replay (no server)"] = redis_benchmark(server.port, wrap("replay", recordings, server.port))
        secured = RedisServer(password="bench-pw").start()
        try:
            auth = recordings / "auth"
            results["trproxy record, AUTH"] = redis_benchmark(
                secured.port, wrap("record", auth, secured.port), "bench-pw")
            secured.stop()
            results["trproxy replay, AUTH"] = redis_benchmark(
                secured.port, wrap("replay", auth, secured.port), "bench-pw")
        finally:
            secured.destroy()
    finally:
        stop(socat)
        server.destroy()
        shutil.rmtree(recordings, ignore_errors=True)
    direct = results["direct"]
    tests = list(direct)
    print(f"redis-benchmark -n {N} -c 20, requests/s and ratio to direct "
          f"({'eBPF redirect' if os.geteuid() == 0 else '--forward listener'})")
    print(f"{'path':28}" + "".join(f"{t:>18}" for t in tests))
    for name, row in results.items():
        cells = "".join(f"{row.get(t, 0):>10.0f} ({row.get(t, 0) / direct[t]:4.2f}x)" for t in tests)
        print(f"{name:28}{cells}")
    run_true, import_only = startup()
    print(f"\nstart-up: `trproxy run -- true` median {run_true * 1000:.0f} ms "
          f"(python + import alone {import_only * 1000:.0f} ms)")


if __name__ == "__main__":
    main()

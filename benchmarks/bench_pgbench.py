"""pgbench through trproxy: direct, ``trproxy run --mode record``, ``--mode replay``.

A real PostgreSQL (``tests/support/services.py``), initialised once with ``pgbench -i``.
Two workloads, each a fixed number of transactions over a few clients:

* ``select-only`` (``-S``): one ``SELECT abalance ... WHERE aid = N`` per transaction;
* ``tpcb-like`` (the default script): BEGIN, three UPDATEs, a SELECT, an INSERT, END.

Each runs directly against the server, then wrapped by ``trproxy run --mode record``
(eBPF redirect), then — after the server is stopped — by ``trproxy run --mode replay``
from that recording. pgbench draws random account ids; ``--random-seed`` makes record
and replay send the same statements (each client has its own seeded generator), which
replay needs: a statement that was never recorded is a miss.

Each path runs ``BENCH_PGBENCH_ROUNDS`` times (default 2; each record round into its
own directory, each replay round from one of them) and the best tps is kept. Replay runs
twice per recording: the first run reads ``mocks.yaml`` and writes the msgpack cache,
the second (``cached``) loads the cache, which shows in the wall time.

Printed: pgbench's tps (without initial connection time) and its ratio to direct, the
best wall time of the whole command (trproxy start-up, loading the mocks, connecting,
pgbench's start-up vacuum included), and the misses of the trproxy summary. Everything
is measured in the same run. Root is needed for the redirect; without it the benchmark
says so. Settings: ``BENCH_PGBENCH_T`` (transactions per client, default 500),
``BENCH_PGBENCH_C`` (clients, default 4).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import ROOT, TRPROXY, check, run  # noqa: E402  (puts ROOT on sys.path)
from tests.support.services import PostgresServer  # noqa: E402

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"
CLIENTS = int(os.environ.get("BENCH_PGBENCH_C", "4"))
TRANSACTIONS = int(os.environ.get("BENCH_PGBENCH_T", "500"))  # per client
ROUNDS = int(os.environ.get("BENCH_PGBENCH_ROUNDS", "2"))
SEED = 7
WORKLOADS = {"select-only": ["-S"], "tpcb-like": []}


@dataclass
class Result:
    tps: float | None  # None: pgbench failed
    wall: float
    processed: str = "?"
    misses: int | None = None  # from the trproxy summary (None when not wrapped)
    detail: str = ""  # why it failed, the first misses


def pgbench(server: PostgresServer, workload: list[str], wrap: list[str]) -> Result:
    cmd = [*wrap, PGBENCH, *workload, "-c", str(CLIENTS), "-t", str(TRANSACTIONS),
           f"--random-seed={SEED}", "-h", "127.0.0.1", "-p", str(server.port), "-U", server.user,
           server.dbname]
    env = dict(os.environ, PGPASSWORD=server.password, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    proc = run(cmd, env, 600)
    wall = time.perf_counter() - start
    tps = re.search(r"^tps = ([\d.]+)", proc.stdout, re.MULTILINE)
    processed = re.search(r"actually processed: (\S+)", proc.stdout)
    missed = re.search(r"^trproxy: (\d+) misses", proc.stderr, re.MULTILINE)
    detail = ""
    if proc.returncode != 0 or not tps:
        detail = f"exit {proc.returncode}: " + " | ".join(
            line for line in (proc.stdout + proc.stderr).splitlines()
            if "error" in line.lower() or "abort" in line.lower())[:600]
    if missed and int(missed.group(1)):
        detail += " " + " | ".join(line.removeprefix("trproxy: ").strip()
                                   for line in proc.stderr.splitlines() if line.startswith("trproxy:   - "))[:600]
    return Result(float(tps.group(1)) if tps and proc.returncode == 0 else None, wall,
                  processed.group(1) if processed else "?",
                  int(missed.group(1)) if missed else None, detail.strip())


def wrap(mode: str, recordings: Path) -> list[str]:
    return [*TRPROXY, "run", "--mode", mode, "--dir", str(recordings), "--"]


def best(runs: list[Result]) -> Result:
    """The fastest run; a failed or missing run wins, so that it is seen."""
    bad = [r for r in runs if r.tps is None or r.misses]
    if bad:
        return bad[0]
    top = max(runs, key=lambda r: r.tps or 0.0)
    return Result(top.tps, min(r.wall for r in runs), top.processed, top.misses, top.detail)


def main() -> None:
    if os.geteuid() != 0:
        print("skipped: trproxy run needs root for the eBPF redirect")
        return
    server = PostgresServer().start()
    workdir = Path(tempfile.mkdtemp(prefix="trproxy-bench-pgbench-"))
    runs: dict[str, dict[str, list[Result]]] = {w: {} for w in WORKLOADS}
    paths = ["direct", "trproxy record", "trproxy replay (no server)", "  again (msgpack cache)"]
    try:
        env = dict(os.environ, PGPASSWORD=server.password)
        check([PGBENCH, "-i", "-q", "-h", "127.0.0.1", "-p", str(server.port), "-U", server.user,
               server.dbname], env, 120)
        for name, workload in WORKLOADS.items():
            for path in paths:
                runs[name][path] = []
            for i in range(ROUNDS):
                runs[name][paths[0]].append(pgbench(server, workload, []))
                runs[name][paths[1]].append(pgbench(server, workload, wrap("record", workdir / f"{name}-{i}")))
        server.stop()
        for name, workload in WORKLOADS.items():
            for i in range(ROUNDS):
                for path in paths[2:]:
                    runs[name][path].append(pgbench(server, workload, wrap("replay", workdir / f"{name}-{i}")))
    finally:
        server.destroy()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"pgbench -c {CLIENTS} -t {TRANSACTIONS} --random-seed={SEED} ({CLIENTS * TRANSACTIONS} "
          f"transactions), scale 1, eBPF redirect; best of {ROUNDS}; tps without connection time")
    print(f"{'workload':13}{'path':28}{'tps':>10}{'ratio':>8}{'wall s':>8}{'processed':>12}{'misses':>8}")
    for name, rows in runs.items():
        direct = best(rows["direct"]).tps
        for path, results in rows.items():
            r = best(results)
            ratio = f"{r.tps / direct:.2f}x" if r.tps and direct else "-"
            tps = f"{r.tps:.0f}" if r.tps else "FAILED"
            missed = "-" if r.misses is None else str(r.misses)
            print(f"{name:13}{path:28}{tps:>10}{ratio:>8}{r.wall:>8.2f}{r.processed:>12}{missed:>8}")
            if r.detail:
                print(f"{'':13}  {r.detail}")


if __name__ == "__main__":
    main()

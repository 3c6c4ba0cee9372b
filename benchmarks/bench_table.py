"""The performance table of issue 15: trproxy beside C proxies, as ratios to direct.

One run measures, each workload against the same real server:

* Redis (redis-server): ``redis-benchmark -t get,set`` at ``-c 1``, ``-c 50`` and
  ``-c 10 -P 16`` (pipelined);
* PostgreSQL: ``pgbench -S`` (select-only, simple protocol) at ``-c 1`` and ``-c 50``;
* HTTP/1.1 (nginx, a 1 KiB static file): ``wrk`` at ``-c 1`` and ``-c 50``;

through these paths: direct; the references (haproxy in TCP mode for all three,
nutcracker for Redis, pgbouncer for Postgres, ``mitmdump`` recording as a reverse proxy
for HTTP); ``trproxy run`` (eBPF redirect) in passthrough, record and — after the server
is stopped — replay from that recording. A path the machine lacks (a Debian package not
installed) prints ``n/a``. Replay gets exactly the traffic that was recorded:
redis-benchmark and pgbench run a fixed number of requests (pgbench with
``--random-seed``), wrk a fixed number per run (a Lua script stops it), since a
recorded ``data`` exchange is served once.

Printed: operations per second and the ratio to direct of each cell, and the misses of
a replay. The machine may be shared, so only ratios in the same run mean anything;
``BENCH_TABLE_ROUNDS`` (default 1) repeats each cell and keeps the best; ``BENCH_TABLE_SCALE``
(default 1.0) scales the request counts. Root is needed (eBPF redirect, pgbouncer ``-u``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks.common import ENV, TRPROXY, run  # noqa: E402  (puts ROOT on sys.path)
from tests.support.proc import stop  # noqa: E402
from tests.support.services import PostgresServer, RedisServer, free_port, wait_port  # noqa: E402

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"
ROUNDS = int(os.environ.get("BENCH_TABLE_ROUNDS", "1"))
SCALE = float(os.environ.get("BENCH_TABLE_SCALE", "1.0"))
SEED = 7

# workload -> (client args, requests) ; the cell's rate is what the client reports
REDIS = {"redis c=1": (["-c", "1"], 3000), "redis c=50": (["-c", "50"], 20000),
         "redis c=10 -P 16": (["-c", "10", "-P", "16"], 40000)}
PGBENCH_RUNS = {"pgbench -S c=1": (1, 2000), "pgbench -S c=50": (50, 100)}  # clients, tx per client
HTTP = {"http c=1": 1, "http c=50": 50}
HTTP_REQUESTS = {"http c=1": 2000, "http c=50": 4000}
MITMDUMP_REQUESTS = 500  # it records ~50 requests/s here


def _n(count: int) -> int:
    return max(1, int(count * SCALE))


class Cell:
    """Best rate of the rounds; ``None`` when the path failed (``note`` says why)."""

    def __init__(self) -> None:
        self.rate: float | None = None
        self.note = ""

    def add(self, rate: float | None, note: str = "") -> None:
        if rate is None:
            self.note = self.note or note or "failed"
        elif self.rate is None or rate > self.rate:
            self.rate = rate
        if note and rate is not None:
            self.note = note


Table = dict[str, dict[str, Cell]]  # workload -> path -> cell


def trproxy(mode: str, recordings: Path) -> list[str]:
    return [*TRPROXY, "run", "--mode", mode, "--dir", str(recordings), "--"]


def misses(stderr: str) -> str:
    found = re.search(r"^trproxy: (\d+) misses", stderr, re.MULTILINE)
    return f"{found.group(1)} misses" if found and int(found.group(1)) else ""


@contextlib.contextmanager
def daemon(cmd: list[str], port: int, **kw) -> Iterator[subprocess.Popen | None]:  # type: ignore[no-untyped-def]
    """A reference server or proxy in the foreground, or None when it is not installed."""
    if shutil.which(cmd[0]) is None:
        yield None
        return
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    try:
        wait_port("127.0.0.1", port, proc=proc)
        yield proc
    finally:
        stop(proc)


# --- the clients ---------------------------------------------------------------------


def redis_benchmark(port: int, args: list[str], n: int, wrap: list[str]) -> tuple[float | None, str]:
    cmd = [*wrap, "redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", str(n), *args,
           "-t", "set,get", "--csv"]
    proc = run(cmd, ENV, 600)
    rows = [r for r in csv.reader(io.StringIO(proc.stdout)) if len(r) > 1 and r[0] != "test"]
    if proc.returncode != 0 or len(rows) != 2:
        return None, f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}"
    # both tests do the same number of requests: the combined rate is the harmonic mean
    rate = 2 / sum(1 / float(r[1]) for r in rows)
    return rate, misses(proc.stderr)


def pgbench(port: int, clients: int, tx: int, wrap: list[str], server: PostgresServer) -> tuple[float | None, str]:
    cmd = [*wrap, PGBENCH, "-S", "-n", "-c", str(clients), "-j", "2" if clients > 1 else "1", "-t", str(tx),
           f"--random-seed={SEED}", "-h", "127.0.0.1", "-p", str(port), "-U", server.user, server.dbname]
    proc = run(cmd, dict(ENV, PGPASSWORD=server.password), 600)
    tps = re.search(r"^tps = ([\d.]+)", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not tps:
        return None, f"exit {proc.returncode}: {(proc.stdout + proc.stderr).strip()[-200:]}"
    return float(tps.group(1)), misses(proc.stderr)


WRK_SCRIPT = """
-- stop after BENCH_WRK_LIMIT responses and print their rate (wrk's own report waits
-- out -d); LuaJIT's ffi gives the clock and the exit
local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } timespec_t;
  int clock_gettime(int clk, timespec_t *ts);
  void _exit(int status);
]]
local ts = ffi.new("timespec_t")
local function now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
local limit = tonumber(os.getenv("BENCH_WRK_LIMIT"))
local done, start, bad = 0, nil, 0
request = function()
  if start == nil then start = now() end
  return wrk.format()
end
response = function(status, headers, body)
  done = done + 1
  if status ~= 200 then bad = bad + 1 end
  if done == limit then
    io.write(string.format("BENCH_RATE %.1f %d\\n", limit / (now() - start), bad))
    io.flush()
    ffi.C._exit(0)
  end
end
"""


def wrk(port: int, clients: int, requests: int, wrap: list[str], script: Path) -> tuple[float | None, str]:
    cmd = [*wrap, "wrk", "-t", "1", "-c", str(clients), "-d", "120s", "-s", str(script),
           f"http://127.0.0.1:{port}/item.json"]
    proc = run(cmd, dict(ENV, BENCH_WRK_LIMIT=str(requests)), 300)
    found = re.search(r"^BENCH_RATE ([\d.]+) (\d+)", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not found:
        return None, f"exit {proc.returncode}: {(proc.stdout + proc.stderr).strip()[-200:]}"
    bad = f"{found.group(2)} responses not 200" if int(found.group(2)) else ""
    return float(found.group(1)), " ".join(filter(None, [misses(proc.stderr), bad]))


# --- the references --------------------------------------------------------------------


def haproxy_config(tmp: Path, listens: dict[int, int]) -> Path:
    conf = tmp / "haproxy.cfg"
    lines = ["global", "  maxconn 2000", "defaults", "  mode tcp", "  timeout connect 5s",
             "  timeout client 120s", "  timeout server 120s"]
    for i, (port, upstream) in enumerate(listens.items()):
        lines += [f"listen relay{i}", f"  bind 127.0.0.1:{port}", f"  server s 127.0.0.1:{upstream}"]
    conf.write_text("\n".join(lines) + "\n")
    return conf


def nutcracker_config(tmp: Path, port: int, upstream: int) -> Path:
    conf = tmp / "nutcracker.yml"
    conf.write_text(f"bench:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n"
                    f"  redis: true\n  servers:\n    - 127.0.0.1:{upstream}:1\n")
    return conf


def pgbouncer_config(tmp: Path, port: int, server: PostgresServer) -> Path:
    (tmp / "users.txt").write_text(f'"{server.user}" "{server.password}"\n')
    conf = tmp / "pgbouncer.ini"
    conf.write_text(f"[databases]\n{server.dbname} = host=127.0.0.1 port={server.port}\n"
                    f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
                    f"auth_type = scram-sha-256\nauth_file = {tmp / 'users.txt'}\npool_mode = session\n"
                    "max_client_conn = 200\ndefault_pool_size = 60\nlogfile =\npidfile =\n")
    return conf


def nginx_config(tmp: Path, port: int) -> Path:
    www = tmp / "www"
    www.mkdir()
    body = '{"id": 1, "name": "item 1", "tags": ["a", "b", "c"], "description": "' + "x" * 900 + '"}'
    (www / "item.json").write_text(body)
    conf = tmp / "nginx.conf"
    conf.write_text(f"daemon off;\nmaster_process off;\nworker_processes 1;\npid {tmp}/nginx.pid;\n"
                    f"error_log {tmp}/nginx.log;\nevents {{ worker_connections 1024; }}\n"
                    f"http {{ access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp};\n"
                    f"  fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};\n"
                    f"  server {{ listen 127.0.0.1:{port}; root {www}; keepalive_requests 1000000; }} }}\n")
    return conf


# --- the runs ----------------------------------------------------------------------------


def measure(table: Table, workload: str, path: str, fn: Callable[[], tuple[float | None, str]]) -> None:
    cell = table.setdefault(workload, {}).setdefault(path, Cell())
    for _ in range(ROUNDS):
        start = time.perf_counter()
        rate, note = fn()
        cell.add(rate, note)
        print(f"  {workload:18} {path:16} {rate or 0:9.0f}/s {time.perf_counter() - start:5.1f} s {note}",
              flush=True)


def na(table: Table, workloads: list[str], path: str, why: str) -> None:
    for w in workloads:
        table.setdefault(w, {}).setdefault(path, Cell()).note = why


def bench_redis(table: Table, tmp: Path) -> None:
    server = RedisServer().start()
    try:
        hp, np_ = free_port(), free_port()
        with daemon(["haproxy", "-db", "-f", str(haproxy_config(tmp, {hp: server.port}))], hp) as ha, \
                daemon(["nutcracker", "-c", str(nutcracker_config(tmp, np_, server.port)),
                        "-o", str(tmp / "nutcracker.log")], np_) as nut:
            for w, (args, n) in REDIS.items():
                measure(table, w, "direct", lambda: redis_benchmark(server.port, args, _n(n), []))  # noqa: B023
                for proc, name, port in ((ha, "haproxy", hp), (nut, "nutcracker", np_)):
                    if proc is None:
                        na(table, [w], name, "not installed")
                    else:
                        measure(table, w, name, lambda: redis_benchmark(port, args, _n(n), []))  # noqa: B023
                for mode in ("passthrough", "record"):
                    measure(table, w, mode, lambda: redis_benchmark(  # noqa: B023
                        server.port, args, _n(n), trproxy(mode, tmp / f"redis-{w}-{mode}")))  # noqa: B023
        server.stop()
        for w, (args, n) in REDIS.items():
            measure(table, w, "replay", lambda: redis_benchmark(  # noqa: B023
                server.port, args, _n(n), trproxy("replay", tmp / f"redis-{w}-record")))  # noqa: B023
    finally:
        server.destroy()


def bench_postgres(table: Table, tmp: Path) -> None:
    server = PostgresServer().start()
    try:
        subprocess.run([PGBENCH, "-i", "-q", "-h", "127.0.0.1", "-p", str(server.port), "-U", server.user,
                        server.dbname], check=True, capture_output=True, timeout=120,
                       env=dict(ENV, PGPASSWORD=server.password))
        hp, bp = free_port(), free_port()
        bouncer_dir = tmp / "pgbouncer"
        bouncer_dir.mkdir(mode=0o755)
        conf = pgbouncer_config(bouncer_dir, bp, server)
        user = ["-u", "nobody"] if os.geteuid() == 0 else []  # pgbouncer refuses to run as root
        with daemon(["haproxy", "-db", "-f", str(haproxy_config(tmp, {hp: server.port}))], hp) as ha, \
                daemon(["pgbouncer", *user, str(conf)], bp) as bouncer:
            for w, (clients, tx) in PGBENCH_RUNS.items():
                t = _n(tx)
                measure(table, w, "direct", lambda: pgbench(server.port, clients, t, [], server))  # noqa: B023
                for proc, name, port in ((ha, "haproxy", hp), (bouncer, "pgbouncer", bp)):
                    if proc is None:
                        na(table, [w], name, "not installed")
                    else:
                        measure(table, w, name, lambda: pgbench(port, clients, t, [], server))  # noqa: B023
                for mode in ("passthrough", "record"):
                    measure(table, w, mode, lambda: pgbench(  # noqa: B023
                        server.port, clients, t, trproxy(mode, tmp / f"pg-{w}-{mode}"), server))  # noqa: B023
        server.stop()
        for w, (clients, tx) in PGBENCH_RUNS.items():
            measure(table, w, "replay", lambda: pgbench(  # noqa: B023
                server.port, clients, _n(tx), trproxy("replay", tmp / f"pg-{w}-record"), server))  # noqa: B023
    finally:
        server.destroy()


def bench_http(table: Table, tmp: Path) -> None:
    script = tmp / "limit.lua"
    script.write_text(WRK_SCRIPT)
    nginx_dir = tmp / "nginx"
    nginx_dir.mkdir(mode=0o755)
    port, hp, mp = free_port(), free_port(), free_port()
    if shutil.which("wrk") is None or shutil.which("nginx") is None:
        na(table, list(HTTP), "direct", "wrk or nginx not installed")
        return
    mitmdump = shutil.which("mitmdump") or str(Path(sys.executable).parent / "mitmdump")
    with daemon(["nginx", "-p", str(nginx_dir), "-c", str(nginx_config(nginx_dir, port))], port):
        with daemon(["haproxy", "-db", "-f", str(haproxy_config(tmp, {hp: port}))], hp) as ha, \
                daemon([mitmdump, "-q", "--mode", f"reverse:http://127.0.0.1:{port}", "--listen-host",
                        "127.0.0.1", "-p", str(mp), "-w", str(tmp / "mitm.flows")], mp) as mitm:
            for w, clients in HTTP.items():
                n = _n(HTTP_REQUESTS[w])
                measure(table, w, "direct", lambda: wrk(port, clients, n, [], script))  # noqa: B023
                for proc, name, p in ((ha, "haproxy", hp), (mitm, "mitmdump record", mp)):
                    if proc is None:
                        na(table, [w], name, "not installed")
                    else:
                        m = min(n, _n(MITMDUMP_REQUESTS)) if proc is mitm else n
                        measure(table, w, name, lambda: wrk(p, clients, m, [], script))  # noqa: B023
                for mode in ("passthrough", "record"):
                    measure(table, w, mode, lambda: wrk(  # noqa: B023
                        port, clients, n, trproxy(mode, tmp / f"http-{w}-{mode}"), script))  # noqa: B023
    for w, clients in HTTP.items():
        # the recording holds n exchanges; replay asks for fewer, so that in-flight ones at
        # wrk's stop (recorded or not) cannot run it out
        n = _n(HTTP_REQUESTS[w]) - clients
        measure(table, w, "replay", lambda: wrk(  # noqa: B023
            port, clients, n, trproxy("replay", tmp / f"http-{w}-record"), script))  # noqa: B023


def report(table: Table) -> None:
    paths = ["haproxy", "nutcracker", "pgbouncer", "mitmdump record", "passthrough", "record", "replay"]
    print(f"ops/s and ratio to direct, best of {ROUNDS}, scale {SCALE} (eBPF redirect for trproxy)")
    print(f"{'workload':18}{'direct':>9}" + "".join(f"{p:>17}" for p in paths))
    notes = []
    for w, cells in table.items():
        direct = cells.get("direct", Cell()).rate
        row = f"{w:18}{direct or 0:>9.0f}"
        for p in paths:
            cell = cells.get(p)
            if cell is None:
                row += f"{'':>17}"
            elif cell.rate is None or not direct:
                row += f"{'n/a':>17}"
            else:
                row += f"{cell.rate:>9.0f} {cell.rate / direct:5.2f}x"
            if cell is not None and cell.note:
                notes.append(f"  {w} / {p}: {cell.note}")
        print(row)
    for note in notes:
        print(note)


def main() -> None:
    if os.geteuid() != 0:
        print("skipped: trproxy run needs root for the eBPF redirect")
        return
    table: Table = {}
    tmp = Path(tempfile.mkdtemp(prefix="trproxy-bench-table-"))
    tmp.chmod(0o755)  # nginx's and pgbouncer's workers run as nobody
    start = time.perf_counter()
    try:
        chosen = os.environ.get("BENCH_TABLE_ONLY", "redis,postgres,http").split(",")
        for name, fn in (("redis", bench_redis), ("postgres", bench_postgres), ("http", bench_http)):
            if name in chosen:
                try:
                    fn(table, tmp)
                except Exception as exc:  # one failing part still shows the others
                    print(f"{name}: failed: {exc!r}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(table)
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()

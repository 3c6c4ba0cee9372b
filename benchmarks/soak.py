"""``make soak``: load and soak of ``trproxy record`` against a real redis-server.

Two measurements, each beside its reference in the same run (not part of ``make bench``
nor of CI: it takes ``SOAK_SECONDS`` plus about a minute):

* **1,000 connections**: an asyncio client (hiredis to build and parse RESP) opens
  ``SOAK_CONNECTIONS`` connections at once and sends ``SOAK_REQUESTS`` SET/GET pairs on
  each, first straight to redis-server, then through ``trproxy record --forward``;
  ``SOAK_RUNS`` times (default 3). It prints per-request latency percentiles, the
  **stall** and the errors the app saw, with the ratio of each to the direct run. The
  stall is the longest time in which no connection got an answer although requests were
  outstanding: the longest gap between two consecutive replies over all connections (a
  stop of the whole proxy). Beside it: how long trproxy's loop thread ran and how long
  it, and the client that timestamps the answers, were runnable but waited for a CPU
  during that gap (``/proc/<pid>/schedstat`` sampled every ``SOAK_SCHED_MS``); the
  slowest request's wait beyond the direct run's slowest, trproxy's CPU time per
  request, the client's own event-loop lag and the load average, which say how far a
  busy machine, not trproxy, made the figures. A run passes with no error, no stall over
  100 ms and no request waiting over ``MAX_TAIL`` times the median (one connection
  starved while the others went on is a stall too, which the gap does not see). When
  only the stall failed and either the direct run stalled over 100 ms as well or the
  stall minus the CPU wait in it (trproxy's or the client's, the longer) is within
  100 ms, the machine could not show the target: that run is INCONCLUSIVE, not passed.
* **RSS soak**: redis-benchmark ``-c 50`` through ``trproxy record`` for
  ``SOAK_SECONDS`` (default 600), trproxy's VmRSS sampled every ``SOAK_SAMPLE`` seconds
  from ``/proc/<pid>/status``. It fails when, after the first minute (the first fifth of
  a shorter run), RSS grows more than 10% above its first sample.

``python -m benchmarks.soak [connections|rss]`` runs one part; ``SOAK_SECONDS=20`` gives a
smoke run. The exit status says whether every assertion held.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import hiredis

from benchmarks.common import ROOT, TRPROXY  # noqa: E402  (puts ROOT on sys.path)
from tests.support.proc import stop  # noqa: E402
from tests.support.services import RedisServer, free_port, wait_port  # noqa: E402

CONNECTIONS = int(os.environ.get("SOAK_CONNECTIONS", "1000"))
RUNS = int(os.environ.get("SOAK_RUNS", "3"))
REQUESTS = int(os.environ.get("SOAK_REQUESTS", "20"))  # SET/GET pairs per connection
SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
SAMPLE = float(os.environ.get("SOAK_SAMPLE", "5"))
SCHED_MS = float(os.environ.get("SOAK_SCHED_MS", "10"))  # trproxy's schedstat sampling
MAX_GAP_MS = 100.0
MAX_TAIL = 5.0  # the slowest request / the median: a starved connection
MAX_GROWTH = 0.10


# -- trproxy record as a process -----------------------------------------------------------

class Recorder:
    """``trproxy record --forward LISTEN=redis`` around a ``sleep``; stopped by SIGTERM."""

    def __init__(self, upstream: int, recordings: Path) -> None:
        self.port = free_port()
        self.log = recordings / "trproxy.log"
        cmd = [*TRPROXY, "record", "--dir", str(recordings), "--no-redirect", "--forward",
               f"127.0.0.1:{self.port}=127.0.0.1:{upstream}", "--", "sleep", "100000"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log.open("wb"),
                                     env=dict(os.environ, PYTHONPATH=str(ROOT)))
        try:
            wait_port("127.0.0.1", self.port, timeout=60, proc=self.proc)
        except BaseException:  # not listening in time: stopped, not left running
            stop(self.proc, timeout=30)
            raise

    def cpu_seconds(self) -> float:
        """User+system CPU of trproxy and of its recording writer (its children now)."""
        total = 0.0
        pids = [self.proc.pid, *(int(p) for p in Path(
            f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split())]
        for pid in pids:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def cpu_wait_seconds(self) -> float:
        """Time trproxy's main thread was runnable but waited for a CPU (schedstat): what
        a busy machine, not trproxy, added to every figure."""
        with contextlib.suppress(OSError, IndexError, ValueError):
            return int(Path(f"/proc/{self.proc.pid}/schedstat").read_text().split()[1]) / 1e9
        return float("nan")

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> float:
        """SIGTERM; the seconds trproxy took to publish the recording and exit."""
        start = time.monotonic()
        stop(self.proc, timeout=120)
        return time.monotonic() - start


class SchedSampler(threading.Thread):
    """``/proc/<pid>/schedstat`` of trproxy's loop thread every ``SCHED_MS``: how long it ran
    and how long it was runnable but waited for a CPU in any interval of the run, such as
    the stall (a busy machine's share of it, not trproxy's)."""

    def __init__(self, pid: int, every: float = SCHED_MS / 1000) -> None:
        super().__init__(daemon=True)
        self.path, self.every = Path(f"/proc/{pid}/schedstat"), every
        self.samples: list[tuple[float, float, float]] = []  # (monotonic, ran s, waited s)
        self._ended = threading.Event()

    def run(self) -> None:
        self._sample()
        while not self._ended.wait(self.every):
            self._sample()
        self._sample()  # one after the end of the load

    def _sample(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            ran, waited = self.path.read_text().split()[:2]
            self.samples.append((time.monotonic(), int(ran) / 1e9, int(waited) / 1e9))

    def stop(self) -> None:
        self._ended.set()
        self.join()

    def during(self, start: float, end: float) -> tuple[float, float]:
        """Seconds trproxy ran and waited for a CPU from the last sample before ``start``
        to the first after ``end`` (nan when the samples do not cover it)."""
        before = [x for x in self.samples if x[0] <= start]
        after = [x for x in self.samples if x[0] >= end]
        if not before or not after:
            return float("nan"), float("nan")
        return after[0][1] - before[-1][1], after[0][2] - before[-1][2]


# -- (a) many connections ------------------------------------------------------------------

@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, per request
    replies: list[float] = field(default_factory=list)  # monotonic time of each reply
    connects: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0
    client_lag: float = 0.0  # the client's own longest event-loop delay, seconds

    def pct(self, values: list[float], p: float) -> float:
        s = sorted(values)
        return s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000 if s else float("nan")

    def longest_gap(self) -> tuple[float, float]:
        """The stall: the longest time in which no connection got an answer while requests
        were outstanding (every client sends again at once when answered), as the
        monotonic times of the two replies around it."""
        s = sorted(self.replies)
        return max(zip(s, s[1:], strict=False), key=lambda ab: ab[1] - ab[0], default=(0.0, 0.0))

    def longest_gap_ms(self) -> float:
        a, b = self.longest_gap()
        return (b - a) * 1000


async def _client(port: int, index: int, requests: int, ready: asyncio.Event,
                  out: LoadResult) -> None:
    t0 = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        out.errors.append(f"connect: {e}")
        return
    out.connects.append(time.monotonic() - t0)
    parser = hiredis.Reader()
    try:
        await ready.wait()  # every client starts sending at once
        for i in range(requests * 2):
            key = b"soak:%d:%d" % (index, i // 2)
            value = b"v%d-%d" % (index, i)
            cmd = (b"SET", key, value) if i % 2 == 0 else (b"GET", key)
            start = time.monotonic()
            writer.write(hiredis.pack_command(cmd))
            reply = parser.gets()
            while reply is False:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("closed by peer")
                parser.feed(data)
                reply = parser.gets()
            now = time.monotonic()
            out.latencies.append(now - start)
            out.replies.append(now)
            expected = b"OK" if i % 2 == 0 else b"v%d-%d" % (index, i - 1)
            if reply != expected:
                out.errors.append(f"{cmd[0].decode()} {key.decode()}: {reply!r}")
    except (OSError, ConnectionError, hiredis.ProtocolError) as e:
        out.errors.append(f"{type(e).__name__}: {e}")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _lag(out: LoadResult, stop: asyncio.Event) -> None:
    """The client's own loop delay: a stall of the client looks like a stall of trproxy."""
    while not stop.is_set():
        before = time.monotonic()
        await asyncio.sleep(0.005)
        out.client_lag = max(out.client_lag, time.monotonic() - before - 0.005)


async def _load(port: int, connections: int, requests: int) -> LoadResult:
    out = LoadResult()
    ready = asyncio.Event()
    done = asyncio.Event()
    tasks = [asyncio.create_task(_client(port, i, requests, ready, out))
             for i in range(connections)]
    while len(out.connects) + len(out.errors) < connections:
        await asyncio.sleep(0.01)
    start = time.monotonic()
    lag = asyncio.create_task(_lag(out, done))
    ready.set()
    await asyncio.gather(*tasks)
    out.wall = time.monotonic() - start
    done.set()
    await lag
    return out


def load(port: int, connections: int = CONNECTIONS, requests: int = REQUESTS) -> LoadResult:
    return asyncio.run(_load(port, connections, requests))


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def connections(server: RedisServer, recordings: Path, n: int = CONNECTIONS,
                requests: int = REQUESTS, runs: int = RUNS) -> dict:
    results = [connections_once(server, recordings / f"run-{i}", n, requests, i + 1, runs)
               for i in range(runs)]
    verdicts = [r["verdict"] for r in results]
    print(f"connections: {len(results)} runs: {', '.join(verdicts)}")
    return {"runs": results, "ok": all(v == "ok" for v in verdicts)}


def connections_once(server: RedisServer, recordings: Path, n: int, requests: int,
                     index: int = 1, runs: int = 1) -> dict:
    recordings.mkdir(parents=True, exist_ok=True)
    load_before = load_average()
    direct = load(server.port, n, requests)
    rec = Recorder(server.port, recordings)
    try:
        cpu_before, wait_before = rec.cpu_seconds(), rec.cpu_wait_seconds()
        sampler, own = SchedSampler(rec.proc.pid), SchedSampler(os.getpid())  # trproxy, client
        sampler.start()
        own.start()
        try:
            through = load(rec.port, n, requests)
        finally:
            sampler.stop()
            own.stop()
        cpu = rec.cpu_seconds() - cpu_before
        waited = rec.cpu_wait_seconds() - wait_before
        rss = rec.rss_kb()
    finally:
        stop_s = rec.stop()
    rows = [("p50 latency ms", lambda r: r.pct(r.latencies, 50)),
            ("p90 latency ms", lambda r: r.pct(r.latencies, 90)),
            ("p99 latency ms", lambda r: r.pct(r.latencies, 99)),
            ("max latency ms", lambda r: r.pct(r.latencies, 100)),
            ("max / p50", lambda r: r.pct(r.latencies, 100) / (r.pct(r.latencies, 50) or 1)),
            ("stall ms", LoadResult.longest_gap_ms),
            ("client lag ms", lambda r: r.client_lag * 1000),
            ("connect p99 ms", lambda r: r.pct(r.connects, 99)),
            ("requests/s", lambda r: len(r.latencies) / r.wall if r.wall else 0.0)]
    print(f"run {index}/{runs}: {n} connections x {requests} SET/GET pairs, direct vs trproxy "
          f"record (--forward listener); load average {load_before} before, "
          f"{load_average()} after")
    print(f"{'':20}{'direct':>12}{'record':>12}{'ratio':>9}")
    for name, fn in rows:
        d, t = fn(direct), fn(through)
        print(f"{name:20}{d:12.1f}{t:12.1f}{t / d if d else float('nan'):9.2f}")
    print(f"{'errors':20}{len(direct.errors):12}{len(through.errors):12}")
    for e in sorted(set(through.errors))[:5]:
        print(f"  record error: {e}")
    done = len(through.latencies)
    print(f"trproxy CPU {cpu * 1000 / max(done, 1):.2f} ms per request ({cpu / through.wall:.0%} "
          f"of a core over the run), waited for a CPU {waited / through.wall:.0%} of the run; "
          f"RSS after the run {rss / 1024:.0f} MiB; SIGTERM to exit {stop_s:.1f} s")
    ran, waited_in_stall = sampler.during(*through.longest_gap())
    client_waited = own.during(*through.longest_gap())[1]
    beyond = through.pct(through.latencies, 100) - direct.pct(direct.latencies, 100)
    print(f"stall (the longest time no connection got an answer): direct "
          f"{direct.longest_gap_ms():.0f} ms, record {through.longest_gap_ms():.0f} ms, in which "
          f"trproxy ran {ran * 1000:.0f} ms and waited for a CPU {waited_in_stall * 1000:.0f} ms "
          f"(the client waited {client_waited * 1000:.0f} ms); the slowest request waited "
          f"{beyond:.0f} ms beyond the direct run's slowest")
    verdict, why = judge(direct, through, max(waited_in_stall, client_waited))
    print(f"connections run {index}: {verdict} ({why})", flush=True)
    return {"direct": direct, "record": through, "exchanges": recorded_exchanges(recordings),
            "cpu": cpu, "stall": (ran, waited_in_stall), "verdict": verdict}


def judge(direct: LoadResult, through: LoadResult, waited: float = 0.0) -> tuple[str, str]:
    """ok, FAILED, or INCONCLUSIVE: only the stall failed, and the direct run stalled too
    or enough of the stall was spent waiting for a CPU (``waited`` seconds: trproxy's or
    the client's, which timestamps the answers, whichever is longer)."""
    if through.errors or direct.errors:
        return "FAILED", f"{len(through.errors)} errors through trproxy, {len(direct.errors)} direct"
    tail = through.pct(through.latencies, 100) / (through.pct(through.latencies, 50) or 1)
    if tail > MAX_TAIL:  # a ratio within the run: a busy machine slows every request alike
        return "FAILED", f"the slowest request waited {tail:.1f}x the median (> {MAX_TAIL:.0f}x)"
    gap, reference = through.longest_gap_ms(), direct.longest_gap_ms()
    if gap <= MAX_GAP_MS:
        return "ok", f"no error, stall {gap:.0f} ms <= {MAX_GAP_MS:.0f}, max <= {MAX_TAIL:.0f}x p50"
    if reference > MAX_GAP_MS:
        return "INCONCLUSIVE", (f"stall {gap:.0f} ms > {MAX_GAP_MS:.0f}, but the direct run "
                                f"stalled {reference:.0f} ms too: the machine was too busy to tell")
    if gap - waited * 1000 <= MAX_GAP_MS:
        return "INCONCLUSIVE", (f"stall {gap:.0f} ms > {MAX_GAP_MS:.0f}, of which {waited * 1000:.0f}"
                                " ms waiting for a CPU: the machine was too busy to tell")
    return "FAILED", f"stall {gap:.0f} ms > {MAX_GAP_MS:.0f} (direct {reference:.0f} ms)"


# -- (b) RSS over a long record run -------------------------------------------------------

def rss(server: RedisServer, recordings: Path, seconds: float = SECONDS,
        sample: float = SAMPLE) -> dict:
    rec = Recorder(server.port, recordings)
    samples: list[tuple[float, int]] = []
    bench = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(rec.port), "-c", "50", "-n",
             "20000", "-t", "set,get", "-r", "100000", "-q"]
    start = time.monotonic()
    proc: subprocess.Popen | None = None
    try:
        next_sample = start
        while time.monotonic() - start < seconds:
            if proc is None or proc.poll() is not None:
                if proc is not None and proc.returncode != 0:
                    raise RuntimeError(f"redis-benchmark failed: {proc.stderr.read()}")
                proc = subprocess.Popen(bench, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True)
            now = time.monotonic()
            if now >= next_sample:
                samples.append((now - start, rec.rss_kb()))
                next_sample += sample
            time.sleep(0.1)
        samples.append((time.monotonic() - start, rec.rss_kb()))
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait()
        stop_s = rec.stop()
    exchanges = recorded_exchanges(recordings)
    warmup = min(60.0, seconds / 5)
    steady = [kb for t, kb in samples if t >= warmup] or [samples[-1][1]]
    growth = max(steady) / steady[0] - 1
    print(f"redis-benchmark -c 50 through trproxy record for {seconds:.0f} s: {exchanges} "
          f"exchanges recorded, RSS every {sample:.0f} s")
    step = max(1, len(samples) // 12)
    print("  t(s) RSS(MiB): " + "  ".join(f"{t:.0f}:{kb / 1024:.0f}" for t, kb in samples[::step]))
    print(f"RSS after warm-up ({warmup:.0f} s) {steady[0] / 1024:.0f} MiB, max {max(steady) / 1024:.0f}"
          f" MiB, end {samples[-1][1] / 1024:.0f} MiB: growth {growth * 100:.1f}%"
          f" ({(samples[-1][1] - samples[0][1]) * 1024 / max(exchanges, 1):.0f} B per exchange);"
          f" SIGTERM to exit {stop_s:.1f} s")
    ok = growth <= MAX_GROWTH
    print(f"rss: {'ok' if ok else 'FAILED'} (growth after warm-up <= {MAX_GROWTH * 100:.0f}%)")
    return {"samples": samples, "exchanges": exchanges, "growth": growth, "ok": ok}


def recorded_exchanges(recordings: Path) -> int:
    """Documents in the published mocks.yaml files (one ``---`` line each)."""
    count = 0
    for path in recordings.glob("*/mocks.yaml"):
        with path.open("rb") as f:
            count += sum(1 for line in f if line.startswith(b"---"))
    return count


def main(argv: list[str] | None = None) -> int:
    parts = (argv if argv is not None else sys.argv[1:]) or ["connections", "rss"]
    server = RedisServer().start()
    results = []
    try:
        for part in parts:
            recordings = Path(tempfile.mkdtemp(prefix="trproxy-soak-"))
            try:
                print(f"\n=== soak: {part} ===", flush=True)
                results.append({"connections": connections, "rss": rss}[part](server, recordings)["ok"])
                print(f"load average now {load_average()}", flush=True)
            finally:
                shutil.rmtree(recordings, ignore_errors=True)
    finally:
        server.destroy()
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())

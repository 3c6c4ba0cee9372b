"""Loading a large recording for replay: what `trproxy replay` does before it serves (hash
the YAML, verify the cache's HMAC over its index, build the mock pool and the timeline),
beside its parts, the cost of an exchange's first use (its bucket is made and its document
read and decoded then), the first load of a recording without a cache (parse, check, write
the cache), per exchange, and the peak memory (RSS) of a fresh process that loads the
recording, then serves from it.

The cache is trusted only for the YAML bytes it names (SHA-256) and under this
installation's key (HMAC); this shows what that costs a load. Times are CPU seconds of
this process (the machine may be shared), best of a few rounds, with a reference beside
them (a plain Python loop of 10M turns) to compare machines.

Run: ``.venv/bin/python -m benchmarks store`` (``TRPROXY_BENCH_EXCHANGES``, default 200000
so that `make bench` stays short; 1000000 for the target itself, whose recording alone
takes minutes; the first load is measured on ``TRPROXY_BENCH_COLD``, default 20000, and given per exchange).
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import check
from trproxy.protocols.registry import has_volatile_rules, match_key, volatile_rules
from trproxy.proxy.timeline import Timeline
from trproxy.store import Exchange, MockPool, MockWriter, load_mocks, recording
from trproxy.store.recording import MOCKS


def _exchange(i: int) -> Exchange:
    """Redis, Postgres and HTTP exchanges in turn, shaped like real recordings."""
    meta = {"seq": i, "connection": i // 50, "started": "2026-11-25T02:06:38.928859+00:00",
            "duration_ms": 0.41}
    if i % 3 == 0:
        return Exchange("redis", "127.0.0.1:6379", ["SET", f"key:{i}", f"value {i}"],
                        [{"simple": "OK"}], tests=["test-1"], **meta)
    if i % 3 == 1:
        sql = "SELECT id, sku, name, price_cents FROM products WHERE id = $1"
        return Exchange("postgres", "127.0.0.1:5432",
                        [{"Bind": {"portal": "", "statement": "s1", "query": sql, "parameters": [str(i)],
                                   "result_formats": [1]}}, {"Execute": {"portal": "", "max_rows": 0}},
                         {"Sync": {}}],
                        [{"BindComplete": {}}, {"DataRow": [{"binary": "int4", "value": i},
                                                            {"binary": "text", "value": "KB-1"}]},
                         {"CommandComplete": "SELECT 1"}, {"ReadyForQuery": "I"}], summary="SELECT", **meta)
    return Exchange("http", "127.0.0.1:8080",
                    {"method": "POST", "url": f"http://api.test/v1/orders/{i}?a=1", "http_version": "HTTP/1.1",
                     "headers": [["Content-Type", "application/json"], ["Accept", "*/*"]],
                     "body": {"json": {"user": "ann", "n": i, "items": [1, 2, 3]}, "style": "spaced"}},
                    [{"status": 201, "reason": "Created", "http_version": "HTTP/1.1",
                      "headers": [["Content-Type", "application/json"]],
                      "body": {"json": {"id": i, "created_at": "2026-11-25T02:06:38Z"}}}], tls=True, **meta)


def _cpu(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def _record(test_set: Path, n: int) -> None:
    writer = MockWriter(test_set / MOCKS)
    for i in range(n):
        writer.write(_exchange(i))
    writer.close()


def _replay_ready(test_set: Path) -> tuple[MockPool, Timeline]:
    """What the runner does before replay serves (``build_context``), and the timeline."""
    with recording.no_gc():
        pool = MockPool.build(load_mocks(test_set), match_key, volatile_rules, has_volatile_rules)
        return pool, Timeline(pool)


def _peak_mib() -> float:
    """This process's peak RSS (``VmHWM``: ``ru_maxrss`` survives ``exec``, so a child
    would report its parent's peak)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def _memory(test_set: Path, n: int) -> None:
    """In a fresh process (``--memory``): the peak RSS with the modules imported, after the
    replay-ready load, then after serving 20000 exchanges at random (one line)."""
    imported = _peak_mib()
    pool, _timeline = _replay_ready(test_set)
    loaded = _peak_mib()
    for i in random.Random(1).sample(range(n), min(n, 20_000)):
        ex = _exchange(i)
        assert pool.find(ex.protocol, ex.destination, ex.request).exchange.responses
    print(f"{imported:.0f} {loaded:.0f} {_peak_mib():.0f}")


def _reference() -> None:
    for _ in range(10_000_000):
        pass


def main() -> None:
    n = int(os.environ.get("TRPROXY_BENCH_EXCHANGES", "200000"))
    cold_n = min(n, int(os.environ.get("TRPROXY_BENCH_COLD", "20000")))
    with tempfile.TemporaryDirectory(prefix="trproxy-bench-store-") as tmp:
        test_set = Path(tmp) / "test-set-0"
        _record(test_set, n)
        yaml_mb = (test_set / MOCKS).stat().st_size / 2**20
        cache_mb = (test_set / (MOCKS + ".cache")).stat().st_size / 2**20
        hash_s = _cpu(lambda: recording._sha256(test_set / MOCKS, Path(tmp)), 3)
        load_s = _cpu(lambda: len(load_mocks(test_set)), 3)
        ready_s = _cpu(lambda: _replay_ready(test_set), 3)
        pool, _timeline = _replay_ready(test_set)
        served = min(n, 20_000)
        requests = [_exchange(i) for i in range(served)]
        start = time.process_time()
        for ex in requests:  # each served once: its document is decoded now
            found = pool.find(ex.protocol, ex.destination, ex.request).exchange
            assert found.responses and found.seq == ex.seq
        serve_us = (time.process_time() - start) / served * 1e6
        cold_set = Path(tmp) / "test-set-1"
        _record(cold_set, cold_n)

        def cold() -> None:
            (cold_set / (MOCKS + ".cache")).unlink()
            assert len(load_mocks(cold_set)) == cold_n

        cold_us = _cpu(cold, 1) / cold_n * 1e6
        imported, loaded, serving = check([sys.executable, "-m", "benchmarks.bench_store", "--memory",
                                           str(test_set), str(n)], timeout=1800).stdout.split()
    ref_s = _cpu(_reference, 3)
    print(f"{n} exchanges, mocks.yaml {yaml_mb:.1f} MiB, cache {cache_mb:.1f} MiB")
    print(f"replay-ready load (load, mock pool, timeline): {ready_s:.2f} s CPU  "
          f"(target: <= 2 s for 1M exchanges, {ready_s * 1e6 / n:.1f} s at this rate)")
    print(f"  of which load_mocks (hash, MAC, index):     {load_s:.2f} s CPU")
    print(f"  of which SHA-256 of the YAML:               {hash_s:.2f} s CPU")
    print(f"first use of an exchange (find, decode):      {serve_us:.1f} us CPU each ({served} served)")
    print(f"first load without a cache (parse, check):    {cold_us:.0f} us CPU per exchange ({cold_n})")
    print(f"peak RSS of a fresh process: {imported} MiB imported, {loaded} MiB loaded, "
          f"{serving} MiB after serving {min(n, 20_000)} at random")
    print(f"reference: a Python loop of 10M turns:        {ref_s:.2f} s CPU (machine speed)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--memory"]:
        _memory(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        main()

"""Loading a large recording: the first load (parse the YAML, check every exchange, write
the cache) against later ones (hash the YAML, verify the cache's HMAC, unpack it, check
every exchange), beside the floor of a cached load: unpacking the same msgpack alone.

The cache is trusted only for the YAML bytes it names (SHA-256) and under this
installation's key (HMAC); this shows what that costs a load. Times are CPU seconds of
this process (the machine may be shared), best of a few rounds.

Run: ``.venv/bin/python -m benchmarks store`` (``TRPROXY_BENCH_EXCHANGES``, default 100000).
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from pathlib import Path

import msgpack

from trproxy.store import Exchange, MockWriter, load_mocks
from trproxy.store.recording import _CACHE_MAGIC, MOCKS


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


def main() -> None:
    n = int(os.environ.get("TRPROXY_BENCH_EXCHANGES", "100000"))
    with tempfile.TemporaryDirectory(prefix="trproxy-bench-store-") as tmp:
        test_set = Path(tmp) / "test-set-0"
        writer = MockWriter(test_set / MOCKS)
        for i in range(n):
            writer.write(_exchange(i))
        writer.close()
        yaml_mb = (test_set / MOCKS).stat().st_size / 2**20
        cache = test_set / (MOCKS + ".cache")

        def cold() -> None:
            cache.unlink()
            assert len(load_mocks(test_set)) == n

        cold_s = _cpu(cold, 1)
        cached_s = _cpu(lambda: len(load_mocks(test_set)), 3)
        payload = cache.read_bytes()[len(_CACHE_MAGIC) + 64:]  # after the digest and the MAC

        def unpack() -> None:
            gc.disable()
            try:
                msgpack.unpackb(payload, raw=False, strict_map_key=False)
            finally:
                gc.enable()

        floor_s = _cpu(unpack, 3)
    print(f"{n} exchanges, mocks.yaml {yaml_mb:.1f} MiB, cache {len(payload) / 2**20:.1f} MiB")
    print(f"first load (parse, check, write the cache): {cold_s:.2f} s CPU")
    print(f"cached load (SHA-256, HMAC, unpack, check):  {cached_s:.2f} s CPU, "
          f"{cold_s / cached_s:.1f}x faster than the first")
    print(f"msgpack unpack alone (floor):               {floor_s:.2f} s CPU; "
          f"cached load = {cached_s / floor_s:.2f}x the floor")


if __name__ == "__main__":
    main()

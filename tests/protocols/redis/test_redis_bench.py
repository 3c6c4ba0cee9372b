"""The benchmark runs, and every decoder in it agrees on what the corpora hold."""

from __future__ import annotations

import importlib.util
import io

from tests.support.proc import ROOT


def test_benchmark_smoke_run() -> None:
    spec = importlib.util.spec_from_file_location("bench_redis", ROOT / "benchmarks" / "bench_redis.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = io.StringIO()
    rows = bench.run(scale=0.002, rounds=1, out=out)  # exits if decoders disagree on counts
    names = [r["name"] for r in rows]
    assert "pipelined SET/GET requests" in names and "requests (SET k v EX 60)" in names
    assert all(r["ours"] > 0 for r in rows)
    assert "ours/hiredis" in out.getvalue()

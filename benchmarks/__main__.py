"""``make bench``: every benchmark, each beside its reference in the same run, as ratios.

Runs ``benchmarks/bench_*.py`` modules' ``main()`` in turn (or those named on the
command line: ``python -m benchmarks proxy redis``). A failing benchmark is reported
and the others still run; the exit status says whether all of them ran. Every command a
benchmark runs is waited for a bounded time (``common.run``/``check``): one that does not
end is stopped and named, never waited for until an outer timeout.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path

from benchmarks.common import BenchError


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(here)])
                   if m.name.startswith("bench_"))
    chosen = argv or names
    failed = []
    for name in chosen:
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        try:
            importlib.import_module(f"benchmarks.bench_{name}").main()
        except BenchError as e:  # a command failed or did not end in time: it says which
            print(f"{name} failed: {e}", flush=True)
            failed.append(name)
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"({name}: {time.perf_counter() - start:.1f} s)", flush=True)
    if failed:
        print(f"\nbenchmarks that failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

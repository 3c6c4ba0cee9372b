"""The notes and tokens examples: `trproxy test` vs the same calls against fresh real services.

Reference, per app: what an integration run costs without trproxy — start PostgreSQL and
Redis (and the rates service) fresh, create the schema and the user, start the app, run
its traffic script, stop everything. Measured: `trproxy test -- python app.py` on a
recording of that traffic, no service running. Best of 2 each, wall time, printed with
the ratio, and where `trproxy test`'s time goes: the app's own start-up (until it
listens), the tests, and the rest (trproxy's start: Python, imports, proxy, eBPF; the
app's stop).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ENV, ROOT, TRPROXY, check  # noqa: E402  (puts ROOT on sys.path)

sys.path.insert(0, str(ROOT / "examples"))

from webapps import WebAppServices  # noqa: E402

from tests.support.proc import stop  # noqa: E402
from tests.support.services import wait_port  # noqa: E402

SUMMARY = re.compile(r"\((?P<total>[\d.]+) s: app start-up (?P<startup>[\d.]+) s, tests (?P<tests>[\d.]+) s\)")


def with_real_services(app: str) -> float:
    start = time.perf_counter()
    services = WebAppServices(app).start()
    try:
        env = dict(ENV, **services.env())
        proc = subprocess.Popen(services.command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port("127.0.0.1", services.port, timeout=60, proc=proc)
            check(services.traffic, dict(env, **services.traffic_env()), 300)
        finally:
            stop(proc)
    finally:
        services.stop()
    return time.perf_counter() - start


def record(app: str, recordings: Path) -> tuple[dict[str, str], list[str]]:
    services = WebAppServices(app).start()
    try:
        env = dict(ENV, **services.env())
        rec = subprocess.Popen([*TRPROXY, "record", "--dir", str(recordings), "--app-port", str(services.port),
                                "--", *services.command], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            wait_port("127.0.0.1", services.port, timeout=60, proc=rec)
            check(services.traffic, dict(env, **services.traffic_env()), 300)
        finally:
            stop(rec)
        return env, services.command
    finally:
        services.stop()


def replay_tests(recordings: Path, env: dict[str, str], command: list[str]) -> tuple[float, dict[str, float]]:
    start = time.perf_counter()
    out = check([*TRPROXY, "test", "--dir", str(recordings), "--", *command], env, 600)
    elapsed = time.perf_counter() - start
    found = SUMMARY.search(out.stderr)
    parts = {k: float(v) for k, v in found.groupdict().items()} if found else {}
    return elapsed, parts


def main() -> None:
    if os.geteuid() != 0:
        print("skipped: trproxy test needs root for the eBPF redirect")
        return
    for app in ("notes", "tokens"):
        recordings = Path(tempfile.mkdtemp(prefix=f"trproxy-bench-{app}-"))
        try:
            env, command = record(app, recordings)
            real = [with_real_services(app) for _ in range(2)]
            mocked = [replay_tests(recordings, env, command) for _ in range(2)]
        finally:
            shutil.rmtree(recordings, ignore_errors=True)
        best_real = min(real)
        best_mocked, parts = min(mocked, key=lambda m: m[0])
        print(f"{app} example, its traffic script (best of 2 each, wall time)")
        print(f"  real services started fresh + schema + app + calls : {best_real:6.2f} s")
        print(f"  trproxy test (all dependencies replayed)           : {best_mocked:6.2f} s"
              f"  ({best_real / best_mocked:.2f}x faster)")
        if parts:
            rest = best_mocked - parts["total"]
            print(f"    of which the app's start-up until it listens    : {parts['startup']:6.2f} s")
            print(f"             the tests                              : {parts['tests']:6.2f} s")
            print(f"             trproxy's start and the app's stop     : {rest:6.2f} s")


if __name__ == "__main__":
    main()

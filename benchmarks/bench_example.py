"""The shop example's tests: `trproxy test` with mocks vs the same calls with real services.

Reference: what an integration test run costs without trproxy — start Postgres, Redis,
Kafka and the pricing service fresh, start the shop, send traffic.sh's calls, stop
everything. Measured: `trproxy test -- python app.py` on the recording of those calls,
no service running. Printed as wall-time ratio, both measured in this run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, TRPROXY, check  # noqa: E402  (puts ROOT on sys.path)

sys.path.insert(0, str(ROOT / "examples" / "shop"))

from services import ShopServices  # noqa: E402

from tests.support.proc import stop  # noqa: E402
from tests.support.services import wait_port  # noqa: E402

SHOP = ROOT / "examples" / "shop"
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def _traffic(port: int) -> None:
    check(["bash", str(SHOP / "traffic.sh"), f"http://127.0.0.1:{port}"], timeout=300)


def with_real_services() -> float:
    start = time.perf_counter()
    services = ShopServices().start()
    try:
        env = dict(ENV, **services.env())
        app = subprocess.Popen([sys.executable, str(SHOP / "app.py")], env=env, stdout=subprocess.DEVNULL)
        try:
            wait_port("127.0.0.1", services.shop_port, timeout=60, proc=app)
            _traffic(services.shop_port)
        finally:
            stop(app)
    finally:
        services.stop()
    return time.perf_counter() - start


def record(recordings: Path) -> None:
    services = ShopServices().start()
    try:
        env = dict(ENV, **services.env())
        rec = subprocess.Popen([*TRPROXY, "record", "--dir", str(recordings), "--app-port",
                                str(services.shop_port), "--", sys.executable, str(SHOP / "app.py")],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port("127.0.0.1", services.shop_port, timeout=60, proc=rec)
            time.sleep(1.0)  # the app binds its shadow port a moment after trproxy listens
            _traffic(services.shop_port)
        finally:
            stop(rec)
        return env
    finally:
        services.stop()


def replay_tests(recordings: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    check([*TRPROXY, "test", "--dir", str(recordings), "--", sys.executable, str(SHOP / "app.py")],
          env, 600)
    return time.perf_counter() - start


def main() -> None:
    if os.geteuid() != 0:
        print("skipped: trproxy test needs root for the eBPF redirect")
        return
    recordings = Path(tempfile.mkdtemp(prefix="trproxy-bench-shop-"))
    try:
        env = record(recordings)
        real = [with_real_services() for _ in range(2)]
        mocked = [replay_tests(recordings, env) for _ in range(2)]
    finally:
        shutil.rmtree(recordings, ignore_errors=True)
    best_real, best_mocked = min(real), min(mocked)
    print("shop example, traffic.sh's 14 calls (best of 2 each, wall time)")
    print(f"  real services started fresh + app + calls : {best_real:6.2f} s")
    print(f"  trproxy test (all dependencies replayed)  : {best_mocked:6.2f} s")
    print(f"  ratio real / trproxy test                 : {best_real / best_mocked:6.2f}x faster")


if __name__ == "__main__":
    main()

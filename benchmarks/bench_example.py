"""The shop example's tests: `trproxy test` with mocks vs the same calls with real services.

Two references, each what an integration test run costs without trproxy — start
Postgres, Redis, Kafka and the pricing service fresh, start the shop, send traffic.sh's
calls, stop everything:
- local: the services as processes on loopback (examples/shop/services.py);
- containers: each service in a container of a private dockerd (tests.support.docker:
  its own data root and bridge, an image imported from the host's binaries, no
  registry), started together as Compose does, stopped and removed at the end. The
  daemon and the image exist before the clock starts (a developer's engine is running
  and its images are pulled). Postgres and Redis run on the default bridge and are
  reached at their container address; the pricing service and the Kafka mock broker bind
  127.0.0.1 only (the broker also advertises it), so they run with ``--network host``.
Measured: `trproxy test -- python app.py` on the recording of those calls, no service
running. Printed as wall-time ratios, all measured in this run, with where `trproxy
test`'s time goes (the app's start-up from its start until it listens, the tests, the
rest) and the app alone (its start-up, the calls and its stop, as against local
services): no way of providing its services can make a run shorter than that, so
containers / that bounds the ratio any `trproxy test` of this app can reach.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import ENV, ROOT, TRPROXY, check  # noqa: E402  (puts ROOT on sys.path)

sys.path.insert(0, str(ROOT / "examples" / "shop"))

from services import ShopServices  # noqa: E402

from benchmarks.shop_containers import ShopContainers  # noqa: E402
from tests.support.docker import DockerDaemon, DockerUnavailable  # noqa: E402
from tests.support.proc import stop  # noqa: E402
from tests.support.services import wait_port  # noqa: E402

SHOP = ROOT / "examples" / "shop"
SUMMARY = re.compile(r"\((?P<total>[\d.]+) s: app start-up (?P<startup>[\d.]+) s, tests (?P<tests>[\d.]+) s\)")


def _traffic(port: int) -> None:
    check(["bash", str(SHOP / "traffic.sh"), f"http://127.0.0.1:{port}"], timeout=300)


def with_real_services() -> tuple[float, float, AppTimes]:
    """(total, until every service answered, the app's times)."""
    start = time.perf_counter()
    services = ShopServices().start()
    up = time.perf_counter() - start
    try:
        app = _app_and_traffic(services)
    finally:
        services.stop()
    return time.perf_counter() - start, up, app


@dataclass(frozen=True)
class AppTimes:
    """The app's own share of a reference run: what no way of providing its services saves."""

    startup: float  # from its start until it listens
    calls: float  # traffic.sh
    stop: float  # SIGTERM until it exited

    @property
    def total(self) -> float:
        return self.startup + self.calls + self.stop


def _app_and_traffic(services) -> AppTimes:  # type: ignore[no-untyped-def]
    """The shop app against ``services`` (local or in containers), and the calls."""
    env = dict(ENV, **services.env())
    start = time.perf_counter()
    app = subprocess.Popen([sys.executable, str(SHOP / "app.py")], env=env, stdout=subprocess.DEVNULL)
    try:
        wait_port("127.0.0.1", services.shop_port, timeout=60, proc=app)
        listening = time.perf_counter()
        _traffic(services.shop_port)
        called = time.perf_counter()
    finally:
        stopping = time.perf_counter()
        stop(app)
    return AppTimes(listening - start, called - listening, time.perf_counter() - stopping)


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


def with_containers(daemon: DockerDaemon) -> tuple[float, float, float, AppTimes]:
    """The services started in containers (started together, as Compose does), the app,
    the calls, the containers removed: (total, until every service answered, removal,
    the app's times)."""
    start = time.perf_counter()
    services = ShopContainers(daemon).start()
    up = time.perf_counter() - start
    try:
        app = _app_and_traffic(services)
    finally:
        removing = time.perf_counter()
        services.stop()
    end = time.perf_counter()
    return end - start, up, end - removing, app


def replay_tests(recordings: Path, env: dict[str, str], profile: Path | None = None
                 ) -> tuple[float, dict[str, float]]:
    start = time.perf_counter()
    prof = ["-m", "cProfile", "-o", str(profile)] if profile else []
    out = check([sys.executable, *prof, "-m", "trproxy.cli", "test", "--dir", str(recordings), "--",
                 sys.executable, str(SHOP / "app.py")], env, 600)
    elapsed = time.perf_counter() - start
    found = SUMMARY.search(out.stderr)
    return elapsed, {k: float(v) for k, v in found.groupdict().items()} if found else {}


def _profile_summary(profile: Path) -> None:
    """Where trproxy test's own process spends its time (cProfile; the app is a child)."""
    import pstats

    stats = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    total = max(v[3] for v in stats.values())

    def cum(file_part: str, func: str) -> float:
        return sum(v[3] for (f, _, fn), v in stats.items() if file_part in f and fn == func)

    def own(func: str) -> float:
        return sum(v[2] for (_, _, fn), v in stats.items() if fn == func)

    rows = [
        ("imports (mitmproxy's HTTP model, codecs, apptest...)", cum("importlib._bootstrap", "_find_and_load")),
        ("event loop idle: waiting for the app and its answers", own("<method 'poll' of 'select.epoll' objects>")),
        ("serving the replayed connections", cum("trproxy/proxy/replay.py", "replay")),
        ("reading the test set (YAML)", cum("trproxy/store/yamlio.py", "read_document")),
    ]
    print(f"  trproxy test's own process, {total:.2f} s (cProfile; the app is its child):")
    for label, seconds in rows:
        print(f"    {label:<56} {seconds:6.2f} s")
    mine = sorted(((v[3], f"{Path(f).name}:{fn}") for (f, _, fn), v in stats.items()
                   if "/trproxy/" in f and fn not in ("<module>", "main", "_main", "_test")), reverse=True)
    print("    trproxy functions by cumulative time: " + ", ".join(f"{n} {t:.2f} s" for t, n in mine[:6]))


def main() -> None:
    if os.geteuid() != 0:
        print("skipped: trproxy test needs root for the eBPF redirect")
        return
    load = os.getloadavg()[0]
    profile = Path(tempfile.mkdtemp(prefix="trproxy-bench-prof-")) / "trproxy-test.prof"
    recordings = Path(tempfile.mkdtemp(prefix="trproxy-bench-shop-"))
    try:
        env = record(recordings)
        try:  # started before the clock, as a developer's engine runs already
            daemon: DockerDaemon | None = DockerDaemon().start()
        except DockerUnavailable as e:
            print(f"containers reference skipped: {e}")
            daemon = None
        real: list[tuple[float, float, AppTimes]] = []
        mocked: list[tuple[float, dict[str, float]]] = []
        contained: list[tuple[float, float, float, AppTimes]] = []
        try:
            for _ in range(2):  # interleaved, so a change of the machine's load hits all three
                real.append(with_real_services())
                mocked.append(replay_tests(recordings, env))
                if daemon is not None:
                    contained.append(with_containers(daemon))
        finally:
            if daemon is not None:
                daemon.destroy()
        replay_tests(recordings, env, profile)
    finally:
        shutil.rmtree(recordings, ignore_errors=True)
    best_real, real_up, real_app = min(real, key=lambda r: r[0])
    best_mocked, parts = min(mocked, key=lambda m: m[0])
    print(f"shop example, traffic.sh's 14 calls (best of 2 each, wall time; load average "
          f"{load:.1f} before, {os.getloadavg()[0]:.1f} after, {os.cpu_count()} cores)")
    print(f"  local services started fresh + app + calls      : {best_real:6.2f} s")
    print(f"    of which until every service answered         : {real_up:6.2f} s")
    print(f"             the app's start-up until it listens  : {real_app.startup:6.2f} s")
    print(f"             the calls                            : {real_app.calls:6.2f} s")
    print(f"             the app's stop                       : {real_app.stop:6.2f} s")
    if contained:
        best_contained, up, removal, _app = min(contained, key=lambda c: c[0])
        print(f"  services in containers started + app + calls    : {best_contained:6.2f} s")
        print(f"    of which until every service answered         : {up:6.2f} s")
        print(f"             removing the containers              : {removal:6.2f} s")
    print(f"  trproxy test (all dependencies replayed)        : {best_mocked:6.2f} s")
    if parts:
        print(f"    of which the app's start-up until it listens  : {parts['startup']:6.2f} s")
        print(f"             the tests                            : {parts['tests']:6.2f} s")
        print(f"             trproxy's start and the app's stop   : {best_mocked - parts['total']:6.2f} s")
    # the app's own start-up, calls and stop (as against local services): a floor that no
    # way of providing its services removes; the ratio to containers cannot exceed this
    floor = min(r[2].total for r in real)
    print(f"  the app alone (start-up, calls, stop; best local): {floor:6.2f} s")
    print(f"    trproxy test minus that                       : {best_mocked - floor:6.2f} s")
    print(f"  ratio local services / trproxy test             : {best_real / best_mocked:6.2f}x faster (target > 1)")
    if contained:
        print(f"  ratio containers / trproxy test                 : {best_contained / best_mocked:6.2f}x faster"
              " (target >= 10)")
        print(f"  ratio containers / the app alone                : {best_contained / floor:6.2f}x "
              "(the most any trproxy test of this app could reach)")
    _profile_summary(profile)
    shutil.rmtree(profile.parent, ignore_errors=True)


if __name__ == "__main__":
    main()

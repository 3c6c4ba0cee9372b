"""Cost of one wall-clock read under `trproxy test`'s time freezing, as a ratio to a native one.

A C loop of ``clock_gettime(CLOCK_REALTIME)`` (and one of ``time()``, and one of
``gettimeofday``) runs natively, then with the clock shim preloaded and an offset of
-400 days set, alternately, several rounds; the median ns per read of each is printed
with the ratio. The target is <= 2x. Python's ``time.time()`` is measured the same way,
for scale (its interpreter overhead dominates). libfaketime, when installed, is measured
too: with ``FAKETIME_NO_CACHE=1`` (what following a per-test setting needs) it is the
~80x that made trproxy switch.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.common import check  # (puts ROOT on sys.path)
from trproxy.apptest.timefreeze import TimeFreeze

LOOP = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
int main(int argc, char **argv) {
    long n = atol(argv[2]);
    struct timespec ts, m0, m1;
    struct timeval tv;
    long long acc = 0;
    clock_gettime(CLOCK_MONOTONIC, &m0);
    if (!strcmp(argv[1], "clock_gettime"))
        for (long i = 0; i < n; i++) { clock_gettime(CLOCK_REALTIME, &ts); acc += ts.tv_nsec; }
    else if (!strcmp(argv[1], "gettimeofday"))
        for (long i = 0; i < n; i++) { gettimeofday(&tv, NULL); acc += tv.tv_usec; }
    else
        for (long i = 0; i < n; i++) acc += time(NULL);
    clock_gettime(CLOCK_MONOTONIC, &m1);
    printf("%.2f %lld\n", ((m1.tv_sec - m0.tv_sec) * 1e9 + (m1.tv_nsec - m0.tv_nsec)) / n, acc & 1);
    return 0;
}
"""
PY_LOOP = ("import time\nn=300000\nt=time.perf_counter()\nfor _ in range(n): time.time()\n"
           "print((time.perf_counter()-t)/n*1e9)")
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
ROUNDS = 5


def _ns(cmd: list[str], env: dict[str, str]) -> float:
    return float(check(cmd, env, 120).stdout.split()[0])


def _compare(label: str, cmd: list[str], native: dict[str, str], frozen: dict[str, str]) -> None:
    a, b = [], []
    for _ in range(ROUNDS):  # alternate, so machine noise hits both alike
        a.append(_ns(cmd, native))
        b.append(_ns(cmd, frozen))
    na, nb = statistics.median(a), statistics.median(b)
    print(f"  {label:<36} native {na:7.1f} ns   frozen {nb:7.1f} ns   ratio {nb / na:5.2f}x")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="trproxy-bench-clock-") as tmp:
        exe = Path(tmp) / "loop"
        check(["cc", "-O2", "-x", "c", "-", "-o", str(exe)], timeout=120, input=LOOP)
        freeze = TimeFreeze(Path(tmp) / "state")
        freeze.set_time(datetime.now(UTC) - timedelta(days=400))
        native = dict(os.environ)
        frozen = freeze.child_env(native)
        print("one wall-clock read, native vs under trproxy's clock shim (offset -400 days):")
        for call, n in (("clock_gettime", "2000000"), ("gettimeofday", "2000000"), ("time", "5000000")):
            _compare(f"C {call}()", [str(exe), call, n], native, frozen)
        _compare("Python time.time()", [sys.executable, "-c", PY_LOOP], native, frozen)
        if LIBFAKETIME.is_file():  # the reference trproxy moved away from
            rc = Path(tmp) / "faketime.rc"
            rc.write_text("-34560000\n")
            fake = dict(native, LD_PRELOAD=str(LIBFAKETIME), FAKETIME_TIMESTAMP_FILE=str(rc),
                        FAKETIME_DONT_FAKE_MONOTONIC="1", FAKETIME_NO_CACHE="1")
            _compare("C clock_gettime(), libfaketime", [str(exe), "clock_gettime", "100000"], native, fake)
        freeze.close()


if __name__ == "__main__":
    main()

"""Time travel for the app under test: its wall clock shows each test's recorded time.

``trproxy test`` starts the app with libfaketime preloaded (``child_env``) and, before
each test, calls ``set_time(test.created_at)``. libfaketime reads its setting from a file
(``FAKETIME_TIMESTAMP_FILE``) on every clock call (``FAKETIME_NO_CACHE=1``); the file
holds an *offset* in seconds (``-86400.250000``) so that the app's ``time()`` /
``gettimeofday`` / ``clock_gettime(CLOCK_REALTIME)`` return the recorded instant and then
advance at the normal rate (a stopped clock would hang any loop waiting on wall time).
The file is replaced atomically: the app reads the old or the new offset, never a torn one.

Monotonic clocks are left alone (``FAKETIME_DONT_FAKE_MONOTONIC=1``): event loops,
timeouts and ``time.monotonic()`` keep working and never jump when the offset changes.

libfaketime 0.9.10 (Debian bookworm) mis-converts ``clock_nanosleep(CLOCK_MONOTONIC,
TIMER_ABSTIME)`` when monotonic is not faked (wolfcw/libfaketime#426), and Python >= 3.11
sleeps exactly that way: ``time.sleep`` raises ``OSError: [Errno 22]``. When a C compiler
is present we build (once, cached) a 15-line preload shim that sends non-realtime
``clock_nanosleep`` straight to the kernel; without one, ``sleep_fix`` is None and the
limitation stands (``limits`` says so).

Limits (libfaketime works through ``LD_PRELOAD``): statically linked binaries and Go
programs (their runtime calls the vDSO/syscalls itself) keep the real time; setuid
programs ignore ``LD_PRELOAD``; file timestamps are not shifted; containers need the
library at the same path inside. A ``FAKETIME`` variable in the environment would take
priority over the file, so ``child_env`` removes it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

LIBFAKETIME_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
)

_SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
/* trproxy: monotonic sleeps go to the kernel untouched (libfaketime#426) */
int clock_nanosleep(clockid_t clock, int flags, const struct timespec *req, struct timespec *rem) {
    static int (*next)(clockid_t, int, const struct timespec *, struct timespec *);
    if (clock != CLOCK_REALTIME && clock != CLOCK_REALTIME_ALARM && clock != CLOCK_TAI)
        return syscall(SYS_clock_nanosleep, clock, flags, req, rem) == 0 ? 0 : errno;
    if (!next) next = dlsym(RTLD_NEXT, "clock_nanosleep");
    return next(clock, flags, req, rem);
}
"""


class TimeFreezeError(Exception):
    """libfaketime is not installed (``apt-get install libfaketime``)."""


def find_libfaketime() -> Path | None:
    override = os.environ.get("TRPROXY_LIBFAKETIME")
    for candidate in ([override] if override else []) + list(LIBFAKETIME_CANDIDATES):
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "trproxy"


def sleep_fix() -> Path | None:
    """The compiled ``clock_nanosleep`` shim (built once per source version), or None."""
    digest = hashlib.sha256(_SHIM_C.encode()).hexdigest()[:12]
    target = _cache_dir() / f"trproxy-sleepfix-{digest}.so"
    if target.is_file():
        return target
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = Path(tmp) / target.name
            subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-x", "c", "-", "-o", str(built), "-ldl"],
                           input=_SHIM_C.encode(), check=True, capture_output=True, timeout=60)
            os.replace(built, target)
    except (OSError, subprocess.SubprocessError):
        return None
    return target


class TimeFreeze:
    """The faked clock of one app run; ``state_dir`` holds the timestamp file."""

    def __init__(self, state_dir: Path, library: Path | None = None, fix_sleep: bool = True) -> None:
        library = library or find_libfaketime()
        if library is None:
            raise TimeFreezeError("libfaketime not found (Debian: apt-get install libfaketime; "
                                  "or set TRPROXY_LIBFAKETIME to libfaketime.so.1)")
        self.library = library
        self.shim = sleep_fix() if fix_sleep else None
        state_dir.mkdir(parents=True, exist_ok=True)
        self.file = state_dir / "faketime.rc"
        self.moment: datetime | None = None
        self.reset()

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Variables to add to the app's environment; ``LD_PRELOAD`` keeps the entries
        ``base`` (default ``os.environ``) already has, after ours."""
        preload = [str(p) for p in (self.shim, self.library) if p is not None]
        existing = (os.environ if base is None else base).get("LD_PRELOAD")
        if existing:
            preload.append(existing)
        return {
            "LD_PRELOAD": ":".join(preload),
            "FAKETIME_TIMESTAMP_FILE": str(self.file),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_DONT_RESET": "1",  # children of the app share its clock
        }

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """A whole environment for the app: ``base`` (default ``os.environ``) + ``env()``,
        without ``FAKETIME`` (it would override the file)."""
        env = dict(os.environ if base is None else base)
        env.pop("FAKETIME", None)
        env.update(self.env(env))
        return env

    def set_time(self, moment: datetime | None) -> None:
        """From now on the app's wall clock reads ``moment`` (+ time elapsed since this call).
        None goes back to the real time."""
        if moment is None:
            self.reset()
            return
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        self.moment = moment
        self._write((moment - datetime.now(UTC)).total_seconds())

    def reset(self) -> None:
        self.moment = None
        self._write(0.0)

    def _write(self, offset: float) -> None:
        tmp = self.file.with_name(self.file.name + ".tmp")
        tmp.write_text(f"{offset:+.6f}\n", "ascii")
        os.replace(tmp, self.file)

    def limits(self) -> list[str]:
        """What will not follow the faked clock on this machine, for the run's log."""
        notes = ["statically linked binaries, Go programs and setuid programs keep the real time"]
        if self.shim is None:
            notes.append("no C compiler: time.sleep() in Python >= 3.11 apps fails with EINVAL "
                         "under libfaketime 0.9.10 (wolfcw/libfaketime#426)")
        return notes

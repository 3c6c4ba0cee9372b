"""Time travel for the app under test: its wall clock shows each test's recorded time.

``trproxy test`` starts the app with our clock shim preloaded (``clockshim.c``, built
once with the machine's C compiler by ``make setup`` or on first use, cached) and,
before each test, calls ``set_time(test.created_at)``. The shim maps a one-page file
(``TRPROXY_CLOCK_FILE``) whose first 8 bytes hold an *offset* in nanoseconds; each
realtime clock read (``clock_gettime(CLOCK_REALTIME*)``, ``gettimeofday``, ``time``,
``timespec_get``) adds it, so the app reads the recorded instant and then the clock
advances at the normal rate (a stopped clock would hang any loop waiting on wall time).
The offset is a whole number of seconds (the app reads the recorded instant to within
0.5 s) and never goes down between tests (the clock runs on when replay is slower than
the recording was), written with one aligned 64-bit store: the app sees the old or the new
value, never a torn one. A read costs about what a native one does (``make bench``
measures the ratio): libfaketime, used before, re-read its file on every call to follow
a changing setting and made each read ~80x slower.

Monotonic clocks are left alone: event loops, timeouts and ``time.monotonic()`` keep
working and never jump when the offset changes. Absolute realtime waits
(``clock_nanosleep(TIMER_ABSTIME)``, ``sem_timedwait``) are shifted back to the real
clock.

Limits (the shim works through ``LD_PRELOAD``): statically linked binaries and Go
programs (their runtime reads the vDSO itself) keep the real time; setuid programs
ignore ``LD_PRELOAD``; file timestamps are not shifted; ``pthread_cond_timedwait`` on a
realtime condition variable waits by the real clock; containers need the library at the
same path inside.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

SHIM_SOURCE = Path(__file__).with_name("clockshim.c")
ENV_FILE = "TRPROXY_CLOCK_FILE"
_PAGE = mmap.PAGESIZE


class TimeFreezeError(Exception):
    """The clock shim cannot be built (no C compiler) or loaded."""


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "trproxy"


def shim_path() -> Path:
    """Where the shim built from this source lives (named by the source's digest)."""
    digest = hashlib.sha256(SHIM_SOURCE.read_bytes()).hexdigest()[:12]
    return _cache_dir() / f"trproxy-clock-{digest}.so"


def build_shim() -> Path:
    """The compiled shim, built now if this version is not cached yet."""
    target = shim_path()
    if target.is_file():
        return target
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise TimeFreezeError("no C compiler to build the clock shim (Debian: apt-get install gcc)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = Path(tmp) / target.name
            subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(built), str(SHIM_SOURCE), "-ldl"],
                           check=True, capture_output=True, timeout=120)
            os.replace(built, target)
    except subprocess.CalledProcessError as exc:
        raise TimeFreezeError(f"building the clock shim failed: {exc.stderr.decode(errors='replace')[-300:]}") from exc
    except (OSError, subprocess.SubprocessError) as exc:
        raise TimeFreezeError(f"building the clock shim failed: {exc}") from exc
    return target


class TimeFreeze:
    """The faked clock of one app run; ``state_dir`` holds the offset page."""

    def __init__(self, state_dir: Path, library: Path | None = None) -> None:
        self.library = library or build_shim()
        state_dir.mkdir(parents=True, exist_ok=True)
        self.file = state_dir / "clock-offset"
        with self.file.open("wb") as out:
            out.write(b"\0" * _PAGE)
        with self.file.open("r+b") as f:
            self._map = mmap.mmap(f.fileno(), _PAGE)
        self._offset = ctypes.c_int64.from_buffer(self._map)  # one aligned 64-bit store per write
        self.moment: datetime | None = None

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Variables to add to the app's environment; ``LD_PRELOAD`` keeps the entries
        ``base`` (default ``os.environ``) already has, after ours."""
        preload = [str(self.library)]
        existing = (os.environ if base is None else base).get("LD_PRELOAD")
        if existing:
            preload.append(existing)
        return {"LD_PRELOAD": ":".join(preload), ENV_FILE: str(self.file)}

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """A whole environment for the app: ``base`` (default ``os.environ``) + ``env()``."""
        env = dict(os.environ if base is None else base)
        env.update(self.env(env))
        return env

    @property
    def offset_ns(self) -> int:
        return self._offset.value

    def set_time(self, moment: datetime | None) -> None:
        """From now on the app's wall clock reads ``moment`` (+ time elapsed since this call).
        None goes back to the real time."""
        if moment is None:
            self.reset()
            return
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        # whole seconds: time() then stays as cheap as a native read and agrees with
        # clock_gettime(); the app's clock reads the recorded instant to within 0.5 s
        offset = round((moment - datetime.now(UTC)).total_seconds()) * 10**9
        if self.moment is not None:
            # never backwards: a test replayed slower than it was recorded would otherwise
            # see the next one start before its own answers (a session cookie signed
            # "in the future" is refused by itsdangerous, Flask's signer)
            offset = max(offset, self._offset.value)
        self.moment = moment
        self._offset.value = offset

    def reset(self) -> None:
        self.moment = None
        self._offset.value = 0

    def close(self) -> None:
        del self._offset  # the buffer export must go before the map can close
        self._map.close()

    def limits(self) -> list[str]:
        """What will not follow the faked clock, for the run's log."""
        return ["statically linked binaries, Go programs and setuid programs keep the real time"]


if __name__ == "__main__":  # `python -m trproxy.apptest.timefreeze --build` (make setup)
    if sys.argv[1:] == ["--build"]:
        try:
            print(f"clock shim: {build_shim()}")
        except TimeFreezeError as exc:
            sys.exit(f"clock shim: {exc}")

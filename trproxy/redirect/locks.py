"""Owner locks: liveness that the kernel keeps, for runs and for program versions.

The owner of a run holds an exclusive flock on ``/run/trproxy/run-<cgroup id>.lock`` for
as long as it lives, and every process that redirects with a program version holds a
shared flock on ``/run/trproxy/version-<hash>.lock`` from before it opens the version's
pins. The kernel drops a flock when its holder dies, also by SIGKILL, so a lock that can
be taken means that nobody uses the thing any more, whatever became of pids meanwhile
(reused, or in another pid namespace that /proc here does not show).

Whoever removes a run's or a version's leftovers takes its lock first (without waiting)
and keeps it while removing: a live owner's run or a version being started is never
touched, and two cleaners never remove the same thing at once. Old trproxy versions take
no locks: cleanup also keeps a run whose owner (pid and start time) is alive.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_DIR = Path("/run/trproxy")  # tmpfs: gone at reboot, like the pins in bpffs
_versions: dict[str, Lock] = {}  # versions this process uses, held until it exits


class Lock:
    """A held flock on one lock file; ``release`` (or the process's death) drops it."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path

    def release(self, remove: bool = False) -> None:
        """Drop the lock; with ``remove``, first delete the file (the next taker creates
        it anew; ``_take`` never ends up holding a deleted one)."""
        if self.fd < 0:
            return
        if remove:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        os.close(self.fd)
        self.fd = -1


def _take(path: Path, op: int) -> Lock | None:
    """flock ``path`` (created if missing); None if another process holds it and ``op``
    says not to wait."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, op)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        # Its last holder may have deleted the file between our open and flock: then the
        # lock we hold is on a file nobody else can find; take the one at ``path``.
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            return Lock(fd, path)
        os.close(fd)


def run_lock(cgroup_id: int) -> Lock | None:
    """The run's lock, exclusive, or None while another process holds it (its owner, or
    a cleaner removing it)."""
    return _take(LOCK_DIR / f"run-{cgroup_id}.lock", fcntl.LOCK_EX | fcntl.LOCK_NB)


def use_version(version: str) -> None:
    """Mark ``version`` as used by this process until it exits (shared; waits while a
    cleaner removes the version, which the loader then pins anew)."""
    if version not in _versions:
        lock = _take(LOCK_DIR / f"version-{version}.lock", fcntl.LOCK_SH)
        assert lock is not None  # a blocking flock returns holding it
        _versions[version] = lock


def claim_version(version: str) -> Lock | None:
    """The version's lock, exclusive, or None while a process uses the version."""
    if version in _versions:
        return None
    return _take(LOCK_DIR / f"version-{version}.lock", fcntl.LOCK_EX | fcntl.LOCK_NB)

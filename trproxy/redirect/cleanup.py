"""Removal of what runs left behind when their owner died without ``close()`` (kill -9,
OOM, crash of the proxy process).

A dead run is one whose owner is gone by both signs: its run lock (locks.py) can be
taken, and the pid and start time in its cgroup's name or trp_config entry name no live
process (a reused pid does not keep a run; a live owner that /proc here cannot see, or one
of an old trproxy that takes no locks, does). Its pinned links keep its processes cut off
from the network (fail closed), so it is removed only once none of its processes is left:
its link pins (the links detach), its map entries, and for a cgroup of its own
(``<mount>/trproxy/v2/run-<pid>-<start>-<n>``) the cgroup. Also removed: link pins of dead
runs that have no config, pinned program versions other than the current one that no run
and no process uses any more, and half-written pin directories of dead processes.

Invariants: never touches a run whose owner is alive, also when its config is in a version
of another layout or in maps no longer pinned; never frees a dead run's processes; safe
to run concurrently (a cleaner holds the lock of what it removes, and every step
tolerates another process having done it first).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from trproxy.bpf import loader
from trproxy.redirect import cgroup, locks
from trproxy.redirect.errors import RedirectError

log = logging.getLogger(__name__)
Versions = dict[str, loader.Maps | None]


def cleanup_leftovers() -> list[str]:
    """Remove leftovers of dead runs; returns a description of each thing removed. A dead
    run that still has processes stays (they can reach nothing) and is logged."""
    if os.geteuid() != 0:
        raise RedirectError("cleaning up leftover runs needs root: run it with sudo")
    try:
        return _cleanup()
    except OSError as e:
        raise RedirectError(f"cleaning up leftover runs failed: {e}") from e


def _cleanup() -> list[str]:
    removed: list[str] = []
    pinned = loader.pinned_runs()  # before reading configs: a new run sets its config first
    versions = _open_versions()
    try:
        mount = cgroup.cgroup2_mount()
        runs = cgroup.run_cgroups(Path(mount)) if mount else []
        removed += _dead_runs(runs, Path(mount) if mount else None, versions)
        removed += _orphan_link_pins(pinned, runs, versions)
        removed += _unused_versions(versions)
    finally:
        _close_versions(versions)
    removed += _dead_tmp_pins()
    return removed


def _open_versions() -> Versions:
    return {d: _open_maps(d) for d in loader.version_dirs()}


def _close_versions(versions: Versions) -> None:
    for maps in versions.values():
        if maps is not None:
            loader.close_maps(maps)


def live_owner(cg_id: int) -> int | None:
    """The pid of a live trproxy (of any version) redirecting cgroup ``cg_id``."""
    versions = _open_versions()
    try:
        pid, start = _owners(versions).get(cg_id, (0, 0))
    finally:
        _close_versions(versions)
    return pid if pid and cgroup.owner_alive(pid, start) else None


def forget_dead_run(cg_id: int) -> None:
    """Remove a dead trproxy's run on a cgroup (any version), to redirect it anew."""
    versions = _open_versions()
    try:
        _forget(cg_id, versions)
    finally:
        _close_versions(versions)


def _open_maps(pin_dir: str) -> loader.Maps | None:
    try:
        return loader.open_version(pin_dir)
    except OSError:
        return None  # being removed (a version is published complete)


def _claim_dead(cg_id: int, pid: int, start: int) -> locks.Lock | None:
    """The run's lock if its owner is dead (see the module docstring), else None."""
    if pid and cgroup.owner_alive(pid, start):
        return None
    return locks.run_lock(cg_id)


def _owners(versions: Versions) -> dict[int, tuple[int, int]]:
    """{cgroup id: (owner pid, start)} of every run in any version."""
    owners: dict[int, tuple[int, int]] = {}
    for maps in versions.values():
        if maps is not None:
            owners.update(maps.owners())
    return owners


def _forget(cg_id: int, versions: Versions) -> None:
    """Detach first (link pins, and links a survivor may hold), then the map entries: the
    programs never see the run half-forgotten."""
    loader.unpin_links(cg_id)
    loader.detach_cgroup_links(cg_id)
    for maps in versions.values():
        if maps is None:
            continue
        if maps.layout_ok():
            maps.forget_run(cg_id)
        else:  # another layout: only its config; the rest goes with the version
            maps.forget_config(cg_id)


def _still_running(path: Path, pid: int, fix: str) -> bool:
    left = cgroup.all_procs(path)
    if left:
        log.warning(
            "run %s of dead trproxy pid %d still has processes (%s): they stay cut off from "
            "the network; %s",
            path, pid, " ".join(map(str, left[:10])), fix,
        )
    return bool(left)


def _dead_runs(
    runs: list[tuple[Path, int, int]], mount: Path | None, versions: Versions
) -> list[str]:
    removed = []
    seen: set[int] = set()
    for path, pid, start in runs:
        try:
            cg_id = cgroup.cgroup_id(path)
        except FileNotFoundError:
            continue
        seen.add(cg_id)
        fix = f"end them (echo 1 > {path}/cgroup.kill) and the next trproxy run removes the rest"
        lock = _claim_dead(cg_id, pid, start)
        if lock is None:
            continue
        try:
            if _still_running(path, pid, fix) or not path.is_dir():
                continue
            _forget(cg_id, versions)
            cgroup.remove(path)
            removed.append(f"cgroup {path}")
        finally:
            lock.release(remove=True)
    # Runs on cgroups trproxy did not create (attach): only the redirect is ours.
    for cg_id, (pid, start) in _owners(versions).items():
        if cg_id in seen or (lock := _claim_dead(cg_id, pid, start)) is None:
            continue
        try:
            where = cgroup.find_by_id(mount, cg_id) if mount else None
            fix = "redirect it again (trproxy attach) or stop them, and the next trproxy run cleans up"
            if where is not None and _still_running(where, pid, fix):
                continue
            _forget(cg_id, versions)
            removed.append(f"redirect of cgroup id {cg_id} (owner pid {pid})")
        finally:
            lock.release(remove=True)
    return removed


def _orphan_link_pins(
    pinned: list[int], runs: list[tuple[Path, int, int]], versions: Versions
) -> list[str]:
    """Link pins whose run has no config (its owner died between attaching and pinning, or
    its config went with an old version). Not when a version could not be read (its
    configs are unknown), nor for a run whose owner is alive."""
    if any(maps is None for maps in versions.values()):
        return []
    owners = _owners(versions)
    named = {_inode(path): (pid, start) for path, pid, start in runs}
    removed = []
    for cg_id in pinned:
        if cg_id in owners or (lock := _claim_dead(cg_id, *named.get(cg_id, (0, 0)))) is None:
            continue
        try:
            if loader.unpin_links(cg_id):
                loader.detach_cgroup_links(cg_id)
                removed.append(f"pinned links of cgroup id {cg_id}")
        finally:
            lock.release(remove=True)
    return removed


def _inode(path: Path) -> int:
    try:
        return cgroup.cgroup_id(path)
    except FileNotFoundError:
        return 0


def _unused_versions(versions: Versions) -> list[str]:
    current = loader.source_hash()
    removed = []
    for pin_dir, maps in versions.items():
        name = Path(pin_dir).name
        if name == current or maps is None or maps.owners():
            continue
        lock = locks.claim_version(name)  # None: a process uses it (e.g. a run starting)
        if lock is None:
            continue
        try:
            loader.remove_pin_dir(pin_dir)  # holders of the objects' fds are unaffected
            removed.append(f"pinned programs {pin_dir}")
        finally:
            lock.release(remove=True)
    return removed


def _dead_tmp_pins() -> list[str]:
    root = loader.pin_root()
    removed = []
    if root is not None and root.is_dir():
        for p in root.iterdir():
            m = re.match(r"^tmp-(\d+)-", p.name)
            if m and not Path(f"/proc/{m.group(1)}").exists():
                loader.remove_pin_dir(str(p))
                removed.append(f"pinned programs {p}")
    return removed

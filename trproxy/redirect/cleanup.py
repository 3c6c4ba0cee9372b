"""Removal of what runs left behind when their owner died without ``close()`` (kill -9,
OOM, crash of the proxy process).

A dead run is one whose owner (pid and start time, in its cgroup's name and in its
trp_config entry) is not alive; a reused pid does not keep it. Its pinned links keep its
processes cut off from the network (fail closed), so it is removed only once none of its
processes is left: its link pins (the links detach), its map entries, and for a cgroup of
its own (``<mount>/trproxy/v2/run-<pid>-<start>-<n>``) the cgroup. Also removed: link pins
with no run, pinned program versions other than the current one that no run uses any more,
and half-written pin directories of dead processes.

Invariants: never touches a run whose owner is alive; never frees a dead run's processes;
safe to run concurrently (every step tolerates another process having done it first).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from trproxy.bpf import loader
from trproxy.redirect import cgroup
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
        removed += _dead_runs(Path(mount) if mount else None, versions)
        removed += _orphan_link_pins(pinned, versions)
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
        return None  # incomplete or being removed


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


def _dead_runs(mount: Path | None, versions: Versions) -> list[str]:
    removed = []
    seen: set[int] = set()
    for path, pid, start in cgroup.run_cgroups(mount) if mount else []:
        try:
            cg_id = cgroup.cgroup_id(path)
        except FileNotFoundError:
            continue
        seen.add(cg_id)
        fix = f"end them (echo 1 > {path}/cgroup.kill) and the next trproxy run removes the rest"
        if cgroup.owner_alive(pid, start) or _still_running(path, pid, fix):
            continue
        _forget(cg_id, versions)
        cgroup.remove(path)
        removed.append(f"cgroup {path}")
    # Runs on cgroups trproxy did not create (attach): only the redirect is ours.
    for cg_id, (pid, start) in _owners(versions).items():
        if cg_id in seen or cgroup.owner_alive(pid, start):
            continue
        where = cgroup.find_by_id(mount, cg_id) if mount else None
        fix = "redirect it again (trproxy attach) or stop them, and the next trproxy run cleans up"
        if where is not None and _still_running(where, pid, fix):
            continue
        _forget(cg_id, versions)
        removed.append(f"redirect of cgroup id {cg_id} (owner pid {pid})")
    return removed


def _orphan_link_pins(pinned: list[int], versions: Versions) -> list[str]:
    """Link pins whose run has no config (its owner died between attaching and pinning, or
    its config went with an old version)."""
    owners = _owners(versions)
    removed = []
    for cg_id in pinned:
        if cg_id not in owners and loader.unpin_links(cg_id):
            loader.detach_cgroup_links(cg_id)
            removed.append(f"pinned links of cgroup id {cg_id}")
    return removed


def _unused_versions(versions: Versions) -> list[str]:
    current = loader.source_hash()
    removed = []
    for pin_dir, maps in versions.items():
        if Path(pin_dir).name == current or maps is None or maps.owners():
            continue
        loader.remove_pin_dir(pin_dir)  # holders of the objects' fds are unaffected
        removed.append(f"pinned programs {pin_dir}")
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

"""Removal of what runs left behind when their owner died without ``close()`` (kill -9,
crash, power loss of the proxy process).

A leftover is (a) a run cgroup ``<mount>/trproxy/run-<pid>-<start>-<n>`` whose owner is not
alive, (b) a trp_config entry (and the run's other map entries) whose owner is not alive,
e.g. of a Docker cgroup attached by a dead trproxy, (c) a pinned program version other than
the current one that no run uses any more, (d) a half-written pin directory of a dead
process. Liveness compares pid and start time, so a reused pid does not keep a leftover.

Invariants: never touches a run whose owner is alive; safe to run concurrently (every step
tolerates another process having done it first).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from trproxy.bpf import loader
from trproxy.redirect import cgroup
from trproxy.redirect.errors import RedirectError


def cleanup_leftovers() -> list[str]:
    """Remove leftovers of dead runs; returns a description of each thing removed."""
    if os.geteuid() != 0:
        raise RedirectError("cleaning up leftover runs needs root: run it with sudo")
    try:
        return _cleanup()
    except OSError as e:
        raise RedirectError(f"cleaning up leftover runs failed: {e}") from e


def _cleanup() -> list[str]:
    removed: list[str] = []
    versions = {d: _open_maps(d) for d in loader.version_dirs()}
    try:
        mount = cgroup.cgroup2_mount()
        if mount is not None:
            removed += _dead_run_cgroups(Path(mount), versions)
        removed += _dead_configs(versions)
        removed += _unused_versions(versions)
    finally:
        for maps in versions.values():
            if maps is not None:
                loader.close_maps(maps)
    removed += _dead_tmp_pins()
    return removed


def _open_maps(pin_dir: str) -> loader.Maps | None:
    try:
        return loader.open_version(pin_dir)
    except OSError:
        return None  # incomplete or being removed


def _forget(cgroup_id: int, versions: dict[str, loader.Maps | None]) -> None:
    for maps in versions.values():
        if maps is not None:
            maps.forget_run(cgroup_id)
    # Links normally died with their owner; one leaked to a survivor is detached here.
    loader.detach_cgroup_links(cgroup_id)


def _dead_run_cgroups(mount: Path, versions: dict[str, loader.Maps | None]) -> list[str]:
    removed = []
    for path, pid, start in cgroup.run_cgroups(mount):
        if cgroup.owner_alive(pid, start):
            continue
        try:
            cg_id = cgroup.cgroup_id(path)
        except FileNotFoundError:
            continue
        _forget(cg_id, versions)
        cgroup.remove(path)  # surviving processes move to <mount>/trproxy
        removed.append(f"cgroup {path}")
    return removed


def _dead_configs(versions: dict[str, loader.Maps | None]) -> list[str]:
    removed = []
    for maps in versions.values():
        if maps is None:
            continue
        for cg_id, cfg in maps.configs().items():
            if not cgroup.owner_alive(cfg.owner_pid, cfg.owner_start):
                _forget(cg_id, versions)
                removed.append(f"map entries of cgroup id {cg_id} (owner pid {cfg.owner_pid})")
    return removed


def _unused_versions(versions: dict[str, loader.Maps | None]) -> list[str]:
    current = loader.source_hash()
    removed = []
    for pin_dir, maps in versions.items():
        if Path(pin_dir).name == current or maps is None or maps.configs():
            continue
        loader.remove_pin_dir(pin_dir)  # holders of the objects' fds are unaffected
        removed.append(f"pinned programs {pin_dir}")
    return removed


def _dead_tmp_pins() -> list[str]:
    bpffs = loader.find_bpffs()
    root = Path(bpffs or "/nonexistent") / loader.PIN_ROOT
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            m = re.match(r"^tmp-(\d+)-", p.name)
            if m and not Path(f"/proc/{m.group(1)}").exists():
                loader.remove_pin_dir(str(p))
                removed.append(f"pinned programs {p}")
    return removed

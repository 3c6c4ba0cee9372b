"""``trproxy doctor`` checks for the redirect: can this machine run it, and if not, what fixes it.

Each check is cheap, read-only and independent (none raises); the CLI prints them.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from trproxy.bpf import loader
from trproxy.redirect import cgroup

_SETUP = "run `make setup`"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""  # empty when ok


def doctor() -> list[Check]:
    return [_root(), _cgroup2(), _btf(), _bcc(), _headers(), _bpffs(), _kernel()]


def _root() -> Check:
    ok = os.geteuid() == 0
    return Check("root", ok, f"euid {os.geteuid()}", "" if ok else "run trproxy with sudo")


def _cgroup2() -> Check:
    mount = cgroup.cgroup2_mount()
    if mount is None:
        return Check(
            "cgroup v2",
            False,
            "no cgroup2 mount in /proc/self/mounts",
            "mount -t cgroup2 none /sys/fs/cgroup/unified (or boot with "
            "systemd.unified_cgroup_hierarchy=1)",
        )
    return Check("cgroup v2", True, f"mounted at {mount}")


def _btf() -> Check:
    ok = Path("/sys/kernel/btf/vmlinux").exists()
    return Check(
        "BTF",
        ok,
        "/sys/kernel/btf/vmlinux " + ("present" if ok else "missing"),
        "" if ok else "use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
    )


def _bcc() -> Check:
    spec = importlib.util.find_spec("bcc")
    if spec is None:
        return Check(
            "bcc importable",
            False,
            "python module bcc not found",
            f"{_SETUP} (apt-get install python3-bpfcc; link "
            "/usr/lib/python3/dist-packages/bcc into the venv)",
        )
    return Check("bcc importable", True, f"{spec.origin}")


def _headers() -> Check:
    release = os.uname().release
    build = Path("/lib/modules") / release / "build"
    if loader.headers_available():
        where = build.resolve() if build.exists() else "/sys/kernel/kheaders.tar.xz"
        return Check("kernel headers", True, f"{release}: {where}")
    pinned = any(Path(d).name == loader.source_hash() for d in loader.version_dirs())
    return Check(
        "kernel headers",
        pinned,
        f"none for {release}" + (" (not needed: programs already pinned)" if pinned else ""),
        "" if pinned else f"{_SETUP} or sudo scripts/kernel-headers.sh",
    )


def _bpffs() -> Check:
    found = loader.find_bpffs()
    if found:
        return Check(
            "bpffs",
            True,
            f"mounted at {found} (programs are compiled once; runs are pinned to fail closed)",
        )
    ok = os.path.isdir("/sys/fs/bpf")
    return Check(
        "bpffs",
        ok,
        "not mounted; trproxy mounts it at /sys/fs/bpf on first use (needed: runs are pinned)",
        "" if ok else "mkdir -p /sys/fs/bpf && mount -t bpf bpf /sys/fs/bpf",
    )


def _kernel() -> Check:
    release = os.uname().release
    try:
        major, minor = (int(x) for x in release.split(".")[:2])
    except ValueError:
        return Check("kernel >= 5.10", False, f"cannot parse {release}", "")
    ok = (major, minor) >= (
        5,
        10,
    )  # bpf_link for cgroups (5.7), getpeername hooks (5.8), link detach (5.9)
    return Check("kernel >= 5.10", ok, release, "" if ok else "upgrade the kernel")

"""Compile, pin and open the redirect programs (redirect.bpf.c); typed access to their maps.

Role: the only Python code that knows the C side. ``load()`` returns the programs and maps
of the current source, ``Programs.attach(cgroup_fd)`` attaches them to one cgroup, and
``Maps`` reads and writes the maps through the ctypes mirrors of redirect.h below.

Invariants:
- A compiled version lives in ``<bpffs>/trproxy/v2/<hash>/`` (``prog_<name>``,
  ``map_<name>``), where <hash> covers redirect.bpf.c and redirect.h. It is filled under a
  temporary name and renamed, so a version directory is either complete or absent, and
  concurrent cold starts need no lock: the first rename wins and the others use the
  winner's objects.
- Only a cold start (no pins yet) imports bcc and needs kernel headers; a warm start only
  calls bpf(2) (syscall.py). Without bpffs every start is cold and nothing is shared, and
  no run can be pinned (``pin_links`` fails: a run that cannot fail closed does not start).
- The programs are attached with bpf_links that are also pinned, in
  ``<bpffs>/trproxy/v2/runs/<cgroup id>/``: they outlive a killed owner, so its run keeps
  failing connects (fail closed) until ``trproxy.redirect.cleanup`` removes them.
- Pins are never deleted while a config entry uses them, nor while a process that
  redirects with them lives (``trproxy.redirect.locks``); deleting a pin does not affect
  processes that already hold the objects' fds.
- Maps are read through the mirrors below only when their key and value sizes match
  (``Maps.layout_ok``); trp_config's owner fields are read from every version.
- ``v2``: trproxy before the pinned links and the 4-tuple key pinned under
  ``<bpffs>/trproxy/`` and reads every version there with its own struct layouts (a
  larger key would overflow its buffers), so this layout lives one level down.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import secrets
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from trproxy.bpf import syscall

PKG_DIR = Path(__file__).resolve().parent
SOURCE = PKG_DIR / "redirect.bpf.c"
HEADER = PKG_DIR / "redirect.h"
PIN_ROOT = "trproxy/v2"  # directory under the bpffs mount
RUNS_DIR = "runs"  # <PIN_ROOT>/runs/<cgroup id>/<program>: the pinned links of each run

# enum bpf_prog_type
_PROG_SOCK_OPS = 13
_PROG_CGROUP_SOCK_ADDR = 18
_PROG_SK_LOOKUP = 30


class BpfError(Exception):
    """Loading or attaching the programs failed."""


class BccMissingError(BpfError):
    pass


class KernelHeadersMissingError(BpfError):
    pass


# --- mirrors of redirect.h (tests/bpf/test_layout.py checks them against clang's layout) ---
u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64
AF_INET, AF_INET6 = 2, 10  # TRP_AF_INET, TRP_AF_INET6
FLAG_SHADOW = 1  # TRP_FLAG_SHADOW
FLAG_CHECK_OWNER = 2  # TRP_FLAG_CHECK_OWNER
FLAG_ALLOW_ONLY = 4  # TRP_FLAG_ALLOW_ONLY
FLAG_CAPTURE = 8  # TRP_FLAG_CAPTURE
FLAG_PASS_CLOSED = 16  # TRP_FLAG_PASS_CLOSED
DST_LOOPBACK = 1  # TRP_DST_LOOPBACK (trp_dst_key.family)
DST_ALLOW, DST_REFUSE = 1, 2  # TRP_DST_ALLOW, TRP_DST_REFUSE


class Config(ctypes.Structure):
    _fields_ = [
        ("owner_start", u64),
        ("owner_pid", u32),
        ("proxy_ip4", u8 * 4),
        ("proxy_ip6", u8 * 16),
        ("proxy_port", u16),
        ("flags", u16),
        ("alive_port", u16),
        ("refuse_port", u16),
        ("dns_port", u16),
        ("_pad", u16 * 3),
    ]


class PortKey(ctypes.Structure):
    _fields_ = [("cgroup_id", u64), ("port", u16), ("_pad", u16 * 3)]


class Listen(ctypes.Structure):
    _fields_ = [("count", u32), ("bound_port", u16), ("_pad", u16)]


class TupleKey(ctypes.Structure):
    _fields_ = [
        ("saddr", u8 * 16),
        ("daddr", u8 * 16),
        ("sport", u16),
        ("dport", u16),
        ("family", u8),
        ("_pad", u8 * 3),
    ]


class OrigDst(ctypes.Structure):
    _fields_ = [
        ("cgroup_id", u64),
        ("addr", u8 * 16),
        ("port", u16),
        ("family", u8),
        ("_pad", u8 * 5),
    ]


class DstKey(ctypes.Structure):
    _fields_ = [
        ("cgroup_id", u64),
        ("addr", u8 * 16),
        ("port", u16),
        ("family", u8),
        ("_pad", u8 * 5),
    ]


class Capture(ctypes.Structure):
    _fields_ = [("cgroup_id", u64), ("families", u8), ("_pad", u8 * 7)]


class CaptureKey(ctypes.Structure):
    _fields_ = [("cgroup_id", u64), ("family", u8), ("_pad", u8 * 7)]


class SockState(ctypes.Structure):
    _fields_ = [
        ("orig", OrigDst),
        ("listen_cgroup_id", u64),
        ("listen_port", u16),
        ("requested_port", u16),
        ("_pad", u32),
        ("alive_run", u64),
        ("passed_run", u64),
    ]


# (key, value) mirror of each map; trp_sock's key is a socket fd (from user space).
LAYOUTS: dict[str, tuple[type, type]] = {
    "trp_config": (u64, Config),
    "trp_listen": (PortKey, Listen),
    "trp_shadow": (PortKey, u32),
    "trp_orig": (TupleKey, OrigDst),
    "trp_dst": (DstKey, u32),
    "trp_refused": (DstKey, u64),
    "trp_closed": (DstKey, u64),
    "trp_reached": (DstKey, u64),
    "trp_sock": (ctypes.c_int32, SockState),
    "trp_capture": (u32, Capture),
    "trp_inner": (TupleKey, u32),
    "trp_socks": (CaptureKey, u32),  # value: a socket fd (from user space)
    "trp_dns": (u64, OrigDst),  # key: a UDP socket's cookie
}


# --- what gets loaded ---
@dataclass(frozen=True)
class ProgSpec:
    name: str  # C function name; at most 15 chars (BPF_OBJ_NAME_LEN keeps it whole)
    prog_type: int
    attach_type: int


PROGRAMS: tuple[ProgSpec, ...] = (
    ProgSpec("trp_connect4", _PROG_CGROUP_SOCK_ADDR, syscall.CGROUP_INET4_CONNECT),
    ProgSpec("trp_connect6", _PROG_CGROUP_SOCK_ADDR, syscall.CGROUP_INET6_CONNECT),
    ProgSpec("trp_sockops", _PROG_SOCK_OPS, syscall.CGROUP_SOCK_OPS),
    ProgSpec("trp_peer4", _PROG_CGROUP_SOCK_ADDR, syscall.CGROUP_INET4_GETPEERNAME),
    ProgSpec("trp_peer6", _PROG_CGROUP_SOCK_ADDR, syscall.CGROUP_INET6_GETPEERNAME),
    ProgSpec("trp_bind4", _PROG_CGROUP_SOCK_ADDR, syscall.CGROUP_INET4_BIND),
    ProgSpec("trp_bind6", _PROG_CGROUP_SOCK_ADDR, syscall.CGROUP_INET6_BIND),
    ProgSpec("trp_sendmsg4", _PROG_CGROUP_SOCK_ADDR, syscall.CGROUP_UDP4_SENDMSG),
    ProgSpec("trp_sendmsg6", _PROG_CGROUP_SOCK_ADDR, syscall.CGROUP_UDP6_SENDMSG),
    ProgSpec("trp_recvmsg4", _PROG_CGROUP_SOCK_ADDR, syscall.CGROUP_UDP4_RECVMSG),
    ProgSpec("trp_recvmsg6", _PROG_CGROUP_SOCK_ADDR, syscall.CGROUP_UDP6_RECVMSG),
)
# Attached to a network namespace by each capturing run, for as long as it runs (not pinned).
LOOKUP = ProgSpec("trp_lookup", _PROG_SK_LOOKUP, syscall.SK_LOOKUP)
MAPS = tuple(LAYOUTS)
PROG_NAME_PREFIX = "trp_"

K = TypeVar("K", bound=ctypes.Structure | ctypes.c_uint32 | ctypes.c_uint64)
V = TypeVar("V", bound=ctypes.Structure | ctypes.c_uint32 | ctypes.c_uint64)


class Maps:
    """Typed access to one version's maps. Keys by cgroup id let runs share them."""

    def __init__(self, fds: dict[str, int]) -> None:
        self.fds = fds

    def layout_ok(self) -> bool:
        """Do this version's key and value sizes match the mirrors above? (Pins of an older
        source may differ; reading them through the mirrors would overflow the buffers.)"""
        for name, (ktype, vtype) in LAYOUTS.items():
            if name not in self.fds:
                return False  # a version with other maps (older or newer source)
            info = syscall.MapInfo()
            syscall.obj_info(self.fds[name], info)
            if (info.key_size, info.value_size) != (ctypes.sizeof(ktype), ctypes.sizeof(vtype)):
                return False
        return True

    def _keys(self, name: str, ktype: type[K]) -> list[K]:
        fd = self.fds[name]
        keys: list[K] = []
        prev: K | None = None
        while True:
            nxt = ktype()
            if not syscall.map_next_key(fd, prev, nxt):
                break
            keys.append(nxt)
            prev = nxt
        return keys

    def _items(self, name: str, ktype: type[K], vtype: type[V]) -> Iterator[tuple[K, V]]:
        """Snapshot of a map (keys first, so deleting while iterating is safe)."""
        fd = self.fds[name]
        for k in self._keys(name, ktype):
            v = vtype()
            if syscall.map_lookup(fd, k, v):
                yield k, v

    # trp_config
    def config(self, cgroup_id: int) -> Config | None:
        v = Config()
        return v if syscall.map_lookup(self.fds["trp_config"], u64(cgroup_id), v) else None

    def set_config(self, cgroup_id: int, cfg: Config) -> None:
        syscall.map_update(self.fds["trp_config"], u64(cgroup_id), cfg)

    def configs(self) -> dict[int, Config]:
        return {k.value: v for k, v in self._items("trp_config", u64, Config)}

    def owners(self) -> dict[int, tuple[int, int]]:
        """{cgroup id: (owner pid, owner start)} of every run, whatever this version's
        layout (trp_config's key and first two members never change)."""
        fd = self.fds["trp_config"]
        info = syscall.MapInfo()
        syscall.obj_info(fd, info)
        if info.key_size != 8 or info.value_size < 12:
            return {}
        owners: dict[int, tuple[int, int]] = {}
        prev: ctypes.c_uint64 | None = None
        while True:
            key = u64()
            if not syscall.map_next_key(fd, prev, key):
                return owners
            raw = ctypes.create_string_buffer(info.value_size)
            if syscall.map_lookup(fd, key, raw):
                start, pid = u64.from_buffer(raw, 0).value, u32.from_buffer(raw, 8).value
                owners[key.value] = (pid, start)
            prev = key

    def forget_config(self, cgroup_id: int) -> bool:
        return syscall.map_delete(self.fds["trp_config"], u64(cgroup_id))

    # trp_sock: the owner's marker socket
    def mark_alive(self, sock_fd: int, cgroup_id: int) -> None:
        state = SockState()
        state.alive_run = cgroup_id
        syscall.map_update(self.fds["trp_sock"], ctypes.c_int32(sock_fd), state)

    # trp_shadow
    def set_shadow(self, cgroup_id: int, port: int, shadow_port: int) -> None:
        syscall.map_update(self.fds["trp_shadow"], PortKey(cgroup_id, port), u32(shadow_port))

    def shadows(self, cgroup_id: int) -> dict[int, int]:
        items = self._items("trp_shadow", PortKey, u32)
        return {k.port: v.value for k, v in items if k.cgroup_id == cgroup_id}

    # trp_listen
    def listening(self, cgroup_id: int) -> dict[int, int]:
        """{port the run listens on: port actually bound (differs when shadowed)}"""
        items = self._items("trp_listen", PortKey, Listen)
        return {k.port: v.bound_port for k, v in items if k.cgroup_id == cgroup_id}

    # trp_capture, trp_inner, trp_socks
    def capturing(self, cgroup_id: int) -> set[int]:
        """Ports whose outside connections go to the run's capture sockets."""
        return {k.value for k, v in self._items("trp_capture", u32, Capture) if v.cgroup_id == cgroup_id}

    def set_capture_socket(self, cgroup_id: int, family: int, sock_fd: int) -> None:
        syscall.map_update(self.fds["trp_socks"], CaptureKey(cgroup_id, family), u32(sock_fd))

    def set_inner(self, key: TupleKey, inner: bool) -> None:
        """Leave (or stop leaving) one connection to the app's own listener."""
        if inner:
            syscall.map_update(self.fds["trp_inner"], key, u32(1))
        else:
            syscall.map_delete(self.fds["trp_inner"], key)

    # trp_orig
    def take_original(self, key: TupleKey) -> OrigDst | None:
        """Remove and return the entry of one accepted connection."""
        v = OrigDst()
        return v if syscall.map_lookup_and_delete(self.fds["trp_orig"], key, v) else None

    # trp_dns
    def dns_original(self, cookie: int) -> OrigDst | None:
        """The DNS server a UDP socket (by its cookie) of some run asked."""
        v = OrigDst()
        return v if syscall.map_lookup(self.fds["trp_dns"], u64(cookie), v) else None

    # trp_dst, trp_refused, trp_closed, trp_reached
    def dst_verdict(self, key: DstKey) -> int:
        v = u32()
        return v.value if syscall.map_lookup(self.fds["trp_dst"], key, v) else 0

    def set_dst_verdict(self, key: DstKey, verdict: int) -> None:
        syscall.map_update(self.fds["trp_dst"], key, u32(verdict))

    def connects(self, cgroup_id: int, counts: str) -> list[tuple[DstKey, int]]:
        """Connects of one run per destination counted in ``counts``: trp_refused (refused by
        trp_dst's verdicts), trp_closed or trp_reached (left to the kernel at a local port
        nothing listened on: refused, or established all the same through NAT)."""
        items = self._items(counts, DstKey, u64)
        return [(k, v.value) for k, v in items if k.cgroup_id == cgroup_id]

    def _run_keys(self, cgroup_id: int) -> dict[str, list[ctypes.Structure | ctypes.c_uint32 | ctypes.c_uint64]]:
        """The keys of every entry that belongs to one run, per map."""
        keys: dict[str, list[ctypes.Structure | ctypes.c_uint32 | ctypes.c_uint64]] = {}
        keys["trp_config"] = [u64(cgroup_id)] if self.config(cgroup_id) else []
        keys["trp_listen"] = [
            k for k, _ in self._items("trp_listen", PortKey, Listen) if k.cgroup_id == cgroup_id
        ]
        keys["trp_shadow"] = [
            k for k, _ in self._items("trp_shadow", PortKey, u32) if k.cgroup_id == cgroup_id
        ]
        keys["trp_dst"] = [
            k for k, _ in self._items("trp_dst", DstKey, u32) if k.cgroup_id == cgroup_id
        ]
        for counts in ("trp_refused", "trp_closed", "trp_reached"):
            keys[counts] = [k for k, _ in self.connects(cgroup_id, counts)]
        keys["trp_capture"] = [
            k for k, v in self._items("trp_capture", u32, Capture) if v.cgroup_id == cgroup_id
        ]
        keys["trp_socks"] = [
            k for k in self._keys("trp_socks", CaptureKey) if k.cgroup_id == cgroup_id
        ]
        keys["trp_dns"] = [
            k for k, v in self._items("trp_dns", u64, OrigDst) if v.cgroup_id == cgroup_id
        ]
        keys["trp_orig"] = [
            k for k, v in self._items("trp_orig", TupleKey, OrigDst) if v.cgroup_id == cgroup_id
        ]
        return keys

    def run_entries(self, cgroup_id: int) -> dict[str, int]:
        """How many entries each map holds for one run."""
        return {name: len(keys) for name, keys in self._run_keys(cgroup_id).items()}

    def forget_run(self, cgroup_id: int) -> int:
        """Delete every entry of one run; returns how many. The config goes last: until
        then the run's programs still find it (and fail closed)."""
        keys = self._run_keys(cgroup_id)
        config = keys.pop("trp_config")
        n = sum(syscall.map_delete(self.fds[name], k) for name, ks in keys.items() for k in ks)
        return n + sum(syscall.map_delete(self.fds["trp_config"], k) for k in config)


@dataclass
class Programs:
    """Open programs and maps of one version (fds owned by this object, kept for the
    process's lifetime by ``load()``)."""

    version: str
    pin_dir: str | None  # None: bpffs unavailable, objects live only in this process
    prog_fds: dict[str, int]
    maps: Maps
    cold: bool = False  # compiled by this load

    def attach(self, cgroup_fd: int) -> dict[str, int]:
        """Attach every program to a cgroup; returns the link fds by program name (close
        them, and remove their pins, to detach)."""
        links: dict[str, int] = {}
        try:
            for spec in PROGRAMS:
                links[spec.name] = syscall.link_create(
                    self.prog_fds[spec.name], cgroup_fd, spec.attach_type
                )
        except OSError:
            for fd in links.values():
                os.close(fd)
            raise
        return links


def source_hash() -> str:
    h = hashlib.sha256()
    for p in (SOURCE, HEADER):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def find_bpffs() -> str | None:
    """Mount point of bpffs, preferring /sys/fs/bpf."""
    points = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "bpf":
                points.append(parts[1])
    if "/sys/fs/bpf" in points:
        return "/sys/fs/bpf"
    return points[0] if points else None


def ensure_bpffs() -> str | None:
    """bpffs mount point, mounting it at /sys/fs/bpf when absent; None if impossible."""
    found = find_bpffs()
    if found or not os.path.isdir("/sys/fs/bpf"):
        return found
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", b"/sys/fs/bpf", b"bpf", 0, None) != 0:
        return None
    return "/sys/fs/bpf"


def headers_available() -> bool:
    """bcc finds headers in /lib/modules/<release>/build or in the kheaders module."""
    build = Path("/lib/modules") / os.uname().release / "build"
    return (build / "include").is_dir() or Path("/sys/kernel/kheaders.tar.xz").exists()


def _compile() -> tuple[dict[str, int], dict[str, int]]:
    """Compile with bcc and load; returns (program fds, map fds), owned by the caller."""
    try:
        from bcc import BPF  # type: ignore[import-not-found]
        from bcc.libbcc import lib  # type: ignore[import-not-found]
    except ImportError as e:
        raise BccMissingError(f"bcc is not importable: {e}") from e
    if not headers_available():
        raise KernelHeadersMissingError(
            f"no kernel headers for {os.uname().release} in /lib/modules/{os.uname().release}/build"
        )
    try:
        b = BPF(src_file=str(SOURCE).encode(), cflags=[f"-I{PKG_DIR}"])
    except Exception as e:  # bcc raises bare Exception; clang's diagnostics went to stderr
        raise BpfError(f"bcc failed to compile {SOURCE.name}: {e}") from e
    try:
        progs = {}
        for spec in (*PROGRAMS, LOOKUP):
            try:
                fn = b.load_func(spec.name, spec.prog_type, attach_type=spec.attach_type)
            except Exception as e:
                raise BpfError(f"kernel rejected {spec.name}: {e}") from e
            progs[spec.name] = os.dup(fn.fd)
        maps = {name: os.dup(lib.bpf_table_fd(b.module, name.encode())) for name in MAPS}
    finally:
        b.cleanup()  # closes bcc's fds; our dups keep the objects
    return progs, maps


def _open_pins(pin_dir: str) -> tuple[dict[str, int], dict[str, int]]:
    progs = {s.name: syscall.obj_get(f"{pin_dir}/prog_{s.name}") for s in (*PROGRAMS, LOOKUP)}
    maps = {m: syscall.obj_get(f"{pin_dir}/map_{m}") for m in MAPS}
    return progs, maps


def open_version(pin_dir: str) -> Maps:
    """Maps of a pinned version (for cleanup of runs of any version): those of ours it
    has; another version may lack some (then ``layout_ok`` is False). Raises OSError
    without trp_config (the version is being removed)."""
    fds: dict[str, int] = {}
    try:
        for m in MAPS:
            try:
                fds[m] = syscall.obj_get(f"{pin_dir}/map_{m}")
            except FileNotFoundError:
                if m == "trp_config":
                    raise
    except OSError:
        for fd in fds.values():
            os.close(fd)
        raise
    return Maps(fds)


def close_maps(maps: Maps) -> None:
    for fd in maps.fds.values():
        os.close(fd)


def pin_root() -> Path | None:
    bpffs = find_bpffs()
    return Path(bpffs) / PIN_ROOT if bpffs else None


def version_dirs() -> list[str]:
    """Pinned version directories (complete ones: temporaries start with 'tmp-')."""
    root = pin_root()
    if root is None or not root.is_dir():
        return []
    return sorted(str(p) for p in root.iterdir() if re.fullmatch(r"[0-9a-f]{16}", p.name))


def run_pin_dir(cgroup_id: int) -> Path | None:
    root = pin_root()
    return root / RUNS_DIR / str(cgroup_id) if root else None


def pin_links(cgroup_id: int, links: dict[str, int]) -> Path:
    """Pin one run's links so that they outlive their owner; returns the directory."""
    pin_dir = run_pin_dir(cgroup_id)
    if pin_dir is None:
        raise OSError(errno.ENOENT, "bpffs is not mounted (runs are pinned there to fail closed)")
    pin_dir.mkdir(parents=True, exist_ok=True)
    for name, fd in links.items():
        syscall.obj_pin(fd, str(pin_dir / name))
    return pin_dir


def unpin_links(cgroup_id: int) -> bool:
    """Remove one run's link pins (links nobody else holds detach); False if none."""
    pin_dir = run_pin_dir(cgroup_id)
    if pin_dir is None or not pin_dir.is_dir():
        return False
    remove_pin_dir(str(pin_dir))
    return True


def pinned_runs() -> list[int]:
    """Cgroup ids that have pinned links."""
    root = pin_root()
    runs = root / RUNS_DIR if root else None
    if runs is None or not runs.is_dir():
        return []
    return [int(p.name) for p in runs.iterdir() if p.name.isdigit()]


def remove_pin_dir(pin_dir: str) -> None:
    shutil.rmtree(pin_dir, ignore_errors=True)  # bpffs supports unlink and rmdir


def _pin_new_version(root: Path, final: Path) -> None:
    progs, maps = _compile()
    tmp = root / f"tmp-{os.getpid()}-{secrets.token_hex(4)}"  # bpffs forbids '.' in names
    tmp.mkdir()
    try:
        for name, fd in progs.items():
            syscall.obj_pin(fd, f"{tmp}/prog_{name}")
        for name, fd in maps.items():
            syscall.obj_pin(fd, f"{tmp}/map_{name}")
        try:
            os.rename(tmp, final)  # atomic publish; fails if another process won the race
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    finally:
        for fd in (*progs.values(), *maps.values()):
            os.close(fd)
        if tmp.exists():
            remove_pin_dir(str(tmp))


_loaded: Programs | None = None
_lock = threading.Lock()


def load() -> Programs:
    """Programs and maps of the current source, compiled and pinned on first use.

    Cached per process. Raises BpfError (or a subclass) with the cause.
    """
    global _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        version = source_hash()
        bpffs = ensure_bpffs()
        if bpffs is None:
            progs, maps = _compile()
            _loaded = Programs(version, None, progs, Maps(maps), cold=True)
            return _loaded
        root = Path(bpffs) / PIN_ROOT
        final = root / version
        cold = not final.is_dir()
        if cold:
            root.mkdir(parents=True, exist_ok=True)
            _pin_new_version(root, final)
        try:
            progs, maps = _open_pins(str(final))
        except OSError as e:
            raise BpfError(
                f"cannot open pinned programs in {final}: {e} (remove the directory)"
            ) from e
        _loaded = Programs(version, str(final), progs, Maps(maps), cold=cold)
        return _loaded


def prog_name(prog_id: int) -> str | None:
    try:
        fd = syscall.prog_fd_by_id(prog_id)
    except OSError:
        return None
    try:
        info = syscall.ProgInfo()
        syscall.obj_info(fd, info)
        return info.name.decode(errors="replace")
    finally:
        os.close(fd)


def detach_cgroup_links(cgroup_id: int) -> int:
    """Force-detach trproxy's links on one cgroup, whoever holds them; returns how many."""
    n = 0
    for link_id in syscall.link_ids():
        try:
            fd = syscall.link_fd_by_id(link_id)
        except OSError:
            continue  # gone meanwhile
        try:
            info = syscall.LinkInfo()
            syscall.obj_info(fd, info)
            if info.type != syscall.LINK_TYPE_CGROUP or info.cgroup_id != cgroup_id:
                continue
            name = prog_name(info.prog_id)
            if name and name.startswith(PROG_NAME_PREFIX):
                syscall.link_detach(fd)
                n += 1
        finally:
            os.close(fd)
    return n

"""Thin ctypes wrappers over the bpf(2) syscall: only the commands trproxy uses.

Role: let a warm start open pinned programs and maps, attach them and read/write maps
without importing bcc (whose import and compile cost is what pinning avoids).

Invariants: every wrapper raises ``OSError`` (with errno) on failure, except lookups that
report a missing element as ``False``/``None``. Returned file descriptors are owned by the
caller, close-on-exec (the kernel sets O_CLOEXEC on every bpf fd). Attribute layouts follow
``union bpf_attr`` in include/uapi/linux/bpf.h; the kernel accepts an attr shorter than its
own and zero-fills the rest (bpf_check_uarg_tail_zero in kernel/bpf/syscall.c).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

_NR_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}

# enum bpf_cmd
MAP_LOOKUP_ELEM = 1
MAP_UPDATE_ELEM = 2
MAP_DELETE_ELEM = 3
MAP_GET_NEXT_KEY = 4
OBJ_PIN = 6
OBJ_GET = 7
PROG_GET_FD_BY_ID = 13
OBJ_GET_INFO_BY_FD = 15
LINK_CREATE = 28
LINK_GET_FD_BY_ID = 30
LINK_GET_NEXT_ID = 31
LINK_DETACH = 34
MAP_LOOKUP_AND_DELETE_ELEM = 21

# enum bpf_attach_type (the ones trproxy attaches)
CGROUP_SOCK_OPS = 3
CGROUP_INET4_BIND = 8
CGROUP_INET6_BIND = 9
CGROUP_INET4_CONNECT = 10
CGROUP_INET6_CONNECT = 11
CGROUP_UDP4_SENDMSG = 14
CGROUP_UDP6_SENDMSG = 15
CGROUP_UDP4_RECVMSG = 19
CGROUP_UDP6_RECVMSG = 20
CGROUP_INET4_GETPEERNAME = 29
CGROUP_INET6_GETPEERNAME = 30
SK_LOOKUP = 36

LINK_TYPE_CGROUP = 3  # enum bpf_link_type
BPF_ANY = 0

# What a map key or value can be: a mirror of a struct in redirect.h, a plain integer (a
# socket fd is the key of an sk_storage map), or raw bytes.
Buf = ctypes.Structure | ctypes.c_uint32 | ctypes.c_uint64 | ctypes.c_int32 | ctypes.Array[ctypes.c_char]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _MapElemAttr(ctypes.Structure):
    _fields_ = [
        ("map_fd", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),  # also next_key
        ("flags", ctypes.c_uint64),
    ]


class _ObjAttr(ctypes.Structure):
    _fields_ = [
        ("pathname", ctypes.c_uint64),
        ("bpf_fd", ctypes.c_uint32),
        ("file_flags", ctypes.c_uint32),
    ]


class _InfoAttr(ctypes.Structure):
    _fields_ = [
        ("bpf_fd", ctypes.c_uint32),
        ("info_len", ctypes.c_uint32),
        ("info", ctypes.c_uint64),
    ]


class _LinkCreateAttr(ctypes.Structure):
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("target_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
    ]


class _IdAttr(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint32),
        ("next_id", ctypes.c_uint32),
        ("open_flags", ctypes.c_uint32),
    ]


class LinkInfo(ctypes.Structure):
    """The head of struct bpf_link_info with its cgroup member."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("cgroup_id", ctypes.c_uint64),
        ("attach_type", ctypes.c_uint32),
        ("_rest", ctypes.c_uint8 * 36),
    ]


class MapInfo(ctypes.Structure):
    """The head of struct bpf_map_info."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
    ]


class ProgInfo(ctypes.Structure):
    """The head of struct bpf_prog_info, up to the program name."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("_lens", ctypes.c_uint32 * 2),
        ("_insns", ctypes.c_uint64 * 3),
        ("_uid_nr_maps", ctypes.c_uint32 * 2),
        ("_map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
    ]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    try:
        nr = _NR_BPF[platform.machine()]
    except KeyError:
        raise OSError(errno.ENOSYS, f"bpf(2): unsupported machine {platform.machine()}") from None
    ret = _libc.syscall(nr, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf(cmd {cmd}): {os.strerror(err)}")
    return int(ret)


def _addr(obj: ctypes.Structure | ctypes.Array[ctypes.c_char] | Buf) -> int:
    return ctypes.addressof(obj)


def obj_pin(fd: int, path: str) -> None:
    p = ctypes.create_string_buffer(os.fsencode(path))
    _bpf(OBJ_PIN, _ObjAttr(pathname=_addr(p), bpf_fd=fd))


def obj_get(path: str) -> int:
    p = ctypes.create_string_buffer(os.fsencode(path))
    return _bpf(OBJ_GET, _ObjAttr(pathname=_addr(p)))


def map_lookup(fd: int, key: Buf, value: Buf) -> bool:
    """Fill ``value``; False when the key is absent."""
    try:
        _bpf(MAP_LOOKUP_ELEM, _MapElemAttr(map_fd=fd, key=_addr(key), value=_addr(value)))
    except OSError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def map_lookup_and_delete(fd: int, key: Buf, value: Buf) -> bool:
    """Fill ``value`` and delete the element in one step (hash maps: Linux 5.14+); False
    when the key is absent."""
    try:
        _bpf(MAP_LOOKUP_AND_DELETE_ELEM, _MapElemAttr(map_fd=fd, key=_addr(key), value=_addr(value)))
    except OSError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def map_update(fd: int, key: Buf, value: Buf, flags: int = BPF_ANY) -> None:
    _bpf(MAP_UPDATE_ELEM, _MapElemAttr(map_fd=fd, key=_addr(key), value=_addr(value), flags=flags))


def map_delete(fd: int, key: Buf) -> bool:
    """Delete; False when the key was already absent."""
    try:
        _bpf(MAP_DELETE_ELEM, _MapElemAttr(map_fd=fd, key=_addr(key)))
    except OSError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def map_next_key(fd: int, key: Buf | None, next_key: Buf) -> bool:
    """Fill ``next_key`` with the key after ``key`` (the first when None); False at the end."""
    attr = _MapElemAttr(map_fd=fd, key=_addr(key) if key is not None else 0, value=_addr(next_key))
    try:
        _bpf(MAP_GET_NEXT_KEY, attr)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def obj_info(fd: int, info: ctypes.Structure) -> None:
    _bpf(OBJ_GET_INFO_BY_FD, _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=_addr(info)))


def link_create(prog_fd: int, target_fd: int, attach_type: int) -> int:
    """Attach a program to a cgroup through a bpf_link: it stays attached while the returned
    fd (or a pin) is open, so a killed owner detaches by itself."""
    return _bpf(
        LINK_CREATE, _LinkCreateAttr(prog_fd=prog_fd, target_fd=target_fd, attach_type=attach_type)
    )


def link_detach(link_fd: int) -> None:
    """Detach a link even if other processes still hold it (kernel 5.9+)."""
    _bpf(LINK_DETACH, _IdAttr(id=link_fd))


def link_ids() -> list[int]:
    ids: list[int] = []
    attr = _IdAttr(id=0)
    while True:
        try:
            _bpf(LINK_GET_NEXT_ID, attr)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return ids
            raise
        ids.append(attr.next_id)
        attr = _IdAttr(id=attr.next_id)


def link_fd_by_id(link_id: int) -> int:
    return _bpf(LINK_GET_FD_BY_ID, _IdAttr(id=link_id))


def prog_fd_by_id(prog_id: int) -> int:
    return _bpf(PROG_GET_FD_BY_ID, _IdAttr(id=prog_id))

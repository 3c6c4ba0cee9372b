"""Containers as redirect targets: the cgroup a container runs in (given as a cgroup path,
an id or id prefix in any case, a name or a Compose service) and the addresses by which
its processes reach the host.

Invariants:
- Ids are found in the cgroup tree (cgroup.find_containers), so containerd, CRI-O and
  Kubernetes containers resolve without asking any engine; the engine is asked through its
  own CLI (``docker``: DOCKER_HOST and contexts apply) only for names and Compose services.
- A container in another network namespace cannot reach the host's loopback: its
  processes reach the host by their default gateway (a bridge address on the host), read
  from that namespace's /proc/<pid>/net/route (pyroute2 would enter the namespace and run
  an event loop of its own, which clashes with the proxy's uvloop). The proxy listens there too and the redirect rewrites
  connections to it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import socket
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from trproxy.redirect import cgroup as cgroups
from trproxy.redirect.errors import RedirectError

LOOPBACK = ("127.0.0.1", "::1")
COMPOSE_SERVICE = "com.docker.compose.service"


def resolve(spec: str, mount: Path) -> Path:
    """The cgroup of ``spec``: a cgroup path, a container id/prefix found in the cgroup
    tree, or a container name / Compose service the engine knows (which may also be a
    prefix the tree does not show, e.g. a stopped container's)."""
    path = cgroups.path_of(spec, mount)
    if path is not None:
        return path
    known = _engine_container(spec)
    if known is not None:
        container_id, pid = known
        found = cgroups.find_containers(container_id, mount)
        if len(found) == 1:
            return found[0]
        if pid and (path := cgroups.of_process(pid, mount)) is not None and path.is_dir():
            return path
        raise RedirectError(f"container {spec} ({container_id[:12]}) is not running")
    return cgroups.resolve(spec, mount)


def _docker(*args: str) -> subprocess.CompletedProcess[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        return subprocess.run([docker, *args], capture_output=True, text=True, timeout=20,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _engine_container(spec: str) -> tuple[str, int] | None:
    """(full id, pid or 0) of the container the engine knows by ``spec`` (its name, id,
    id prefix, or the only running container of the Compose service ``spec``), or None."""
    for name in dict.fromkeys([spec, spec.lower()] if re.fullmatch(r"[0-9a-fA-F]+", spec) else [spec]):
        r = _docker("inspect", "--type", "container", "-f", "{{.Id}} {{.State.Pid}}", name)
        if r is not None and r.returncode == 0 and len(r.stdout.split()) == 2:
            container_id, pid = r.stdout.split()
            return container_id, int(pid)
    r = _docker("ps", "-q", "--no-trunc", "--filter", f"label={COMPOSE_SERVICE}={spec}")
    ids = r.stdout.split() if r is not None and r.returncode == 0 else []
    if len(ids) > 1:
        raise RedirectError(f"{len(ids)} containers run Compose service {spec} "
                            f"({', '.join(i[:12] for i in ids)}): name one of them")
    return _engine_container(ids[0]) if ids else None


@dataclass(frozen=True)
class HostAddresses:
    """Where the processes of a cgroup reach the host: (IPv4, IPv6) and whether they live
    in another network namespace than trproxy."""

    ipv4: str
    ipv6: str
    other_netns: bool


def host_addresses(path: Path) -> HostAddresses | None:
    """The default gateways of the namespace of the cgroup's processes that live in
    another network namespace (IPv6: ::1 when there is no global IPv6 gateway); loopback
    when all are in trproxy's own (``--network host``, a plain cgroup); None for a cgroup
    with no processes. Another namespace wins: a starting container's first process (runc's
    init) is in the cgroup a moment before it joins the container's namespace."""
    own = os.stat("/proc/self/ns/net").st_ino
    same = False
    for pid in cgroups.all_procs(path):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == own:
                same = True
                continue
            v4, v6 = _gateways(pid)
        except OSError:
            continue  # gone meanwhile
        if v4 is None:
            raise RedirectError(
                f"the processes of {path} have no IPv4 default route in their network "
                "namespace (--network none, or an --internal network): nothing there reaches "
                "the host, so trproxy cannot be reached either"
            )
        return HostAddresses(v4, v6 or LOOPBACK[1], other_netns=True)
    return HostAddresses(*LOOPBACK, other_netns=False) if same else None


def _gateways(pid: int) -> tuple[str | None, str | None]:
    """(IPv4, IPv6) default gateways of the network namespace of ``pid``: /proc/<pid>/net
    is that namespace's view (route(8) and ipv6_route formats), so no setns is needed."""
    v4 = v6 = None
    with open(f"/proc/{pid}/net/route") as f:
        for line in list(f)[1:]:
            fields = line.split()  # Iface Destination Gateway Flags ... Mask
            if fields[1] == fields[7] == "00000000" and int(fields[3], 16) & 0x2:  # RTF_GATEWAY
                v4 = socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
                break
    with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/net/ipv6_route") as f:
        for line in f:
            dst, plen, _src, _splen, hop = line.split()[:5]
            gw = ipaddress.IPv6Address(bytes.fromhex(hop))
            if int(dst, 16) == 0 and plen == "00" and gw.packed != bytes(16) and not gw.is_link_local:
                v6 = str(gw)  # a link-local gateway needs a scope id: unusable for listening
                break
    return v4, v6


def open_connections(path: Path) -> list[str]:
    """Established TCP connections of the cgroup's processes ("local -> remote"): opened
    before the redirect was attached, they are never seen by trproxy."""
    found: dict[str, None] = {}
    for pid in cgroups.all_procs(path):
        try:
            inodes = {link[8:-1] for link in _fd_links(pid) if link.startswith("socket:[")}
            for table in ("tcp", "tcp6"):
                with open(f"/proc/{pid}/net/{table}") as f:
                    for line in list(f)[1:]:
                        fields = line.split()
                        if fields[3] == "01" and fields[9] in inodes:  # TCP_ESTABLISHED
                            found[f"{_proc_addr(fields[1])} -> {_proc_addr(fields[2])}"] = None
        except OSError:
            continue  # gone meanwhile, or a descriptor closed under us
    return list(found)


def _fd_links(pid: int) -> list[str]:
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return links


def _proc_addr(text: str) -> str:
    """/proc/net/tcp's ``HEX_ADDR:HEX_PORT`` (address in host-order 32-bit words)."""
    addr, port = text.split(":")
    raw = bytes.fromhex(addr)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return f"[{ip}]:{int(port, 16)}" if ip.version == 6 else f"{ip}:{int(port, 16)}"


def socket_owner(path: Path, peer: tuple, local: tuple) -> tuple[int, int] | None:  # type: ignore[type-arg]
    """(pid, start time) of a process of cgroup ``path`` holding the TCP connection that
    the proxy accepted from ``peer`` on ``local`` (asyncio's peername/sockname), or None.
    Each network namespace's table (/proc/<pid>/net/tcp*) is read once; a container's
    client is found in its own namespace, where the proxy's address is the gateway's."""
    want = (_sock_addr(peer), _sock_addr(local))
    inodes: dict[int, str | None] = {}
    for pid in cgroups.all_procs(path):
        try:
            ns = os.stat(f"/proc/{pid}/ns/net").st_ino
            if ns not in inodes:
                inodes[ns] = _connection_inode(pid, want)
            if inodes[ns] is not None and f"socket:[{inodes[ns]}]" in _fd_links(pid):
                start = cgroups.proc_start_time(pid)
                return (pid, start) if start is not None else None
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or a table line we cannot read
    return None


def _connection_inode(pid: int, want: tuple[str, str]) -> str | None:
    ports = tuple(f":{int(a.rsplit(':', 1)[1]):04X} " for a in want)  # a cheap filter first
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/net/{table}") as f:
            for line in f:
                if ports[0] in line and ports[1] in line:
                    fields = line.split()
                    if (_proc_addr(fields[1]), _proc_addr(fields[2])) == want:
                        return fields[9]
    return None


def _sock_addr(addr: tuple) -> str:  # type: ignore[type-arg]
    """asyncio's (host, port[, flow, scope]) as ``_proc_addr`` writes it."""
    ip = ipaddress.ip_address(addr[0].split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return f"[{ip}]:{addr[1]}" if ip.version == 6 else f"{ip}:{addr[1]}"

"""Upstream connections dialled from inside another network namespace.

An attached container that dials 127.0.0.1 (or ::1, 0.0.0.0) means its own loopback: a
sidecar sharing its network namespace, a second process of its own. The proxy runs in the
host's namespace, where that address is the host's. Such upstreams are dialled from the
container's namespace instead: a short-lived thread enters it (``setns(CLONE_NEWNET)``
changes the calling thread only) and creates the socket there; a socket stays in the
namespace it was created in, so the event loop then connects and relays it as any other.
A dedicated thread, never a pool's: a pool thread would stay in the container's namespace
for whatever it runs next.
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

#: the process whose network namespace the app's local destinations are dialled in (None:
#: ours), given the app's connection to the proxy as (peername, sockname) when known
NetnsPid = Callable[[tuple | None], int | None]  # type: ignore[type-arg]


def is_local(host: str) -> bool:
    """127/8, ::1, and the unspecified addresses (which connect to the same host)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def socket_in(pid: int, family: int) -> socket.socket:
    """A TCP socket of the network namespace of ``pid`` (blocks for a thread's life)."""
    out: dict[str, Any] = {}

    def enter_and_create() -> None:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into the network namespace of pid {pid}: {os.strerror(err)}")
            finally:
                os.close(fd)
            out["sock"] = socket.socket(family, socket.SOCK_STREAM)
        except OSError as e:
            out["error"] = e

    thread = threading.Thread(target=enter_and_create, name="trproxy-netns", daemon=True)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["sock"]


async def open_upstream(netns_pid: NetnsPid | None, host: str, port: int, client: Any = None,
                        **kw: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection(host, port, **kw)``, from the namespace of
    ``netns_pid(client)`` when ``host`` is a local address and such a process exists.
    ``client``: the app's side of the connection (a StreamWriter), to tell which
    container's loopback is meant when the attached cgroup holds several."""
    pid = None
    if netns_pid is not None and is_local(host):
        app = (client.get_extra_info("peername"), client.get_extra_info("sockname")) if client else None
        pid = await asyncio.to_thread(netns_pid, app)
    if pid is None:
        return await asyncio.open_connection(host, port, **kw)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = await asyncio.to_thread(socket_in, pid, family)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    if kw.get("ssl") is not None and "server_hostname" not in kw:
        kw["server_hostname"] = host
    return await asyncio.open_connection(sock=sock, **kw)

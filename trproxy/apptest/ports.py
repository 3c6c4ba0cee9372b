"""Is the app's port free before the app starts, and if not, who has it?

``trproxy test`` sends each test to the port it was recorded on. If another process
already listens there (the previous run's app still shutting down, a developer's server),
the app fails to bind, or worse, the tests reach that other process and pass or fail on
its answers. So the run waits a moment for the port to be freed, then refuses with the
holder's pid and command instead of starting the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("trproxy")

_LISTEN, _TIME_WAIT = "0A", "06"  # include/net/tcp_states.h, as /proc/net/tcp prints them
_STATES = {"01": "established", "02": "syn-sent", "03": "syn-recv", "04": "fin-wait1",
           "05": "fin-wait2", "07": "close", "08": "close-wait", "09": "last-ack",
           _LISTEN: "listening", "0B": "closing"}


def in_use(port: int, hosts: Iterable[str] = ("127.0.0.1", "::1")) -> bool:
    """A bind to ``port`` the way servers bind (SO_REUSEADDR) fails on one of ``hosts``."""
    for host in hosts:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
                if exc.errno != errno.EADDRNOTAVAIL:  # no ::1 on this host: not in use there
                    raise
    return False


def holders(port: int, proc: Path = Path("/proc")) -> list[str]:
    """``pid N (comm) listening``-like descriptions of the TCP sockets bound to ``port``
    (TIME_WAIT aside: it does not stop a server's bind)."""
    inodes: dict[str, str] = {}
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (proc / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == port \
                        and fields[3] != _TIME_WAIT:
                    inodes[fields[9]] = _STATES.get(fields[3], fields[3])
    found: list[str] = []
    for pid_dir in proc.iterdir() if inodes else ():
        if not pid_dir.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (pid_dir / "fd").iterdir():
                target = os.readlink(fd)
                inode = target[len("socket:["):-1] if target.startswith("socket:[") else None
                if inode in inodes:
                    comm = (pid_dir / "comm").read_text().strip()
                    found.append(f"pid {pid_dir.name} ({comm}) {inodes.pop(inode)}")
    found += [f"a socket of no process here ({state})" for state in inodes.values()]
    return found


async def wait_free(ports: Iterable[int], timeout: float = 10.0) -> str | None:
    """Wait up to ``timeout`` for every port to be free; None, or why one is not."""
    deadline = time.monotonic() + timeout
    for port in sorted(set(ports)):
        if not in_use(port):
            continue
        who = ", ".join(holders(port)) or "another program"
        log.warning("port %d is in use by %s; waiting up to %.0f s for it", port, who, timeout)
        while in_use(port):
            if time.monotonic() > deadline:
                who = ", ".join(holders(port)) or "another program"
                return (f"port {port}, where the tests were recorded, is in use by {who}: "
                        "stop it, or the tests would reach it instead of the app")
            await asyncio.sleep(0.05)
    return None

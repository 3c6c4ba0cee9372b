"""Helpers for the redirect tests: a tiny threaded relay proxy that uses
``Redirector.original_destination``, loopback servers, and a child program that connects
and reports what it saw (getpeername, /proc/net/tcp*).

Every destination is a loopback address; every process is started here and ended by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.support.services import free_port  # noqa: F401 (the redirect tests' import)
from trproxy.redirect import Redirector

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (eBPF, cgroups)")


def bind_pair(port: int = 0) -> tuple[socket.socket, socket.socket]:
    """Listeners on 127.0.0.1:P and [::1]:P with the same free port P."""
    for _ in range(50):
        s4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s4.bind(("127.0.0.1", port))
        p = s4.getsockname()[1]
        s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s6.bind(("::1", p))
        except OSError:
            s4.close()
            s6.close()
            continue
        s4.listen(64)
        s6.listen(64)
        return s4, s6
    raise RuntimeError("no port free on both 127.0.0.1 and ::1")




def _serve(listeners: list[socket.socket], handle, stop: threading.Event) -> list[threading.Thread]:
    def loop(ls: socket.socket) -> None:
        while not stop.is_set():
            try:
                conn, peer = ls.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=handle, args=(conn, peer), daemon=True).start()

    for ls in listeners:
        ls.settimeout(0.2)
    threads = [threading.Thread(target=loop, args=(ls,), daemon=True) for ls in listeners]
    for t in threads:
        t.start()
    return threads


def _stop(
    stop: threading.Event, threads: list[threading.Thread], socks: list[socket.socket]
) -> None:
    stop.set()
    for s in socks:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept() on Linux
    for t in threads:
        t.join(2)
    for s in socks:
        s.close()


class EchoServer:
    """Answers each line with ``echo <port> <line>`` on 127.0.0.1:P and [::1]:P."""

    def __init__(self) -> None:
        self.s4, self.s6 = bind_pair()
        self.port = self.s4.getsockname()[1]
        self._stop = threading.Event()
        self._threads = _serve([self.s4, self.s6], self._handle, self._stop)

    def _handle(self, conn: socket.socket, peer: tuple) -> None:
        with conn, contextlib.suppress(OSError):
            f = conn.makefile("rb")
            for line in f:
                conn.sendall(b"echo %d %s" % (self.port, line))

    def close(self) -> None:
        _stop(self._stop, self._threads, [self.s4, self.s6])


@dataclass
class Accepted:
    peer: tuple
    original: tuple[str, int] | None


@dataclass
class RelayProxy:
    """The test stand-in for trproxy's proxy: accept, look up the original destination,
    connect there and relay bytes. A connection with no original destination gets
    ``direct\\n`` and is closed."""

    s4: socket.socket
    s6: socket.socket
    port: int
    redirector: Redirector | None = None
    accepted: list[Accepted] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def start(cls) -> RelayProxy:
        s4, s6 = bind_pair()
        proxy = cls(s4, s6, s4.getsockname()[1])
        proxy._threads = _serve([s4, s6], proxy._handle, proxy._stop)
        return proxy

    def _handle(self, conn: socket.socket, peer: tuple) -> None:
        assert self.redirector is not None
        orig = self.redirector.original_destination(peer, conn.getsockname())
        self.accepted.append(Accepted(peer, orig))
        with conn, contextlib.suppress(OSError):
            if orig is None:
                conn.makefile("rb").readline()
                conn.sendall(b"direct\n")
                conn.recv(1)  # until the client closes: it still inspects its socket
                return
            with socket.create_connection(orig, timeout=10) as up:
                t = threading.Thread(target=_pump, args=(up, conn), daemon=True)
                t.start()
                _pump(conn, up)
                t.join(10)

    def close(self) -> None:
        _stop(self._stop, self._threads, [self.s4, self.s6])


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)


# The child: connect, say hello, report what the app sees and what the kernel has.
CLIENT = r"""
import json, os, socket, sys

def proc_net_remote(local_port, v6):
    def addr(h):
        b = bytes.fromhex(h)
        b = b"".join(b[i:i + 4][::-1] for i in range(0, len(b), 4))  # host-order u32 words
        return socket.inet_ntop(socket.AF_INET6 if len(b) == 16 else socket.AF_INET, b)
    with open("/proc/net/tcp6" if v6 else "/proc/net/tcp") as f:
        for line in list(f)[1:]:
            parts = line.split()
            lh, lp = parts[1].split(":")
            rh, rp = parts[2].split(":")
            if int(lp, 16) == local_port and parts[3] == "01":
                return [addr(rh), int(rp, 16)]
    return None

host, port, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if how == "name":
    s = socket.create_connection((host, port), timeout=10)
else:
    s = socket.socket(socket.AF_INET6 if how == "v6" else socket.AF_INET)
    s.settimeout(10)
    s.connect((host, port))
s.sendall(b"hello\n")
reply = s.makefile("rb").readline().decode()
local = s.getsockname()
print(json.dumps({
    "pid": os.getpid(), "ppid": os.getppid(),
    "peer": list(s.getpeername()[:2]), "local": list(local[:2]),
    "reply": reply, "kernel_remote": proc_net_remote(local[1], s.family == socket.AF_INET6),
}))
"""


def run_client(host: str, port: int, how: str, preexec=None, shell: bool = False) -> dict:
    """Run CLIENT (optionally under ``sh -c``, making it a grandchild); return its report."""
    argv = [sys.executable, "-c", CLIENT, host, str(port), how]
    if shell:
        quoted = " ".join("'" + a.replace("'", "'\\''") + "'" for a in argv)
        argv = ["sh", "-c", f"{quoted}; true"]  # '; true' keeps sh from exec'ing python
    proc = subprocess.run(
        argv, preexec_fn=preexec, capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


CONNECT = r"""
import errno, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.settimeout(10)
try:
    s.connect((host, port))
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
else:
    print("connected")
"""


def try_connect(host: str, port: int, preexec=None) -> str:
    """Connect from a child process (put in a cgroup by ``preexec``): ``connected`` or the
    errno's name (``EPERM``, ``ECONNREFUSED``...)."""
    proc = subprocess.run(
        [sys.executable, "-c", CONNECT, host, str(port)],
        preexec_fn=preexec, capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def enter_cgroup(path: str):
    """A ``preexec_fn`` that moves the child into the cgroup at ``path``."""
    def enter() -> None:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write("0")
    return enter


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy() -> Iterator[RelayProxy]:
    p = RelayProxy.start()
    yield p
    p.close()


@pytest.fixture
def redirected(proxy: RelayProxy) -> Iterator[Redirector]:
    """A Redirector for ``proxy``, closed afterwards."""
    require_root()
    r = Redirector.create(proxy.port)
    proxy.redirector = r
    yield r
    r.close()

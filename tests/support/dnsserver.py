"""A real DNS server for tests: Debian's dnsmasq (``make setup``) on a loopback address.

It serves only the records the test gives it (``--no-resolv --no-hosts``: nothing is
forwarded, nothing leaves the machine) and answers NXDOMAIN for other names under the
``local`` domains. Stopped by pid.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field

from tests.support.services import ends_with_tests, free_port


@dataclass
class DnsServer:
    records: list[str]  # dnsmasq options without the leading "--": "host-record=db.internal,127.0.0.1"
    host: str = "127.0.0.1"
    port: int = 0
    local: tuple[str, ...] = ("internal",)
    netns: str | None = None  # run inside `ip netns exec <netns>`
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> DnsServer:
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        self.port = self.port or free_udp_port(self.host)
        cmd = [binary, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
               f"--listen-address={self.host}", f"--port={self.port}", "--user=root", "--group=root",
               "--pid-file=", "--log-facility=-", *(f"--local=/{d}/" for d in self.local),
               *(f"--{r}" for r in self.records)]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     preexec_fn=ends_with_tests())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            if self.netns or self._answers():
                return self
            time.sleep(0.05)
        raise TimeoutError(f"dnsmasq does not answer on {self.host}:{self.port}")

    def _answers(self) -> bool:
        """dnsmasq answers a root NS query (its own REFUSED counts): it is up."""
        with socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            s.sendto(bytes.fromhex("abcd01000001000000000000000002" + "0001"), (self.host, self.port))
            try:
                return bool(s.recv(512))
            except OSError:
                return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host`` (dnsmasq listens on both)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        port = free_port(host)
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no port free for UDP and TCP on {host}")


def query(name: str, qtype: int = 1, ident: int = 0x1234) -> bytes:
    """A query as a stub resolver sends it (RD set, no EDNS)."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p)
    return ident.to_bytes(2, "big") + bytes.fromhex("01000001000000000000") + labels + b"\0" + \
        qtype.to_bytes(2, "big") + b"\x00\x01"


def ask_udp(server: DnsServer, message: bytes) -> bytes:
    with socket.socket(socket.AF_INET6 if ":" in server.host else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(message, (server.host, server.port))
        return s.recv(65535)


def ask_tcp(server: DnsServer, message: bytes) -> bytes:
    """The whole TCP stream of the answer, length prefix included."""
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.sendall(len(message).to_bytes(2, "big") + message)
        head = _exactly(s, 2)
        return head + _exactly(s, int.from_bytes(head, "big"))


def _exactly(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError("DNS server closed the TCP connection early")
        out += chunk
    return out

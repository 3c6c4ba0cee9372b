"""free_port() (tests/support/services.py): a port no other process can be handed meanwhile,
held until released, so parallel test processes never start two servers on one port."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.support import services
from tests.support.services import PORT_LOCKS, free_port, held_ports, release_ports

# another process tries the port's lock: "held" while we hold it
TRY_LOCK = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    print("held")
else:
    print("free")
"""


def _other_process_sees(port: int) -> str:
    return subprocess.run([sys.executable, "-c", TRY_LOCK, str(PORT_LOCKS / str(port))],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()


def test_ports_are_below_the_ephemeral_range_and_free_on_every_loopback_address():
    ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(20)]
    try:
        assert len(set(ports)) == 20
        assert all(p < ephemeral for p in ports), (ports, ephemeral)
        for host, family in (("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)):
            with socket.socket(family) as s:
                s.bind((host, ports[0]))
    finally:
        release_ports(set(ports))


def test_a_port_is_held_until_released():
    port = free_port()
    try:
        assert port in held_ports()
        assert _other_process_sees(port) == "held"
    finally:
        release_ports({port})
    assert port not in held_ports()
    assert _other_process_sees(port) == "free"


def test_a_port_in_use_or_held_is_never_handed_out(monkeypatch):
    """The random pick lands on a port someone listens on, then on one this process holds,
    then on a free one: only the last is returned."""
    low = services._port_range()[0]
    busy, held = free_port(), free_port()
    release_ports({busy})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", busy))
        taken.listen()
        picks = iter([busy - low, held - low, busy - low + 1, held - low + 1] + list(range(10000)))
        monkeypatch.setattr(services.secrets, "randbelow", lambda n: next(picks))
        port = free_port()
    release_ports({held, port})
    assert port not in (busy, held)

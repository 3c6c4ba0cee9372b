"""A local port nothing listens on refuses under `trproxy record` and `run` as without
trproxy (ECONNREFUSED at connect, clients' own messages and exit statuses), so an app that
waits until a port listens waits as it would directly, and what it then sends is recorded;
a port NAT forwards works as without trproxy. Real redis-server, redis-cli and psql on free
loopback ports (NAT: an iptables REDIRECT in a network namespace of the test's own)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.support.proc import ROOT, TRPROXY, run_trproxy, stop, trproxy
from tests.support.services import RedisServer, free_port
from trproxy.store import load_mocks

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)

# argv: DEAD [LATER]. Connects to DEAD (nothing listens) with Python, redis-cli and psql;
# then, given LATER, says it found LATER closed and waits until something listens there
# (the test starts redis-server on it once it reads that line) and sends one command.
APP = textwrap.dedent("""
    import socket, subprocess, sys, time
    dead = sys.argv[1]

    def connect(port, host="127.0.0.1"):
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
            return "connected"
        except OSError as e:
            return type(e).__name__

    def run(*cmd):
        out = subprocess.run(cmd, capture_output=True, text=True, env={"PGCONNECT_TIMEOUT": "10"})
        return f"{cmd[0]} exit {out.returncode}: " + " ".join((out.stdout + out.stderr).split())

    print("python", connect(dead), connect(dead, "::1"), connect(dead, "0.0.0.0"))
    print(run("redis-cli", "-p", dead, "ping"))
    print(run("psql", "-X", "-h", "127.0.0.1", "-p", dead, "-U", "nobody", "-d", "none", "-c", "select 1"))
    if len(sys.argv) > 2:
        later = sys.argv[2]
        print("later", connect(later), flush=True)
        deadline = time.monotonic() + 60
        while connect(later) != "connected" and time.monotonic() < deadline:
            time.sleep(0.05)
        print(run("redis-cli", "-p", later, "set", "k", "v"))
""")


def _direct(dead: int) -> str:
    out = subprocess.run([sys.executable, "-c", APP, str(dead)], capture_output=True, text=True,
                         timeout=60, check=True)
    return out.stdout


def test_record_refuses_closed_ports_and_records_once_they_listen(tmp_path):
    dead, later = free_port(), free_port()
    direct = _direct(dead)
    assert direct.startswith("python ConnectionRefusedError ConnectionRefusedError "
                             "ConnectionRefusedError\nredis-cli exit 1: Could not connect"), direct
    assert "Connection refused" in direct.splitlines()[2]
    proc = trproxy("record", "--dir", str(tmp_path), "--test-set", "s", "--",
                   sys.executable, "-c", APP, str(dead), str(later))
    server = None
    try:
        assert proc.stdout is not None
        head = [proc.stdout.readline() for _ in range(4)]
        assert "".join(head[:3]) == direct  # as direct: refused, same messages and statuses
        assert head[3] == "later ConnectionRefusedError\n", head
        server = RedisServer(port=later).start()
        out, err = proc.communicate(timeout=120)
    finally:
        stop(proc)
        if server is not None:
            server.destroy()
    assert proc.returncode == 0, err
    assert out == "redis-cli exit 0: OK\n", err
    assert f" connects to 127.0.0.1:{dead} refused: nothing listened (as direct)" in err, err
    assert f"1 connect to [::1]:{dead} refused: nothing listened (as direct)" in err, err
    assert f"to 127.0.0.1:{later} refused: nothing listened (as direct)" in err, err
    mocks = load_mocks(tmp_path / "s")
    refused = {m.destination for m in mocks if m.event == "refused"}  # 0.0.0.0 is 127.0.0.1
    assert refused == {f"127.0.0.1:{dead}", f"[::1]:{dead}", f"127.0.0.1:{later}"}
    assert any(m.protocol == "redis" and m.destination == f"127.0.0.1:{later}" for m in mocks)

    # Replay: a port only ever refused refuses again, and it is no miss. One that listened
    # later is replayed: the app finds it listening at once (no refusal to replay).
    replay = run_trproxy("replay", "--dir", str(tmp_path), "--test-set", "s", "--",
                         sys.executable, "-c", APP, str(dead), str(later))
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout == direct + "later connected\nredis-cli exit 0: OK\n", replay.stderr
    assert "trproxy: 0 misses" in replay.stderr, replay.stderr


def test_passthrough_refuses_closed_ports_as_direct(tmp_path, redis_server):
    dead = free_port()
    direct = _direct(dead)
    out = run_trproxy("run", "-v", "--", sys.executable, "-c", APP, str(dead))
    assert out.returncode == 0, out.stderr
    assert out.stdout == direct
    assert f"connect(s) to 127.0.0.1:{dead} refused: nothing listened (as direct)" in out.stderr
    listening = run_trproxy("run", "--", "redis-cli", "-p", str(redis_server.port), "ping")
    assert listening.stdout == "PONG\n", listening.stderr


NAT = """
set -e
ip link set lo up
iptables -t nat -A OUTPUT -p tcp -d 127.0.0.1 --dport "$1" -j REDIRECT --to-ports "$2"
redis-server --port "$2" --bind 127.0.0.1 --save '' --dir "$3" >/dev/null &
trap 'kill $!' EXIT
until redis-cli -p "$2" ping >/dev/null 2>&1; do sleep 0.05; done
dialed=$1
redis-cli -p "$dialed" set k direct
shift 3
"$@" redis-cli -p "$dialed" set k recorded
"""


def test_a_port_nat_forwards_works_as_direct(tmp_path):
    """Nothing listens on the port the app dials, but NAT forwards it (as Docker does for
    a published port without docker-proxy, or Podman): the kernel's connect, left alone,
    reaches the server as without trproxy (refusing it would break the app); not recorded,
    and the summary says so."""
    if subprocess.run(["iptables", "--version"], capture_output=True, check=False).returncode:
        pytest.skip("needs iptables")
    dialed, server = free_port(), free_port()
    out = subprocess.run(["unshare", "--net", "sh", "-c", NAT, "nat", str(dialed), str(server),
                          str(tmp_path), *TRPROXY, "record", "--dir", str(tmp_path / "rec"), "--"],
                         capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stderr
    assert out.stdout == "OK\nOK\n", out.stderr
    assert (f"1 connection(s) to 127.0.0.1:{dialed} reached a port nothing listened on (NAT "
            "forwards it") in out.stderr, out.stderr

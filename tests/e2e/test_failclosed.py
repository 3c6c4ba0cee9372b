"""Fail closed and served-only-to-the-app, end to end with the real CLI and redis-server.

When trproxy is SIGKILLed during ``record`` or ``replay``, its direct child dies with it and
whatever else the app left running reaches nothing: the real Redis counter does not move.
The next trproxy run removes the dead run once its processes are gone. The proxy answers
only connections made from the run's cgroup: another user reusing an app connection's
source port gets a reset.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.proc import alive, children, kill_all, run_trproxy, trproxy
from trproxy.bpf import loader
from trproxy.redirect import cgroup
from trproxy.store import load_mocks

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)

LOOP = str(Path(__file__).parent / "apps" / "redis_loop.py")
EPERM = "Error 1 connecting"  # redis-py: "Error 1 connecting to 127.0.0.1:P. Operation not permitted."


def _wait_for(check, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _lines(out: Path) -> list[str]:
    return out.read_text().splitlines() if out.exists() else []


def _calls(out: Path) -> list[str]:
    return [line for line in _lines(out) if not line.startswith("cgroup ")]


def _counter(redis_server) -> int:
    return int(redis_server.cli("get", "counter").strip() or 0)


class Loop:
    """``trproxy MODE -- sh -c 'python redis_loop.py & wait'``: the app is a grandchild,
    so it outlives the shell that PR_SET_PDEATHSIG kills with trproxy."""

    def __init__(self, mode: str, root: Path, redis_port: int) -> None:
        self.out, self.pidfile = root / f"{mode}.out", root / f"{mode}.pid"
        script = f"{sys.executable} {LOOP} {redis_port} {self.out} & echo $! > {self.pidfile}; wait"
        self.proc = trproxy(mode, "--dir", str(root / "rec"), "--", "sh", "-c", script)
        _wait_for(lambda: sum(c.startswith("ok ") for c in _calls(self.out)) >= 3, "3 calls")
        self.app = int(self.pidfile.read_text())
        rel = _lines(self.out)[0].split(" ", 1)[1]
        self.cgroup = cgroup.require_mount() / rel.lstrip("/")
        self.cg_id = cgroup.cgroup_id(self.cgroup)

    def kill_trproxy(self) -> int:
        """SIGKILL trproxy; returns how many calls the app had made by then."""
        shell = [p for p in children(self.proc.pid)  # not record's YAML writer (store/offload)
                 if b"trproxy.store.offload" not in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(shell) == 1
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        done = len(_calls(self.out))
        _wait_for(lambda: not alive(shell[0]), "the shell to die with trproxy (PR_SET_PDEATHSIG)")
        assert alive(self.app)  # the app outlives it ...
        return done

    def wait_denied(self, after: int, n: int = 3) -> list[str]:
        """Wait for ``n`` refused calls after call ``after``; returns the calls since then."""
        _wait_for(lambda: sum(EPERM in c for c in _calls(self.out)[after:]) >= n, f"{n} failed calls")
        since = _calls(self.out)[after:]
        first = next(i for i, c in enumerate(since) if EPERM in c)
        assert all(EPERM in c for c in since[first:]), since  # ... and reaches nothing
        return since

    def pinned(self) -> bool:
        pins = loader.run_pin_dir(self.cg_id)
        return pins is not None and pins.is_dir()

    def config(self):
        return loader.load().maps.config(self.cg_id)

    def end_app(self) -> None:
        kill_all([self.app])  # ours to end
        _wait_for(lambda: not cgroup.all_procs(self.cgroup), "the run's cgroup to empty")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        kill_all([self.app])


def _next_run_cleans_up(loop: Loop) -> None:
    out = run_trproxy("run", "--", "true")
    assert out.returncode == 0, out.stderr
    assert not loop.cgroup.exists()
    assert not loop.pinned()
    assert loop.config() is None
    entries = loader.load().maps.run_entries(loop.cg_id)
    assert entries and set(entries.values()) == {0}


def test_sigkill_during_record_cuts_the_app_off(tmp_path, redis_server):
    loop = Loop("record", tmp_path, redis_server.port)
    try:
        assert _counter(redis_server) >= 3  # recording: the calls reach the real server
        done = loop.kill_trproxy()
        loop.wait_denied(done)
        frozen = _counter(redis_server)
        loop.wait_denied(done, n=6)
        assert _counter(redis_server) == frozen  # no unrecorded traffic
        assert loop.pinned() and loop.config() is not None
        loop.end_app()
        _next_run_cleans_up(loop)
    finally:
        loop.stop()


def test_sigkill_during_replay_cuts_the_app_off(tmp_path, redis_server):
    rec = run_trproxy("record", "--dir", str(tmp_path / "rec"), "--",
                      sys.executable, LOOP, str(redis_server.port), str(tmp_path / "rec.out"), "1")
    assert rec.returncode == 0, rec.stderr
    assert _counter(redis_server) == 1
    loop = Loop("replay", tmp_path, redis_server.port)
    try:
        done = loop.kill_trproxy()
        loop.wait_denied(done)
        assert _counter(redis_server) == 1  # replayed, then cut off: never the real server
        # A run while the app still lives leaves the dead run in place: still cut off.
        busy = run_trproxy("run", "--", "true")
        assert busy.returncode == 0, busy.stderr
        assert loop.pinned() and loop.config() is not None and loop.cgroup.is_dir()
        assert "still has processes" in busy.stderr
        loop.wait_denied(len(_calls(loop.out)), n=2)
        assert _counter(redis_server) == 1
        loop.end_app()
        _next_run_cleans_up(loop)
    finally:
        loop.stop()


SOURCE_PORT_APP = textwrap.dedent("""
    import os, socket, struct, sys, time
    sport, port, ready, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", sport))
    s.connect(("127.0.0.1", port))
    s.sendall(b"*2\\r\\n$4\\r\\nINCR\\r\\n$7\\r\\ncounter\\r\\n")
    reply = s.recv(100).decode().strip()
    proxy = None  # where the kernel really connected it (getpeername says Redis)
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == sport and f[3] == "01":
            proxy = int(f[2].split(":")[1], 16)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # no TIME_WAIT
    s.close()
    with open(ready + ".tmp", "w") as f:
        f.write(f"{reply} {proxy}")
    os.rename(ready + ".tmp", ready)
    while not os.path.exists(go):
        time.sleep(0.05)
""")

ATTACK = textwrap.dedent("""
    import errno, os, socket, sys
    sport, proxy_port = int(sys.argv[1]), int(sys.argv[2])
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", sport))
    s.settimeout(10)
    try:  # the reset may come before connect() returns
        s.connect(("127.0.0.1", proxy_port))
        s.sendall(b"*2\\r\\n$4\\r\\nINCR\\r\\n$7\\r\\ncounter\\r\\n")
        print(os.getuid(), repr(s.recv(100)))
    except OSError as e:
        print(os.getuid(), errno.errorcode[e.errno])
""")


def _source_port_run(mode: str, root: Path, redis_port: int, attack: bool) -> tuple[str, str]:
    """Run the app once in ``mode``; with ``attack``, another user reuses its source port
    meanwhile. Returns (what the app got, what the attacker got)."""
    sport = int(subprocess.check_output([sys.executable, "-c", "import socket; s=socket.socket(); "
                                         "s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"]))
    ready, go = root / f"{mode}.ready", root / f"{mode}.go"
    proc = trproxy(mode, "--dir", str(root / "rec"), "-v", "--", sys.executable, "-c", SOURCE_PORT_APP,
                   str(sport), str(redis_port), str(ready), str(go))
    try:
        _wait_for(ready.exists, "the app's call")
        reply, proxy_port = ready.read_text().split()
        got = ""
        if attack:
            attacker = subprocess.run(["/usr/bin/python3", "-I", "-c", ATTACK, str(sport), proxy_port],
                                      user="nobody", capture_output=True, text=True, timeout=30, check=False)
            assert attacker.returncode == 0, attacker.stderr
            uid, got = attacker.stdout.split()
            assert int(uid) != 0
        go.touch()
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        if attack:
            assert "was not redirected from the app's cgroup: reset" in err, err
        return reply, got
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("mode", ["record", "replay"])
def test_source_port_reuse_by_another_user_is_reset(tmp_path, redis_server, mode):
    if mode == "replay":
        assert _source_port_run("record", tmp_path, redis_server.port, attack=False)[0] == ":1"
    reply, attacker = _source_port_run(mode, tmp_path, redis_server.port, attack=True)
    assert reply == ":1"  # the app got its answer (recorded, or replayed)
    assert attacker == "ECONNRESET"  # the attacker got nothing, recorded or replayed
    assert _counter(redis_server) == 1  # its INCR never reached Redis
    mocks = load_mocks(tmp_path / "rec" / "test-set-0")
    assert [m.request for m in mocks] == [["INCR", "counter"]]  # and was never recorded


def test_a_client_that_sends_and_closes_at_once_is_recorded(tmp_path, redis_server):
    """The proxy may accept after the client is gone: the connection (and its original
    destination) waited in the accept queue."""
    app = ("import socket, sys; s = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); "
           "s.sendall(b'*3\\r\\n$3\\r\\nSET\\r\\n$4\\r\\ngone\\r\\n$3\\r\\nyes\\r\\n'); s.close()")
    out = run_trproxy("record", "--dir", str(tmp_path), "--", sys.executable, "-c", app,
                      str(redis_server.port))
    assert out.returncode == 0, out.stderr
    assert redis_server.cli("get", "gone") == "yes\n"  # relayed to where it was going
    assert [m.request for m in load_mocks(tmp_path / "test-set-0")] == [["SET", "gone", "yes"]]

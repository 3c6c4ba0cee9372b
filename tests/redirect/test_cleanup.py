"""A run whose owner is killed with SIGKILL fails closed: its links stay pinned and every
connect of its processes fails, until ``cleanup_leftovers()`` in a new process finds the
processes gone and removes the run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.redirect.conftest import (
    ROOT,
    EchoServer,
    bind_pair,
    enter_cgroup,
    free_port,
    require_root,
    try_connect,
)
from trproxy.bpf import loader, syscall
from trproxy.redirect import cgroup

pytestmark = pytest.mark.root

OWNER = r"""
import json, socket, subprocess, sys, time
from trproxy.redirect import Redirector

proxy_port, dest_port, x, s = map(int, sys.argv[1:5])
r = Redirector.create(proxy_port, shadow_ports={x: s}, dns_port=proxy_port)
r.refuse([("127.0.0.1", 9)])
sleeper = subprocess.Popen(["sleep", "120"], preexec_fn=r.enter)
listener = subprocess.Popen(
    [sys.executable, "-c", "import socket,time; s=socket.socket(); s.bind(('127.0.0.1', 0)); "
     "s.listen(); print(s.getsockname()[1], flush=True); time.sleep(120)"],
    preexec_fn=r.enter, stdout=subprocess.PIPE, text=True)
listen_port = int(listener.stdout.readline())
# A redirected connection (the test's dummy proxy completes the handshake from its backlog).
subprocess.run([sys.executable, "-c", f"import socket; socket.create_connection(('127.0.0.1', {dest_port}))"],
               preexec_fn=r.enter, check=True)
print(json.dumps({"cgroup": r.cgroup_path, "id": r.cgroup_id,
                  "children": [sleeper.pid, listener.pid], "listen": listen_port}), flush=True)
time.sleep(120)
"""

CLEANUP = (
    "import json; from trproxy.redirect import cleanup_leftovers; "
    "print(json.dumps(cleanup_leftovers()))"
)


def _cleanup_in_new_process() -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", CLEANUP],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT,
        timeout=60, check=True,
    )
    return json.loads(done.stdout)


def _links_on(cg_id: int) -> int:
    n = 0
    for link_id in syscall.link_ids():
        try:
            fd = syscall.link_fd_by_id(link_id)
        except OSError:
            continue
        info = syscall.LinkInfo()
        syscall.obj_info(fd, info)
        os.close(fd)
        n += info.type == syscall.LINK_TYPE_CGROUP and info.cgroup_id == cg_id
    return n


def _kill_and_wait_gone(pids: list[int], path: Path) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 20
    while cgroup.all_procs(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not cgroup.all_procs(path)


DNS = r"""
import errno, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    if sys.argv[1] == "connect":
        s.connect(("127.0.0.1", 53))
        s.send(b"\0" * 12)
    else:
        s.sendto(b"\0" * 12, ("127.0.0.1", 53))
    print("sent")
except OSError as exc:
    print(errno.errorcode[exc.errno])
"""


def _try_dns(style: str, enter) -> str:  # type: ignore[no-untyped-def]
    """A DNS query over UDP from a child in the run (nothing answers it): ``sent`` or the
    errno's name."""
    proc = subprocess.run([sys.executable, "-c", DNS, style], preexec_fn=enter, capture_output=True,
                          text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_kill9_fails_closed_until_the_run_is_gone(echo: EchoServer) -> None:
    require_root()
    p4, p6 = bind_pair()  # a proxy that never accepts: the kernel still completes handshakes
    env = dict(os.environ, PYTHONPATH=ROOT)
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(p4.getsockname()[1]), str(free_port()),
         str(free_port()), str(free_port())],
        stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    children: list[int] = []
    try:
        assert owner.stdout
        info = json.loads(owner.stdout.readline())
        children = info["children"]
        path, cg_id = Path(info["cgroup"]), info["id"]
        maps = loader.load().maps
        everything = {"trp_config": 1, "trp_listen": 1, "trp_shadow": 1, "trp_orig": 1,
                      "trp_dst": 1, "trp_refused": 0, "trp_capture": 0, "trp_socks": 0,
                      "trp_dns": 0, "trp_closed": 0, "trp_reached": 0}
        assert maps.run_entries(cg_id) == everything
        pins = loader.run_pin_dir(cg_id)
        assert pins is not None
        assert sorted(os.listdir(pins)) == sorted(s.name for s in loader.PROGRAMS)
        alive_port = maps.config(cg_id).alive_port
        enter = enter_cgroup(str(path))
        assert try_connect("127.0.0.1", echo.port, enter) == "connected"  # to the dummy proxy
        assert _try_dns("sendto", enter) == "sent"

        owner.send_signal(signal.SIGKILL)
        owner.wait(10)

        # Every connect of the run fails now, IPv4, IPv6 and v4-mapped alike ...
        for host in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
            assert try_connect(host, echo.port, enter) == "EPERM", host
        # ... also when someone else takes the marker's port (the mark is the owner's) ...
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as impostor:
            impostor.bind(("127.0.0.1", alive_port))
            assert try_connect("127.0.0.1", echo.port, enter) == "EPERM"
        # ... and so does its DNS (a query over UDP, connected or not) ...
        for style in ("sendto", "connect"):
            assert _try_dns(style, enter) == "EPERM", style
        # ... but the run's own servers stay reachable.
        assert try_connect("127.0.0.1", info["listen"], enter) == "connected"
        assert _links_on(cg_id) == len(loader.PROGRAMS)

        # A cleanup while processes of the run live leaves it all in place.
        removed = _cleanup_in_new_process()
        assert f"cgroup {path}" not in removed
        assert path.is_dir() and pins.is_dir()
        assert maps.run_entries(cg_id)["trp_config"] == 1
        assert try_connect("127.0.0.1", echo.port, enter) == "EPERM"

        # Once they are gone, the next cleanup removes the run (or one started meanwhile by
        # another run on this machine did: cleanup is safe to run concurrently).
        _kill_and_wait_gone(children, path)
        removed = _cleanup_in_new_process()
        assert f"cgroup {path}" in removed or not path.exists(), removed
        assert not path.exists()
        assert not pins.exists()
        assert maps.run_entries(cg_id) == dict.fromkeys(everything, 0)
        assert _links_on(cg_id) == 0
        assert str(path) not in json.dumps(_cleanup_in_new_process())  # nothing left to do
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p4.close()
        p6.close()


def test_link_pins_without_a_run_are_removed() -> None:
    require_root()
    from trproxy.redirect import cleanup_leftovers

    path = cgroup.require_mount() / f"trproxy-test-orphan-{time.monotonic_ns()}"
    path.mkdir()
    try:
        progs = loader.load()
        cg_id = cgroup.cgroup_id(path)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            links = progs.attach(fd)
        finally:
            os.close(fd)
        pins = loader.pin_links(cg_id, links)  # no config: as if the owner died right there
        for link in links.values():
            os.close(link)
        assert _links_on(cg_id) == len(loader.PROGRAMS)
        # (or a cleanup that another run on this machine started meanwhile took them)
        removed = cleanup_leftovers()
        assert f"pinned links of cgroup id {cg_id}" in removed or not pins.exists(), removed
        assert not pins.exists()
        assert _links_on(cg_id) == 0
    finally:
        path.rmdir()


def test_half_written_pins_of_dead_processes_are_removed() -> None:
    require_root()
    from trproxy.redirect import cleanup_leftovers

    bpffs = loader.ensure_bpffs()
    assert bpffs
    # above pid_max: never alive; a name of this test's own (test runs go on in parallel)
    tmp = Path(bpffs, loader.PIN_ROOT, f"tmp-999999999-{os.getpid()}-{time.monotonic_ns()}")
    tmp.parent.mkdir(exist_ok=True)
    tmp.mkdir()
    removed = cleanup_leftovers()  # (or one that another run on this machine started meanwhile)
    assert f"pinned programs {tmp}" in removed or not tmp.exists(), removed
    assert not tmp.exists()


# A run's owner that reports its cgroup and stays; in its own pid namespace (unshare) its
# pid and start time name no process that /proc here shows.
QUIET_OWNER = r"""
import json, os, sys, time
from trproxy.redirect import Redirector
r = Redirector.create(int(sys.argv[1]))
print(json.dumps({"cgroup": r.cgroup_path, "id": r.cgroup_id, "pid": os.getpid()}), flush=True)
time.sleep(120)
"""


def test_a_live_owner_in_another_pid_namespace_keeps_its_run() -> None:
    """Its run has no process, and the pid in its cgroup's name is dead or another process
    here: only the run's lock, which the kernel keeps while the owner lives, tells."""
    require_root()
    p4, p6 = bind_pair()
    owner = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
         sys.executable, "-c", QUIET_OWNER, str(p4.getsockname()[1])],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT,
    )
    try:
        assert owner.stdout
        info = json.loads(owner.stdout.readline())
        path, cg_id = Path(info["cgroup"]), info["id"]
        assert info["pid"] != owner.pid and path.name.startswith(f"run-{info['pid']}-")
        assert not cgroup.owner_alive(*map(int, path.name.split("-")[1:3]))  # dead by /proc
        pins = loader.run_pin_dir(cg_id)
        assert pins is not None and pins.is_dir()

        removed = _cleanup_in_new_process()
        assert f"cgroup {path}" not in removed and path.is_dir() and pins.is_dir(), removed
        assert _links_on(cg_id) == len(loader.PROGRAMS)
        assert loader.load().maps.config(cg_id) is not None

        owner.kill()  # --kill-child: the owner dies with unshare
        owner.wait(10)
        deadline = time.monotonic() + 20
        while f"cgroup {path}" not in _cleanup_in_new_process() and path.exists():
            assert time.monotonic() < deadline, "the dead owner's run was not removed"
            time.sleep(0.2)
        assert not path.exists() and not pins.exists() and _links_on(cg_id) == 0
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        p4.close()
        p6.close()


# Loads (and so pins) the programs of another source, as a starting run does before its
# config exists, then waits until its stdin closes.
LOADING = r"""
import sys
from pathlib import Path
import trproxy.bpf.loader as L
d = Path(sys.argv[1])
L.PKG_DIR, L.SOURCE, L.HEADER = d, d / "redirect.bpf.c", d / "redirect.h"
from trproxy.redirect.redirector import load_programs
print(load_programs().pin_dir, flush=True)
sys.stdin.read()
"""


def test_a_version_that_a_starting_run_loaded_is_kept(tmp_path: Path) -> None:
    """Another version with no run yet is not removed while a process that loaded it
    lives (it is about to write its run's config into those maps); then it is."""
    require_root()
    (tmp_path / "redirect.h").write_text(loader.HEADER.read_text())
    (tmp_path / "redirect.bpf.c").write_text(loader.SOURCE.read_text() + "\n/* another version */\n")
    loading = subprocess.Popen(
        [sys.executable, "-c", LOADING, str(tmp_path)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT,
    )
    try:
        assert loading.stdout and loading.stdin
        pin_dir = loading.stdout.readline().strip()
        assert pin_dir and Path(pin_dir).parent == loader.pin_root()
        assert f"pinned programs {pin_dir}" not in _cleanup_in_new_process()
        assert Path(pin_dir, "map_trp_config").exists()
        loading.stdin.close()
        loading.wait(30)
        removed = _cleanup_in_new_process()
        assert f"pinned programs {pin_dir}" in removed or not Path(pin_dir).exists(), removed
        assert not Path(pin_dir).exists()
    finally:
        if loading.poll() is None:
            loading.kill()
            loading.wait()

"""A run whose owner is killed with SIGKILL leaves a cgroup and map entries behind;
``cleanup_leftovers()`` in a new process removes them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redirect.conftest import ROOT, EchoServer, bind_pair, free_port, require_root, run_client
from trproxy.bpf import loader
from trproxy.redirect import cgroup

pytestmark = pytest.mark.root

OWNER = r"""
import json, socket, subprocess, sys, time
from trproxy.redirect import Redirector

proxy_port, dest_port, x, s = map(int, sys.argv[1:5])
r = Redirector.create(proxy_port, shadow_ports={x: s})
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


def _cgroup_of(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        return next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))


def test_kill9_leftovers_are_cleaned_by_a_new_process(echo: EchoServer) -> None:
    require_root()
    p4, p6 = bind_pair()  # a proxy that never accepts: the kernel still completes handshakes
    env = dict(os.environ, PYTHONPATH=ROOT)
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            OWNER,
            str(p4.getsockname()[1]),
            str(free_port()),
            str(free_port()),
            str(free_port()),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    children: list[int] = []
    try:
        assert owner.stdout
        info = json.loads(owner.stdout.readline())
        children = info["children"]
        path, cg_id = Path(info["cgroup"]), info["id"]
        maps = loader.load().maps
        assert maps.run_entries(cg_id) == {
            "trp_config": 1,
            "trp_listen": 1,
            "trp_shadow": 1,
            "trp_orig": 1,
        }

        owner.send_signal(signal.SIGKILL)
        owner.wait(10)

        # The bpf_links died with their owner: the cgroup is no longer redirected ...
        def enter() -> None:
            with open(path / "cgroup.procs", "w") as f:
                f.write("0")

        out = run_client("127.0.0.1", echo.port, "v4", preexec=enter)
        assert out["kernel_remote"] == ["127.0.0.1", echo.port]
        # ... but the cgroup and the map entries stay until a trproxy cleans up: the process
        # below, or one started meanwhile by another run on this machine (cleanup is safe to
        # run concurrently; then that run removed them and ours finds nothing to do)
        still_there = path.is_dir()
        if still_there:
            assert maps.run_entries(cg_id)["trp_config"] == 1

        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "import json; from trproxy.redirect import cleanup_leftovers; "
                "print(json.dumps(cleanup_leftovers()))",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
            check=True,
        )
        removed = json.loads(done.stdout)

        assert f"cgroup {path}" in removed or not still_there, removed
        assert not path.exists()
        assert maps.run_entries(cg_id) == {
            "trp_config": 0,
            "trp_listen": 0,
            "trp_shadow": 0,
            "trp_orig": 0,
        }
        for pid in children:  # survivors were moved to the parent, not killed
            assert _cgroup_of(pid) == "/" + str(path.parent.relative_to(cgroup.require_mount()))
        # Nothing left to do the second time.
        again = subprocess.run(
            [
                sys.executable,
                "-c",
                "from trproxy.redirect import cleanup_leftovers; print(cleanup_leftovers())",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
            check=True,
        )
        assert str(path) not in again.stdout
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


def test_half_written_pins_of_dead_processes_are_removed() -> None:
    require_root()
    from trproxy.redirect import cleanup_leftovers

    bpffs = loader.ensure_bpffs()
    assert bpffs
    tmp = Path(bpffs, loader.PIN_ROOT, "tmp-999999999-abcd")  # above pid_max: never alive
    tmp.parent.mkdir(exist_ok=True)
    tmp.mkdir()
    assert f"pinned programs {tmp}" in cleanup_leftovers()
    assert not tmp.exists()

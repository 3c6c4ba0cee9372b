"""Several trproxy runs on one machine: a run that starts and exits never takes the eBPF
redirect of another run that is still live, also when the two are different trproxy
versions (a newer one has more maps than the live run's pinned programs).

Run A records an app that keeps calling a real redis-server with redis-py; while it runs,
run B (the same version) and run C (a newer version: the current source plus one map)
start, clean up after earlier runs, record a redis-cli call and exit. Every call A's app
made is recorded, before, during and after them: its connections were still redirected.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_failclosed import LOOP, _calls, _wait_for
from tests.redirect.test_cleanup import _links_on
from tests.support.proc import ROOT, run_trproxy, stop, trproxy
from trproxy.bpf import loader
from trproxy.redirect import cgroup
from trproxy.store import load_mocks

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)

# The trproxy CLI built from another redirect source (``argv[1]``: a directory with
# redirect.bpf.c and redirect.h) whose programs have one more map than ours.
NEWER = r"""
import sys
from pathlib import Path
import trproxy.bpf.loader as L
d = Path(sys.argv.pop(1))
L.PKG_DIR, L.SOURCE, L.HEADER = d, d / "redirect.bpf.c", d / "redirect.h"
L.MAPS = (*L.MAPS, "trp_newer")
from trproxy.cli import main
sys.argv[0] = "trproxy"
main()
"""


def _newer_source(where: Path) -> Path:
    where.mkdir()
    (where / "redirect.h").write_text(loader.HEADER.read_text())
    (where / "redirect.bpf.c").write_text(
        loader.SOURCE.read_text() + "\nBPF_HASH(trp_newer, __u32, __u32, 1);\n")
    return where


def _recorded_counts(rec: Path) -> set[int]:
    """The counter's values in a recording (one per call that went through the proxy;
    redis-py sends INCR as INCRBY counter 1)."""
    return {m.responses[0]["int"] for m in load_mocks(rec) if m.request[:2] == ["INCRBY", "counter"]}


def test_a_run_starting_and_exiting_leaves_a_live_run_redirected(tmp_path, redis_server):
    out = tmp_path / "a.out"
    a = trproxy("record", "--dir", str(tmp_path / "a"), "--",
                sys.executable, LOOP, str(redis_server.port), str(out))
    try:
        _wait_for(lambda: len(_calls(out)) >= 3, "3 calls of run A")
        rel = out.read_text().splitlines()[0].split(" ", 1)[1]
        cg_id = cgroup.cgroup_id(cgroup.require_mount() / rel.lstrip("/"))

        same = run_trproxy("record", "--dir", str(tmp_path / "b"), "--",
                           "redis-cli", "-p", str(redis_server.port), "incr", "other")
        assert same.returncode == 0, same.stderr
        newer = subprocess.run(
            [sys.executable, "-c", NEWER, str(_newer_source(tmp_path / "newer")), "record",
             "--dir", str(tmp_path / "c"), "--", "redis-cli", "-p", str(redis_server.port),
             "incr", "other"],
            capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
            timeout=300, check=False)
        assert newer.returncode == 0, newer.stderr
        assert redis_server.cli("get", "other") == "2\n"  # B and C recorded through the proxy

        pins = loader.run_pin_dir(cg_id)
        assert pins is not None and pins.is_dir()  # A's run is whole ...
        assert _links_on(cg_id) == len(loader.PROGRAMS)
        after = len(_calls(out))
        _wait_for(lambda: len(_calls(out)) >= after + 3, "3 more calls of run A")
    finally:
        stop(a, signal.SIGINT)  # the app ends, then trproxy writes the recording
    assert a.returncode in (0, 130), a.stderr
    calls = _calls(out)
    assert calls and all(c.startswith("ok ") for c in calls), calls
    made = {int(c.split()[1]) for c in calls}
    # ... and every call A's app made went through its proxy, also those after B and C.
    assert made <= _recorded_counts(tmp_path / "a" / "test-set-0"), made - _recorded_counts(
        tmp_path / "a" / "test-set-0")


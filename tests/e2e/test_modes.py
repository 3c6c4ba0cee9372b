"""Modes end to end with real redis-cli and redis-server: auto, new-episodes, replay
isolation, and what Ctrl-C / SIGKILL during recording leave behind."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time

import pytest

from tests.support.proc import children, kill_all, run_trproxy, trproxy
from tests.support.services import RedisServer
from trproxy.store import load_mocks

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)


def _script(port: int) -> list[str]:
    return ["sh", "-c", f"redis-cli -p {port} set greeting hi; redis-cli -p {port} incr hits; "
                        f"redis-cli -p {port} incr hits; redis-cli -p {port} get greeting"]


def test_auto_records_once_then_replays(tmp_path, redis_server):
    first = run_trproxy("run", "--mode", "auto", "--dir", str(tmp_path), "--", *_script(redis_server.port))
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["OK", "1", "2", "hi"]
    assert "recorded 4 redis" in first.stderr
    redis_server.stop()
    second = run_trproxy("run", "--mode", "auto", "--dir", str(tmp_path), "--", *_script(redis_server.port))
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert "served 4 redis" in second.stderr and "trproxy: 0 misses" in second.stderr


def test_new_episodes_replays_known_destinations_and_records_new_ones(tmp_path, redis_server):
    run_trproxy("record", "--dir", str(tmp_path), "--test-set", "s",
                "--", "redis-cli", "-p", str(redis_server.port), "set", "a", "1")
    redis_server.stop()  # the known destination is gone: it must be replayed
    other = RedisServer().start()
    try:
        cmd = ["sh", "-c", f"redis-cli -p {redis_server.port} set a 1; redis-cli -p {other.port} ping"]
        out = run_trproxy("run", "--mode", "new-episodes", "--dir", str(tmp_path), "--test-set", "s",
                          "--", *cmd)
    finally:
        other.destroy()
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["OK", "PONG"]
    mocks = load_mocks(tmp_path / "s")
    assert sorted(m.destination.rsplit(":", 1)[1] for m in mocks) == sorted(
        [str(redis_server.port), str(other.port)])


def test_replay_never_opens_an_outbound_connection(tmp_path, redis_server):
    run_trproxy("record", "--dir", str(tmp_path), "--", *_script(redis_server.port))

    def received() -> int:
        info = redis_server.cli("info", "stats")
        return int(next(line.split(":")[1] for line in info.splitlines()
                        if line.startswith("total_connections_received")))

    before = received()
    out = run_trproxy("replay", "--dir", str(tmp_path), "--",
                      *_script(redis_server.port)[:-1], _script(redis_server.port)[-1] +
                      f"; redis-cli -p {redis_server.port} get never-recorded")
    after = received()
    assert after == before + 1  # only our own INFO call above; replay reached nothing
    assert out.stdout.split()[:4] == ["OK", "1", "2", "hi"]
    assert "no recording for" in out.stdout + out.stderr
    assert "trproxy: 1 misses" in out.stderr


CLIENT = textwrap.dedent("""
    import subprocess, sys, time
    port = sys.argv[1]
    for i in range(5):
        subprocess.run(["redis-cli", "-p", port, "set", f"k{i}", str(i)], check=True,
                       stdout=subprocess.DEVNULL)
    print("done", flush=True)
    time.sleep(60)
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_recording_keeps_every_completed_exchange(tmp_path, redis_server, sig):
    proc = trproxy("record", "--dir", str(tmp_path), "--", sys.executable, "-c", CLIENT,
                   str(redis_server.port))
    assert proc.stdout.readline().strip() == "done"
    proc.send_signal(sig)  # like Ctrl-C / a CI timeout: forwarded to the command
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig, err
    assert [m.request[1] for m in load_mocks(tmp_path / "test-set-0")] == [f"k{i}" for i in range(5)]


def test_sigkilled_recording_is_recovered_by_the_next_run(tmp_path, redis_server):
    proc = trproxy("record", "--dir", str(tmp_path), "--", sys.executable, "-c", CLIENT,
                   str(redis_server.port))
    assert proc.stdout.readline().strip() == "done"
    # the relay sends the app its answer before recording it: under load the app can be
    # done a moment before the last exchange is appended; kill once all 5 are on disk
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum(
            p.read_text().count("kind: redis") for p in tmp_path.glob("test-set-0/mocks.yaml.partial-*")) < 5:
        time.sleep(0.02)
    orphans = children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kill_all(orphans)  # the command outlives a SIGKILLed trproxy; it is ours to end
    if (tmp_path / "test-set-0" / "mocks.yaml").exists():
        # the recording's writer child (store/offload.py) saw trproxy die and published
        # before kill_all reached it: nothing is lost, and nothing is left to recover
        assert len(load_mocks(tmp_path / "test-set-0")) == 5
        assert not list(tmp_path.glob("test-set-0/mocks.yaml.partial-*"))
        return
    out = run_trproxy("run", "--dir", str(tmp_path), "--", "true")
    assert "recovered 5 documents" in out.stderr, out.stderr
    assert len(load_mocks(tmp_path / "test-set-0")) == 5


def test_an_app_dialing_the_unspecified_address_replays(tmp_path, redis_server):
    """0.0.0.0 connects to loopback: the store and the redirect's verdicts both take it for
    loopback, so its recording replays (the redirect used to refuse it as never recorded)."""
    script = ["sh", "-c", f"redis-cli -h 0.0.0.0 -p {redis_server.port} set a 1; "
                          f"redis-cli -h :: -p {redis_server.port} get a"]
    recorded = run_trproxy("record", "--dir", str(tmp_path), "--", *script)
    assert recorded.stdout.split() == ["OK", "1"], recorded.stderr
    redis_server.stop()
    replayed = run_trproxy("replay", "--dir", str(tmp_path), "--", *script)
    assert replayed.stdout == recorded.stdout, replayed.stderr
    assert "served 2 redis" in replayed.stderr and "trproxy: 0 misses" in replayed.stderr

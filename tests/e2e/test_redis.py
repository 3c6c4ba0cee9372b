"""Redis through the real CLI: ``trproxy record`` real clients against a real redis-server,
stop the server, ``trproxy replay`` the same programs, and compare what they printed.

Clients: redis-py in RESP2 and RESP3 (``tests/protocols/redis/redis_scenario.py``:
pipelines, MULTI/EXEC, pub/sub, CLIENT REPLY, blocking commands, streams, a 2 MiB
value) and redis-cli. Each runs twice: with the eBPF redirect (root; CI requires it) and
with the documented no-eBPF fallback (``--no-redirect --forward``), which needs no root.
"""

from __future__ import annotations

import os
import sys

import pytest
import yaml

from tests.support.proc import record_then_replay
from tests.support.services import RedisServer

pytestmark = pytest.mark.slow

ROOT_ONLY = [pytest.mark.root,
             pytest.mark.skipif(os.geteuid() != 0, reason="the eBPF redirect needs root")]
MODES = [pytest.param("ebpf", marks=ROOT_ONLY), "forward"]


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("mode", MODES)
def test_redis_py_replays_what_it_recorded(tmp_path, redis_server, mode: str, protocol: int) -> None:
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "tests.protocols.redis.redis_scenario", str(port), str(protocol)]

    recorded, replayed, mocks = record_then_replay(tmp_path, redis_server, command, mode)
    lines = recorded.stdout.splitlines()
    assert lines[:4] == ["True", "True", "b'hello'", "None"] and len(lines) == 30
    assert "'type': 'message', 'pattern': None, 'channel': b'news', 'data': b'hi'" in recorded.stdout
    assert replayed.stdout == recorded.stdout
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr
    assert "kind: redis" in mocks and "kind: generic" not in mocks
    assert "request: [CLIENT, REPLY, 'OFF']" in mocks and "responses: []" in mocks
    assert "simple: QUEUED" in mocks
    assert ("push: [message, news, hi]" if protocol == 3 else "- [message, news, hi]") in mocks


REDIS_CLI = """
set greeting hello
get greeting
incr counter
incr counter
rpush list a b c
lrange list 0 -1
hset h f 1 g 2
hgetall h
get missing
xadd race 1-1 rider Castilla
xrange race - +
"""


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])  # the default, and the reference
@pytest.mark.parametrize("mode", MODES)
def test_redis_cli_replays_what_it_recorded(tmp_path, redis_server, mode: str, loop: str) -> None:
    def command(port: int) -> list[str]:
        lines = [f"redis-cli -p {port} {c}" for c in REDIS_CLI.strip().splitlines()]
        lines += [f"redis-cli -3 -p {port} hgetall h", f"redis-cli -3 -p {port} zscore nothing x"]
        return ["sh", "-c", " && ".join(lines)]

    recorded, replayed, mocks = record_then_replay(tmp_path, redis_server, command, mode,
                                                   env={"TRPROXY_LOOP": loop})
    assert recorded.stdout.splitlines()[:4] == ["OK", "hello", "1", "2"]
    assert replayed.stdout == recorded.stdout
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr
    assert "request: [HELLO, '3']" in mocks


def test_passwords_stay_out_and_the_recorded_one_logs_in(tmp_path) -> None:
    """Both protocols' logins (AUTH, HELLO 3 AUTH); another password is refused at replay
    (``test_redis_fidelity``)."""
    server = RedisServer(password="e2e-secret-pw").start()
    try:
        def command(password: str):  # type: ignore[no-untyped-def]
            script = ("import redis, sys; r = redis.Redis(port=int(sys.argv[1]), password=sys.argv[2], "
                      "protocol=int(sys.argv[3])); r.set('k', 'v'); print(r.get('k'))")
            return lambda port: ["sh", "-c", " && ".join(
                f"{sys.executable} -c \"{script}\" {port} {password} {p}" for p in (2, 3))]

        recorded, replayed, mocks = record_then_replay(tmp_path, server, command("e2e-secret-pw"), "forward")
    finally:
        server.destroy()
    assert recorded.stdout == replayed.stdout == "b'v'\nb'v'\n"
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr
    assert "e2e-secret-pw" not in mocks
    requests = [d["spec"]["request"] for d in yaml.safe_load_all(mocks) if d]
    hashed = [r[-1] for r in requests if r[0] == "AUTH"] + [r[4] for r in requests if r[:3] == ["HELLO", "3", "AUTH"]]
    assert len(hashed) == 2 and all(h.startswith("<redacted:scrypt:") for h in hashed)


def test_a_miss_is_a_redis_error_and_never_reaches_the_network(tmp_path, redis_server) -> None:
    def recorded_cmd(port: int) -> list[str]:
        return ["redis-cli", "-p", str(port), "get", "a"]

    def replayed_cmd(port: int) -> list[str]:
        return ["redis-cli", "-p", str(port), "get", "b"]

    _, replayed, _ = record_then_replay(tmp_path, redis_server, recorded_cmd, "forward",
                                        replay_command=replayed_cmd)
    assert "ERR trproxy: no recording for GET b" in replayed.stdout
    assert "trproxy: 1 misses" in replayed.stderr, replayed.stderr

"""Redis logins through the real CLI: credentials take part in matching (hashed on disk),
with redis-py (RESP2 ``AUTH``, RESP3 ``HELLO 3 AUTH``) and redis-cli against a real
redis-server with ``requirepass``."""

from __future__ import annotations

import hashlib
import re
import sys

import pytest

from tests.support.proc import record_then_replay, run_trproxy
from tests.support.services import RedisServer, free_port

pytestmark = pytest.mark.slow

PASSWORD = "r3dis-Secret"


def misses(stderr: str) -> int:
    found = re.findall(r"^trproxy: (\d+) misses", stderr, re.MULTILINE)
    assert len(found) == 1, stderr
    return int(found[0])


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_logins_are_matched_on_their_credentials(tmp_path, protocol: int) -> None:
    server = RedisServer(password=PASSWORD).start()
    recording, port = tmp_path / "rec", free_port()
    forward = ["--no-redirect", "--forward", f"127.0.0.1:{port}=127.0.0.1:{server.port}"]

    def run(mode: str, *passwords: str):  # type: ignore[no-untyped-def]
        return run_trproxy(mode, "--dir", str(recording), *forward, "--", sys.executable, "-m",
                           "tests.e2e.apps.redis_auth", str(port), str(protocol), *passwords)

    try:
        recorded = run("record", "wrong-one", PASSWORD)
    finally:
        server.destroy()
    assert recorded.stdout.splitlines() == ["refused AuthenticationError", "ok b'1' 1 ['requirepass']"]
    mocks = (recording / "test-set-0" / "mocks.yaml").read_text()
    assert PASSWORD not in mocks and "wrong-one" not in mocks
    assert hashlib.sha256(PASSWORD.encode()).hexdigest() not in mocks  # ACL LIST's #<sha256>
    assert len(set(re.findall(r"<redacted:scrypt:[0-9a-f:]+>", mocks))) == 2  # two passwords (retried)
    assert "#<redacted>" in mocks

    same = run("replay", "wrong-one", PASSWORD)
    assert same.stdout == recorded.stdout and misses(same.stderr) == 0, same.stderr
    other = run("replay", "not-recorded")
    assert other.stdout == "refused AuthenticationError\n" and misses(other.stderr) >= 1  # redis-py retries


def test_redis_cli_with_a_password(tmp_path) -> None:
    server = RedisServer(password=PASSWORD).start()
    recording, port = tmp_path / "rec", free_port()
    forward = ["--no-redirect", "--forward", f"127.0.0.1:{port}=127.0.0.1:{server.port}"]

    def cli(mode: str, password: str):  # type: ignore[no-untyped-def]
        return run_trproxy(mode, "--dir", str(recording), *forward, "--", "redis-cli", "-p", str(port),
                           "--no-auth-warning", "-a", password, "incr", "n")

    try:
        recorded = cli("record", PASSWORD)
    finally:
        server.destroy()
    assert recorded.stdout == "1\n"
    assert PASSWORD not in (recording / "test-set-0" / "mocks.yaml").read_text()
    replayed = cli("replay", PASSWORD)
    assert replayed.stdout == "1\n" and misses(replayed.stderr) == 0
    refused = cli("replay", "guess")
    assert "WRONGPASS" in refused.stdout + refused.stderr and misses(refused.stderr) >= 1


LATE_CLIENT = """
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
time.sleep(1.2)  # past replay's wait for a server-first greeting (0.5 s)
s.sendall(b"*3\\r\\n$3\\r\\nSET\\r\\n$1\\r\\nk\\r\\n$1\\r\\nv\\r\\n*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n")
got = b""
while got.count(b"\\r\\n") < 3:
    got += s.recv(100)
print(got)
"""


def test_a_client_that_speaks_late_is_still_redis(tmp_path, redis_server) -> None:
    """redis-py's cwe_404 tests put their own slow relay before the server: the relay opens
    the server connection at once and sends the client's bytes seconds later. Replay waits
    for them (only client-first Redis was recorded there) instead of calling the silent
    connection a server-first one (generic) and missing everything on it."""
    def command(port: int) -> list[str]:
        return [sys.executable, "-c", LATE_CLIENT, str(port)]

    recorded, replayed, mocks = record_then_replay(tmp_path, redis_server, command, "forward")
    assert recorded.stdout == "b'+OK\\r\\n$1\\r\\nv\\r\\n'\n"
    assert "kind: redis" in mocks and "kind: generic" not in mocks
    assert replayed.stdout == recorded.stdout and misses(replayed.stderr) == 0, replayed.stderr

"""Values the app generates in Redis requests (issue 12): redis-py's ``Lock`` tokens, a
uuid4 session key, a CSRF token and a timestamp in the stored value. Recorded against a
real redis-server, replayed with the server gone: the same output and no miss, because
the recording lists the volatile values (``spec.volatile``), replay matches around them
and maps recorded -> live values in later requests and in replies. A different key
prefix or payload still misses, and the miss's diff shows what was masked."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support.proc import ROOT, run_trproxy
from tests.support.services import RedisServer, free_port

pytestmark = pytest.mark.slow


def misses(stderr: str) -> int:
    found = re.findall(r"^trproxy: (\d+) misses", stderr, re.MULTILINE)
    assert len(found) == 1, stderr
    return int(found[0])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):  # type: ignore[no-untyped-def]
    recording, port = tmp_path_factory.mktemp("volatile") / "rec", free_port()
    server = RedisServer().start()
    forward = ["--no-redirect", "--forward", f"127.0.0.1:{port}=127.0.0.1:{server.port}"]

    def run(mode: str, *args: str):  # type: ignore[no-untyped-def]
        return run_trproxy(mode, "--dir", str(recording), *forward, "--", sys.executable, "-m",
                           "tests.e2e.apps.redis_volatile", str(port), *args)

    try:
        first = run("record")
    finally:
        server.destroy()
    return run, first, (recording / "test-set-0" / "mocks.yaml").read_text()


def test_lock_tokens_and_session_ids_replay_without_a_server(recorded) -> None:  # type: ignore[no-untyped-def]
    run, first, mocks = recorded
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == ["lock True True True", "released False"] * 2 + [
        "session True True hello", "ttl True"]
    assert mocks.count("volatile:") >= 6  # 2 SET NX, 2 GET, 2 EVALSHA, the session's SET/GET...
    replayed = run("replay")
    assert replayed.stdout == first.stdout, replayed.stderr
    assert misses(replayed.stderr) == 0, replayed.stderr
    assert "recordings never used" not in replayed.stderr


@pytest.mark.parametrize(("args", "masked"), [
    (("token", "hello"), "token:<volatile>"),  # another key prefix
    (("session", "bye"), "bye"),  # another payload
])
def test_a_real_difference_still_misses(recorded, args, masked) -> None:  # type: ignore[no-untyped-def]
    run, _first, _mocks = recorded
    replayed = run("replay", *args)
    assert misses(replayed.stderr) >= 1, replayed.stderr
    assert "lock True True True" in replayed.stdout, replayed.stderr  # the rest still replays
    closest = replayed.stderr[replayed.stderr.index("closest to SET"):]
    recorded_line = next(line for line in closest.splitlines() if line.startswith("-[SET"))
    live_line = next(line for line in closest.splitlines() if line.startswith("+[SET"))
    assert "'session:<volatile>'" in recorded_line and '"csrf": "<volatile>"' in recorded_line
    assert masked in live_line and '"at": <volatile>' in live_line, closest


def test_a_user_rule_names_an_argument_the_detectors_miss(tmp_path) -> None:
    """``SET job <4 random digits>``: no detector calls it volatile; a rule written in
    config.yaml after recording (``redis.volatile_arguments: {SET: [2]}``) makes replay
    match it and map it (the ``GET`` answers the live number)."""
    recording, port = tmp_path / "rec", free_port()
    server = RedisServer().start()
    forward = ["--no-redirect", "--forward", f"127.0.0.1:{port}=127.0.0.1:{server.port}"]

    def run(mode: str):  # type: ignore[no-untyped-def]
        return run_trproxy(mode, "--dir", str(recording), *forward, "--", sys.executable, "-m",
                           "tests.e2e.apps.redis_volatile", str(port), "pin")

    try:
        recorded = run("record")
    finally:
        server.destroy()
    assert recorded.stdout == "job True\n", recorded.stderr
    without = [run("replay") for _ in range(3)]  # a new number each time: 3 same ones are unlikely
    assert any(misses(r.stderr) >= 1 for r in without)
    config = recording / "config.yaml"
    text = config.read_text()
    assert "volatile_arguments: {}" in text  # the template documents it
    config.write_text(text.replace("volatile_arguments: {}", "volatile_arguments: {SET: [2]}"))
    replayed = run("replay")
    assert replayed.stdout == recorded.stdout and misses(replayed.stderr) == 0, replayed.stderr


def test_the_similarity_fallback_serves_what_no_detector_sees(tmp_path) -> None:
    """``SET order:<6 random digits> pending`` then its ``GET``: a new number each run, too
    short and plain for any detector. Replay serves the unused recording of the same
    skeleton, maps the number (the ``GET`` then matches) and reports which recording and
    why; ``--strict`` refuses it; another key prefix still misses."""
    recording, port = tmp_path / "rec", free_port()
    server = RedisServer().start()
    forward = ["--no-redirect", "--forward", f"127.0.0.1:{port}=127.0.0.1:{server.port}"]

    def run(mode: str, *options: str, prefix: str = "order"):  # type: ignore[no-untyped-def]
        return run_trproxy(mode, "--dir", str(recording), *forward, *options, "--", sys.executable,
                           "-m", "tests.e2e.apps.redis_volatile", str(port), "counter", prefix)

    try:
        recorded = run("record")
    finally:
        server.destroy()
    assert recorded.stdout == "order True\n", recorded.stderr
    mocks = (recording / "test-set-0" / "mocks.yaml").read_text()
    assert "volatile:" not in mocks  # no detector saw the number
    replayed = run("replay")
    assert replayed.returncode == 0 and replayed.stdout == recorded.stdout, replayed.stderr
    assert misses(replayed.stderr) == 0, replayed.stderr
    assert "1 answers from a similar recording" in replayed.stderr, replayed.stderr
    found = re.search(r"SIMILAR redis \S+: SET answered by SET: no exact match; differs only in 1 "
                      r"value\(s\) of the same shape: (\d{6}) -> (\d{6})\n--- recorded\n\+\+\+ live\n"
                      r"(?:.*\n)*?-.*'order:\1'.*\n\+.*'order:\2'", replayed.stderr)
    assert found, replayed.stderr  # which recording, why, and a readable diff
    reports = sorted((recording / "reports").glob("*-replay.yaml"))
    assert len(reports) == 1 and "differs only in 1 value(s)" in reports[0].read_text()  # in the report
    strict = run("replay", "--strict")
    assert strict.returncode == 1 and misses(strict.stderr) >= 1, strict.stderr
    assert "order True" not in strict.stdout and "similar recording" not in strict.stderr, strict.stderr
    assert "no recording for SET order:" in strict.stderr  # the app got Redis's own error
    other = run("replay", prefix="invoice")  # another key prefix: never served from order:<n>
    assert misses(other.stderr) >= 1 and "similar recording" not in other.stderr, other.stderr


def test_passwords_the_app_sets_itself_are_mapped_for_its_logins(tmp_path) -> None:
    """The app sets a random ``requirepass`` and ACL user password, then logs in with them
    (RESP2 ``AUTH``, RESP3 ``HELLO 3 AUTH``): replay, with other random values, maps the
    recorded passwords to the live ones, so the logins match; the wrong password is still
    refused, and logging in with passwords other than those the app set is refused too."""
    recording, port = tmp_path / "rec", free_port()
    server = RedisServer().start()
    forward = ["--no-redirect", "--forward", f"127.0.0.1:{port}=127.0.0.1:{server.port}"]

    def run(mode: str, logins: str):  # type: ignore[no-untyped-def]
        return run_trproxy(mode, "--dir", str(recording), *forward, "--", sys.executable, "-m",
                           "tests.e2e.apps.redis_setpass", str(port), logins)

    try:
        first = run("record", "same")
    finally:
        server.destroy()
    assert first.returncode == 0, first.stderr
    expected = [f"{result} {protocol} {user}" for protocol in (2, 3) for result, user in (
        ("ok", "None"), ("ok", "app"), ("refused", "None AuthenticationError"))]
    assert first.stdout.splitlines() == expected, first.stderr
    assert "<redacted:scrypt:" in (recording / "test-set-0" / "mocks.yaml").read_text()
    replayed = run("replay", "same")
    assert replayed.stdout == first.stdout, replayed.stderr
    assert misses(replayed.stderr) == 0, replayed.stderr
    other = run("replay", "other")
    assert other.stdout.splitlines() == [line.replace("ok", "refused") + (
        "" if line.startswith("refused") else " AuthenticationError") for line in expected], other.stderr
    assert misses(other.stderr) >= 4, other.stderr  # (redis-py retries a refused login)
    missed = re.findall(r"^trproxy: MISS redis \S+ (\w+):", other.stderr, re.MULTILINE)
    assert missed and set(missed) <= {"AUTH", "HELLO"}, other.stderr


def _order(seed: str) -> list[str]:
    """The order in which a process with this hash seed iterates the app's set."""
    code = "from tests.e2e.apps.redis_volatile import TAGS; print(list(TAGS))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONHASHSEED=seed), cwd=ROOT)
    return out.stdout.split()


def test_a_python_set_sent_in_another_order_by_another_process(tmp_path) -> None:
    """``SADD``/``SMISMEMBER``/``SREM`` of a Python ``set``: each process sends the members
    in its own hash order. Replayed from processes with other seeds (orders checked to
    differ from the recorded one): same output, 0 misses; an extra member still misses."""
    recording, port = tmp_path / "rec", free_port()
    server = RedisServer().start()
    forward = ["--no-redirect", "--forward", f"127.0.0.1:{port}=127.0.0.1:{server.port}"]

    def run(mode: str, seed: str, *extra: str):  # type: ignore[no-untyped-def]
        return run_trproxy(mode, "--dir", str(recording), *forward, "--", sys.executable, "-m",
                           "tests.e2e.apps.redis_volatile", str(port), "tags", *extra,
                           env={"PYTHONHASHSEED": seed})

    try:
        first = run("record", "1")
    finally:
        server.destroy()
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "added 7", "member 2", "removed 2", "left ['alpha', 'delta', 'epsilon', 'eta', 'zeta']"]
    seeds = [s for s in map(str, range(2, 40)) if _order(s) != _order("1")][:3]
    assert len(seeds) == 3  # 7 members: most seeds give another order
    for seed in seeds:
        replayed = run("replay", seed)
        assert replayed.stdout == first.stdout, replayed.stderr
        assert misses(replayed.stderr) == 0, replayed.stderr
    other = run("replay", seeds[0], "theta")
    assert misses(other.stderr) >= 1 and "SADD" in other.stderr, other.stderr

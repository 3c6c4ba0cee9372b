"""``trproxy record --app-port`` and ``trproxy test`` with apps in the shapes real servers take.

Small real apps (``tests/e2e/apps/``), real clients (urllib, raw sockets), a real
redis-server: two listening ports; a pre-fork server (the parent listens, forked workers
accept); a reloader (the parent spawns the child that binds); connections that carry no
request; a handler that calls Redis, whose mocks belong to its test while start-up calls
belong to none; an app that dies at start-up. The processes of the pre-fork and reloader
apps are checked to be gone after each trproxy run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from tests.support.proc import alive, run_test, trproxy
from tests.support.services import RedisServer, free_port, wait_port

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)

APPS = Path(__file__).resolve().parent / "apps"
HTTP_APP = [sys.executable, str(APPS / "http_app.py")]


def record(rec: Path, ports: list[int], cmd: list[str], traffic, env: dict | None = None,  # type: ignore[no-untyped-def]
           app_ports: list[int] | None = None) -> str:
    """``trproxy record --app-port P... -- CMD`` while ``traffic()`` runs, once something
    listens on every port of ``ports``; stopped with SIGTERM. ``app_ports``: the
    ``--app-port`` options, when not ``ports`` (``[]``: none, every port is captured).

    Output goes to a file, not a pipe: app processes that outlive a failed run must not
    keep the test waiting for end of file."""
    args = [a for p in (ports if app_ports is None else app_ports) for a in ("--app-port", str(p))]
    log = rec.parent / f"{rec.name}-record.log"
    with log.open("w") as out:
        proc = trproxy("record", "--dir", str(rec), *args, "--", *cmd, env=env or {}, stdout=out, stderr=out)
    try:
        for port in ports:
            wait_port("::1" if (env or {}).get("HOST") == "::1" else "127.0.0.1", port, timeout=30,
                      proc=proc)  # trproxy's listener, or the app's
        traffic()
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"trproxy record ignored SIGTERM\n{log.read_text()}") from None
    err = log.read_text()
    assert proc.returncode == 0, err
    return err


def get(port: int, path: str, data: bytes | None = None, host: str = "127.0.0.1") -> dict:
    url = f"http://{'[::1]' if host == '::1' else host}:{port}{path}"
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def cases_of(rec: Path, test_set: str = "test-set-0") -> list[dict]:
    files = sorted((rec / test_set / "tests").glob("test-*.yaml"), key=lambda p: int(p.stem.split("-")[1]))
    return [yaml.safe_load(p.read_text()) for p in files]


def mocks_of(rec: Path, test_set: str = "test-set-0") -> list[dict]:
    return [d for d in yaml.safe_load_all((rec / test_set / "mocks.yaml").read_text()) if d]


def counts(junit: ET.Element) -> tuple[int, int, int]:
    return int(junit.get("tests")), int(junit.get("failures")), int(junit.get("errors"))


def assert_all_passed(out: subprocess.CompletedProcess, junit: ET.Element | None, n: int) -> None:
    assert out.returncode == 0, out.stderr
    assert f"{n} tests: {n} passed, 0 failed, 0 errors" in out.stderr, out.stderr
    assert junit is not None and counts(junit) == (n, 0, 0)


def pids_in(path: Path) -> dict[str, list[int]]:
    roles: dict[str, list[int]] = {}
    for line in path.read_text().splitlines():
        role, pid = line.split()
        roles.setdefault(role, []).append(int(pid))
    return roles


@pytest.fixture
def pid_file(tmp_path):
    """``pid_file(name)``: a PID_FILE for the app; whatever it lists is killed at teardown
    if still running (processes this test started, by pid), so a failure leaves nothing."""
    made: list[Path] = []

    def make(name: str) -> Path:
        made.append(tmp_path / f"{name}.pids")
        return made[-1]

    yield make
    for path in made:
        if path.exists():
            for pid in [p for ps in pids_in(path).values() for p in ps]:
                with contextlib.suppress(OSError):  # still ours: alive and running http_app.py
                    if alive(pid) and b"http_app.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(pid, signal.SIGKILL)


def assert_gone(pid_file: Path) -> None:
    pids = [p for ps in pids_in(pid_file).values() for p in ps]
    assert pids
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if alive(p)], pids_in(pid_file)


# --- several listening ports -------------------------------------------------------------

def test_two_listening_ports_both_record_and_replay(tmp_path):
    rec, a, b = tmp_path / "rec", free_port(), free_port()
    cmd = [*HTTP_APP, "serve", str(a), str(b)]
    answers = []
    record(rec, [a, b], cmd, lambda: answers.extend([
        get(a, "/one"), get(b, "/two"), get(a, "/three", b"payload"), get(b, "/four")]))
    assert [x["port"] for x in answers] == [a, b, a, b]

    cases = cases_of(rec)
    assert [(c["spec"]["port"], c["spec"]["request"]["url"]) for c in cases] == [
        (a, f"http://127.0.0.1:{a}/one"), (b, f"http://127.0.0.1:{b}/two"),
        (a, f"http://127.0.0.1:{a}/three"), (b, f"http://127.0.0.1:{b}/four")]
    assert [c["spec"]["response"]["body"]["json"]["port"] for c in cases] == [a, b, a, b]

    out, report, junit = run_test(rec, cmd)
    assert_all_passed(out, junit, 4)
    # each call went back to the port it was recorded on (the body names the port that answered)
    assert [t["actual"]["body"]["json"]["port"] for t in report["tests"]] == [a, b, a, b]


def test_app_listening_on_ipv6_loopback_only_records_and_replays(tmp_path, pid_file):
    """Apps that bind ``::1`` alone (``localhost`` resolving to ::1 first, as Node does)."""
    rec, port = tmp_path / "rec", free_port()
    cmd = [*HTTP_APP, "serve", str(port)]
    env = {"HOST": "::1", "PID_FILE": str(pid_file("app"))}
    answers: list[dict] = []
    record(rec, [port], cmd, lambda: answers.extend([get(port, "/six", host="::1"), get(port, "/four")]),
           env=env)
    assert [x["path"] for x in answers] == ["/six", "/four"]  # recording reached the app on ::1
    assert len(cases_of(rec)) == 2
    out, _report, junit = run_test(rec, cmd, {**env, "PID_FILE": str(pid_file("test"))}, "--startup-timeout", "10")
    assert_all_passed(out, junit, 2)


def test_bodies_over_max_body_become_files_and_the_test_passes(tmp_path):
    """A 9.6 MB upload echoed back: both bodies go to ``bodies/<sha256>``; ``trproxy test``
    streams the request body from its file and compares the answer by digest."""
    rec, port = tmp_path / "rec", free_port()
    cmd = [*HTTP_APP, "serve", str(port)]
    payload = b"0123456789abcdef" * 600_000
    answers: list[dict] = []
    record(rec, [port], cmd, lambda: answers.append(get(port, "/upload", payload)))
    assert answers[0]["received"] == payload.decode()
    [case] = cases_of(rec)
    digest = hashlib.sha256(payload).hexdigest()
    assert case["spec"]["request"]["body"] == {"file": f"bodies/{digest}", "size": len(payload),
                                               "sha256": digest}
    answer = case["spec"]["response"]["body"]
    stored = (rec / "test-set-0" / answer["file"]).read_bytes()
    assert len(stored) == answer["size"] and json.loads(stored)["received"] == payload.decode()
    out, report, junit = run_test(rec, cmd)
    assert_all_passed(out, junit, 1)
    actual = report["tests"][0]["actual"]["body"]  # the live answer: digested, not kept
    assert (actual["size"], actual["sha256"]) == (answer["size"], answer["sha256"])


# --- process models: pre-fork workers, reloader ------------------------------------------

def test_prefork_workers_record_replay_and_are_stopped(tmp_path, pid_file):
    rec, port = tmp_path / "rec", free_port()
    cmd = [*HTTP_APP, "prefork", str(port), "2"]
    recorded_pids, replayed_pids = pid_file("record"), pid_file("test")
    answers: list[dict] = []
    record(rec, [port], cmd, lambda: answers.extend(get(port, f"/item/{i}") for i in range(6)),
           env={"PID_FILE": str(recorded_pids)})
    assert {x["role"] for x in answers} == {"worker"}  # the forked workers answered, not the parent
    roles = pids_in(recorded_pids)
    assert len(roles["worker"]) == 2 and len(roles["parent"]) == 1
    assert_gone(recorded_pids)

    cases = cases_of(rec)
    assert [c["spec"]["request"]["url"].rsplit("/", 2)[-2:] for c in cases] == [["item", str(i)] for i in range(6)]
    assert {c["spec"]["response"]["body"]["json"]["role"] for c in cases} == {"worker"}

    # at replay the parent exits on SIGTERM and leaves its workers behind (they ignore
    # SIGTERM): trproxy test must still stop them
    out, report, junit = run_test(rec, cmd, {"PID_FILE": str(replayed_pids), "ORPHAN_WORKERS": "1"})
    assert_all_passed(out, junit, 6)
    assert len(pids_in(replayed_pids)["worker"]) == 2
    assert_gone(replayed_pids)


def test_reloader_child_binds_records_and_replays(tmp_path, pid_file):
    rec, port = tmp_path / "rec", free_port()
    cmd = [*HTTP_APP, "reloader", str(port)]
    recorded_pids, replayed_pids = pid_file("record"), pid_file("test")
    answers: list[dict] = []
    record(rec, [port], cmd, lambda: answers.extend([get(port, "/a"), get(port, "/b", b"x=1")]),
           env={"PID_FILE": str(recorded_pids)})
    assert [x["role"] for x in answers] == ["child", "child"]
    assert set(pids_in(recorded_pids)) == {"reloader", "child"}
    assert_gone(recorded_pids)

    cases = cases_of(rec)
    assert [c["spec"]["response"]["body"]["json"]["path"] for c in cases] == ["/a", "/b"]
    out, report, junit = run_test(rec, cmd, {"PID_FILE": str(replayed_pids)})
    assert_all_passed(out, junit, 2)
    assert [t["actual"]["body"]["json"]["role"] for t in report["tests"]] == ["child", "child"]
    assert_gone(replayed_pids)


# --- connections without a request -------------------------------------------------------

def test_connections_without_a_request_make_no_test(tmp_path):
    rec, port = tmp_path / "rec", free_port()
    cmd = [*HTTP_APP, "serve", str(port)]

    def traffic() -> None:
        socket.create_connection(("127.0.0.1", port)).close()  # connect and close
        with socket.create_connection(("127.0.0.1", port)) as s:  # connect, send nothing, close
            time.sleep(0.3)
        with socket.create_connection(("::1", port)) as s:  # send nothing, half-close, wait for EOF
            s.shutdown(socket.SHUT_WR)
            s.settimeout(10)
            assert s.recv(100) == b""
        assert get(port, "/real")["path"] == "/real"  # then one real call
        socket.create_connection(("127.0.0.1", port)).close()

    record(rec, [port], cmd, traffic)
    files = sorted(p.name for p in (rec / "test-set-0" / "tests").iterdir())
    assert files == ["test-1.yaml"], files
    assert cases_of(rec)[0]["spec"]["request"]["url"].endswith("/real")
    out, _report, junit = run_test(rec, cmd)
    assert_all_passed(out, junit, 1)


# --- a dependency: mocks belong to their test, start-up calls to every test ---------------

@pytest.fixture(scope="module")
def redis_recording(tmp_path_factory):
    """redis_app recorded against a real redis-server (stopped afterwards): 4 calls."""
    rec, port = tmp_path_factory.mktemp("redis-app") / "rec", free_port()
    server = RedisServer().start()
    try:
        server.cli("SET", "app:greeting", "hello")
        env = {"REDIS_PORT": str(server.port)}
        cmd = [sys.executable, str(APPS / "redis_app.py"), str(port)]
        answers: list[dict] = []
        record(rec, [port], cmd, lambda: answers.extend(
            get(port, p) for p in ("/visit/alice", "/visit/bob", "/visit/alice", "/greeting")), env=env)
        assert server.cli("GET", "visits:alice").strip() == "2"  # the real server saw it all
    finally:
        server.destroy()
    assert answers == [{"greeting": "hello", "name": "alice", "visits": 1},
                       {"greeting": "hello", "name": "bob", "visits": 1},
                       {"greeting": "hello", "name": "alice", "visits": 2},
                       {"greeting": "hello"}]
    return rec, cmd, env


def _redis_calls(rec: Path) -> list[tuple[list[str], object, list[str] | None]]:
    return [(m["spec"]["request"], m["spec"]["responses"], m["spec"]["metadata"].get("tests"))
            for m in mocks_of(rec) if m["kind"] == "redis"]


def test_handler_calls_belong_to_their_test_and_start_up_calls_to_none(redis_recording):
    rec, cmd, env = redis_recording
    calls = _redis_calls(rec)
    data = [(req, resp, tests) for req, resp, tests in calls
            if req[0] in ("GET", "SET", "INCRBY")]
    assert data == [
        (["GET", "app:greeting"], ["hello"], None),  # start-up: before the first request
        (["SET", "app:started", "yes"], [{"simple": "OK"}], None),
        (["INCRBY", "visits:alice", "1"], [{"int": 1}], ["test-1"]),  # redis-py's incr()
        (["INCRBY", "visits:bob", "1"], [{"int": 1}], ["test-2"]),
        (["INCRBY", "visits:alice", "1"], [{"int": 2}], ["test-3"]),
        (["GET", "app:greeting"], ["hello"], ["test-4"]),
    ]
    # the connection handshake happened at start-up too: it belongs to no test
    assert all(tests is None for req, _r, tests in calls if req[0] not in ("GET", "SET", "INCRBY"))

    out, report, junit = run_test(rec, cmd, env)
    assert_all_passed(out, junit, 4)
    assert report["misses"] == []


def test_a_test_run_alone_gets_its_own_mocks_and_the_start_up_ones(redis_recording, tmp_path):
    """Delete tests 1 and 2: the app still starts (start-up mocks serve whatever runs) and
    test-3 gets *its* INCR (2), not the first one recorded (1), which belongs to test-1."""
    rec, cmd, env = redis_recording
    copy = tmp_path / "rec"
    shutil.copytree(rec, copy)
    for name in ("test-1", "test-2"):
        (copy / "test-set-0" / "tests" / f"{name}.yaml").unlink()
    out, report, junit = run_test(copy, cmd, env)
    assert_all_passed(out, junit, 2)
    assert [(t["name"], t["actual"]["body"]["json"]) for t in report["tests"]] == [
        ("test-3", {"greeting": "hello", "name": "alice", "visits": 2}),
        ("test-4", {"greeting": "hello"}),
    ]
    assert report["misses"] == []


def test_an_app_that_dies_at_start_up_is_reported_not_a_crash(redis_recording):
    """The app is pointed at a Redis port with no recording: its start-up call misses and it
    exits before listening. trproxy test says so, fails every test, and still writes its
    reports (CI reads the JUnit file); no Python traceback from trproxy."""
    rec, cmd, _env = redis_recording
    out, report, junit = run_test(rec, cmd, {"REDIS_PORT": str(free_port())})
    assert out.returncode != 0
    assert "start-up failed" in out.stderr  # the app's own message passes through
    assert "exited before listening" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert junit is not None, "no JUnit report for a run whose app did not start"
    assert counts(junit) == (4, 0, 4)
    assert report["misses"] and all(m["test"] is None for m in report["misses"])


def test_the_app_dies_with_a_sigkilled_trproxy_test(redis_recording, tmp_path):
    """SIGKILL of ``trproxy test`` while the app starts: the app (its child) is killed with
    it (PR_SET_PDEATHSIG), as under ``trproxy run``; nothing of the run keeps serving."""
    rec, _cmd, env = redis_recording
    pid_path = tmp_path / "app.pid"
    never_listens = [sys.executable, "-c", "import os, sys, time; "
                     "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)", str(pid_path)]
    proc = trproxy("test", "--dir", str(rec), "--", *never_listens, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    app = None
    try:
        deadline = time.monotonic() + 60
        while not (pid_path.exists() and pid_path.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "the app did not start"
            time.sleep(0.05)
        app = int(pid_path.read_text())
        assert alive(app)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while alive(app) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(app), "the app outlived trproxy test"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if app is not None and alive(app):
            os.kill(app, signal.SIGKILL)


def _listen_on(port: int) -> socket.socket:
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.bind(("127.0.0.1", port))
    held.listen()
    return held


def test_a_port_taken_by_another_program_is_named_and_the_app_not_started(redis_recording):
    """Something else listens where the tests were recorded: the tests must not reach it.
    The run waits a while for the port, then names the holder (this test's process) and
    fails every test without starting the app (its start-up call would be a miss)."""
    rec, cmd, env = redis_recording
    port = int(cmd[-1])
    with _listen_on(port):
        out, report, junit = run_test(rec, cmd, env)
    assert out.returncode == 1
    assert f"port {port}, where the tests were recorded, is in use by pid {os.getpid()} " in out.stderr, out.stderr
    assert "listening" in out.stderr and "Traceback" not in out.stderr
    assert junit is not None and counts(junit) == (4, 0, 4)
    assert report["misses"] == []  # the app never ran: not even its start-up call


def test_a_port_freed_while_the_run_waits_is_used(redis_recording):
    """The previous run's app still closing (its listener goes a moment later): the run
    waits for the port instead of failing every test."""
    rec, cmd, env = redis_recording
    port = int(cmd[-1])
    log = rec.parent / f"{rec.name}-test.log"  # run_test's, maybe an earlier test's
    log.unlink(missing_ok=True)
    done: list[tuple] = []
    with _listen_on(port):
        runner = threading.Thread(target=lambda: done.append(run_test(rec, cmd, env)))
        runner.start()
        deadline = time.monotonic() + 60
        while f"port {port} is in use by pid {os.getpid()}" not in (log.read_text() if log.exists() else ""):
            assert runner.is_alive() and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    runner.join(120)
    out, _report, junit = done[0]
    assert "waiting up to" in out.stderr
    assert_all_passed(out, junit, 4)


def test_a_fault_profile_fails_the_tests_whose_calls_it_fails(redis_recording, tmp_path):
    """``trproxy test --fault-profile``: the profile in config.yaml makes every INCRBY
    answer -LOADING; redis_app does not retry, so the three /visit tests fail and
    /greeting passes; the report lists each fault with its test."""
    rec, cmd, env = redis_recording
    copy = tmp_path / "rec"
    shutil.copytree(rec, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["fault_profiles"] = {"cache-loading": ["redis error=LOADING match=INCRBY"]}
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    out, report, junit = run_test(copy, cmd, env, "--fault-profile", "cache-loading")
    assert out.returncode == 1, out.stderr
    assert [t["name"] for t in report["tests"] if t["status"] == "passed"] == ["test-4"]
    assert report["faults"], out.stderr
    assert {(f["fault"], f["test"]) for f in report["faults"]} == {
        ("error LOADING", f"test-{n}") for n in (1, 2, 3)}
    assert "fault injected: [test-1] redis" in out.stderr

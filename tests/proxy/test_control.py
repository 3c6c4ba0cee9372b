"""The control channel and the pytest plugin: a real pytest run reports its test windows to
a real ControlServer, and a probe server that its tests call sees which window each call
fell in (the plugin waits for the proxy's answer, so no call races its window)."""

from __future__ import annotations

import asyncio
import os
import socket
import socketserver
import subprocess
import sys
import threading

import pytest

from trproxy.proxy.context import Mode, RunContext
from trproxy.proxy.control import ControlServer

SUITE = '''
import os, socket, pytest

def hit(label):
    with socket.create_connection(("127.0.0.1", int(os.environ["PROBE_PORT"]))) as s:
        s.sendall(label.encode())
        assert s.recv(10) == b"ok"

@pytest.fixture(scope="session")
def sess():
    hit("session setup")
    yield
    hit("session teardown")

@pytest.fixture(scope="module", params=["x", "y"])
def mod(request, sess):
    hit("module setup " + request.param)
    yield
    hit("module teardown " + request.param)

@pytest.fixture
def func():
    hit("function setup")
    yield
    hit("function teardown")

def test_one(mod, func):
    hit("one")

def test_two(sess):
    hit("two")
'''


class _Probe(socketserver.ThreadingTCPServer):
    """Notes each call's label with the windows open when it arrived; answers ``answer(label)``."""

    daemon_threads = True

    def __init__(self, ctx: RunContext, answer=lambda label: "ok") -> None:  # type: ignore[no-untyped-def]
        self.ctx = ctx
        self.calls: list[tuple[str, list[str]]] = []
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                label = self.request.recv(1000).decode()
                server.calls.append((label, sorted(server.ctx.open_tests)))
                self.request.sendall(answer(label).encode())

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def control():
    """A ControlServer on its own event loop thread, as in a trproxy run."""
    ctx = RunContext(Mode.RECORD)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(ControlServer(ctx).start(), loop).result(10)
    yield server
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def run_pytest(tmp_path, env: dict[str, str], *args: str, suite: str = SUITE) -> subprocess.CompletedProcess:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_suite.py").write_text(suite)
    env = {k: v for k, v in os.environ.items() if k not in ("TRPROXY_CONTROL", "PYTEST_ADDOPTS")} | env
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_each_call_falls_in_its_test_or_wider_fixture_window(tmp_path, control) -> None:
    probe = _Probe(control.ctx)
    done = run_pytest(tmp_path, {"TRPROXY_CONTROL": control.address, "PROBE_PORT": str(probe.server_address[1])})
    probe.shutdown()
    assert done.returncode == 0, done.stdout + done.stderr
    one_x, one_y, two = ("pytest:test_suite.py::test_one[x]", "pytest:test_suite.py::test_one[y]",
                         "pytest:test_suite.py::test_two")
    mod_x, mod_y = "pytest-fixture:test_suite.py::mod[0]", "pytest-fixture:test_suite.py::mod[1]"
    assert probe.calls == [
        ("session setup", ["pytest-fixture:sess"]),
        ("module setup x", [mod_x]),
        ("function setup", [one_x]), ("one", [one_x]), ("function teardown", [one_x]),
        ("module teardown x", [mod_x]),  # inside test_one[x]'s teardown: the fixture's window
        ("module setup y", [mod_y]),
        ("function setup", [one_y]), ("one", [one_y]), ("function teardown", [one_y]),
        ("two", [two]),
        ("module teardown y", [mod_y]),  # the module ends after test_two, inside its teardown
        ("session teardown", ["pytest-fixture:sess"]),
    ]
    assert control.ctx.open_tests == set()  # every window closed, the runner gone


FLAKY = '''
import os, pathlib, socket

def test_flaky():
    with socket.create_connection(("127.0.0.1", int(os.environ["PROBE_PORT"]))) as s:
        s.sendall(b"k")
        assert s.recv(100) == b"recorded"
    marker = pathlib.Path(os.environ["MARKER"])
    if not marker.exists():
        marker.write_text("failed once")
        raise AssertionError("the first attempt fails")
'''


def test_a_rerun_test_gets_its_recordings_again(tmp_path, control) -> None:
    """pytest-rerunfailures: each attempt opens the test's window again, and a window that
    opens again with all its recordings used gets them again."""
    from trproxy.protocols.registry import match_key
    from trproxy.store import Exchange, MockPool, NoMatch

    test = "pytest:test_suite.py::test_flaky"
    control.ctx.mode = Mode.REPLAY
    control.ctx.pool = MockPool.build([Exchange("redis", "127.0.0.1:1", ["GET", "k"], ["recorded"], tests=[test])],
                                      match_key)

    def answer(label: str) -> str:
        try:
            return control.ctx.pool.find("redis", "127.0.0.1:1", ["GET", label]).exchange.responses[0]
        except NoMatch as miss:
            return miss.reason

    probe = _Probe(control.ctx, answer)
    done = run_pytest(tmp_path, {"TRPROXY_CONTROL": control.address, "PROBE_PORT": str(probe.server_address[1]),
                                 "MARKER": str(tmp_path / "marker")}, "--reruns", "1", suite=FLAKY)
    probe.shutdown()
    assert "1 passed, 1 rerun" in done.stdout, done.stdout
    assert probe.calls == [("k", [test]), ("k", [test])]


def test_the_plugin_is_inert_without_trproxy_and_can_be_turned_off(tmp_path, control) -> None:
    probe = _Probe(control.ctx)
    port = {"PROBE_PORT": str(probe.server_address[1])}
    assert run_pytest(tmp_path, port).returncode == 0
    off = run_pytest(tmp_path, {"TRPROXY_CONTROL": control.address, **port}, "-p", "no:trproxy")
    assert off.returncode == 0, off.stdout
    # autoloading disabled: -p trproxy loads it by its entry point
    on = run_pytest(tmp_path, {"TRPROXY_CONTROL": control.address, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
                               **port}, "-p", "trproxy")
    probe.shutdown()
    assert on.returncode == 0, on.stdout
    windows = [w for _label, w in probe.calls]
    assert windows[:26] == [[]] * 26 and windows[26] == ["pytest-fixture:sess"], windows


def test_a_wrong_or_unreachable_address_is_a_warning_not_a_failure(tmp_path, control) -> None:
    probe = _Probe(control.ctx)
    port = {"PROBE_PORT": str(probe.server_address[1])}
    wrong_token = run_pytest(tmp_path, {"TRPROXY_CONTROL": "0" * 32 + ":" + str(control.path), **port})
    gone = run_pytest(tmp_path, {"TRPROXY_CONTROL": control.token + ":" + str(tmp_path / "none"), **port})
    probe.shutdown()
    for done in (wrong_token, gone):
        assert done.returncode == 0, done.stdout
        assert "trproxy: " in done.stdout and "tests are not scoped" in done.stdout
    assert "the proxy answered 'error not this run's token' to hello" in wrong_token.stdout
    assert "cannot reach trproxy" in gone.stdout
    assert all(w == [] for _label, w in probe.calls) and len(probe.calls) == 26


def test_the_server_refuses_strangers_and_answers_bad_commands(control) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(control.path))
        s.sendall(b"open pytest:x\n")  # no hello first
        assert s.makefile("rb").readline() == b"error not this run's token\n"
        assert s.recv(10) == b""  # closed
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(control.path))
        answers = s.makefile("rb")
        s.sendall(f"hello {control.token}\n".encode())
        assert answers.readline() == b"ok\n"
        s.sendall(b"jump now\nopen\nopen pytest:a b\n")
        assert answers.readline().startswith(b"error unknown command 'jump'")
        assert answers.readline().startswith(b"error unknown command 'open'")
        assert answers.readline() == b"ok\n"
        assert control.ctx.open_tests == {"pytest:a b"}
    assert control.path.parent.stat().st_mode & 0o077 == 0  # only trproxy's user enters


def test_windows_tag_replay_choices_through_the_context() -> None:
    """set_windows drives MockPool.scope; the engine reports misses under the window."""
    from tests.support.playbook import Playbook, client, miss, send
    from trproxy.store import Exchange

    a = "pytest:t.py::test_a"
    book = Playbook("redis", [Exchange("redis", "127.0.0.1:1", ["GET", "k"], ["b"], summary="GET k",
                                       tests=["pytest:t.py::test_b"])])
    ctx = book.mocks.ctx
    ctx.set_windows({a}, opened=a)
    assert (book >> client(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
            << miss("GET", "recorded only in other tests: pytest:t.py::test_b")
            << send(lambda data: data.startswith(b"-ERR trproxy")))
    assert ctx.misses[0]["test"] == a
    assert ctx.report(None, 0)["misses_per_test"] == {a: 1}
    assert f"[{a}] redis 127.0.0.1:1" in ctx.summary()


def test_a_killed_runs_directory_is_removed_by_the_next_run(monkeypatch) -> None:
    import shutil
    import tempfile
    from pathlib import Path

    # a short $TMPDIR of the test's own: under xdist tmp_path is too long for the socket's
    # path (108 bytes), and the server would fall back to /tmp
    tmp = Path(tempfile.mkdtemp(prefix="trp-ctl-", dir="/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    try:
        # above pid_max: never alive (an exited child's pid was reused at once on a busy
        # machine with pid_max 32768, and the leftover looked alive)
        dead_pid = int(open("/proc/sys/kernel/pid_max").read()) + 1
        leftover = tmp / f"trproxy-control-{dead_pid}-x1"
        leftover.mkdir()
        (leftover / "control").write_text("")
        alive = tmp / f"trproxy-control-{os.getpid()}-x2"  # a run still going: kept
        alive.mkdir()
        server = asyncio.run(ControlServer(RunContext(Mode.RECORD)).start())
        assert not leftover.exists() and alive.exists() and server.path.parent.parent == tmp
        asyncio.run(server.close())
        assert not server.path.parent.exists()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

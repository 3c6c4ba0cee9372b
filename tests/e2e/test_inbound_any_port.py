"""``trproxy record`` without ``--app-port``: HTTP reaching any port the app listens on from
outside the run is recorded; the app's own connections to itself never are.

The app is ``tests/e2e/apps/http_app.py`` (stdlib HTTP servers; ``GET /self`` makes it call
its own port), the traffic driver is this test process (urllib, raw sockets): outside the
run's cgroup, like curl or a traffic script.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from tests.e2e.test_inbound import (
    HTTP_APP,
    assert_all_passed,
    cases_of,
    get,
    pids_in,
    record,
)
from tests.support.proc import alive, run_test, trproxy
from tests.support.services import free_port, wait_port

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)


def urls(rec) -> list[str]:  # type: ignore[no-untyped-def]
    return [c["spec"]["request"]["url"] for c in cases_of(rec)]


def test_every_port_is_recorded_and_the_apps_own_calls_are_not(tmp_path):
    rec, a, b = tmp_path / "rec", free_port(), free_port()
    cmd = [*HTTP_APP, "serve", str(a), str(b)]
    answers: list[dict] = []

    def traffic() -> None:
        answers.extend([get(a, "/one"), get(b, "/two", b"payload")])
        curl = subprocess.run(["curl", "-sf", f"http://127.0.0.1:{a}/self"], capture_output=True,
                              check=True, timeout=60)
        answers.append(json.loads(curl.stdout))

    record(rec, [a, b], cmd, traffic, app_ports=[])
    assert answers[2]["inner"]["path"] == "/inner"  # the app reached itself during the run
    assert urls(rec) == [f"http://127.0.0.1:{a}/one", f"http://127.0.0.1:{b}/two",
                         f"http://127.0.0.1:{a}/self"]  # /inner: the app's own call, no test
    assert [c["spec"]["port"] for c in cases_of(rec)] == [a, b, a]

    out, report, junit = run_test(rec, cmd)
    assert_all_passed(out, junit, 3)
    assert report["tests"][2]["actual"]["body"]["json"]["inner"]["path"] == "/inner"


def test_app_port_narrows_the_capture(tmp_path):
    rec, a, b = tmp_path / "rec", free_port(), free_port()
    cmd = [*HTTP_APP, "serve", str(a), str(b)]
    answers: list[dict] = []
    record(rec, [a, b], cmd, lambda: answers.extend([get(a, "/one"), get(b, "/two"), get(a, "/three")]),
           app_ports=[a])
    assert [x["path"] for x in answers] == ["/one", "/two", "/three"]  # b still answers
    assert urls(rec) == [f"http://127.0.0.1:{a}/one", f"http://127.0.0.1:{a}/three"]


@pytest.mark.parametrize(("bind", "dial"), [("0.0.0.0", "0.0.0.0"), ("::", "::1")])
def test_wildcard_binds_and_destinations_count_as_loopback(tmp_path, bind, dial):
    rec, port = tmp_path / "rec", free_port()
    answers: list[dict] = []
    record(rec, [port], [*HTTP_APP, "serve", str(port)],
           lambda: answers.extend([get(port, "/one", host=dial), get(port, "/self", host=dial)]),
           env={"HOST": bind}, app_ports=[])
    assert answers[1]["inner"]["path"] == "/inner"
    assert [u.rsplit("/", 1)[1] for u in urls(rec)] == ["one", "self"]


def test_a_family_the_app_does_not_listen_in_is_refused_as_without_trproxy(tmp_path):
    """The app listens on 127.0.0.1 only: ::1 is refused (so clients of ``localhost`` fall
    back to 127.0.0.1, as without trproxy), 127.0.0.1 is recorded."""
    rec, port = tmp_path / "rec", free_port()
    refused: list[bool] = []

    def traffic() -> None:
        try:
            socket.create_connection(("::1", port), timeout=30).close()
            refused.append(False)
        except ConnectionRefusedError:
            refused.append(True)
        get(port, "/v4")

    record(rec, [port], [*HTTP_APP, "serve", str(port)], traffic, app_ports=[])
    assert refused == [True]
    assert urls(rec) == [f"http://127.0.0.1:{port}/v4"]


def test_other_protocols_are_relayed_without_a_test(tmp_path):
    """Bytes that do not start an HTTP request reach the app and its answer comes back;
    no test case, no capture problem reported."""
    rec, port = tmp_path / "rec", free_port()
    replies: list[bytes] = []

    def traffic() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"\x00\x01\x02 not http\r\n\r\n")
            replies.append(s.recv(4096))
        get(port, "/after")

    err = record(rec, [port], [*HTTP_APP, "serve", str(port)], traffic, app_ports=[])
    assert b"400 - Bad request syntax" in replies[0], replies  # the app's own answer
    assert urls(rec) == [f"http://127.0.0.1:{port}/after"]
    assert "capture stopped" not in err, err


def test_a_bind_to_a_port_in_use_fails_as_without_trproxy(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = trproxy("record", "--dir", str(tmp_path / "rec"), "--", *HTTP_APP, "serve", str(port))
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AssertionError("the app did not fail to bind a port in use") from None
    assert proc.returncode == 1, err
    assert "Address already in use" in err


def test_when_trproxy_is_killed_clients_reach_the_app_directly(tmp_path):
    """The capture lives only in trproxy (an unpinned sk_lookup link, its sockets): once it
    is SIGKILLed, outside calls reach the app (a grandchild, so it outlives trproxy)
    instead of a dead capture socket."""
    port, pids, rec = free_port(), tmp_path / "app.pids", tmp_path / "rec"
    script = f"{' '.join(HTTP_APP)} serve {port} & wait"
    proc = trproxy("record", "--dir", str(rec), "--", "sh", "-c", script,
                   env={"PID_FILE": str(pids)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    app = None
    try:
        wait_port("127.0.0.1", port, timeout=60, proc=proc)
        deadline = time.monotonic() + 30
        while not pids.exists():  # the app may write it just after it listens
            assert time.monotonic() < deadline, "the app wrote no pid file"
            time.sleep(0.05)
        [app] = pids_in(pids)["server"]
        assert get(port, "/before")["path"] == "/before"
        deadline = time.monotonic() + 30
        while not list((rec / "test-set-0" / "tests").glob("*.yaml")):  # it was captured
            assert time.monotonic() < deadline, "no test case for /before"
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        assert get(port, "/after")["path"] == "/after"
        assert alive(app)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if app is not None and alive(app):
            os.kill(app, signal.SIGKILL)  # ours, by pid

"""Values the app generates in outbound HTTP requests (issue 12): a uuid4 in the path, an
epoch in the query, an ``Idempotency-Key`` header, a JSON body with the id, an ISO time
and a nonce (its keys in a random order), a form with a CSRF token. Recorded against a
real HTTP service (a stdlib server in this process) called by ``requests``, replayed
with the service stopped: the same output and no miss, because replay matches around
the listed values and answers with the live ones (the service's JSON echoing the id,
the later ``GET`` of the same id). A different resource or quantity still misses, with
a diff showing what was masked; values no detector sees are named in config.yaml."""

from __future__ import annotations

import http.server
import json
import re
import sys
import threading
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.proc import run_trproxy
from tests.support.services import free_port

pytestmark = pytest.mark.slow


class _Service(http.server.BaseHTTPRequestHandler):
    """Stores orders by id, echoes sessions and jobs: a downstream service."""

    protocol_version = "HTTP/1.1"  # keep-alive, as services answer
    orders: dict[str, dict] = {}

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, body: object) -> None:
        data = (json.dumps(body) if not isinstance(body, str) else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not isinstance(body, str) else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path == "/sessions":
            form = parse_qs(self._body().decode())
            return self._reply(200, f"{form['user'][0]} {form['csrf'][0]}")
        order = json.loads(self._body())
        self.orders[path] = {"id": order["id"], "qty": order["qty"], "status": "created"}
        return self._reply(201, self.orders[path])

    def do_GET(self) -> None:
        order = self.orders.get(urlsplit(self.path).path)
        return self._reply(200 if order else 404, order or {"error": "no such order"})

    def do_PUT(self) -> None:
        return self._reply(201, {"path": urlsplit(self.path).path, "ref": json.loads(self._body())["ref"]})


def misses(stderr: str) -> int:
    found = re.findall(r"^trproxy: (\d+) misses", stderr, re.MULTILINE)
    assert len(found) == 1, stderr
    return int(found[0])


def _recorder(recording, *app_args: str):  # type: ignore[no-untyped-def]
    """(run, recorded): ``run(mode, *args)`` runs the app under trproxy; the service
    answers while recording only."""
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    forward = ["--no-redirect", "--forward", f"127.0.0.1:{port}=127.0.0.1:{server.server_address[1]}"]

    def run(mode: str, *args: str):  # type: ignore[no-untyped-def]
        return run_trproxy(mode, "--dir", str(recording), *forward, "--", sys.executable, "-m",
                           "tests.e2e.apps.http_volatile", str(port), *(args or app_args))

    try:
        recorded = run("record")
    finally:
        server.shutdown()
        server.server_close()
    return run, recorded


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):  # type: ignore[no-untyped-def]
    recording = tmp_path_factory.mktemp("http-volatile") / "rec"
    run, first = _recorder(recording)
    return run, first, (recording / "test-set-0" / "mocks.yaml").read_text()


def test_ids_times_nonces_and_tokens_replay_without_the_service(recorded) -> None:  # type: ignore[no-untyped-def]
    run, first, mocks = recorded
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == ["created 201 True 2", "fetched 200 True", "session 200 True"]
    assert mocks.count("volatile:") == 3, mocks
    for _ in range(2):  # new values each time, keys in another order
        replayed = run("replay")
        assert replayed.stdout == first.stdout, replayed.stderr
        assert misses(replayed.stderr) == 0, replayed.stderr


@pytest.mark.parametrize(("args", "recorded_line", "live_line"), [
    (("invoices",), "-path: /orders/<volatile>", "+path: /invoices/<volatile>"),  # another resource
    (("orders", "3"), "-    qty: 2", "+    qty: 3"),  # another quantity: not a generated value
])
def test_a_real_difference_still_misses(recorded, args, recorded_line, live_line) -> None:  # type: ignore[no-untyped-def]
    run, _first, _mocks = recorded
    replayed = run("replay", *args)
    assert misses(replayed.stderr) >= 1, replayed.stderr
    assert "created 502 False None" in replayed.stdout, replayed.stdout
    assert "session 200 True" in replayed.stdout, replayed.stderr  # the rest still replays
    closest = replayed.stderr[replayed.stderr.index("closest to POST"):].split("trproxy:")[0]
    lines = closest.splitlines()
    assert recorded_line in lines and live_line in lines, closest
    report = replayed.stderr.split("nearest recordings: ")[1].strip()
    with open(report) as f:  # the report's diff shows the masked parts around the difference
        assert "<volatile>" in f.read()


def test_user_rules_name_values_the_detectors_miss(tmp_path) -> None:
    """``PUT /jobs/job<n>?n=<4 digits>`` with ``{"ref": <5 digits>}``: too short for any
    detector. Rules written in config.yaml after recording (an identifier pattern, a query
    key, a JSON path) make replay match them and map them in the echoed reply."""
    recording = tmp_path / "rec"
    run, recorded = _recorder(recording, "pin")
    assert recorded.stdout == "job 201 True True\n", recorded.stderr
    without = [run("replay") for _ in range(2)]  # new numbers each time: a miss
    assert all(misses(r.stderr) == 1 for r in without), [r.stderr for r in without]
    config = recording / "config.yaml"
    text = config.read_text()
    assert "volatile_identifiers: []" in text  # the template documents them
    config.write_text(text.replace("volatile_identifiers: []", "volatile_identifiers: ['job[0-9]+']")
                      .replace("volatile_query: []", "volatile_query: [n]")
                      .replace("volatile_json_paths: []", "volatile_json_paths: [ref]", 1))
    replayed = run("replay")
    assert replayed.stdout == recorded.stdout and misses(replayed.stderr) == 0, replayed.stderr

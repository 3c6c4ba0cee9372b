"""The test runner against a real aiohttp app in a child process.

Test cases are recorded the way ``trproxy record`` stores them: the app's real answers,
fetched with another client (httpx), turned into the HTTP dialect's readable form, noise
detected from their values.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.support.proc import stop
from tests.support.services import free_port, wait_port
from trproxy.apptest.noise import Noise, detect_noise
from trproxy.apptest.testcase import TestCase, load_test, write_test
from trproxy.apptest.testrun import (
    ERROR,
    FAILED,
    NEEDS_SECRET,
    PASSED,
    AppNotListening,
    HttpClient,
    Overrides,
    mark_noise,
    run_tests,
    set_body_field,
)
from trproxy.protocols.http.body import BodyBuffer
from trproxy.protocols.http.config import HttpConfig, Redaction
from trproxy.protocols.http.readable import headers_to_readable, response_readable
from trproxy.protocols.secrets import SecretVault

pytestmark = pytest.mark.slow  # a real app server per test

APP = r"""
import asyncio, datetime, gzip, json, os, random, uuid
from aiohttp import web

MODE = os.environ.get("MODE", "v1")
routes = web.RouteTableDef()

@routes.get("/hello")
async def hello(request):
    return web.Response(text="hello v2" if MODE == "v2" else "hello")

@routes.get("/items/{id}")
async def item(request):
    return web.json_response({
        "id": int(request.match_info["id"]), "name": "gadget" if MODE == "v2" else "widget",
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "request_id": str(uuid.uuid4()), "token": str(uuid.uuid4())})

@routes.post("/echo")
async def echo(request):
    body = await request.json()
    return web.json_response({"got": body, "type": request.headers.get("Content-Type")}, status=201)

@routes.get("/gzip")
async def gz(request):
    data = gzip.compress(json.dumps({"rows": list(range(50))}).encode())
    return web.Response(body=data, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

@routes.get("/random")
async def rnd(request):
    return web.json_response({"value": random.randrange(10**6), "fixed": 1})

@routes.get("/peer")
async def peer(request):
    return web.json_response({"port": request.transport.get_extra_info("peername")[1]})

@routes.get("/whoami")
async def whoami(request):
    return web.json_response({"auth": request.headers.get("Authorization")})

@routes.get("/slow")
async def slow(request):
    await asyncio.sleep(3)
    return web.Response(text="late")

app = web.Application()
app.add_routes(routes)
web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None,
            keepalive_timeout=float(os.environ.get("KEEPALIVE", "75")))
"""


class App:
    def __init__(self, port: int, **env: str) -> None:
        self.port = port
        self.proc = subprocess.Popen([sys.executable, "-c", APP],
                                     env=dict(os.environ, PORT=str(port), **env))

    def wait(self) -> App:
        wait_port("127.0.0.1", self.port, timeout=90, proc=self.proc)  # aiohttp took > 20 s at load 25
        return self

    def stop(self) -> None:
        stop(self.proc)


@pytest.fixture
def apps():
    started: list[App] = []

    def start(port: int | None = None, wait: bool = True, **env: str) -> App:
        app = App(port or free_port(), **env)
        started.append(app)
        return app.wait() if wait else app

    yield start
    for app in started:
        app.stop()


REQUESTS = [
    ("GET", "/hello", None),
    ("GET", "/items/7", None),
    ("POST", "/echo", {"name": "x", "tags": ["a", "b"]}),
    ("GET", "/gzip", None),
    ("GET", "/random", None),
]


def record(test_set: Path, port: int, requests=REQUESTS, headers=None, vault=None) -> list[TestCase]:
    """Store the app's real answers as test cases (what inbound capture writes)."""
    config = HttpConfig(redaction=Redaction(vault=vault))
    cases = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
        for i, (method, path, body) in enumerate(requests, 1):
            created = datetime.now(UTC)
            resp = http.send(http.build_request(method, path, json=body), stream=True)
            buf = BodyBuffer(config.max_body)
            buf.add(b"".join(resp.iter_raw()))  # as sent: the dialect removes the coding
            request = {"method": method, "url": f"http://127.0.0.1:{port}{path}",  # first, as capture
                       "http_version": "HTTP/1.1",
                       "headers": headers_to_readable(resp.request.headers.raw, config.redaction),
                       "body": {"json": body} if body is not None else ""}
            readable = response_readable(resp.status_code, resp.reason_phrase, "HTTP/1.1",
                                         resp.headers.raw, buf, None, config, str(resp.request.url))
            resp.close()
            case = TestCase(f"test-{i}", request, readable, detect_noise(readable, created),
                            created.isoformat(), port)
            write_test(test_set, case)
            cases.append(case)
    return cases


def run(test_set: Path, **kw):
    return asyncio.run(run_tests(test_set, **kw))


def test_replaying_against_the_same_app_passes_with_hooks_in_order(apps, tmp_path):
    app = apps()
    cases = record(tmp_path, app.port)
    second = load_test(tmp_path / "tests" / "test-2.yaml")
    # a random id is noise; the token, random too, is a secret (compared as present)
    assert second.noise == ["body.json.created_at", "body.json.request_id"]
    assert second.response["body"]["json"]["token"] == "<redacted>"
    calls: list[str] = []

    async def before(test: TestCase) -> None:  # async hooks are awaited
        calls.append(f"before {test.name}")

    result = run(tmp_path, before_test=before, after_test=lambda t: calls.append(f"after {t.name}"),
                 on_result=lambda r, i, n: calls.append(f"result {r.name} {i}/{n}"))
    assert [(r.name, r.status) for r in result.results] == [(c.name, PASSED) for c in cases[:4]] + [
        ("test-5", FAILED)]  # /random really differs: no value-based noise for a number
    assert [d.path for d in result.results[4].differences] == ["body.json.value"]
    assert calls[:3] == ["before test-1", "after test-1", "result test-1 1/5"]
    assert len(calls) == 15 and result.count(PASSED) == 4 and not result.ok


def test_a_changed_app_fails_with_paths_and_diff_on_another_port(apps, tmp_path):
    recorded = apps()
    record(tmp_path, recorded.port, REQUESTS[:3])
    recorded.stop()
    live = apps(MODE="v2")
    result = run(tmp_path, ports={recorded.port: live.port})
    by_name = {r.name: r for r in result.results}
    assert by_name["test-1"].status == FAILED
    assert [(d.path, d.expected, d.actual) for d in by_name["test-1"].differences] == [
        ("body", "hello", "hello v2")]
    item = by_name["test-2"]
    assert [(d.path, d.expected, d.actual) for d in item.differences] == [
        ("body.json.name", "widget", "gadget")]
    diff = item.diff()
    assert "-    name: widget\n+    name: gadget\n" in diff and "<noise: ignored>" in diff
    assert by_name["test-3"].status == PASSED


def test_timeouts_and_dead_apps_are_errors_and_the_run_goes_on(apps, tmp_path):
    app = apps()
    record(tmp_path, app.port, [("GET", "/hello", None)])
    slow = TestCase("test-2", {"method": "GET", "url": "/slow", "headers": []}, {"status": 200},
                    port=app.port)
    write_test(tmp_path, slow)
    write_test(tmp_path, TestCase("test-3", {"method": "GET", "url": "/hello", "headers": []},
                                  load_test(tmp_path / "tests" / "test-1.yaml").response, port=app.port))
    t0 = time.monotonic()
    result = run(tmp_path, timeout=0.5)
    assert [r.status for r in result.results] == [PASSED, ERROR, PASSED]
    assert result.results[1].error == "no response within 0.5s"
    assert time.monotonic() - t0 < 3
    # the app dies during the run: the tests after that are errors, not a crash of the runner
    result = run(tmp_path, names=["test-1", "test-3"],
                 before_test=lambda t: app.stop() if t.name == "test-3" else None)
    assert [r.status for r in result.results] == [PASSED, ERROR]
    assert "Connect" in result.results[1].error or "Refused" in result.results[1].error


def test_wait_for_the_app_and_give_up_when_it_exits(apps, tmp_path):
    port = free_port()
    write_test(tmp_path, TestCase("test-1", {"method": "GET", "url": "/hello", "headers": []},
                                  {"status": 200, "headers": [["Content-Type", "text/plain; charset=utf-8"]],
                                   "body": "hello"}, port=port))
    late = apps(port, wait=False)  # not listening yet: the runner polls
    result = run(tmp_path, delay=0.2, global_noise=Noise(("header.server",)))
    assert [r.status for r in result.results] == [PASSED], result.results[0].differences
    late.stop()
    crashed = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    crashed.wait()
    with pytest.raises(AppNotListening, match="exited"):
        run(tmp_path, app_alive=lambda: crashed.poll() is None)
    with pytest.raises(AppNotListening, match="nothing listens"):
        run(tmp_path, startup_timeout=0.3)


def test_keep_alive_is_reused_and_reopened_after_an_idle_close(apps):
    app = apps(KEEPALIVE="0.3")

    async def scenario() -> list[int]:
        client = HttpClient()
        req = {"method": "GET", "url": "/peer", "headers": [["Host", "x"]]}
        try:
            ports = [(await client.send(req, "127.0.0.1", app.port))["body"]["json"]["port"]
                     for _ in range(3)]
            await asyncio.sleep(0.8)  # the app closes the idle connection
            ports.append((await client.send(req, "127.0.0.1", app.port))["body"]["json"]["port"])
            return ports
        finally:
            await client.close()

    ports = asyncio.run(scenario())
    assert ports[0] == ports[1] == ports[2] != ports[3]


def test_second_run_marks_differing_fields_as_noise(apps, tmp_path):
    app = apps()
    record(tmp_path, app.port, [("GET", "/random", None), ("GET", "/hello", None)])
    first, second = run(tmp_path), run(tmp_path)
    assert mark_noise(first, second) == {"test-1": ["body.json.value"]}
    assert load_test(tmp_path / "tests" / "test-1.yaml").noise == ["body.json.value"]
    assert load_test(tmp_path / "tests" / "test-2.yaml").noise == []
    third = run(tmp_path, global_noise=Noise(("header.x-unused",)))
    assert third.ok, [r.differences for r in third.results]
    assert third.results[0].noise.paths == ("header.x-unused", "body.json.value")


def test_secrets_come_from_the_file_the_environment_or_overrides_else_the_test_needs_one(apps, tmp_path):
    app = apps()
    record(tmp_path, app.port, [("GET", "/whoami", None), ("GET", "/hello", None)],
           headers={"Authorization": "Bearer s3cret"}, vault=SecretVault())
    case = load_test(tmp_path / "tests" / "test-1.yaml")
    assert ["Authorization", "Bearer <secret:authorization>"] in case.request["headers"]  # never on disk
    assert case.response["body"]["json"] == {"auth": "Bearer <secret:authorization>"}  # scrubbed
    assert "s3cret" not in (tmp_path / "tests" / "test-1.yaml").read_text()

    def config() -> HttpConfig:  # a run's redaction: a fresh vault, as `trproxy test` makes
        return HttpConfig(redaction=Redaction(vault=SecretVault()))

    without = run(tmp_path, http_config=config(), environ={})
    assert [r.status for r in without.results] == [NEEDS_SECRET, NEEDS_SECRET]  # not sent, not failed
    assert without.results[0].actual is None and not without.results[0].differences
    assert "TRPROXY_SECRET_AUTHORIZATION" in without.results[0].error and ".secrets.yaml" in without.results[0].error
    assert not without.ok
    assert run(tmp_path, http_config=config(), environ={}, secrets={"authorization": "s3cret"}).ok
    assert run(tmp_path, http_config=config(), environ={"TRPROXY_SECRET_AUTHORIZATION": "s3cret"}).ok
    # --header: the whole value, only where the request has the header
    replaced = run(tmp_path, http_config=config(), environ={},
                   overrides=Overrides(replace_headers=(("authorization", "Bearer other"),)))
    assert [r.status for r in replaced.results] == [FAILED, PASSED]
    assert replaced.results[0].actual["body"]["json"] == {"auth": "Bearer other"}
    assert replaced.results[1].actual is not None


def test_overrides_replace_add_and_set_body_fields():
    request = {"method": "POST", "url": "/login", "headers": [["X-Csrf", "a"], ["Content-Type", "application/json"]],
               "body": {"json": {"user": {"password": "<secret:login.password>", "name": "ann"}, "n": 1}}}
    over = Overrides(replace_headers=(("x-csrf", "b"), ("Authorization", "never added")),
                     add_headers=(("X-Trace", "t"),),
                     body_fields=(("user.password", "pw"), ("n", "2"), ("absent.field", "x")))
    out = over.apply(request)
    assert out["headers"] == [["X-Csrf", "b"], ["Content-Type", "application/json"], ["X-Trace", "t"]]
    assert out["body"]["json"] == {"user": {"password": "pw", "name": "ann"}, "n": 2}
    form = {"method": "POST", "url": "/f", "headers": [["Content-Type", "application/x-www-form-urlencoded"]],
            "body": "a=1&password=%3Csecret%3Ax%3E"}
    assert set_body_field(form, "password", "p w")["body"] == "a=1&password=p+w"
    assert set_body_field(form, "other", "z") is form

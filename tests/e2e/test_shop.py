"""The issue's end-to-end evidence on the shop: ``trproxy record --app-port`` then ``trproxy test``.

One recording directory for the module (real Postgres, Redis, Kafka and pricing service,
all stopped before any test runs):

* ``test-set-0``: ``examples/shop/traffic.sh`` (every endpoint, a dozen calls);
* ``test-set-1``: ~30 concurrent calls mixing endpoints that use Postgres and Redis at
  the same time (a thread pool of urllib clients released together by a barrier).

Then ``trproxy test`` replays them with no dependency running: every test passes, JUnit
says so; a copy of the shop with one JSON key renamed in ``/stats`` fails exactly that
test, with a diff naming the field.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from tests.support.proc import ROOT, run_trproxy, trproxy
from tests.support.services import wait_port

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)

SHOP = ROOT / "examples" / "shop"


def _shop_services():
    spec = importlib.util.spec_from_file_location("shop_services_e2e", SHOP / "services.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.ShopServices


def _finish(proc: subprocess.Popen, timeout: float = 30) -> tuple[str, str]:
    """SIGTERM a process this test started (by its handle) and collect its output."""
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args} ignored SIGTERM\n{err}") from None


def _record(rec: Path, env: dict[str, str], traffic) -> tuple[object, str]:  # type: ignore[no-untyped-def]
    """``trproxy record --app-port PORT -- python app.py`` while ``traffic(base_url)`` runs."""
    port = int(env["PORT"])
    proc = trproxy("record", "--dir", str(rec), "--app-port", str(port), "--",
                   sys.executable, str(SHOP / "app.py"), env=env)
    try:
        wait_port("127.0.0.1", port, timeout=30, proc=proc)  # trproxy's listener: no request, no test
        result = traffic(f"http://127.0.0.1:{port}")
    finally:
        _out, err = _finish(proc)
    assert proc.returncode in (0, 128 + 15, -15), err
    return result, err


def _get(url: str, data: dict | None = None) -> tuple[int, dict]:
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# ~30 calls sent at once: reads and writes on Postgres and Redis whose answers do not depend
# on the order they run in (distinct keys and parameters, or identical answers). Not here:
# GET /products beside the inserts — identical requests whose answers depend on which ran
# first cannot be told apart by any replay.
CONCURRENT: list[tuple[str, str, dict | None]] = (
    [("GET", f"/products/{i}", None) for i in (1, 2, 3, 4, 99)]          # Redis GET (+SET), Postgres
    + [("GET", f"/products/{i}/price", None) for i in (1, 2, 3, 4)]      # Postgres + pricing
    + [("GET", f"/orders/{i}", None) for i in (1, 2, 1, 2, 999)]         # Postgres
    + [("GET", "/stats", None)] * 5                                      # Redis + Postgres, same answer
    + [("GET", "/products/abc", None)] * 2                               # 400, no dependency
    + [("POST", "/products", {"sku": f"CC-{i}", "name": f"Cable {i}", "price_cents": 100 * i})
       for i in range(1, 5)]                                             # Postgres inserts
    + [("POST", "/products", {"sku": "KB-1", "name": "Dup", "price_cents": 1})]  # 409: unique violation
    + [("GET", "/now", None)] * 2
    + [("GET", "/health", None)] * 2
)


def _burst(base: str) -> list[tuple[int, dict]]:
    barrier = threading.Barrier(len(CONCURRENT))

    def one(call: tuple[str, str, dict | None]) -> tuple[int, dict]:
        method, path, body = call
        barrier.wait(30)
        return _get(base + path, body) if method == "POST" else _get(base + path)

    with ThreadPoolExecutor(len(CONCURRENT)) as pool:
        return list(pool.map(one, CONCURRENT))


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """Record test-set-0 (traffic.sh) and test-set-1 (a concurrent burst), then stop every service."""
    rec = tmp_path_factory.mktemp("shop") / "trproxy"
    services = _shop_services()().start()
    env = services.env()
    try:
        traffic_out, err0 = _record(rec, env, lambda base: subprocess.run(
            ["bash", str(SHOP / "traffic.sh"), base], capture_output=True, text=True, timeout=60,
            check=True).stdout)
        traffic_end = time.time()
        answers, err1 = _record(rec, env, _burst)
    finally:
        ports = [services.postgres.port, services.redis.port, services.kafka.port, services.pricing_port]
        services.stop()
    for port in ports:  # every dependency is gone before any replay
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    # replays start well after the recorded clock, so a frozen clock is told from a running one
    time.sleep(max(0.0, traffic_end + 3 - time.time()))
    return {"dir": rec, "env": env, "traffic": traffic_out, "answers": answers, "stderr": (err0, err1)}


def _tests(test_set: Path) -> list[dict]:
    files = sorted((test_set / "tests").glob("test-*.yaml"), key=lambda p: int(p.stem.split("-")[1]))
    return [yaml.safe_load(p.read_text()) for p in files]


def _mocks(test_set: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all((test_set / "mocks.yaml").read_text()) if d]


def _shop_test(rec: Path, env: dict[str, str], test_set: str, app: Path = SHOP / "app.py"):  # type: ignore[no-untyped-def]
    """``trproxy test --test-set SET -- python APP``; returns (process, JSON report, JUnit root)."""
    reports = rec / "reports"
    before = set(reports.glob("test-*.xml")) if reports.exists() else set()
    started = time.monotonic()
    out = run_trproxy("test", "--dir", str(rec), "--test-set", test_set, "--",
                      sys.executable, str(app), env=env, timeout=90)
    elapsed = time.monotonic() - started
    new = sorted(set(reports.glob("test-*.xml")) - before)
    assert len(new) == 1, f"expected one new JUnit file, got {new}\n{out.stderr}"
    junit = ET.parse(new[0]).getroot()
    report = json.loads(new[0].with_suffix(".json").read_text())
    return out, report, junit, elapsed


def _suite(junit: ET.Element) -> ET.Element:
    assert junit.tag == "testsuites"
    suites = junit.findall("testsuite")
    assert len(suites) == 1
    return suites[0]


def test_recorded_shop_passes_with_every_service_stopped(recording):
    rec, env = recording["dir"], recording["env"]
    test_set = rec / "test-set-0"
    calls = [line[2:] for line in recording["traffic"].splitlines() if line.startswith("> ")]
    cases = _tests(test_set)
    # one test per call of traffic.sh, in order, on the app's port
    assert [f"{c['spec']['request']['method']} {c['spec']['request']['url'].split(env['PORT'], 1)[1]}"
            for c in cases] == calls
    assert {c["spec"]["port"] for c in cases} == {int(env["PORT"])}
    kinds = {m["kind"] for m in _mocks(test_set)}
    assert {"postgres", "redis", "kafka", "http"} <= kinds

    out, report, junit, _elapsed = _shop_test(rec, env, "test-set-0")
    assert out.returncode == 0, out.stderr
    assert f"{len(cases)} tests: {len(cases)} passed, 0 failed, 0 errors" in out.stderr, out.stderr
    assert "mock misses" not in out.stderr
    suite = _suite(junit)
    for node in (junit, suite):
        assert (int(node.get("tests")), int(node.get("failures")), int(node.get("errors"))) == (len(cases), 0, 0)
    assert len(suite.findall("testcase")) == len(cases)
    assert not suite.findall(".//failure") and not suite.findall(".//error")
    assert report["misses"] == []

    # GET /now: a fresh UUID and the current time pass through noise, and the app's clock
    # read the recorded time (the clock shim), not the time of the replay
    now_case = next(c for c in cases if c["spec"]["request"]["url"].endswith("/now"))
    assert {"body.json.request_id", "body.json.now", "body.json.epoch_ms"} <= set(now_case["spec"]["noise"])
    live = next(t for t in report["tests"] if t["name"] == now_case["name"])
    assert live["status"] == "passed"
    recorded_body, live_body = now_case["spec"]["response"]["body"]["json"], live["actual"]["body"]["json"]
    assert live_body["greeting"] == "hello"
    assert live_body["request_id"] != recorded_body["request_id"]
    live_ms = live_body["epoch_ms"]
    created_ms = datetime.fromisoformat(now_case["spec"]["created"]).timestamp() * 1000
    replayed_ms = datetime.fromisoformat(live["started"]).timestamp() * 1000
    assert replayed_ms - created_ms > 2500, "the replay came too soon after the recording to tell"
    # the faked clock is set in whole seconds (it reads `created` to within half a second)
    # and never goes back, so it may run ahead by what replay lost to the recording: set to
    # a test's recorded time when it starts (the first test's when the app starts), it then
    # runs at the real rate, so at the /now test it is ahead by at most the largest
    # (time since test j in the replay) - (time since test j in the recording)
    assert -501 < live_ms - created_ms < _most_ahead(cases, report, now_case["name"]) + 501, (
        live_body, now_case["spec"]["created"])


def _most_ahead(cases: list[dict], report: dict, name: str) -> float:
    """How far (ms) the faked clock may run ahead of test ``name``'s recorded time: the
    replay's time since the app started, or since an earlier test started, less the
    recording's time since its first test, or since that test was recorded (whatever the
    machine's load made the replay's start-up and tests take)."""
    def ms(iso: str) -> float:
        return datetime.fromisoformat(iso).timestamp() * 1000

    created = {c["name"]: ms(c["spec"]["created"]) for c in cases}
    runs = {t["name"]: t for t in report["tests"]}
    order = [t["name"] for t in report["tests"]]
    until = order.index(name)
    now_started = ms(runs[name]["started"]) + runs[name]["duration_ms"]  # the app answers within it
    first_started = ms(runs[order[0]]["started"])
    ahead = [now_started - first_started + report["startup_ms"] - (created[name] - created[order[0]])]
    ahead += [now_started - ms(runs[j]["started"]) - (created[name] - created[j]) for j in order[:until + 1]]
    return max(0.0, *ahead)


def test_broken_endpoint_fails_exactly_its_test(recording, tmp_path):
    rec, env = recording["dir"], recording["env"]
    for source in SHOP.glob("*.py"):
        shutil.copy(source, tmp_path / source.name)
    app = tmp_path / "app.py"
    code = app.read_text()
    broken = code.replace('"orders_stored": stored', '"orders_in_db": stored')
    assert broken != code
    app.write_text(broken)

    out, report, junit, _elapsed = _shop_test(rec, env, "test-set-0", app)
    assert out.returncode != 0, out.stderr
    suite = _suite(junit)
    n = len(_tests(rec / "test-set-0"))
    assert (int(suite.get("tests")), int(suite.get("failures")), int(suite.get("errors"))) == (n, 1, 0)
    failed = [case for case in suite.findall("testcase") if case.find("failure") is not None]
    assert len(failed) == 1 and failed[0].get("name").endswith("GET /stats"), [c.get("name") for c in failed]
    assert "orders_stored" in failed[0].find("failure").text
    assert [t["request"] for t in report["tests"] if t["status"] != "passed"] == ["GET /stats"]

    # the terminal output: a FAIL line for /stats and a readable diff naming both keys
    assert f"{n - 1} passed, 1 failed, 0 errors" in out.stderr
    assert re.search(r"FAIL +test-\d+ GET /stats", out.stderr), out.stderr
    summary = out.stderr[out.stderr.index("\nFAIL test-"):]
    assert "body.json.orders_stored" in summary
    assert re.search(r"^\s*-\s+orders_stored: \d+$", summary, re.M), summary
    assert re.search(r"^\s*\+\s+orders_in_db: \d+$", summary, re.M), summary


def test_concurrent_calls_replay_with_their_own_mocks(recording):
    rec, env = recording["dir"], recording["env"]
    test_set = rec / "test-set-1"
    answers = recording["answers"]
    assert all(status < 500 for status, _ in answers), answers
    cases = _tests(test_set)
    assert len(cases) == len(CONCURRENT)
    # each test holds its own request and the response that request got, though the
    # connections interleaved: per distinct request, the recorded (status, body) pairs are
    # exactly what the clients received
    def key(method: str, path: str, body: dict | None) -> str:
        return json.dumps([method, path, body], sort_keys=True)

    recorded: dict[str, list[str]] = {}
    for c in cases:
        req, resp = c["spec"]["request"], c["spec"]["response"]
        body = req["body"]["json"] if isinstance(req["body"], dict) else None
        k = key(req["method"], req["url"].split(env["PORT"], 1)[1], body)
        recorded.setdefault(k, []).append(json.dumps([resp["status"], resp["body"]["json"]], sort_keys=True))
    received: dict[str, list[str]] = {}
    for (method, path, body), (status, answer) in zip(CONCURRENT, answers, strict=True):
        received.setdefault(key(method, path, body), []).append(json.dumps([status, answer], sort_keys=True))
    assert {k: sorted(v) for k, v in recorded.items()} == {k: sorted(v) for k, v in received.items()}

    # the calls really overlapped: mocks that started while several tests were open, on
    # several Postgres connections of the pool and on Redis
    mocks = _mocks(test_set)
    shared = [m for m in mocks if len(m["spec"]["metadata"].get("tests") or []) >= 2]
    assert {m["kind"] for m in shared} >= {"postgres", "redis"}, [m["spec"]["summary"] for m in shared]
    assert len({m["spec"]["metadata"]["connection"] for m in shared if m["kind"] == "postgres"}) >= 2

    out, report, junit, _elapsed = _shop_test(rec, env, "test-set-1")
    assert out.returncode == 0, out.stderr
    suite = _suite(junit)
    assert (int(suite.get("tests")), int(suite.get("failures")), int(suite.get("errors"))) == (len(cases), 0, 0)
    assert report["misses"] == [], report["misses"]
    # inserts made concurrently each got back their own row
    created = {t["actual"]["body"]["json"]["product"]["sku"]: t["actual"]["body"]["json"]["product"]["id"]
               for t in report["tests"] if t["request"] == "POST /products" and t["actual"]["status"] == 201}
    assert sorted(created) == ["CC-1", "CC-2", "CC-3", "CC-4"]
    assert len(set(created.values())) == 4

"""Reports of a test run: progress lines, summary, JSON, JUnit XML (parsed back)."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

from trproxy.apptest.noise import Noise, compare
from trproxy.apptest.reports import Progress, junit_xml, summary, write_reports
from trproxy.apptest.testcase import TestCase
from trproxy.apptest.testrun import ERROR, FAILED, NEEDS_SECRET, PASSED, TestResult, TestRun


def resp(body, status=200):
    return {"status": status, "reason": "OK", "headers": [["Content-Type", "application/json"]],
            "body": body}


def result(name: str, expected: dict, actual: dict | None, error: str | None = None,
           noise: Noise | None = None) -> TestResult:
    noise = noise or Noise()
    test = TestCase(name, {"method": "GET", "url": f"http://127.0.0.1:8080/items/{name[-1]}"},
                    expected, port=8080, path=Path(f"/rec/test-set-0/tests/{name}.yaml"))
    diffs = compare(expected, actual, noise) if actual is not None else []
    status = ERROR if actual is None else FAILED if diffs else PASSED
    return TestResult(test, status, actual, diffs, noise, error, "2024-05-01T10:00:00+00:00", 12.5)


MISSES = [
    {"protocol": "postgres", "destination": "127.0.0.1:5432", "request": "Query SELECT * FROM items",
     "reason": "no recorded request matches", "test": "test-2",
     "nearest": ["Query SELECT * FROM item (similarity 97%, 1 recorded, 1 used)\n--- recorded\n+++ live\n"
                 "-sql: SELECT * FROM item\n+sql: SELECT * FROM items\n"]},
    {"protocol": "redis", "destination": "127.0.0.1:6379", "request": "GET k", "reason": "nothing",
     "test": None, "nearest": []},
]


def make_run() -> TestRun:
    return TestRun(Path("/rec/test-set-0"), [
        result("test-1", resp({"json": {"a": 1, "at": "t1"}}), resp({"json": {"a": 1, "at": "t2"}}),
               noise=Noise(("body.json.at",))),
        result("test-2", resp({"json": {"name": "widget", "n": 1}}),
               resp({"json": {"name": "gadget\x01", "n": 1}}, status=500)),
        result("test-3", resp("x"), None, error="no response within 10s"),
    ], started="2024-05-01T10:00:00+00:00", duration_ms=1234.0, startup_ms=900.0)


def test_summary_lists_failures_with_diffs_and_misses():
    run = make_run()
    text = summary(run, MISSES)
    assert text.startswith("test set test-set-0: 3 tests: 1 passed, 1 failed, 1 errors "
                           "(1.2 s: app start-up 0.9 s, tests 0.3 s)")
    assert "FAIL test-2: GET /items/2" in text
    assert "  status: expected 200, got 500" in text
    assert "-    name: widget" in text and "+    name: \"gadget\\x01\"" in text
    assert "ERROR test-3: GET /items/3\n  no response within 10s" in text
    assert "mock misses during this test:" in text and "SELECT * FROM items" in text
    assert "[start-up]" in text and "2 mock misses:" in text
    assert "test-1:" not in text  # passed tests stay quiet
    assert "add its path to `noise:` in /rec/test-set-0/tests/test-2.yaml" in text


def test_json_and_junit_reports_are_written_and_parse(tmp_path):
    json_path, xml_path = write_reports(make_run(), tmp_path / "reports", MISSES)
    assert json_path.parent == xml_path.parent == tmp_path / "reports"
    data = json.loads(json_path.read_text())
    assert (data["total"], data["passed"], data["failed"], data["errors"]) == (3, 1, 1, 1)
    t2 = data["tests"][1]
    assert t2["status"] == "failed" and t2["misses"][0]["protocol"] == "postgres"
    assert {"path": "status", "expected": 200, "actual": 500} in t2["differences"]
    assert t2["diff"].startswith("--- recorded") and data["tests"][0]["noise"] == ["body.json.at"]
    assert len(data["misses"]) == 2

    root = ET.parse(xml_path).getroot()  # control characters were made XML-safe
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "test-set-0"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["test-1 GET /items/1", "test-2 GET /items/2",
                                             "test-3 GET /items/3"]
    assert cases[0].find("failure") is None and cases[0].find("error") is None
    failure = cases[1].find("failure")
    assert failure is not None and "status: expected 200, got 500" in failure.get("message")
    assert "--- recorded" in failure.text and "-    name: widget" in failure.text
    assert "SELECT * FROM items" in cases[1].find("system-out").text
    error = cases[2].find("error")
    assert error is not None and error.get("message") == "no response within 10s"
    assert "GET k" in suite.find("system-out").text


def test_junit_of_an_all_green_run():
    run = TestRun(Path("ts"), [result("test-1", resp("a"), resp("a"))], duration_ms=5)
    root = ET.fromstring(junit_xml(run))
    assert root.get("failures") == "0" and root.find("testsuite/testcase/failure") is None


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_lines_plain_and_on_a_terminal():
    run = make_run()
    plain = io.StringIO()
    progress = Progress(plain)
    for i, r in enumerate(run.results, 1):
        progress.start(r.test, i, 3)
        progress.result(r, i, 3)
    assert plain.getvalue().splitlines() == [
        "[1/3] PASS  test-1 GET /items/1  (12 ms)",
        "[2/3] FAIL  test-2 GET /items/2  (12 ms): 2 difference(s)",
        "[3/3] ERROR test-3 GET /items/3  (12 ms): no response within 10s",
    ]
    tty = Tty()
    progress = Progress(tty)
    progress.start(run.results[1].test, 2, 3)
    progress.result(run.results[1], 2, 3)
    out = tty.getvalue()
    assert out.startswith("\r\033[K[2/3] ....  test-2") and "\033[31mFAIL\033[0m" in out


def test_control_characters_do_not_break_the_xml():
    run = TestRun(Path("ts"), [result("test-1", resp("a"), None, error="reset \x00\x1b[31m byte")])
    error = ET.fromstring(junit_xml(run)).find("testsuite/testcase/error")
    assert error is not None and error.get("message") == "reset \ufffd\ufffd[31m byte"


def test_a_test_that_needs_a_secret_is_skipped_not_failed():
    needs = result("test-2", resp("a"), None, error="needs secret login.password: set TRPROXY_SECRET_LOGIN_PASSWORD")
    needs.status = NEEDS_SECRET
    run = TestRun(Path("ts"), [result("test-1", resp("a"), resp("a")), needs])
    assert not run.ok
    assert "2 tests: 1 passed, 0 failed, 0 errors, 1 need a secret" in summary(run)
    suite = ET.fromstring(junit_xml(run)).find("testsuite")
    assert suite is not None and (suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("0", "0", "1")
    skipped = suite.find("testcase/skipped")
    assert skipped is not None and "TRPROXY_SECRET_LOGIN_PASSWORD" in skipped.get("message", "")
    plain = io.StringIO()
    Progress(plain).result(needs, 2, 2)
    assert plain.getvalue().startswith("[2/2] SECRET test-2")

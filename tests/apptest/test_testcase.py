"""Test-case files: envelope, round trip, order, atomic replacement, hand edits."""

from __future__ import annotations

import os
import shlex
import subprocess
import threading

import pytest

from trproxy.apptest.noise import Noise
from trproxy.apptest.testcase import (
    TestCase,
    add_noise,
    curl_command,
    list_tests,
    load_test,
    load_tests,
    next_test_name,
    record_test,
    target_of,
    write_test,
)
from trproxy.store.errors import FormatError
from trproxy.store.yamlio import load_one

REQUEST = {"method": "POST", "url": "http://127.0.0.1:8080/orders?x=1", "http_version": "HTTP/1.1",
           "headers": [["Host", "127.0.0.1:8080"], ["Content-Type", "application/json"],
                       ["X-Bin", {"hex": "00ff"}]],
           "body": {"json": {"product_id": 1, "note": "line one\nline two"}}}
RESPONSE = {"status": 201, "reason": "Created", "http_version": "HTTP/1.1",
            "headers": [["Content-Type", "application/json"], ["Set-Cookie", "a=1"], ["Set-Cookie", "b=2"]],
            "body": {"json": {"id": 7, "created_at": "2024-05-01T10:00:00+00:00"}}}


def case(name="test-1", **kw):
    return TestCase(name=name, request=REQUEST, response=RESPONSE, noise=["body.json.created_at"],
                    created="2024-05-01T10:00:00.123456+00:00", port=8080, **kw)


def test_round_trip_and_envelope(tmp_path):
    path = write_test(tmp_path, case(extra={"note": "kept"}))
    assert path == tmp_path / "tests" / "test-1.yaml"
    text = path.read_text()
    assert text.startswith("---\nversion: trproxy/v1\nkind: http-test\nname: test-1\nspec:\n")
    assert "!!" not in text and "line one\n" in text  # readable: literal block, no tags
    doc = load_one(text)
    assert doc["spec"]["port"] == 8080 and doc["spec"]["noise"] == ["body.json.created_at"]
    loaded = load_test(path)
    assert loaded == case(extra={"note": "kept"})
    assert loaded.path == path and loaded.number == 1
    assert loaded.created_at.isoformat() == "2024-05-01T10:00:00.123456+00:00"
    assert loaded.title == "POST /orders?x=1"


def test_listing_is_numeric_and_ignores_other_files(tmp_path):
    for n in (10, 2, 1):
        write_test(tmp_path, case(f"test-{n}"))
    (tmp_path / "tests" / "notes.txt").write_text("x")
    (tmp_path / "tests" / ".test-3.yaml.tmp-1").write_text("partial")
    assert [p.name for p in list_tests(tmp_path)] == ["test-1.yaml", "test-2.yaml", "test-10.yaml"]
    assert [t.name for t in load_tests(tmp_path)] == ["test-1", "test-2", "test-10"]
    assert next_test_name(tmp_path) == "test-11"
    assert next_test_name(tmp_path / "empty") == "test-1"
    assert list_tests(tmp_path / "empty") == []


def test_hand_edited_file_with_keploy_style_noise(tmp_path):
    folder = tmp_path / "tests"
    folder.mkdir()
    (folder / "test-4.yaml").write_text(
        "version: trproxy/v1\nkind: http-test\nname: test-4\nspec:\n"
        "  request: {method: GET, url: /health}\n  response: {status: 200, body: ok}\n"
        "  noise: {header.date: [], body: []}\n")
    t = load_test(folder / "test-4.yaml")
    assert t.noise == ["header.date", "body"] and t.port is None and t.created_at is None
    assert t.title == "GET /health"


@pytest.mark.parametrize("text, message", [
    ("version: trproxy/v0\nkind: http-test\nspec: {request: {}, response: {}}\n", "version"),
    ("version: trproxy/v1\nkind: postgres\nspec: {request: {}, response: {}}\n", "kind"),
    ("version: trproxy/v1\nkind: http-test\nspec: {request: {}}\n", "response"),
    ("version: trproxy/v1\nkind: http-test\nspec: {request: {}, response: {}, noise: 3}\n", "noise"),
    ("- a list\n", "not a trproxy test"),
    ("spec: [unclosed\n", "invalid YAML"),
])
def test_bad_files_raise_format_error(tmp_path, text, message):
    path = tmp_path / "test-1.yaml"
    path.write_text(text)
    with pytest.raises(FormatError, match=message):
        load_test(path)


def test_add_noise_keeps_existing_and_rewrites(tmp_path):
    path = write_test(tmp_path, case())
    assert add_noise(path, ["body.json.created_at", "header.x-trace"]) == ["header.x-trace"]
    assert load_test(path).noise == ["body.json.created_at", "header.x-trace"]
    mtime = path.stat().st_mtime_ns
    assert add_noise(path, ["header.x-trace"]) == []
    assert path.stat().st_mtime_ns == mtime  # nothing new: file untouched


def test_rewrites_are_atomic_for_concurrent_readers(tmp_path):
    small, big = case(), case()
    big.response = dict(RESPONSE, body={"json": {"rows": ["x" * 100] * 2000}})
    write_test(tmp_path, small)
    path = tmp_path / "tests" / "test-1.yaml"
    stop = threading.Event()
    seen: list[int] = []
    errors: list[Exception] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                body = load_test(path).response["body"]["json"]
                seen.append(len(body.get("rows", [])))
            except Exception as exc:  # a torn file would show up here
                errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(40):
        write_test(tmp_path, big if i % 2 == 0 else small)
    stop.set()
    t.join()
    assert errors == []
    assert set(seen) <= {0, 2000} and seen
    assert not [p for p in (tmp_path / "tests").iterdir() if ".tmp-" in p.name]


def test_target_of():
    assert target_of("http://h:1/a/b?c=1") == "/a/b?c=1"
    assert target_of("http://h:1") == "/"
    assert target_of("http://h:1?q=1") == "/?q=1"
    assert target_of("/x") == "/x"
    assert target_of("") == "/"


def test_curl_command_is_parsed_by_a_shell():
    cmd = curl_command(REQUEST, 8080)
    words = shlex.split(cmd.replace("\\\n", " "))
    assert words[:4] == ["curl", "-X", "POST", "http://127.0.0.1:8080/orders?x=1"]
    assert "Content-Type: application/json" in words
    assert words[words.index("--data-raw") + 1] == '{"product_id": 1, "note": "line one\\nline two"}'
    # the shell really parses it the same way
    out = subprocess.run(["bash", "-c", "printf '%s\\n' " + cmd.split(" ", 1)[1].replace("\\\n", "")],
                         capture_output=True, text=True, check=True, env=dict(os.environ))
    assert out.stdout.splitlines()[:3] == ["-X", "POST", "http://127.0.0.1:8080/orders?x=1"]


def test_record_test_detects_noise_outside_the_global_rules(tmp_path):
    response = dict(RESPONSE, headers=[["Date", "Wed, 01 May 2024 10:00:00 GMT"], ["X-Trace", "5f3a9c2e7b1d4e6f"]],
                    body={"json": {"id": 7, "created_at": "2024-05-01T10:00:00+00:00",
                                   "ms": 1714557600000, "meta": {"rid": "5f3a9c2e-7b1d-4e6f-8a9b-0c1d2e3f4a5b"}}})
    case = record_test(tmp_path, "test-1", REQUEST, response, "2024-05-01T10:00:00.5+00:00", 8080,
                       Noise(("body.json.meta",)))
    assert case.noise == ["header.x-trace", "body.json.created_at", "body.json.ms"]
    assert load_test(tmp_path / "tests" / "test-1.yaml") == case

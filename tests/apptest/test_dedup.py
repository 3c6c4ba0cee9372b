"""``trproxy dedup``: signatures, removed files, kept names, mocks kept consistent."""

from __future__ import annotations

import uuid

from trproxy.apptest.dedup import dedup, find_duplicates, route_shape, signature
from trproxy.apptest.testcase import TestCase, list_tests, load_tests, write_test
from trproxy.store.model import Exchange
from trproxy.store.recording import MockWriter, load_mocks


def case(n: int, method: str, url: str, status: int, body, req_body=None) -> TestCase:
    return TestCase(f"test-{n}", {"method": method, "url": f"http://127.0.0.1:8080{url}",
                                  "headers": [], "body": req_body if req_body is not None else ""},
                    {"status": status, "headers": [], "body": body}, port=8080)


CASES = [
    case(1, "GET", "/orders/1", 200, {"json": {"id": 1, "total": 10}}),
    case(2, "GET", "/orders/2", 200, {"json": {"id": 2, "total": 25}}),  # = 1
    case(3, "GET", "/orders/3", 404, {"json": {"error": "not found"}}),
    case(4, "POST", "/orders", 201, {"json": {"id": 4}}, {"json": {"product_id": 1}}),
    case(5, "POST", "/orders", 201, {"json": {"id": 5}}, {"json": {"product_id": 2}}),  # = 4
    case(6, "POST", "/orders", 201, {"json": {"id": 6}}, {"json": {"product_id": 1, "note": "x"}}),
    case(7, "GET", f"/orders/{uuid.uuid4()}", 200, {"json": {"id": 1, "total": 10}}),
    case(8, "GET", "/orders?page=2", 200, {"json": {"items": [{"id": 1}, {"id": 2}]}}),
    case(9, "GET", "/orders?page=3", 200, {"json": {"items": [{"id": 3}]}}),  # = 8
    case(10, "GET", "/orders?page=4", 200, {"json": {"items": []}}),
    case(11, "GET", "/health", 200, "ok"),
    case(12, "GET", "/health", 200, "still ok"),  # = 11: text is text
]


def mock(tests: list[str], seq: int, lifetime: str = "data") -> Exchange:
    return Exchange("postgres", "127.0.0.1:5432", {"sql": f"q{seq}"}, [{"rows": []}],
                    lifetime=lifetime, summary=f"q{seq}", seq=seq, tests=tests)


MOCKS = [mock([], 1, "session"), mock(["test-1"], 2), mock(["test-2"], 3), mock(["test-2"], 4, "session"),
         mock(["test-5"], 5), mock(["test-6"], 6), mock(["test-12"], 7), mock(["test-12"], 8, "session"),
         mock(["test-5", "test-9"], 9), mock(["test-9", "test-10"], 10)]  # concurrent requests


def recording(tmp_path):
    for c in CASES:
        write_test(tmp_path, c)
    writer = MockWriter(tmp_path / "mocks.yaml")
    for m in MOCKS:
        writer.write(m)
    writer.close()
    return tmp_path


def test_route_shapes():
    assert route_shape("http://h/orders/42/items/7?b=1&a=2&a=3") == "/orders/{n}/items/{n}?a&b"
    assert route_shape(f"/u/{uuid.uuid4()}") == "/u/{uuid}"
    assert route_shape("/blob/5f3a9c2e7b1d") == "/blob/{id}"
    assert route_shape("/blob/deadbeef/latest") == "/blob/deadbeef/latest"  # no digit: a word


def test_duplicates_are_found_by_shape():
    assert find_duplicates(CASES) == {"test-2": "test-1", "test-5": "test-4", "test-9": "test-8",
                                      "test-12": "test-11"}
    assert signature(CASES[0]) != signature(CASES[2])  # same route, other status


def test_dry_run_changes_nothing(tmp_path):
    folder = recording(tmp_path)
    before = (folder / "mocks.yaml").read_text()
    result = dedup(folder, dry_run=True)
    assert list(result.removed) == ["test-2", "test-5", "test-9", "test-12"]
    assert (result.mocks_dropped, result.mocks_kept) == (4, 6)
    assert len(list_tests(folder)) == 12 and (folder / "mocks.yaml").read_text() == before


def test_dedup_removes_files_and_their_data_mocks_and_keeps_names(tmp_path):
    folder = recording(tmp_path)
    result = dedup(folder)
    assert result.kept == ["test-1", "test-3", "test-4", "test-6", "test-7", "test-8", "test-10", "test-11"]
    assert [t.name for t in load_tests(folder)] == result.kept  # names unchanged, no renumbering
    left = load_mocks(folder)
    # session mocks stay (any test may need them at replay), data mocks of removed tests go
    assert [(m.summary, m.tests, m.lifetime) for m in left] == [
        ("q1", [], "session"), ("q2", ["test-1"], "data"), ("q4", ["test-2"], "session"),
        ("q6", ["test-6"], "data"), ("q8", ["test-12"], "session"),
        ("q10", ["test-9", "test-10"], "data")]  # also serves the kept test-10
    assert "removed test-2 (same as test-1)" in result.describe()
    again = dedup(folder)  # idempotent
    assert again.removed == {} and again.mocks_dropped == 0
    assert not list(folder.glob("*.partial-*"))


def test_dedup_without_mocks(tmp_path):
    write_test(tmp_path, CASES[0])
    write_test(tmp_path, CASES[1])
    result = dedup(tmp_path)
    assert result.removed == {"test-2": "test-1"} and not (tmp_path / "mocks.yaml").exists()


def test_a_duplicate_that_a_kept_test_takes_a_value_from_is_kept():
    from trproxy.apptest.chain import Link

    page = "<form><input name=csrf_token value=%s></form>"
    tests = [case(1, "GET", "/notes", 200, page % "t1"), case(2, "POST", "/notes", 302, ""),
             case(3, "GET", "/notes", 200, page % "t3"),  # same shape as test-1...
             case(4, "POST", "/notes", 302, "", "title=b"), case(5, "GET", "/notes", 200, page % "t5")]
    tests[3].chain = [Link("t3", "test-3", "body.text", "value=", ">")]  # ... but test-4 posts its token
    assert find_duplicates(tests) == {"test-5": "test-1"}
    tests[3].chain = []
    assert find_duplicates(tests) == {"test-3": "test-1", "test-5": "test-1"}

"""Noise: detection from values, paths, config.yaml, comparison and the diff renderer."""

from __future__ import annotations

import json
import random
import secrets
import string
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from trproxy.apptest.noise import (
    DEFAULT_VOLATILE_HEADERS,
    Noise,
    compare,
    default_config_text,
    detect_noise,
    format_path,
    load_config,
    noise_between,
    parse_path,
    render_diff,
    volatile_value,
    write_default_config,
)
from trproxy.store.errors import FormatError
from trproxy.store.yamlio import load_one

NOW = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)


def response(body=None, headers=(), status=200):
    return {"status": status, "reason": "OK", "http_version": "HTTP/1.1",
            "headers": [list(h) for h in headers], "body": body if body is not None else ""}


# -- detection ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "2024-05-01T10:00:00Z", "2024-05-01T10:00:00.123456+00:00", "2024-05-01 10:00:00",
    "20240501T100000Z", "Wed, 01 May 2024 10:00:00 GMT", "Wed May  1 10:00:00 2024",
    "01/May/2024:10:00:00 +0000", "5/1/2024 10:00", "order placed at 2024-05-01T10:00:00Z",
    # fresh ones each run; ids that every pytest-xdist worker collects alike
    pytest.param(str(uuid.uuid4()), id="uuid4"), pytest.param(str(uuid.uuid4()).upper(), id="UUID4"),
    "01HXYZ8K3M9N2P4Q6R7S8T9V0W",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b", "5f3a9c2e7b1d4e6f", "ord_3fK9x2LmQp7Zt",
    "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5", "kJ7d9Q2mXz4LpR8vT1nB5cW3", NOW.timestamp(),
    int(NOW.timestamp() * 1000), int(NOW.timestamp()) + 3600, str(int(NOW.timestamp())),
    "2024-05-01", '"33a64df551425fcc55e4d42a148795d9f25f89d4"', 'W/"0815a9b3c7d1e2f4a6b8"',
])
def test_volatile_values(value):
    assert volatile_value(value, NOW)


@pytest.mark.parametrize("value", [
    "widget", "ThisIsAVeryLongIdentifierName", "hello world", "user@example.com", "EUR",
    "/orders/12", "ABC-123", "1.2.3", 42, 1999, 3.14, True, None, "2001-01-01",
    int((NOW - timedelta(days=400)).timestamp()), "application/json; charset=utf-8",
    "deadbeef", "aaaaaaaaaaaaaaaaaaaaaaaa", "max-age=3600, public", "gzip",
    "listing2024abc", "product_listing2024abc", "ThisIsVersion2AndRelease3", "order_2024_summary",
    "KB-1", "HS-1", "SKU-000123-XL", "getUserProfileById", "XMLHttpRequestUpload2",
    "SomeCamelCaseIdentifierName",
])
def test_stable_values(value):
    assert not volatile_value(value, NOW)


def test_detect_noise_paths_in_json_headers_and_cookies():
    resp = response(
        {"json": {"id": str(uuid.uuid4()), "name": "widget", "price": 990,
                  "created_at": NOW.isoformat(), "meta": {"epoch_ms": int(NOW.timestamp() * 1000)},
                  "items": [{"id": "ord_3fK9x2LmQp7Zt", "qty": 1}, {"id": "ord_9ab8Cd7eF6g5H", "qty": 2}],
                  "dots.key": str(uuid.uuid4())}},
        headers=[("Date", format_datetime(NOW, usegmt=True)), ("Content-Type", "application/json"),
                 ("ETag", '"33a64df551425fcc55e4d42a148795d9f25f89d4"'),
                 ("Set-Cookie", "sid=8f3k2j; Path=/; HttpOnly"), ("Set-Cookie", "theme=dark"),
                 ("X-Build", "1.4.2")])
    assert detect_noise(resp, NOW) == [
        "header.etag", "header.set-cookie", "body.json.id", "body.json.created_at",
        "body.json.meta.epoch_ms", "body.json.items[*].id", 'body.json["dots.key"]',
    ]


def test_redacted_set_cookie_is_not_noise():
    # the HTTP dialect redacts cookie values at record and replay alike: they compare equal
    resp = response("ok", headers=[("Set-Cookie", "sid=<redacted>; Path=/")])
    assert detect_noise(resp, NOW) == []


def test_redacted_and_named_secret_cookies_are_not_noise_and_compare_as_present():
    named = response("ok", headers=[("Set-Cookie", "sid=<secret:cookie.sid-2>; Path=/")])
    assert detect_noise(named, NOW) == []
    expiring = response("ok", headers=[("Set-Cookie", "sid=<secret:s>; Expires=Wed, 01 May 2024 10:30:00 GMT")])
    assert detect_noise(expiring, NOW) == ["header.set-cookie"]  # the date moves with the clock
    other = response("ok", headers=[("Set-Cookie", "sid=<secret:cookie.sid-7>; Path=/")])
    assert compare(named, other) == []  # a secret is compared as present, not by name
    body_a = response({"json": {"token": "<secret:login.token>", "n": 1}})
    body_b = response({"json": {"token": "<secret:login.token-2>", "n": 1}})
    assert compare(body_a, body_b) == []
    assert [d.path for d in compare(body_a, response({"json": {"token": "abc", "n": 1}}))] == ["body.json.token"]


def test_text_body_with_a_timestamp_masks_the_token_not_the_body():
    assert detect_noise(response(f"<p>Generated {NOW.isoformat()}</p>"), NOW) == ["body.tokens"]
    assert detect_noise(response("<p>Hello</p>"), NOW) == []
    assert detect_noise(response('{"at": "2024-05-01T10:00:00Z"}'), NOW) == ["body.json.at"]


def test_most_random_tokens_are_caught_at_record_time():
    """What detection misses, the second run (``noise_between``) catches; keep misses rare."""
    rng = random.Random(7)
    alnum = string.ascii_letters + string.digits
    samples = {
        "urlsafe": [secrets.token_urlsafe(16) for _ in range(500)],
        "hex": [secrets.token_hex(8) for _ in range(500)],
        "prefixed": ["cus_" + "".join(rng.choices(alnum, k=14)) for _ in range(500)],
    }
    rates = {k: sum(volatile_value(v, NOW) for v in vs) / len(vs) for k, vs in samples.items()}
    assert rates["urlsafe"] > 0.85 and rates["hex"] > 0.75 and rates["prefixed"] > 0.65, rates


def test_epoch_numbers_count_only_near_the_recording_time():
    resp = response({"json": {"ts": int(NOW.timestamp()), "old": int(NOW.timestamp()) - 86400 * 30,
                              "count": 1714557600 // 1000}})
    assert detect_noise(resp, NOW) == ["body.json.ts"]


# -- paths ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "status", "header.x-request-id", "body", "body.json.items[*].id", "body.json.a[0][1].b",
    'body.json["a.b"].c', 'body.json["say \\"hi\\""]',
])
def test_paths_round_trip(path):
    assert format_path(parse_path(path)) == path


def test_a_star_key_is_the_any_segment():
    assert parse_path("body.json.*.id") == parse_path("body.json[*].id")


def test_bad_path_is_a_format_error():
    with pytest.raises(FormatError):
        Noise(("body.json.a]b",))


def test_noise_covers_subtrees_and_wildcards():
    noise = Noise(("body.json.meta", "body.json.items[*].id", "body.json.*.secret"))
    assert noise.ignores("body.json.meta.generated.at")
    assert noise.ignores("body.json.items[7].id")
    assert not noise.ignores("body.json.items[7].qty")
    assert noise.ignores("body.json.user.secret")
    assert noise.ignores("header.date") and noise.ignores("header.content-length")
    assert not noise.ignores("header.content-type")


# -- config.yaml -------------------------------------------------------------------------------

def test_config_defaults_written_with_comments_and_read_back(tmp_path):
    path = write_default_config(tmp_path)
    text = path.read_text()
    assert text == default_config_text() and "# " in text
    noise = load_config(tmp_path)
    assert noise.paths == () and noise.volatile_headers == DEFAULT_VOLATILE_HEADERS
    assert load_one(text)["version"] == "trproxy/v1"


def test_config_edited_by_hand(tmp_path):
    (tmp_path / "config.yaml").write_text(
        "noise:\n  global: [header.x-build, body.json.meta]\n  volatile_headers: [Date, X-Trace]\n")
    noise = load_config(tmp_path)
    assert noise.volatile_headers == frozenset({"date", "x-trace"})
    assert noise.ignores("header.x-build") and noise.ignores("body.json.meta.version")
    assert not noise.ignores("header.x-request-id")  # the list replaced the defaults
    write_default_config(tmp_path)  # never overwrites an existing file
    assert "x-build" in (tmp_path / "config.yaml").read_text()


def test_config_missing_and_broken(tmp_path):
    assert load_config(tmp_path) == Noise()
    (tmp_path / "config.yaml").write_text("noise: [a, b]\n")
    with pytest.raises(FormatError):
        load_config(tmp_path)
    (tmp_path / "config.yaml").write_text("noise:\n  global: ['body.json.[']\n")
    with pytest.raises(FormatError):
        load_config(tmp_path)


# -- compare -------------------------------------------------------------------------------------

def test_equal_responses_have_no_difference():
    a = response({"json": {"a": 1, "b": [1, 2]}}, headers=[("Content-Type", "application/json")])
    b = response({"json": {"b": [1, 2], "a": 1.0}}, headers=[("content-type", "application/json")])
    assert compare(a, b) == []


def test_differences_name_their_paths():
    a = response({"json": {"id": 1, "name": "x", "items": [{"q": 1}, {"q": 2}], "gone": True}},
                 headers=[("Content-Type", "application/json"), ("X-Mode", "a")])
    b = response({"json": {"id": 1, "name": "y", "items": [{"q": 1}, {"q": 3}, {"q": 4}], "new": 0}},
                 headers=[("Content-Type", "application/json"), ("X-Mode", "b"), ("X-Extra", "1")],
                 status=201)
    got = {(d.path, json.dumps(d.expected), json.dumps(d.actual)) for d in compare(a, b)}
    assert got == {
        ("status", "200", "201"),
        ("header.x-mode", '"a"', '"b"'),
        ("header.x-extra", '"<missing>"', '"1"'),
        ("body.json.name", '"x"', '"y"'),
        ("body.json.items[1].q", "2", "3"),
        ("body.json.items[2]", '"<missing>"', '{"q": 4}'),
        ("body.json.gone", "true", '"<missing>"'),
        ("body.json.new", '"<missing>"', "0"),
    }


def test_noise_and_volatile_headers_are_not_compared():
    a = response({"json": {"id": "a", "at": "t1", "n": 1}},
                 headers=[("Date", "d1"), ("ETag", '"1"'), ("Content-Length", "10"), ("X-Request-Id", "r1")])
    b = response({"json": {"id": "b", "at": "t2", "n": 1}},
                 headers=[("Date", "d2"), ("ETag", '"2"'), ("Content-Length", "11"), ("X-Request-Id", "r2")])
    assert [d.path for d in compare(a, b)] == ["header.etag", "body.json.id", "body.json.at"]
    # body noise: a changed body changes its tag, so ETag is not compared either
    assert [d.path for d in compare(a, b, Noise(("body.json.at",)))] == ["body.json.id"]
    assert compare(a, b, Noise(("body.json.at", "body.json.id"))) == []


def test_repeated_headers_compare_as_multisets():
    a = response("", headers=[("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
    b = response("", headers=[("set-cookie", "b=2"), ("set-cookie", "a=1")])
    c = response("", headers=[("Set-Cookie", "a=1")])
    assert compare(a, b) == []
    assert [(d.path, d.expected, d.actual) for d in compare(a, c)] == [
        ("header.set-cookie", ["a=1", "b=2"], "a=1")]


def test_text_and_binary_bodies_compare_exactly_and_tolerate_shapes():
    assert compare(response("hello"), response("hello")) == []
    assert [d.path for d in compare(response("hello"), response("hello!"))] == ["body"]
    assert compare(response({"base64": "AAEC"}), response({"hex": "000102"})) == []
    assert compare(response({"json": {"a": 1}}), response('{"a": 1}')) == []  # JSON as text
    assert compare(response({"json": {"a": 1}, "style": "spaced"}), response({"json": {"a": 1}})) == []
    assert compare(response(None), response("")) == []
    assert compare(response("x"), response("y"), Noise(("body",))) == []
    assert compare({"status_code": 200, "headers": {"X-A": "1"}, "body": ""},
                   response("", headers=[("x-a", "1")])) == []


CSRF_PAGE = """<html><body>
<h1>Notes</h1>
<form method="post" action="/notes">
  <input id="csrf_token" name="csrf_token" type="hidden" value="{token}">
  <input name="title" type="text">
</form>
<p>Signed in as ann. Rendered {at}.</p>
<script src="/static/app.{digest}.js"></script>
</body></html>
"""


def _page(token: str, at: str = "2024-05-01T10:00:00Z", digest: str = "9f86d081884c7d659a2f",
          title: str = "<h1>Notes</h1>") -> dict:
    return response(CSRF_PAGE.format(token=token, at=at, digest=digest).replace("<h1>Notes</h1>", title),
                    headers=[("Content-Type", "text/html; charset=utf-8")])


FLASK_WTF = "ImQ2ZjQ0YjA2MzFlOTk0NjYzMmM2ZmVhOGMwYWQ1OTdkYzYxNDVjYjYi.Zk5rWg.x2YkR9a7Hq0pVw3ZtLmN8cJ1bE4"


def test_a_volatile_token_in_html_masks_that_token_not_the_page():
    recorded = _page(FLASK_WTF)
    noise = Noise(tuple(detect_noise(recorded, NOW)), moment=NOW)
    assert noise.paths == ("body.tokens",)
    live = _page("IjU1YjQ2ZDkxZTMwYjQ4ODk3ZDIxZWQzZWM3YjY4NzE5OTU2ODM5NjMi.Zk5sAb.Qm9fZXh0cmFfcmFuZG9tX3N0dWZm",
                 at="2024-05-01T10:00:01Z", digest="5f3a9c2e7b1d4e6f0a1b")
    assert compare(recorded, live, noise) == []  # token, time and asset digest changed: noise
    changed = _page(FLASK_WTF, title="<h1>My notes</h1>")  # one template line changed
    [diff] = compare(recorded, changed, noise)
    assert (diff.path, diff.expected, diff.actual) == ("body", "line 2: <h1>Notes</h1>", "line 2: <h1>My notes</h1>")
    text = render_diff(recorded, changed, noise)
    assert "-  <h1>Notes</h1>\n+  <h1>My notes</h1>\n" in text  # a line diff, not one YAML string
    assert FLASK_WTF not in text and "<noise>" in text
    assert noise_between(recorded, live) == ["body.tokens"]  # a second run confirms the tokens only
    assert noise_between(recorded, changed) == ["body"]


def test_set_valued_headers_compare_as_sets_others_in_order_of_items():
    a = response("", headers=[("Allow", "GET, POST, HEAD, OPTIONS"), ("Vary", "Accept, Cookie")])
    b = response("", headers=[("Allow", "POST, OPTIONS, GET, HEAD"), ("Vary", "cookie,accept")])
    assert compare(a, b) == []
    c = response("", headers=[("Allow", "GET, HEAD, OPTIONS"), ("Vary", "Accept, Cookie")])
    assert [d.path for d in compare(a, c)] == ["header.allow"]
    enc = response("", headers=[("Content-Encoding", "gzip, br")])
    assert [d.path for d in compare(enc, response("", headers=[("Content-Encoding", "br, gzip")]))] == [
        "header.content-encoding"]  # order matters there (RFC 9110 §8.4)


def test_noise_between_two_runs_generalizes_indices():
    a = response({"json": {"items": [{"id": "x1", "n": 1}, {"id": "x2", "n": 2}], "t": 1}},
                 headers=[("X-Trace", "a"), ("Date", "d1")])
    b = response({"json": {"items": [{"id": "y1", "n": 1}, {"id": "y2", "n": 2}], "t": 2}},
                 headers=[("X-Trace", "b"), ("Date", "d2")], status=500)
    assert noise_between(a, b) == ["header.date", "header.x-trace", "body.json.items[*].id", "body.json.t"]


def test_render_diff_masks_noise_and_shows_real_changes():
    a = response({"json": {"id": "a1", "total": 10, "at": "t1"}}, headers=[("Date", "d1")])
    b = response({"json": {"id": "b2", "total": 12, "at": "t2"}}, headers=[("Date", "d2")])
    diff = render_diff(a, b, Noise(("body.json.id", "body.json.at")))
    assert diff.startswith("--- recorded\n+++ live\n")
    assert "-    total: 10\n+    total: 12\n" in diff
    assert "a1" not in diff and "b2" not in diff and "d1" not in diff
    assert "<noise: ignored>" in diff
    assert render_diff(a, a) == ""

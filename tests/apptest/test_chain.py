"""Chaining: links found at record time, values renewed from live answers at test time."""

from __future__ import annotations

from trproxy.apptest.chain import (
    ChainIndex,
    Link,
    LiveChains,
    extract,
    fill_placeholders,
    substitute,
)
from trproxy.protocols.http.config import Redaction
from trproxy.protocols.http.readable import redact_message
from trproxy.protocols.secrets import SecretVault

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.c2lnbmF0dXJlLXZhbHVl"
CSRF = "ImQ2ZjQ0YjA2MzFlOTk0NjYzMmM2ZmVhOGMwYWQ1OTdkYzYxNDVjYjYi.Zk5rWg.x2YkR9a7Hq0p"
PAGE = ('<form method="post">\n  <input id="csrf_token" name="csrf_token" type="hidden" value="%s">\n'
        '  <a href="/notes/7">note 7</a>\n</form>\n')


def req(method, url, headers=(), body=""):
    return {"method": method, "url": f"http://127.0.0.1:5000{url}", "http_version": "HTTP/1.1",
            "headers": [list(h) for h in headers], "body": body}


def resp(body="", headers=()):
    return {"status": 200, "reason": "OK", "http_version": "HTTP/1.1",
            "headers": [list(h) for h in headers], "body": body}


FORM = ("Content-Type", "application/x-www-form-urlencoded")


def recorded_session():
    """A client's session, as capture sees it (raw) and writes it (redacted, linked)."""
    vault = SecretVault()
    redaction = Redaction(vault=vault)
    index = ChainIndex(vault)
    exchanges = [
        ("test-1", req("GET", "/login"), resp(PAGE % CSRF, [("Set-Cookie", "session=s1.abcdefgh; HttpOnly")])),
        ("test-2", req("POST", "/api/login", [("Cookie", "session=s1.abcdefgh")],
                       {"json": {"user": "ann", "password": "pw-123456"}}),
         resp({"json": {"user": {"token": JWT, "id": 42}}}, [("Set-Cookie", "session=s2.ijklmnop; HttpOnly")])),
        ("test-3", req("POST", "/notes", [("Cookie", "session=s2.ijklmnop"), FORM],
                       f"csrf_token={CSRF}&title=hello"), resp("", [("Location", "/notes/7")])),
        ("test-4", req("GET", "/users/42/notes/7?page=2", [("Authorization", f"Token {JWT}")]), resp("{}")),
    ]
    written = {}
    for i, (name, request, response) in enumerate(exchanges):
        redacted = redact_message(request, redaction)
        links = index.links(request, started=float(i) + 0.5)
        index.add_response(name, response, completed=float(i) + 0.9)
        written[name] = (redacted, links, redact_message(response, redaction, "login"))
    return written, vault


def test_links_found_at_record_time_name_the_source_and_keep_secrets_off_the_record():
    written, vault = recorded_session()
    assert written["test-1"][1] == []
    assert written["test-2"][1] == [Link("<secret:cookie.session>", "test-1", "header.set-cookie.session")]
    request3, links3, _ = written["test-3"]
    assert links3 == [Link("<secret:cookie.session-2>", "test-2", "header.set-cookie.session"),
                      Link(CSRF, "test-1", "body.text", ' name="csrf_token" type="hidden" value="', '"')]
    assert request3["body"] == f"csrf_token={CSRF}&title=hello"  # not a secret: stays readable
    request4, links4, _ = written["test-4"]
    assert request4["headers"] == [["Authorization", "Token <secret:login.token>"]]
    assert links4 == [Link("42", "test-2", "body.json.user.id"), Link("7", "test-3", "header.location", "/notes/", ""),
                      Link("<secret:login.token>", "test-2", "body.json.user.token")]
    # "2" (page) is in no id-like place: not a link; the password came from no answer: a secret
    assert vault.values["login.password"] == "pw-123456"


def test_answers_not_complete_when_the_request_started_are_not_sources():
    index = ChainIndex()
    index.add_response("test-1", resp({"json": {"id": 99}}), completed=5.0)
    assert index.links(req("GET", "/items/99"), started=4.0) == []  # concurrent: not taken from it
    assert index.links(req("GET", "/items/99"), started=6.0) == [Link("99", "test-1", "body.json.id")]
    index.add_response("test-2", resp({"json": {"item": {"id": 99}}}), completed=7.0)
    assert index.links(req("GET", "/items/99"), started=8.0) == [Link("99", "test-1", "body.json.id")]  # first seen


def test_text_around_a_value_never_carries_a_secret():
    vault = SecretVault({"k": "topsecret-key-1"})
    index = ChainIndex(vault)
    index.add_response("test-1", resp("key=topsecret-key-1&next=Zk5rWg7x2YkR9a7Hq0p"), completed=1.0)
    [link] = index.links(req("GET", "/next/Zk5rWg7x2YkR9a7Hq0p"), started=2.0)
    assert "topsecret" not in link.before and link.before == "&next="


def test_live_values_replace_the_recorded_ones_at_test_time():
    written, vault_at_record = recorded_session()
    live_vault = SecretVault()
    chains = LiveChains({name: links for name, (_r, links, _x) in written.items()}, live_vault)
    new_csrf = "IjU1YjQ2ZDkxZTMwYjQ4ODk3ZDIxZWQzZWM3YjY4NzE5OTU2ODM5NjMi.Zk5sAb.Qm9fZXh0cmFf"
    chains.learn("test-1", resp(PAGE % new_csrf, [("Set-Cookie", "session=L1; HttpOnly")]))
    chains.learn("test-2", resp({"json": {"user": {"token": "eyJ.live.jwt", "id": 43}}},
                                [("Set-Cookie", "session=L2; HttpOnly")]))
    chains.learn("test-3", resp("", [("Location", "/notes/8")]))

    r2 = chains.apply(written["test-2"][0], written["test-2"][1])
    assert r2["headers"] == [["Cookie", "session=L1"]]
    r3 = chains.apply(written["test-3"][0], written["test-3"][1])
    assert r3["headers"][0] == ["Cookie", "session=L2"] and r3["body"] == f"csrf_token={new_csrf}&title=hello"
    r4 = chains.apply(written["test-4"][0], written["test-4"][1])
    assert r4["url"] == "http://127.0.0.1:5000/users/43/notes/8?page=2"
    assert r4["headers"] == [["Authorization", "Token eyJ.live.jwt"]]
    assert live_vault.secret("eyJ.live.jwt", "x") == "<secret:login.token>"  # live answers redact to the recorded name


def test_the_cookie_jar_fills_a_cookie_whose_source_gave_nothing_and_the_rest_needs_a_secret():
    chains = LiveChains({})
    chains.learn("test-1", resp("", [("Set-Cookie", "session=J1; Path=/")]))
    request = req("GET", "/x", [("Cookie", "session=<secret:cookie.session-5>; theme=<secret:cookie.theme>")])
    filled = chains.fill_cookies(request)
    assert filled["headers"] == [["Cookie", "session=J1; theme=<secret:cookie.theme>"]]
    out, missing = fill_placeholders(filled, {}.get)
    assert missing == ["cookie.theme"] and out == filled
    out, missing = fill_placeholders(filled, {"cookie.theme": "dark"}.get)
    assert missing == [] and out["headers"] == [["Cookie", "session=J1; theme=dark"]]


def test_extract_and_substitute_cover_each_place():
    live = resp({"json": {"a": [{"id": 5}], "ok": True}}, [("X-Csrf-Token", "tok"), ("Location", "/a/b?c=9")])
    assert extract(live, Link("1", "t", "body.json.a[0].id")) == "5"
    assert extract(live, Link("1", "t", "body.json.ok")) is None  # not a string or a number
    assert extract(live, Link("1", "t", "header.x-csrf-token")) == "tok"
    assert extract(live, Link("1", "t", "header.location", "?c=", "")) == "9"
    assert extract(live, Link("1", "t", "body.json.missing")) is None
    request = req("PUT", "/items/17?ref=17&q=x17", [("X-Item", "17")], {"json": {"item_id": 17, "note": "17 apples"}})
    out = substitute(request, "17", "18")  # short: whole values only
    assert out["url"] == "http://127.0.0.1:5000/items/18?ref=18&q=x17"
    assert out["headers"] == [["X-Item", "18"]] and out["body"]["json"] == {"item_id": 18, "note": "17 apples"}
    long = substitute(req("GET", f"/t?x=pre-{CSRF}"), CSRF, "NEW")  # tokens: inside strings too
    assert long["url"].endswith("?x=pre-NEW")
    # a form re-encoded for one value keeps the other placeholders findable (and filled)
    form = req("POST", "/login", [FORM], f"csrf_token={CSRF}&email=a%40b.c&password=<secret:login.password>")
    out, missing = fill_placeholders(substitute(form, CSRF, "NEW"), {"login.password": "p&w"}.get)
    assert missing == [] and out["body"] == "csrf_token=NEW&email=a%40b.c&password=p%26w"

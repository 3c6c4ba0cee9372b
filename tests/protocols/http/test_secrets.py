"""Named secrets: the vault's names, scrubbing, stand-ins through a real record -> replay
of the HTTP dialect (sans-I/O recorder and replayer), and match keys."""

from __future__ import annotations

import json

from trproxy.protocols.base import Lookup
from trproxy.protocols.http import HttpConfig, HttpReplayer, Redaction, match_key
from trproxy.protocols.http.config import Noise
from trproxy.protocols.secrets import (
    SecretVault,
    hint_of,
    placeholder,
    standin,
    standins_to_placeholders,
    with_standins,
)

from .streams import headers, record

LOGIN = json.dumps({"user": "ann", "password": "S3cr3t!pw"}).encode()


def _exchange(request: bytes, response: bytes, config: HttpConfig):
    return record([("client", request), ("server", response), ("client", b""), ("server", b"")], config)


def _post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST %s HTTP/1.1\r\nHost: auth.test\r\nContent-Type: application/json\r\n%s"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), extra, len(body), body))


def _ok(body: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
            % (extra, len(body), body))


def test_the_same_value_gets_the_same_name_and_new_values_new_names():
    named: list[tuple[str, str]] = []
    vault = SecretVault({"login.password": "old"}, on_new=lambda n, v: named.append((n, v)))
    assert vault.secret("S3cr3t!pw", "login.password") == "<secret:login.password-2>"  # the name is taken
    assert vault.secret("S3cr3t!pw", "authorization") == "<secret:login.password-2>"  # same value, same name
    assert vault.secret("old", "x") == "<secret:login.password>"
    assert vault.secret("", "x") == "" and vault.secret("<secret:a>", "x") == "<secret:a>"
    assert vault.secret('""', "cookie.sessionid") == '""'  # Django's deleted cookie: no secret
    assert vault.secret("v", "bad name/with spaces") == "<secret:bad_name_with_spaces>"
    assert named == [("login.password-2", "S3cr3t!pw"), ("bad_name_with_spaces", "v")]
    assert vault.scrub("sent S3cr3t!pw twice: S3cr3t!pw, and v") == \
        "sent <secret:login.password-2> twice: <secret:login.password-2>, and v"  # v: too short to search


def test_hints_come_from_the_last_word_of_the_path():
    assert hint_of("/api/v1/auth/login") == "login"
    assert hint_of("/users/42/") == "users"
    assert hint_of("/oauth/token?x=1") == "token"
    assert hint_of("/") == ""


def test_recorded_secrets_are_named_and_shared_by_request_and_response_and_scrubbed_elsewhere():
    vault = SecretVault()
    config = HttpConfig(redaction=Redaction(vault=vault))
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.c2lnbmF0dXJlLXZhbHVl"
    [login] = _exchange(_post("/api/login", LOGIN),
                        _ok(json.dumps({"access_token": token, "echo": f"welcome {token}"}).encode(),
                            b"Set-Cookie: sid=abc123def; HttpOnly; Path=/\r\n"), config)
    assert login.request["body"]["json"] == {"user": "ann", "password": "<secret:login.password>"}
    response = login.responses[0]
    assert response["body"]["json"] == {"access_token": "<secret:login.access_token>",
                                        "echo": "welcome <secret:login.access_token>"}  # scrubbed
    assert headers(response, "set-cookie") == ["sid=<secret:cookie.sid>; HttpOnly; Path=/"]
    [later] = _exchange(b"GET /api/me?key=abc123def HTTP/1.1\r\nHost: auth.test\r\n"
                        b"Authorization: Bearer " + token.encode() + b"\r\nCookie: sid=abc123def\r\n\r\n",
                        _ok(b"{}"), config)
    assert headers(later.request, "authorization") == ["Bearer <secret:login.access_token>"]
    assert headers(later.request, "cookie") == ["sid=<secret:cookie.sid>"]
    assert later.request["url"] == "http://auth.test/api/me?key=<secret:cookie.sid>"
    on_disk = json.dumps([login.request, login.responses, later.request])
    for secret in ("S3cr3t!pw", token, "abc123def"):
        assert secret not in on_disk
    assert vault.values == {"login.password": "S3cr3t!pw", "login.access_token": token, "cookie.sid": "abc123def"}


def test_outbound_secrets_reach_the_app_as_stand_ins_that_match_when_sent_back():
    """A downstream's token and cookie, recorded as placeholders, are replayed as stand-ins;
    the app sending them back (in a secret field, a cookie, and a field that is not a
    secret) matches the recording, whatever names the replaying run's vault would give."""
    vault = SecretVault()
    recording = HttpConfig(redaction=Redaction(vault=vault), noise=Noise(match_headers=True))
    [issued] = _exchange(_post("/oauth/token", b'{"grant_type": "client_credentials"}'),
                         _ok(b'{"access_token": "tok-9f2c4e71a0", "expires_in": 3600}',
                             b"Set-Cookie: route=r-77aa31; Path=/\r\n"), recording)
    [used] = _exchange(_post("/v1/orders", b'{"ref": "tok-9f2c4e71a0", "qty": 2}',
                             b"Cookie: route=r-77aa31\r\nX-Api-Key: tok-9f2c4e71a0\r\n"),
                       _ok(b'{"ok": true}'), recording)
    assert used.request["body"]["json"] == {"ref": "<secret:token.access_token>", "qty": 2}

    replaying = HttpConfig(noise=Noise(match_headers=True))  # no vault: CI has no secrets file
    replayer = HttpReplayer(replaying)
    [lookup] = replayer.feed(_post("/oauth/token", b'{"grant_type": "client_credentials"}'))
    sent = replayer.respond(lookup, issued.responses)
    token, route = standin("token.access_token"), standin("cookie.route")
    assert token.encode() in sent and b"Set-Cookie: route=" + route.encode() in sent
    assert b"tok-9f2c4e71a0" not in sent and b"<secret:" not in sent

    def live(ref: str, cookie: str, key: str) -> Lookup:
        [lk] = HttpReplayer(replaying).feed(_post(
            "/v1/orders", json.dumps({"ref": ref, "qty": 2}).encode(),
            f"Cookie: route={cookie}\r\nX-Api-Key: {key}\r\n".encode()))
        return lk

    back = live(token, route, token)
    assert back.request["body"]["json"]["ref"] == "<secret:token.access_token>"  # mapped back by name
    assert headers(back.request, "cookie") == ["route=<secret:cookie.route>"]
    assert match_key(back.request) == match_key(used.request)
    assert (HttpReplayer(recording).config.noise.match_headers and
            _key(recording, back) == _key(recording, used))
    assert match_key(live("tok-somethingelse", route, token).request) != match_key(used.request)


def _key(config: HttpConfig, item) -> object:
    from trproxy.protocols.http.matching import match_key_with

    return match_key_with(item.request, config.noise)


def test_stand_ins_decode_without_a_vault_and_leave_other_text_alone():
    text = f"a {standin('cookie.sid-2')} b trpx.zz.trpx"
    assert standins_to_placeholders(text) == "a <secret:cookie.sid-2> b trpx.zz.trpx"
    message = {"status": 200, "headers": [["Set-Cookie", "sid=<secret:cookie.sid>; Path=/"]],
               "body": {"json": {"t": ["<secret:t>", 1]}}}
    out = with_standins(message)
    assert out["headers"] == [["Set-Cookie", f"sid={standin('cookie.sid')}; Path=/"]]
    assert out["body"] == {"json": {"t": [standin("t"), 1]}}
    assert message["body"] == {"json": {"t": ["<secret:t>", 1]}}  # the recording is not changed
    plain = {"status": 200, "headers": [["A", "b"]], "body": {"json": {"x": 1}}}
    assert with_standins(plain) is plain
    assert placeholder("x") == "<secret:x>"

"""The issue's evidence on web apps written the way frameworks make them: logins, sessions,
CSRF tokens, created ids, downstream credentials. ``trproxy record`` with a traffic
script against real Postgres, Redis (and a rates service), every dependency stopped,
then ``trproxy test`` with no hand edits. Recorded without ``--app-port`` (every port the
app listens on).

* notes (``examples/notes``): Flask, Flask-Login cookie session, Flask-WTF CSRF tokens in
  HTML forms, SQLAlchemy on Postgres, Redis; driven like a browser (``requests`` session).
* tokens (``examples/tokens``): aiohttp, a JSON password login returning a JWT sent as
  ``Authorization: Bearer``, items with ids Postgres makes used in later URLs, a
  downstream service signed in with an API key that answers a session token and a
  cookie; driven by a Postman-like collection.

Each recording: every test passes; no planted secret is anywhere in the recording
directory but its git-ignored, mode-0600 secrets file; one changed template line or
endpoint fails exactly its test with a line diff; without the secrets, the login needs a
secret (and the environment can give it).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from tests.support.proc import ROOT, run_test, trproxy
from tests.support.services import wait_port

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)

sys.path.insert(0, str(ROOT / "examples"))
from webapps import SECRETS, WebAppServices  # noqa: E402


class Recorded:
    def __init__(self, app: str, rec: Path, env: dict[str, str], command: list[str]) -> None:
        self.app, self.rec, self.env, self.command = app, rec, env, command

    def test(self, *extra: str, command: list[str] | None = None, env: dict[str, str] | None = None,
             rec: Path | None = None) -> tuple[subprocess.CompletedProcess, dict, ET.Element]:
        """``trproxy test``; the process, its JSON report and JUnit root."""
        done, report, junit = run_test(rec or self.rec, command or self.command,
                                       env if env is not None else self.env, *extra, timeout=240)
        assert report is not None and junit is not None, done.stderr
        return done, report, junit


def _record(app: str, where: Path) -> Recorded:
    services = WebAppServices(app).start()
    rec = where / "rec"
    env = services.env()  # the app's: it never sees the password
    log = where / "record.log"
    try:
        with log.open("w") as out:
            # no --app-port: calls to every port the app listens on are recorded
            proc = trproxy("record", "--dir", str(rec), "--", *services.command, env=env,
                           stdout=out, stderr=out)
            try:
                wait_port("127.0.0.1", services.port, timeout=90, proc=proc)
                if app == "blog":  # its migrations ran at start: now the operator adds the user
                    services.add_user()
                subprocess.run(services.traffic, env=dict(os.environ, **env, **services.traffic_env()),
                               check=True, timeout=180)
            finally:
                proc.terminate()
                proc.wait(60)
        assert proc.returncode in (0, 128 + 15), log.read_text()  # the app's own answer to SIGTERM
    finally:
        services.stop()  # every dependency is gone before any test runs
    return Recorded(app, rec, env, services.command)


@pytest.fixture(scope="module", params=["notes", "tokens"])
def recorded(request, tmp_path_factory) -> Recorded:
    return _record(request.param, tmp_path_factory.mktemp(request.param))


def _cases(rec: Path) -> list[dict]:
    files = sorted((rec / "test-set-0" / "tests").glob("test-*.yaml"), key=lambda p: int(p.stem.split("-")[1]))
    return [yaml.safe_load(p.read_text()) for p in files]


def _counts(junit: ET.Element) -> tuple[int, int, int, int]:
    suite = junit.find("testsuite")
    assert suite is not None
    return (int(suite.get("tests")), int(suite.get("failures")), int(suite.get("errors")),
            int(suite.get("skipped")))


def test_every_call_replays_green_with_every_dependency_stopped(recorded):
    cases = _cases(recorded.rec)
    assert len(cases) >= 14
    done, report, junit = recorded.test()
    assert done.returncode == 0, done.stderr
    n = len(cases)
    assert f"{n} tests: {n} passed, 0 failed, 0 errors" in done.stderr, done.stderr
    assert _counts(junit) == (n, 0, 0, 0)
    assert report["misses"] == []
    chained = [c for c in cases if c["spec"].get("chain")]
    if recorded.app == "notes":  # the session cookie and the CSRF token of the form before
        post = next(c for c in cases if c["spec"]["request"]["method"] == "POST"
                    and c["spec"]["request"]["url"].endswith("/notes") and c["spec"]["response"]["status"] == 302)
        ats = {link["at"] for link in post["spec"]["chain"]}
        assert ats == {"header.set-cookie.session", "body.text"}, post["spec"]["chain"]
        assert "<secret:login.password>" in cases[1]["spec"]["request"]["body"]
    else:  # the token of the login, the ids of the items created
        me = cases[2]["spec"]
        assert ["Authorization", "Bearer <secret:login.access_token>"] in me["request"]["headers"]
        assert me["chain"] == [{"value": "<secret:login.access_token>", "from": "test-1",
                                "at": "body.json.access_token"}]
        created = cases[4]["spec"]["response"]["body"]["json"]["id"]
        users = [c for c in cases if created in c["spec"]["request"]["url"]]
        assert users and all({"value": created, "from": "test-5", "at": "body.json.id"} in c["spec"]["chain"]
                             for c in users)
    assert len(chained) >= n // 2


def test_no_planted_secret_is_in_the_recording_directory(recorded):
    rec = recorded.rec
    secrets_file = rec / ".secrets.yaml"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert ".secrets.yaml" in (rec / ".gitignore").read_text().split()
    values = yaml.safe_load(secrets_file.read_text())
    planted = [SECRETS["password"]] + list(values.values())
    if recorded.app == "tokens":  # the app's own keys; the JWT secret never travels at all
        planted += [SECRETS["rates_api_key"], SECRETS["jwt_secret"]]
        assert set(values) >= {"login.password", "login.access_token", "x-api-key", "cookie.rates_sid",
                               "session.session_token"}
    else:
        planted += [SECRETS["secret_key"]]
        assert "login.password" in values and any(k.startswith("cookie.session") for k in values)
    found = subprocess.run(["grep", "-rlF", "--exclude=.secrets.yaml", *[a for v in planted for a in ("-e", v)],
                            str(rec)], capture_output=True, text=True)
    assert found.returncode == 1 and found.stdout == "", found.stdout  # reports of test runs included


def _broken_copy(recorded: Recorded, tmp_path: Path, old: str, new: str) -> list[str]:
    source = ROOT / "examples" / recorded.app / "app.py"
    text = source.read_text()
    assert text.count(old) == 1
    copy = tmp_path / "app.py"
    copy.write_text(text.replace(old, new))
    return [sys.executable, str(copy)]


def test_one_changed_template_line_or_endpoint_fails_exactly_its_test(recorded, tmp_path):
    if recorded.app == "notes":
        command = _broken_copy(recorded, tmp_path, "<h1>Recent activity</h1>", "<h1>Latest activity</h1>")
        title, line = "GET /activity", ("-  <h1>Recent activity</h1>\n", "+  <h1>Latest activity</h1>\n")
    else:
        command = _broken_copy(recorded, tmp_path, '"username": request["username"]', '"user": request["username"]')
        title, line = "GET /api/me", ("-    username: ann\n", "+    user: ann\n")
    done, report, junit = recorded.test(command=command)
    assert done.returncode == 1
    failed = [t for t in report["tests"] if t["status"] != "passed"]
    assert [(t["request"], t["status"]) for t in failed] == [(title, "failed")], done.stderr
    if recorded.app == "tokens":  # the one with the token; the one without fails before the handler
        assert failed[0]["name"] == "test-3"
    assert line[0] in failed[0]["diff"] and line[1] in failed[0]["diff"], failed[0]["diff"]
    assert len(failed[0]["diff"].splitlines()) < 25  # a few lines, not the page as one string
    assert _counts(junit)[1] == 1


def test_without_the_secrets_the_login_needs_one_and_the_environment_can_give_it(recorded, tmp_path):
    rec = tmp_path / "rec"
    shutil.copytree(recorded.rec, rec, ignore=shutil.ignore_patterns("reports"))
    (rec / ".secrets.yaml").unlink()
    done, report, junit = recorded.test(rec=rec)
    assert done.returncode == 1
    by_status = {t["name"]: (t["status"], t["error"]) for t in report["tests"]}
    assert by_status["test-2"][0] == "needs-secret", by_status  # the login (the form's POST / the JSON one)
    assert "TRPROXY_SECRET_LOGIN_PASSWORD" in by_status["test-2" if recorded.app == "notes" else "test-1"][1]
    assert "need a secret" in done.stderr and "Traceback" not in done.stderr
    tests, failures, errors, skipped = _counts(junit)
    assert skipped >= 1 and failures + errors + skipped == sum(t["status"] != "passed" for t in report["tests"])
    env = dict(recorded.env, TRPROXY_SECRET_LOGIN_PASSWORD=SECRETS["password"],
               TRPROXY_SECRET_LOGIN_PASSWORD_2="not-the-password")
    # the outbound API key and the downstream session are mocks' secrets: replay needs none
    done, report, _junit = recorded.test(rec=rec, env=env)
    assert done.returncode == 0, done.stderr

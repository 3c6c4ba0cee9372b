"""Django and FastAPI apps written the way those frameworks are used, recorded with their
real dependencies and replayed by ``trproxy test`` with every dependency stopped, no hand
edits. Recorded without ``--app-port``.

* blog (``examples/blog``): Django, the ORM on Postgres through psycopg 3 (UUID primary
  keys, ``auto_now`` timestamps), migrations applied when the app starts (recorded with
  it), ``django.contrib.auth``'s login form with the real ``CsrfViewMiddleware``,
  ``cached_db`` sessions (Django's RedisCache, then the database), a JSON API and
  template pages, served by ``manage.py runserver``; driven like a browser.
* tasks (``examples/tasks``): FastAPI on uvicorn, SQLAlchemy 2 asyncio on asyncpg (UUIDs
  the app makes), the OAuth2 password flow answering a JWT used as a Bearer token,
  Pydantic bodies (a 422), a 404, ``BackgroundTasks`` writing to Redis; driven by httpx.

Each recording: every test passes; no planted secret is anywhere in the recording
directory but its mode-0600 secrets file; one changed template line or endpoint fails
exactly its test.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_webapps import Recorded, _cases, _counts, _record
from tests.support.proc import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)

sys.path.insert(0, str(ROOT / "examples"))
from webapps import SECRETS  # noqa: E402

# Django's login hashes the password with PBKDF2 (1,000,000 rounds): over 10 s, the
# default per-test timeout, on two loaded cores; a late answer's session writes would
# then land in the next test
SLOW_LOGIN = ("--timeout", "90")


@pytest.fixture(scope="module", params=["blog", "tasks"])
def recorded(request, tmp_path_factory) -> Recorded:
    return _record(request.param, tmp_path_factory.mktemp(request.param))


def test_every_call_replays_green_with_every_dependency_stopped(recorded):
    cases = _cases(recorded.rec)
    n = len(cases)
    assert n >= 12
    done, report, junit = recorded.test(*SLOW_LOGIN)
    assert done.returncode == 0, done.stderr
    assert f"{n} tests: {n} passed, 0 failed, 0 errors" in done.stderr, done.stderr
    assert _counts(junit) == (n, 0, 0, 0)
    assert report["misses"] == []
    specs = [c["spec"] for c in cases]
    if recorded.app == "blog":  # the session cookie and the form's CSRF token, both from answers before
        post = next(s for s in specs if s["request"]["method"] == "POST" and s["request"]["url"].endswith("/posts/")
                    and s["response"]["status"] == 302)
        ats = {link["at"] for link in post["chain"]}
        assert {"header.set-cookie.sessionid", "body.text"} <= ats, post["chain"]
    else:  # the token of the login, the ids of the tasks created
        me = next(s for s in specs if s["request"]["url"].endswith("/users/me") and s["response"]["status"] == 200)
        assert ["Authorization", "Bearer <secret:token.access_token>"] in me["request"]["headers"], me
        assert {"value": "<secret:token.access_token>", "from": "test-2", "at": "body.json.access_token"} in me["chain"]
        created = [c for c in cases if c["spec"]["response"]["status"] == 201]
        first = created[0]["spec"]["response"]["body"]["json"]["id"]
        users = [s for s in specs if first in s["request"]["url"]]
        assert users and all(any(link["value"] == first for link in s.get("chain", [])) for s in users), users


def test_no_planted_secret_is_in_the_recording_directory(recorded):
    rec = recorded.rec
    secrets_file = rec / ".secrets.yaml"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert ".secrets.yaml" in (rec / ".gitignore").read_text().split()
    values = yaml.safe_load(secrets_file.read_text())
    planted = [SECRETS["password"], SECRETS["django_secret_key"], SECRETS["fastapi_jwt_secret"], *values.values()]
    found = subprocess.run(["grep", "-rlF", "--exclude=.secrets.yaml", *[a for v in planted for a in ("-e", v)],
                            str(rec)], capture_output=True, text=True)
    assert found.returncode == 1 and found.stdout == "", found.stdout
    if recorded.app == "blog":  # the session key Django stored in Postgres and Redis: named there too
        assert {"login.password", "cookie.sessionid"} <= set(values) and '""' not in values.values()
        mocks = (rec / "test-set-0" / "mocks.yaml").read_text()
        assert "session_key\" = '<secret:cookie.sessionid>'" in mocks
        assert "django.contrib.sessions.cached_db<secret:cookie.sessionid>" in mocks
    else:
        assert set(values) == {"token.password", "token.access_token"}


def _broken_copy(recorded: Recorded, tmp_path: Path, relpath: str, old: str, new: str) -> list[str]:
    copy = tmp_path / recorded.app
    shutil.copytree(ROOT / "examples" / recorded.app, copy, ignore=shutil.ignore_patterns("__pycache__"))
    source = copy / relpath
    text = source.read_text()
    assert text.count(old) == 1
    source.write_text(text.replace(old, new))
    return [str(copy / a.split("/examples/" + recorded.app + "/", 1)[1]) if "/examples/" + recorded.app + "/" in a
            else a for a in recorded.command]


def test_one_changed_template_line_or_endpoint_fails_exactly_its_test(recorded, tmp_path):
    if recorded.app == "blog":
        command = _broken_copy(recorded, tmp_path, "posts/templates/registration/login.html",
                               "<h1>Sign in</h1>", "<h1>Log in</h1>")
        title, line = "GET /accounts/login/", ("-    <h1>Sign in</h1>\n", "+    <h1>Log in</h1>\n")
    else:
        command = _broken_copy(recorded, tmp_path, "app.py", '"Task not found"', '"No such task"')
        command = [str(tmp_path / "tasks") if a == str(ROOT / "examples" / "tasks") else a for a in command]
        title, line = "GET /tasks/6f1c9a52-2f4e-4c1e-9d55-0b7e4c7c1a11", ("Task not found", "No such task")
    done, report, junit = recorded.test(*SLOW_LOGIN, command=command)
    assert done.returncode == 1, done.stderr
    failed = [t for t in report["tests"] if t["status"] != "passed"]
    assert [(t["request"].split("?")[0], t["status"]) for t in failed] == [(title, "failed")], done.stderr
    assert line[0] in failed[0]["diff"] and line[1] in failed[0]["diff"], failed[0]["diff"]
    assert _counts(junit)[1] == 1

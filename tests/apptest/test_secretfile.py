"""The secrets file: mode 0600, git-ignored, merged on write, untrusted on read; env names."""

from __future__ import annotations

import stat
import subprocess

import pytest

from trproxy.apptest.secretfile import (
    GITIGNORE,
    SECRETS,
    env_name,
    from_env,
    ignore_secrets,
    load_secrets,
    save_secret,
    use_secrets,
)
from trproxy.protocols import registry
from trproxy.protocols.registry import by_name
from trproxy.store.errors import FormatError


def test_saved_secrets_are_private_ignored_by_git_and_merged(tmp_path):
    save_secret(tmp_path, "login.password", "S3cr3t!")
    save_secret(tmp_path, "cookie.sid", "abc: def")  # YAML-special characters survive
    path = tmp_path / SECRETS
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secrets(tmp_path) == {"login.password": "S3cr3t!", "cookie.sid": "abc: def"}
    assert (tmp_path / GITIGNORE).read_text().splitlines()[-1] == SECRETS
    assert not list(tmp_path.glob("*.tmp-*"))
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test-1.yaml").write_text("x: 1\n")
    status = subprocess.run(["git", "-C", str(tmp_path), "status", "--porcelain", "--untracked-files=all"],
                            capture_output=True, text=True, check=True).stdout
    assert "tests/test-1.yaml" in status and SECRETS not in status  # git never sees it


def test_an_existing_gitignore_is_extended_once(tmp_path):
    (tmp_path / GITIGNORE).write_text("reports/")
    ignore_secrets(tmp_path)
    ignore_secrets(tmp_path)
    assert (tmp_path / GITIGNORE).read_text() == f"reports/\n{SECRETS}\n"


@pytest.mark.parametrize("text", ["- a\n- b\n", "a: [1]\n", "{{{\n", "1: x\n"])
def test_a_malformed_secrets_file_is_a_clear_error(tmp_path, text):
    (tmp_path / SECRETS).write_text(text)
    with pytest.raises(FormatError, match=r"\.secrets\.yaml"):
        load_secrets(tmp_path)


def test_environment_names():
    assert env_name("login.password") == "TRPROXY_SECRET_LOGIN_PASSWORD"
    assert env_name("cookie.session-2") == "TRPROXY_SECRET_COOKIE_SESSION_2"
    assert from_env("login.password", {"TRPROXY_SECRET_LOGIN_PASSWORD": "x"}) == "x"
    assert from_env("login.password", {}) is None


def test_recording_runs_save_each_new_name_at_once_replaying_ones_do_not(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_overrides", {})  # this process's other tests keep theirs
    (tmp_path / "config.yaml").write_text("http:\n  secret_fields: [pin]\n")
    vault = use_secrets(tmp_path, record=True)
    http = by_name("http")
    assert http is not None and http.recorder.args[0].redaction.vault is vault  # the dialect redacts with it
    assert "pin" in http.recorder.args[0].redaction.fields  # config.yaml still applies
    vault.secret("1234", "login.pin")
    assert load_secrets(tmp_path) == {"login.pin": "1234"}
    replay = use_secrets(tmp_path, record=False)
    assert replay.values == {"login.pin": "1234"}
    replay.secret("other", "x")
    assert load_secrets(tmp_path) == {"login.pin": "1234"}

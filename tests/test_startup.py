"""What keeps `trproxy test`'s start short (issue 13, Fast): the modules that are not
loaded before the app starts, the CA environment read from files, the quick exit of the
command, and the app stopped on its pidfd."""

from __future__ import annotations

import asyncio
import atexit
import json
import subprocess
import sys

import pytest

from trproxy import cli
from trproxy.apptest import command
from trproxy.tls.ca import CertificateAuthority, ca_env, installed_ca_env

HEAVY = ("mitmproxy.http", "mitmproxy.certs", "cryptography.x509", "OpenSSL", "h2.connection", "wsproto")


def _loaded_after(code: str) -> list[str]:
    """The heavy modules loaded in a fresh interpreter after ``code`` ran."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport json, sys\n"
                          f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_what_trproxy_test_loads_before_the_app_starts_leaves_out_mitmproxy_h2_cryptography():
    assert _loaded_after("import trproxy.cli, trproxy.apptest.command, trproxy.redirect.redirector\n"
                         "from trproxy.tls.ca import installed_ca_env") == []


def test_the_http_dialect_imports_its_codecs_when_the_first_one_is_made():
    assert _loaded_after("import trproxy.protocols.http.readable") == []
    assert "mitmproxy.http" in _loaded_after(
        "from trproxy.protocols.http import DIALECT\nDIALECT.replayer()")
    from trproxy.protocols.http import DIALECT, HttpRecorder, HttpReplayer, check_fault

    assert isinstance(DIALECT.recorder(), HttpRecorder)
    assert isinstance(DIALECT.replayer(scheme="https", authority="a:443"), HttpReplayer)
    assert DIALECT.check_fault is not None
    with pytest.raises(ValueError, match="status from 200 to 599"):
        DIALECT.check_fault(type("F", (), {"error": "BOOM"})())  # type: ignore[arg-type]
    assert check_fault.__module__.endswith("render")
    with pytest.raises(AttributeError):
        import trproxy.protocols.http as http

        http.NoSuchThing  # noqa: B018


def test_config_yaml_imports_only_the_dialects_it_has_sections_for():
    loaded = subprocess.run([sys.executable, "-c", (
        "import sys\nfrom trproxy.protocols.registry import by_name, configure\n"
        "configure({'http': {'max_body_mb': 1}, 'noise': {}})\n"
        "assert by_name('http').name == 'http'\n"
        "print(sorted(m for m in sys.modules if m.startswith('trproxy.protocols.') and m.count('.') == 2))")],
        capture_output=True, text=True, check=True).stdout.strip()
    assert "trproxy.protocols.http" in loaded
    for other in ("kafka", "postgres", "mysql", "redis", "dns"):
        assert f"trproxy.protocols.{other}'" not in loaded


def test_installed_ca_env_is_ca_env_from_the_files_alone(tmp_path):
    assert installed_ca_env(tmp_path) is None  # no CA yet: CertificateAuthority makes it
    ca = CertificateAuthority(tmp_path)
    assert installed_ca_env(tmp_path) == ca_env(ca)
    assert _loaded_after(f"from trproxy.tls.ca import installed_ca_env\n"
                         f"assert installed_ca_env({str(tmp_path)!r})") == []


def test_entry_runs_the_exit_handlers_then_ends_the_process_after_trproxy_test(monkeypatch):
    ran: list[str] = []
    atexit.register(ran.append, "handler")
    monkeypatch.setattr(cli, "main", lambda argv: 3)
    monkeypatch.setattr(cli.sys, "gettrace", lambda: None)  # whatever runs these tests
    monkeypatch.setattr(cli.sys, "getprofile", lambda: None)

    class Exited(Exception):
        pass

    def _exit(code: int) -> None:
        ran.append(f"_exit {code}")
        raise Exited

    monkeypatch.setattr(cli.os, "_exit", _exit)
    with pytest.raises(Exited):
        cli.entry(["test", "--", "true"])
    assert ran == ["handler", "_exit 3"]
    with pytest.raises(SystemExit) as other:  # the other commands exit as ever
        cli.entry(["record", "--", "true"])
    assert other.value.code == 3
    monkeypatch.setattr(cli.sys, "gettrace", lambda: print)  # a tracer (coverage) writes at exit
    with pytest.raises(SystemExit):
        cli.entry(["test", "--", "true"])


def test_stop_terminates_the_app_and_kills_one_that_ignores_sigterm(monkeypatch):
    monkeypatch.setattr(command, "_STOP_GRACE", 0.5)

    async def stop(cmd: list[str]) -> int | None:
        child = subprocess.Popen(cmd)
        await asyncio.sleep(0.3)  # the shell installs its trap
        await command._stop(child)
        return child.returncode

    assert asyncio.run(stop(["sleep", "30"])) == -15
    assert asyncio.run(stop(["sh", "-c", "trap '' TERM; sleep 30 & wait; sleep 30"])) == -9


def test_stop_of_an_app_that_ended_already_returns_its_status():
    async def stop() -> int | None:
        child = subprocess.Popen(["sh", "-c", "exit 7"])
        assert await command._exited(child, 30)
        await command._stop(child)
        return child.returncode

    assert asyncio.run(stop()) == 7


def test_the_ca_reads_its_key_when_it_first_signs(tmp_path):
    first = CertificateAuthority(tmp_path)  # none yet: made at once, its files are there
    assert first.cert_path.is_file() and first.key_path.is_file()
    again = CertificateAuthority(tmp_path)
    assert again._loaded is None  # nothing read: a run without TLS never loads the key
    leaf = again.leaf_path("example.test")
    assert again._loaded is not None
    assert again.certificate.fingerprint() == first.certificate.fingerprint()
    assert leaf.read_bytes().count(b"BEGIN CERTIFICATE") == 2  # the leaf and our CA

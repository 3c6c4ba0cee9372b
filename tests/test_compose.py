"""`trproxy compose`'s files: the override it generates and the recorded service addresses,
which come from a recording directory and are therefore untrusted input."""

from __future__ import annotations

from pathlib import Path

import pytest

from trproxy.compose import HOSTS_FILE, _override, _recorded_hosts
from trproxy.proxy.runner import RunError


def test_recorded_hosts_are_checked(tmp_path: Path) -> None:
    hosts = tmp_path / HOSTS_FILE
    with pytest.raises(RunError, match="record with `trproxy compose` first"):
        _recorded_hosts(tmp_path, ["redis"])
    hosts.write_text("redis: 10.1.2.3\nunrelated: not-checked\n")
    assert _recorded_hosts(tmp_path, ["redis"]) == {"redis": "10.1.2.3"}
    hosts.write_text("redis: 'evil.example:1.2.3.4'\n")
    with pytest.raises(RunError, match="is not an IP address"):
        _recorded_hosts(tmp_path, ["redis"])
    hosts.write_text("- redis\n")
    with pytest.raises(RunError, match="not a mapping"):
        _recorded_hosts(tmp_path, ["redis"])


def test_override_sets_the_cgroup_parent_the_ca_and_the_recorded_hosts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRPROXY_HOME", str(tmp_path / "home"))
    doc = _override("/trproxy-compose-1", ["app"], {"redis": "10.1.2.3"}, tls=True)
    app = doc["services"]["app"]
    assert list(doc["services"]) == ["app"] and app["cgroup_parent"] == "/trproxy-compose-1"
    assert app["extra_hosts"] == ["redis:10.1.2.3"]
    assert app["environment"]["SSL_CERT_FILE"] == "/etc/trproxy/trproxy-ca-bundle.pem"
    assert app["environment"]["NODE_EXTRA_CA_CERTS"] == "/etc/trproxy/trproxy-ca-cert.pem"
    assert app["environment"]["PGCHANNELBINDING"] == "disable"
    assert f"{tmp_path}/home/trproxy-ca-bundle.pem:/etc/trproxy/trproxy-ca-bundle.pem:ro" in app["volumes"]
    assert "environment" not in _override("/p", ["app"], {}, tls=False)["services"]["app"]


@pytest.mark.parametrize("command", [["attach", "--container", "no-such-container"], ["compose"]])
def test_no_redirect_is_refused_where_the_redirect_is_the_point(
        command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`attach --no-redirect` used to say "attached" and redirect nothing."""
    from trproxy.cli import main

    assert main([*command, "--no-redirect", "--dir", str(tmp_path)]) == 2
    assert "--no-redirect leaves nothing to do" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # and no test set was made

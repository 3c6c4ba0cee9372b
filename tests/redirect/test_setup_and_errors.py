"""Errors say what to do; cgroup lookup (paths, Docker ids); doctor."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.redirect.conftest import require_root
from trproxy.bpf import loader
from trproxy.redirect import RedirectError, Redirector, cgroup, doctor, redirector

CID = "3f4e5d6c7b8a" + "0" * 52


def test_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(RedirectError, match="needs root.*sudo"):
        Redirector.create(1234)


def test_no_cgroup2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(cgroup, "cgroup2_mount", lambda: None)
    with pytest.raises(RedirectError, match="no cgroup v2 hierarchy is mounted"):
        Redirector.create(1234)


@pytest.mark.parametrize(
    ("error", "advice"),
    [
        (loader.BccMissingError("bcc is not importable: x"), "make setup"),
        (
            loader.KernelHeadersMissingError("no kernel headers for 6.18"),
            "scripts/kernel-headers.sh",
        ),
        (loader.BpfError("kernel rejected trp_connect4"), "trproxy doctor"),
    ],
)
def test_load_errors_are_actionable(
    monkeypatch: pytest.MonkeyPatch, error: Exception, advice: str
) -> None:
    def fail() -> loader.Programs:
        raise error

    monkeypatch.setattr(loader, "load", fail)
    with pytest.raises(RedirectError, match=advice) as e:
        redirector.load_programs()
    assert e.value.__cause__ is error


def _fake_cgroup(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "cgroup.procs").write_text("")
    return path


def test_resolve_paths_and_docker_ids(tmp_path: Path) -> None:
    systemd = _fake_cgroup(tmp_path / "system.slice" / f"docker-{CID}.scope")
    cgroupfs = _fake_cgroup(tmp_path / "kubepods" / "docker" / ("ab" * 32))
    assert cgroup.resolve(str(systemd), tmp_path) == systemd
    assert cgroup.resolve(f"/system.slice/docker-{CID}.scope", tmp_path) == systemd
    assert cgroup.resolve(f"system.slice/docker-{CID}.scope", tmp_path) == systemd
    assert cgroup.resolve(CID, tmp_path) == systemd
    assert cgroup.resolve(CID[:12], tmp_path) == systemd
    assert cgroup.resolve("ab" * 6, tmp_path) == cgroupfs
    with pytest.raises(RedirectError, match="no cgroup for container"):
        cgroup.resolve("0123456789ab", tmp_path)
    with pytest.raises(RedirectError, match="neither a cgroup"):
        cgroup.resolve("nope", tmp_path)
    _fake_cgroup(tmp_path / "system.slice" / f"docker-{CID[:12]}{'f' * 52}.scope")
    with pytest.raises(RedirectError, match="ambiguous"):
        cgroup.resolve(CID[:12], tmp_path)


def test_resolve_container_ids_in_every_layout(tmp_path: Path) -> None:
    """Ids in any case and any prefix length, under any parent: cgroupfs (docker/<id>, a
    --cgroup-parent, Kubernetes' kubepods/<qos>/pod<uid>/<id>) and systemd scopes of any
    runtime (kubepods-...-pod<uid>.slice/cri-containerd-<id>.scope)."""
    ids = {name: name[:2] * 32 for name in ("aa", "bb", "cc", "dd")}
    layouts = {
        "aa": tmp_path / "my-parent" / ids["aa"],
        "bb": tmp_path / "kubepods" / "burstable" / "pod1234-5678" / ids["bb"],
        "cc": (tmp_path / "kubepods.slice" / "kubepods-besteffort.slice"
               / "kubepods-besteffort-pod1234_5678.slice" / f"cri-containerd-{ids['cc']}.scope"),
        "dd": tmp_path / "docker" / ids["dd"],
    }
    for name, path in layouts.items():
        _fake_cgroup(path)
        _fake_cgroup(path / "init.scope")  # a container's own sub-cgroup is not a container
        assert cgroup.resolve(ids[name], tmp_path) == path
        assert cgroup.resolve(ids[name][:3].upper(), tmp_path) == path
    _fake_cgroup(tmp_path / "docker" / ("d" * 63 + "e"))
    with pytest.raises(RedirectError, match="ambiguous"):
        cgroup.resolve("DDD", tmp_path)
    assert cgroup.find_containers("d" * 64, tmp_path) == [layouts["dd"]]


def test_owner_liveness() -> None:
    start = cgroup.proc_start_time(os.getpid())
    assert start is not None
    assert cgroup.owner_alive(os.getpid(), start)
    assert not cgroup.owner_alive(os.getpid(), start + 1)  # same pid, another process
    assert cgroup.RUN_RE.match(f"run-{os.getpid()}-{start}-0")


@pytest.mark.root
def test_doctor_all_green_here() -> None:
    require_root()
    checks = doctor()
    assert {c.name for c in checks} >= {
        "root",
        "cgroup v2",
        "BTF",
        "bcc importable",
        "kernel headers",
        "bpffs",
    }
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    assert all(c.fix == "" for c in checks)


@pytest.mark.root
def test_unknown_peers_and_bad_arguments() -> None:
    require_root()
    with Redirector.create(40000) as r:
        assert r.original_destination(("127.0.0.1", 1), ("127.0.0.1", 40000)) is None
        assert r.original_destination(("::1", 1, 0, 0), ("::1", 40000, 0, 0)) is None
        assert r.original_destination(("::ffff:127.0.0.1", 1, 0, 0), ("::1", 40000, 0, 0)) is None
        with pytest.raises(RedirectError, match="not an IP address"):
            r.refuse([("localhost", 80)])
        with pytest.raises(RedirectError, match="invalid port"):
            r.allow_only([("127.0.0.1", 0)])
        assert r.listening_ports() == set()
    assert not os.path.exists(r.cgroup_path)
    with pytest.raises(OSError):
        r.enter()  # the cgroup is gone
    with pytest.raises(RedirectError, match="invalid proxy port"):
        Redirector.create(0)
    with pytest.raises(RedirectError, match="invalid proxy address"):
        Redirector.create(40000, proxy_ipv4="localhost")

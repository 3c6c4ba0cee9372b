"""``trproxy compose``: record or replay the services of a Compose project without editing
its files.

An override file (next to nothing else: a temp dir) puts the chosen services under one
cgroup parent of trproxy's and mounts trproxy's CA with the usual trust variables. The
project is created first (``up --no-start``: networks exist, nothing runs), the redirect is
attached to the parent with the gateway of the services' network, and only then does the
project start: the services' first connections are already redirected, and restarts keep
them under the parent. Replay starts only the chosen services (``--no-deps``); the
other services' names resolve to the addresses they had when recording (``extra_hosts``,
kept in ``DIR/compose-hosts.yaml``), where the redirect answers for them. On the way out the
project is taken down (``down``: its containers and networks) and the override and cgroup
parent are removed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .proxy.context import Mode
from .proxy.runner import RunError, RunOptions, run
from .redirect import cgroup as cgroups
from .store import safeio
from .store.errors import StoreError
from .store.yamlio import read_document

HOSTS_FILE = "compose-hosts.yaml"
CA_DIR = "/etc/trproxy"  # where the CA files are mounted in the containers


def compose_cli() -> list[str]:
    """``docker compose`` (v2 plugin) when present, else ``docker-compose`` (v1)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    if (v1 := shutil.which("docker-compose")) is not None:
        return [v1]
    raise RunError("neither `docker compose` nor `docker-compose` is installed")


@dataclass
class Project:
    files: list[Path]
    name: str
    services: list[str] = field(default_factory=list)  # the ones redirected
    override: Path = Path()
    cli: list[str] = field(default_factory=list)

    def compose(self, *args: str, check: bool = True) -> str:
        files = [a for f in [*self.files, self.override] if str(f) != "." for a in ("-f", str(f))]
        r = subprocess.run([*self.cli, *files, "-p", self.name, *args], capture_output=True,
                           text=True, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RunError(f"{' '.join(self.cli[-1:])} {' '.join(args)}: {r.stderr.strip()[-800:]}")
        return r.stdout


def _docker(*args: str) -> str:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RunError(f"docker {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


def _container(project: Project, service: str) -> str:
    ids = project.compose("ps", "-q", service).split()
    if not ids:
        raise RunError(f"Compose service {service} has no container")
    return ids[0]


def _gateway(container: str) -> tuple[str, str]:
    """Where a created (not yet started) container will reach the host: the gateway of its
    first network, loopback for ``network_mode: host``."""
    networks = json.loads(_docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", container) or "{}")
    if not networks or "host" in networks:
        return "127.0.0.1", "::1"
    ipam = json.loads(_docker("network", "inspect", "-f", "{{json .IPAM.Config}}", next(iter(networks))))
    # a subnet given without a gateway gets its first address (as the engine assigns it)
    gateways = [c.get("Gateway") or str(next(ipaddress.ip_network(c["Subnet"], strict=False).hosts()))
                for c in ipam or [] if c.get("Gateway") or c.get("Subnet")]
    v4 = [g for g in gateways if ":" not in g]
    v6 = [g for g in gateways if ":" in g]
    if not v4:
        raise RunError(f"network {next(iter(networks))} has no IPv4 gateway: its containers cannot reach trproxy")
    return v4[0], (v6 or ["::1"])[0]


def _addresses(project: Project, others: list[str]) -> dict[str, str]:
    """{service: its IPv4 address} of the running services not redirected."""
    found = {}
    for service in others:
        with contextlib.suppress(RunError):
            networks = json.loads(_docker("inspect", "-f", "{{json .NetworkSettings.Networks}}",
                                          _container(project, service)) or "{}")
            for net in networks.values():
                if net.get("IPAddress"):
                    found[service] = net["IPAddress"]
                    break
    return found


def _recorded_hosts(root: Path, others: list[str]) -> dict[str, str]:
    """{service: address} as recorded, for the services replay does not start (the
    recording directory is untrusted input: read as the store reads, every value checked)."""
    path = root / HOSTS_FILE
    try:
        doc = read_document(path, root) if safeio.is_file(path, root) else None
    except (StoreError, OSError) as exc:
        raise RunError(f"{path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise RunError(f"{path} is missing or not a mapping: record with `trproxy compose` first")
    hosts = {}
    for name in others:
        if name in doc:
            try:
                hosts[name] = str(ipaddress.ip_address(str(doc[name])))
            except ValueError:
                raise RunError(f"{path}: {name}: {doc[name]!r} is not an IP address") from None
    return hosts


def _override(parent: str, services: list[str], hosts: dict[str, str], tls: bool) -> dict:
    env: dict[str, str] = {}
    volumes: list[str] = []
    if tls:
        from .tls.ca import CertificateAuthority, ca_env  # mitmproxy: only when needed

        for name, path in ca_env(CertificateAuthority()).items():
            if os.path.isabs(path) and os.path.exists(path):
                inside = f"{CA_DIR}/{os.path.basename(path)}"
                env[name] = inside
                if f"{path}:{inside}:ro" not in volumes:
                    volumes.append(f"{path}:{inside}:ro")
            else:
                env[name] = path
    spec: dict = {"cgroup_parent": parent}
    if env:
        spec.update(environment=env, volumes=volumes)
    if hosts:
        spec["extra_hosts"] = [f"{name}:{ip}" for name, ip in sorted(hosts.items())]
    return {"version": "2.4", "services": {s: spec for s in services}}


def _remove_parent(parent: str) -> None:
    """The parent cgroup in every hierarchy (v2, and v1 controllers beside it), once empty."""
    mount = cgroups.cgroup2_mount()
    roots = {Path(mount)} if mount else set()
    roots |= {p for p in Path("/sys/fs/cgroup").glob("*") if p.is_dir()}
    for root in roots:
        path = root / parent.strip("/")
        if not path.is_dir():
            continue
        for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                child.rmdir()
        with contextlib.suppress(OSError):
            path.rmdir()


def run_compose(files: list[Path], name: str | None, services: list[str], opts: RunOptions) -> int:
    """Record or replay ``services`` (default: all) of the project; ``opts.command`` (e.g.
    the project's tests) runs on the host once everything is up, else until Ctrl-C."""
    files = files or [Path("docker-compose.yml")]
    for f in files:
        if not f.is_file():
            raise RunError(f"no Compose file {f}")
    name = name or re.sub(r"[^a-z0-9_-]", "", files[0].resolve().parent.name.lower()) or "default"
    project = Project(files, name, cli=compose_cli())
    every = project.compose("config", "--services").split()
    unknown = sorted(set(services) - set(every))
    if unknown:
        raise RunError(f"no service {', '.join(unknown)} in the project (it has {', '.join(every)})")
    project.services = services or every
    others = [s for s in every if s not in project.services]
    replay = opts.mode is Mode.REPLAY
    hosts_file = opts.root / HOSTS_FILE
    hosts: dict[str, str] = {}
    if replay and others:
        hosts = _recorded_hosts(opts.root, others)
    parent = f"/trproxy-compose-{os.getpid()}"
    mount = cgroups.require_mount()
    workdir = Path(tempfile.mkdtemp(prefix="trproxy-compose-"))
    project.override = workdir / "override.yml"
    project.override.write_text(yaml.safe_dump(_override(parent, project.services, hosts, opts.tls)))
    up = ["up", "-d", *(["--no-deps", *project.services] if replay else [])]
    try:
        (mount / parent.strip("/")).mkdir(exist_ok=True)
        project.compose("up", "--no-start", *(["--no-deps", *project.services] if replay else []))
        opts.cgroup = parent
        opts.attach_hosts = _gateway(_container(project, project.services[0]))

        def start() -> None:
            project.compose(*up)
            if not replay and others:
                safeio.write_bytes(hosts_file, opts.root,
                                   yaml.safe_dump(_addresses(project, others)).encode())
            print(f"trproxy: compose project {name} up; redirected: {', '.join(project.services)}",
                  file=sys.stderr, flush=True)

        opts.attached = start
        return run(opts)
    finally:
        project.compose("down", "--remove-orphans", check=False)
        _remove_parent(parent)
        shutil.rmtree(workdir, ignore_errors=True)

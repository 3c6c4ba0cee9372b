"""A private Docker engine for the container tests: its own dockerd, data and exec roots,
socket, pid file and bridge, no iptables rules, no registry; torn down completely.

The daemon never touches the host's firewall (``--iptables=false --ip-forward=false``) nor
``docker0``: its default bridge is one this helper creates with a free 10.x.y.0/24, and
user-defined networks get their own bridge names and free subnets too, so two test sessions
on one machine do not collide. The image is a ``docker import`` of a tiny rootfs whose
``/usr`` is the host's, bind-mounted read-only when a container runs (Debian's merged /usr:
``/bin``, ``/lib``... are symlinks into it): python3, redis-cli and psql as on the host.

Teardown (also after a failed start): containers removed, daemon stopped by pid (then its
containerd and shims, found by our own socket path, by pid), mounts under the temp dir
unmounted, bridges deleted, the cgroup directories the daemon created removed, the temp
dir deleted.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.proc import stop
from tests.support.services import ends_with_tests

IMAGE = "trproxy-test:1"
CGROUP_ROOT = Path("/sys/fs/cgroup")


class DockerUnavailable(RuntimeError):
    """dockerd is not installed (run `make setup`) or does not start here."""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-4", "-j", "route", "show", "table", "all"], check=True,
                         capture_output=True, text=True).stdout
    nets = []
    for route in json.loads(out or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default":
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.ip_network(dst, strict=False))
    return nets


def free_subnet() -> ipaddress.IPv4Network:
    """A random 10.x.y.0/24 that no route of this host overlaps."""
    used = _used_networks()
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{secrets.randbelow(200) + 50}.{secrets.randbelow(256)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise DockerUnavailable("no free 10.x.y.0/24 for a test bridge")


def _rootfs_tar() -> bytes:
    """A rootfs of empty directories and merged-/usr symlinks; ``/usr`` is mounted at run."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("usr", "etc", "tmp", "proc", "sys", "dev", "run", "var", "root"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        for link in ("bin", "lib", "lib64", "sbin"):
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, f"usr/{link}"
            tar.addfile(info)
        for name, text in (("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
                           ("etc/nsswitch.conf", b"hosts: files dns\n")):  # /etc/hosts first
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    return buf.getvalue()


@dataclass
class Network:
    name: str
    bridge: str
    subnet: ipaddress.IPv4Network

    @property
    def gateway(self) -> str:
        """The host's address on this network: where containers reach the host."""
        return str(self.subnet.network_address + 1)


@dataclass
class DockerDaemon:
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="trpd-")))
    proc: subprocess.Popen | None = None
    bridge: Network | None = None
    networks: list[Network] = field(default_factory=list)
    cgroup_parents: list[str] = field(default_factory=list)  # --cgroup-parent values used

    @property
    def socket(self) -> Path:
        return self.tmp / "sock"

    @property
    def env(self) -> dict[str, str]:
        """Environment for the ``docker`` client (and trproxy) to use this daemon."""
        return {"DOCKER_HOST": f"unix://{self.socket}"}

    def start(self, timeout: float = 60.0) -> DockerDaemon:
        dockerd = shutil.which("dockerd")
        if dockerd is None or shutil.which("docker") is None:
            raise DockerUnavailable("dockerd or docker not found: run `make setup` (installs docker.io)")
        try:
            self.bridge = self._make_bridge()
            log = open(self.tmp / "dockerd.log", "wb")
            self.proc = subprocess.Popen(
                [dockerd, "--data-root", str(self.tmp / "data"), "--exec-root", str(self.tmp / "x"),
                 "--pidfile", str(self.tmp / "dockerd.pid"), "-H", f"unix://{self.socket}",
                 "--iptables=false", "--ip-forward=false", "--ip-masq=false",
                 "--userland-proxy=false", f"--bridge={self.bridge.bridge}"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=ends_with_tests())
            deadline = time.monotonic() + timeout
            while True:
                if self.proc.poll() is not None:
                    raise DockerUnavailable(f"dockerd exited: {self.log_tail()}")
                probe = subprocess.run(["docker", "version", "-f", "{{.Server.Version}}"],
                                       env=dict(os.environ, **self.env), capture_output=True, text=True)
                if probe.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise DockerUnavailable(f"dockerd not ready after {timeout}s: {self.log_tail()}")
                time.sleep(0.2)
            subprocess.run(["docker", "import", "-", IMAGE], input=_rootfs_tar(), check=True,
                           env=dict(os.environ, **self.env), capture_output=True)
        except BaseException:
            self.destroy()
            raise
        return self

    def _make_bridge(self, prefix: str = "trpd") -> Network:
        subnet = free_subnet()
        name = prefix + secrets.token_hex(4)  # IFNAMSIZ: at most 15 characters
        _ip("link", "add", name, "type", "bridge")
        net = Network(name, name, subnet)
        _ip("addr", "add", f"{net.gateway}/{subnet.prefixlen}", "dev", name)
        _ip("link", "set", name, "up")
        return net

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.tmp / "dockerd.log").read_text(errors="replace").splitlines()[-lines:])
        return ""

    def docker(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        """Run the docker client against this daemon; its stdout, stripped."""
        r = subprocess.run(["docker", *args], env=dict(os.environ, **self.env), capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout.strip()

    def network(self, name: str) -> Network:
        """A user-defined bridge network with a free subnet and a bridge of our naming."""
        subnet = free_subnet()
        net = Network(name, "trpn" + secrets.token_hex(4), subnet)
        self.docker("network", "create", "--subnet", str(subnet), "--gateway", net.gateway,
                    "-o", f"com.docker.network.bridge.name={net.bridge}", name)
        self.networks.append(net)
        return net

    def run(self, name: str, *cmd: str, network: str | None = None, options: tuple[str, ...] = ()) -> str:
        """Start a detached container of the test image (host's /usr read-only); its id."""
        net = ["--network", network] if network else []
        if "--cgroup-parent" in options:
            self.cgroup_parents.append(options[options.index("--cgroup-parent") + 1])
        return self.docker("run", "-d", "--name", name, *net, "-v", "/usr:/usr:ro", *options,
                           IMAGE, *cmd)

    def exec(self, container: str, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "exec", container, *cmd], env=dict(os.environ, **self.env),
                              capture_output=True, text=True, timeout=timeout)

    def pid(self, container: str) -> int:
        return int(self.docker("inspect", "-f", "{{.State.Pid}}", container))

    def address(self, container: str, network: str) -> str:
        return self.docker("inspect", "-f",
                           f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}', container)

    # --- teardown -------------------------------------------------------------------------

    def destroy(self) -> None:
        """Remove everything this daemon made; safe to call twice and after a failed start."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                ids = self.docker("ps", "-aq", timeout=30).split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False, timeout=60)
            for net in self.networks:
                with contextlib.suppress(Exception):
                    self.docker("network", "rm", net.name, check=False, timeout=30)
            self._stop_daemon()
        self._kill_leftover_processes()
        self._unmount()
        for net in [*self.networks, *([self.bridge] if self.bridge else [])]:
            if Path(f"/sys/class/net/{net.bridge}").exists():
                with contextlib.suppress(subprocess.CalledProcessError):
                    _ip("link", "del", net.bridge)
        self.networks, self.bridge = [], None
        self._remove_cgroups()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _stop_daemon(self) -> None:
        assert self.proc is not None
        stop(self.proc, timeout=30)

    def _kill_leftover_processes(self) -> None:
        """containerd and shims started for this daemon (their command lines name our temp
        dir) that outlived it: ended by pid."""
        marker = str(self.tmp).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)

    def _unmount(self) -> None:
        prefix = str(self.tmp) + "/"
        with open("/proc/self/mounts") as f:
            points = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)

    @staticmethod
    def _docker_cgroup_dirs() -> list[Path]:
        return [p for p in CGROUP_ROOT.glob("*/docker") if p.is_dir()] + (
            [CGROUP_ROOT / "docker"] if (CGROUP_ROOT / "docker" / "cgroup.procs").exists() else [])

    def _remove_cgroups(self) -> None:
        """The ``docker`` parents in each hierarchy and the ``--cgroup-parent`` ones the
        tests named, if now empty (a container's own cgroup goes with the container). Also
        a ``docker`` parent that was there before: another test session's daemon may have
        made it, and an empty one is made again by the engine when it needs it."""
        named = [p for name in self.cgroup_parents for p in CGROUP_ROOT.glob(f"*/{name.strip('/')}")]
        for parent in set(self._docker_cgroup_dirs()) | set(named):
            for child in sorted((p for p in parent.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    child.rmdir()
            with contextlib.suppress(OSError):
                parent.rmdir()

"""`trproxy attach` against containers of a real Docker engine (a private dockerd:
tests.support.docker): record a container's Redis traffic, stop the server, replay, and
compare what the container's redis-cli printed.

Destinations: 127.0.0.1 (host network), the gateway of the test's own bridge (the host's
address there), and a second container on a network the test creates.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.redirect.conftest import enter_cgroup
from tests.support.docker import DockerDaemon
from tests.support.proc import stop, trproxy
from tests.support.services import RedisServer
from trproxy.redirect import RedirectError, cgroup, containers

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect and dockerd need root", allow_module_level=True)


class Attached:
    """A running ``trproxy attach``; its stderr is collected line by line."""

    def __init__(self, daemon: DockerDaemon, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = trproxy("attach", *args, env={**daemon.env, **(env or {})})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"no {text!r} from trproxy attach:\n{''.join(self.lines)}")
            time.sleep(0.05)

    def stop(self) -> str:
        stop(self.proc, timeout=30)
        self._reader.join(10)
        return "".join(self.lines)


Client = Callable[[Attached], list[str]]


def record_then_replay(daemon: DockerDaemon, tmp_path: Path, target: str, client: Client,
                       stop_server: Callable[[], None]) -> tuple[list[str], list[str], str, str]:
    """``client`` under ``attach --mode record``, the server stopped, then under replay:
    (recorded output, replayed output, both runs' stderr, mocks.yaml)."""
    outputs, logs = [], []
    for mode in ("record", "replay"):
        att = Attached(daemon, "--container", target, "--mode", mode, "--dir", str(tmp_path / "rec"))
        try:
            att.wait_for(f"attached to {target}")
            outputs.append(client(att))
        finally:
            logs.append(att.stop())
        assert att.proc.returncode == 0, logs[-1]
        if mode == "record":
            stop_server()
    assert "trproxy: wrote" in logs[0], logs[0]
    return outputs[0], outputs[1], "".join(logs), (tmp_path / "rec" / "test-set-0" / "mocks.yaml").read_text()


def redis_cli(daemon: DockerDaemon, container: str, host: str, port: int, tag: str) -> list[str]:
    """A few redis-cli calls in the container; what each printed (and its exit status)."""
    out = []
    for cmd in (["SET", f"greeting-{tag}", f"hello {tag}"], ["GET", f"greeting-{tag}"],
                ["INCR", f"visits-{tag}"], ["RPUSH", f"list-{tag}", "a", "b"], ["LRANGE", f"list-{tag}", "0", "-1"]):
        r = daemon.exec(container, "redis-cli", "-h", host, "-p", str(port), *cmd)
        out.append(f"{r.returncode} {r.stdout.strip()} {r.stderr.strip()}".strip())
    return out


def expected(tag: str) -> list[str]:
    return ["0 OK", f"0 hello {tag}", "0 1", "0 2", "0 a\nb"]


def test_host_network_container(docker_daemon: DockerDaemon, tmp_path: Path) -> None:
    server = RedisServer().start()
    docker_daemon.run("trp-hostnet", "sleep", "600", options=("--network", "host"))
    try:
        recorded, replayed, log, mocks = record_then_replay(
            docker_daemon, tmp_path, "trp-hostnet",
            lambda att: redis_cli(docker_daemon, "trp-hostnet", "127.0.0.1", server.port, "h"),
            server.stop)
    finally:
        docker_daemon.docker("rm", "-f", "trp-hostnet", check=False)
        server.destroy()
    assert recorded == expected("h")
    assert replayed == recorded
    assert log.count("trproxy: 0 misses") == 2, log
    assert f"destination: 127.0.0.1:{server.port}" in mocks and "kind: redis" in mocks


def test_bridge_container_across_a_restart(docker_daemon: DockerDaemon, tmp_path: Path) -> None:
    """The default bridge: the container reaches the host by the bridge's address, where
    the proxy listens too. ``docker restart`` in the middle: attach follows and says so."""
    assert docker_daemon.bridge is not None
    gateway = docker_daemon.bridge.gateway
    server = RedisServer(host=gateway).start()
    docker_daemon.run("trp-bridge", "sleep", "600")

    def client(att: Attached) -> list[str]:
        before = redis_cli(docker_daemon, "trp-bridge", gateway, server.port, "before")
        docker_daemon.docker("restart", "-t", "0", "trp-bridge")
        att.wait_for("trp-bridge restarted: attached again")
        return before + redis_cli(docker_daemon, "trp-bridge", gateway, server.port, "after")

    try:
        recorded, replayed, log, mocks = record_then_replay(
            docker_daemon, tmp_path, "trp-bridge", client, server.stop)
    finally:
        docker_daemon.docker("rm", "-f", "trp-bridge", check=False)
        server.destroy()
    assert recorded == expected("before") + expected("after")
    assert replayed == recorded
    assert f"reaching the host at {gateway}" in log and log.count("trproxy: 0 misses") == 2, log
    assert f"destination: {gateway}:{server.port}" in mocks
    assert mocks.count("request: [SET,") == 2  # after the restart too


def test_user_defined_network_server_in_another_container(docker_daemon: DockerDaemon,
                                                          tmp_path: Path) -> None:
    """Client and server containers on a network the test creates; the client already
    holds a connection when trproxy attaches, which attach reports."""
    net = docker_daemon.network("trp-net")
    docker_daemon.run("trp-srv", "redis-server", "--port", "6379", "--bind", "0.0.0.0", "--save", "",
                      "--appendonly", "no", "--protected-mode", "no", network=net.name)
    server = docker_daemon.address("trp-srv", net.name)
    holder = (f"import socket, time; s = socket.create_connection(('{server}', 6379)); "
              "print('up', flush=True); time.sleep(600)")
    try:
        deadline = time.monotonic() + 30
        while docker_daemon.exec("trp-srv", "redis-cli", "ping").stdout.strip() != "PONG":
            assert time.monotonic() < deadline, docker_daemon.docker("logs", "trp-srv")
            time.sleep(0.1)
        docker_daemon.run("trp-cli", "python3", "-c", holder, network=net.name)
        while "up" not in docker_daemon.docker("logs", "trp-cli"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        recorded, replayed, log, mocks = record_then_replay(
            docker_daemon, tmp_path, "trp-cli",
            lambda att: redis_cli(docker_daemon, "trp-cli", server, 6379, "u"),
            lambda: docker_daemon.docker("stop", "-t", "0", "trp-srv"))
    finally:
        docker_daemon.docker("rm", "-f", "trp-cli", "trp-srv", check=False)
        docker_daemon.docker("network", "rm", net.name, check=False)
    assert recorded == expected("u")
    assert replayed == recorded
    assert f"reaching the host at {net.gateway}" in log and log.count("trproxy: 0 misses") == 2, log
    assert "1 connection(s) of trp-cli opened before attach are not seen" in log
    assert f"-> {server}:6379" in log
    assert f"destination: {server}:6379" in mocks


def test_attach_resolves_names_prefixes_compose_services_and_cgroup_parents(
        docker_daemon: DockerDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a user may type for --container, against the engine's real cgroups: the
    default cgroupfs layout (docker/<id>) and a --cgroup-parent of the test's own."""
    mount = cgroup.require_mount()
    parent = f"trproxy-test-parent-{os.getpid()}"
    labelled = docker_daemon.run("trp-named", "sleep", "600", options=(
        "--label", f"{containers.COMPOSE_SERVICE}=trpweb", "--cgroup-parent", f"/{parent}"))
    plain = docker_daemon.run("trp-plain", "sleep", "600")
    monkeypatch.setenv("DOCKER_HOST", docker_daemon.env["DOCKER_HOST"])
    try:
        in_parent, in_docker = mount / parent / labelled, mount / "docker" / plain
        assert in_parent.is_dir() and in_docker.is_dir()
        for spec in ("trp-named", "trpweb", labelled, labelled[:5].upper(), f"/{parent}/{labelled}"):
            assert containers.resolve(spec, mount) == in_parent, spec
        assert containers.resolve(plain[:12].upper(), mount) == in_docker
        assert containers.resolve("trp-plain", mount) == in_docker
        docker_daemon.docker("stop", "-t", "0", "trp-plain")
        with pytest.raises(RedirectError, match="trp-plain .* is not running"):
            containers.resolve("trp-plain", mount)
        with pytest.raises(RedirectError, match="neither a cgroup"):
            containers.resolve("trp-no-such-container", mount)
        monkeypatch.setenv("DOCKER_HOST", f"unix://{docker_daemon.tmp}/no-such.sock")
        assert containers.resolve(labelled[:8], mount) == in_parent  # the tree alone
    finally:
        docker_daemon.docker("rm", "-f", "trp-named", "trp-plain", check=False)


def test_attaching_a_cgroup_parent_has_no_gap_across_restarts(docker_daemon: DockerDaemon,
                                                              tmp_path: Path) -> None:
    """A container started with --cgroup-parent, the parent attached with --cgroup: right
    after ``docker restart`` returns, the container's connections are recorded already."""
    assert docker_daemon.bridge is not None
    gateway = docker_daemon.bridge.gateway
    parent = f"trproxy-test-gapless-{os.getpid()}"
    server = RedisServer(host=gateway).start()
    docker_daemon.run("trp-gapless", "sleep", "600", options=("--cgroup-parent", f"/{parent}"))
    att = Attached(docker_daemon, "--cgroup", parent, "--dir", str(tmp_path / "rec"))
    try:
        att.wait_for(f"attached to {parent}")
        before = redis_cli(docker_daemon, "trp-gapless", gateway, server.port, "before")
        docker_daemon.docker("restart", "-t", "0", "trp-gapless")
        after = redis_cli(docker_daemon, "trp-gapless", gateway, server.port, "after")
    finally:
        log = att.stop()
        docker_daemon.docker("rm", "-f", "trp-gapless", check=False)
        server.destroy()
    assert before + after == expected("before") + expected("after")
    assert f"reaching the host at {gateway}" in log and "wrote 10 exchanges" in log, log
    assert "restarted" not in log  # the attached cgroup itself never went away


COMPOSE = """\
version: "2.4"
services:
  app:
    image: {image}
    command: ["sleep", "600"]
    volumes: ["/usr:/usr:ro"]
    depends_on:
      redis: {{condition: service_healthy}}
  redis:
    image: {image}
    command: ["redis-server", "--port", "6379", "--bind", "0.0.0.0", "--save", "",
              "--appendonly", "no", "--protected-mode", "no"]
    volumes: ["/usr:/usr:ro"]
    healthcheck: {{test: ["CMD", "redis-cli", "ping"], interval: 1s, retries: 30}}
networks:
  default:
    driver_opts: {{com.docker.network.bridge.name: {bridge}}}
    ipam: {{config: [{{subnet: "{subnet}"}}]}}
"""

DRIVER = ("test -r \"$SSL_CERT_FILE\" && echo ca-mounted; redis-cli -h redis SET greeting hi; "
          "redis-cli -h redis GET greeting; redis-cli -h redis INCR visits")


def test_compose_project_records_and_replays_without_its_redis(docker_daemon: DockerDaemon,
                                                                tmp_path: Path) -> None:
    """Two services, app and redis: ``trproxy compose --service app`` records app's calls
    while a driver on the host runs in it, takes the project down; replay starts app alone
    (redis never runs) and the driver prints the same."""
    from tests.support.docker import IMAGE, Network, free_subnet
    from trproxy.compose import compose_cli

    subnet, bridge = free_subnet(), f"trpc{os.getpid() % 100000}"
    docker_daemon.networks.append(Network("trpcompose_default", bridge, subnet))  # teardown
    project = tmp_path / "trpcompose"
    project.mkdir()
    (project / "docker-compose.yml").write_text(COMPOSE.format(image=IMAGE, bridge=bridge, subnet=subnet))
    driver = [*compose_cli(), "-f", str(project / "docker-compose.yml"), "-p", "trpcompose",
              "exec", "-T", "app", "sh", "-c", DRIVER]
    runs, pids = [], []
    for mode in ("record", "replay"):
        proc = trproxy("compose", "--mode", mode, "--service", "app", "--dir", str(tmp_path / "rec"),
                       "-f", str(project / "docker-compose.yml"), "--", *driver, env=docker_daemon.env)
        pids.append(proc.pid)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        runs.append((out, err))
        assert docker_daemon.docker("ps", "-aq") == ""  # the project was taken down
    (recorded, record_log), (replayed, replay_log) = runs
    assert recorded.splitlines() == ["ca-mounted", "OK", "hi", "1"]
    assert replayed == recorded
    assert "redirected: app" in record_log and "trproxy: wrote 3 exchanges" in record_log, record_log
    assert "trproxy: 0 misses" in replay_log and "served 3 redis" in replay_log, replay_log
    hosts = (tmp_path / "rec" / "compose-hosts.yaml").read_text()
    assert hosts.startswith("redis: ") and f"destination: {hosts.split()[1]}:6379" in (
        tmp_path / "rec" / "test-set-0" / "mocks.yaml").read_text()
    # each run's cgroup parent is gone (only ours: other sessions may run compose meanwhile)
    assert not [p for pid in pids for p in Path("/sys/fs/cgroup").glob(f"*/trproxy-compose-{pid}")]


def test_where_a_starting_container_reaches_the_host(docker_daemon: DockerDaemon) -> None:
    """While a container starts, a process of its cgroup may still be in the host's network
    namespace (runc's init): the container's namespace decides, not the first process."""
    assert docker_daemon.bridge is not None
    mount = cgroup.require_mount()
    cid = docker_daemon.run("trp-starting", "sleep", "600")
    path = mount / "docker" / cid
    inner = path / "inner"
    host_process = None
    try:
        assert containers.host_addresses(path) == containers.HostAddresses(
            docker_daemon.bridge.gateway, "::1", other_netns=True)
        inner.mkdir()
        (inner / "cgroup.procs").write_text(str(docker_daemon.pid("trp-starting")))
        host_process = subprocess.Popen(["sleep", "60"], preexec_fn=enter_cgroup(str(path)))
        assert cgroup.all_procs(path)[0] == host_process.pid  # looked at first
        assert containers.host_addresses(path) == containers.HostAddresses(
            docker_daemon.bridge.gateway, "::1", other_netns=True)
    finally:
        if host_process is not None:
            host_process.kill()
            host_process.wait()
        docker_daemon.docker("rm", "-f", "trp-starting", check=False)
        for leftover in (inner, path):  # the engine does not remove a cgroup it did not make
            with contextlib.suppress(OSError):
                leftover.rmdir()


def test_install_ca_lets_a_running_container_trust_the_interception(docker_daemon: DockerDaemon,
                                                                     tmp_path: Path) -> None:
    """A running container with a Debian-like trust store and nothing mounted: with
    ``--install-ca`` its curl trusts trproxy's certificate, the HTTPS call is recorded,
    and at exit the container's bundle is as it was."""
    from http.server import ThreadingHTTPServer

    from tests.protocols.http.servers import _Handler
    from trproxy.tls.ca import CertificateAuthority

    assert docker_daemon.bridge is not None
    gateway = docker_daemon.bridge.gateway
    upstream_ca = CertificateAuthority(tmp_path / "upstream-ca")
    httpd = ThreadingHTTPServer((gateway, 0), _Handler)
    httpd.daemon_threads = True
    httpd.socket = upstream_ca.server_context("trp.test", ["http/1.1"]).wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = httpd.server_address[1]
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    docker_daemon.run("trp-tls", "sleep", "600")
    curl = ("curl", "-sS", "--resolve", f"trp.test:{port}:{gateway}", f"https://trp.test:{port}/text")
    try:
        assert docker_daemon.exec("trp-tls", "sh", "-c", f"mkdir -p /etc/ssl/certs && cat "
                                  f"/usr/share/ca-certificates/mozilla/*.crt > {bundle}").returncode == 0
        before = docker_daemon.exec("trp-tls", "sha256sum", bundle).stdout
        att = Attached(docker_daemon, "--container", "trp-tls", "--install-ca", "--tls-ca",
                       str(upstream_ca.cert_path), "--dir", str(tmp_path / "rec"), env={"TRPROXY_HOME": str(tmp_path / "home")})
        try:
            att.wait_for("attached to trp-tls")
            fetched = docker_daemon.exec("trp-tls", *curl)
        finally:
            log = att.stop()
        after = docker_daemon.exec("trp-tls", "sha256sum", bundle).stdout
        left = docker_daemon.exec("trp-tls", "ls", "/etc/trproxy").stdout
    finally:
        docker_daemon.docker("rm", "-f", "trp-tls", check=False)
        httpd.shutdown()
        httpd.server_close()
    assert (fetched.returncode, fetched.stdout) == (0, "hello, world\n"), fetched.stderr + log
    assert f"trproxy's CA installed in the container ({bundle}" in log and "NODE_EXTRA_CA_CERTS=" in log
    assert "trproxy's CA removed from trp-tls" in log and after == before and left == ""
    mocks = (tmp_path / "rec" / "test-set-0" / "mocks.yaml").read_text()
    assert "kind: http" in mocks and "hello, world" in mocks


def test_sidecar_on_the_containers_own_loopback(docker_daemon: DockerDaemon, tmp_path: Path) -> None:
    """Two processes in one container's network namespace: redis-server bound to the
    container's 127.0.0.1 and redis-cli dialling it. The proxy dials that destination
    inside the container's namespace (nothing listens on the host's loopback at that
    port); replayed with the server stopped."""
    from tests.support.services import free_port

    port = free_port()  # free on the host's loopback: a host-side dial would be refused
    docker_daemon.run("trp-sidecar", "sleep", "600")
    try:
        docker_daemon.docker("exec", "-d", "trp-sidecar", "redis-server", "--port", str(port), "--bind",
                             "127.0.0.1", "--save", "", "--appendonly", "no")
        deadline = time.monotonic() + 30
        while docker_daemon.exec("trp-sidecar", "redis-cli", "-p", str(port), "ping").stdout.strip() != "PONG":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        recorded, replayed, log, mocks = record_then_replay(
            docker_daemon, tmp_path, "trp-sidecar",
            lambda att: redis_cli(docker_daemon, "trp-sidecar", "127.0.0.1", port, "s"),
            lambda: docker_daemon.exec("trp-sidecar", "redis-cli", "-p", str(port), "shutdown", "nosave"))
        stopped = docker_daemon.exec("trp-sidecar", "redis-cli", "-p", str(port), "ping")
    finally:
        docker_daemon.docker("rm", "-f", "trp-sidecar", check=False)
    assert "Connection refused" in stopped.stdout + stopped.stderr  # replay had no server
    assert recorded == expected("s")
    assert replayed == recorded
    assert log.count("trproxy: 0 misses") == 2, log
    assert f"destination: 127.0.0.1:{port}" in mocks and mocks.count("request: [SET,") == 1


def test_two_containers_each_reach_their_own_loopback(docker_daemon: DockerDaemon, tmp_path: Path) -> None:
    """Two containers under one attached cgroup parent, each with a redis-server on its
    own 127.0.0.1 at the same port: each one's call is dialled in its own namespace."""
    from tests.support.services import free_port

    parent, port = f"trproxy-test-loopbacks-{os.getpid()}", free_port()
    names = ("trp-lo-a", "trp-lo-b")
    try:
        for name in names:
            docker_daemon.run(name, "sleep", "600", options=("--cgroup-parent", f"/{parent}"))
            docker_daemon.docker("exec", "-d", name, "redis-server", "--port", str(port), "--bind",
                                 "127.0.0.1", "--save", "", "--appendonly", "no")
            deadline = time.monotonic() + 30
            while docker_daemon.exec(name, "redis-cli", "-p", str(port), "SET", "who", name).stdout.strip() != "OK":
                assert time.monotonic() < deadline
                time.sleep(0.1)
        att = Attached(docker_daemon, "--cgroup", parent, "--dir", str(tmp_path / "rec"))
        try:
            att.wait_for(f"attached to {parent}")
            answers = [docker_daemon.exec(n, "redis-cli", "-p", str(port), "GET", "who").stdout.strip()
                       for n in (*names, *reversed(names))]
        finally:
            log = att.stop()
    finally:
        docker_daemon.docker("rm", "-f", *names, check=False)
    assert answers == [*names, *reversed(names)], log
    assert "wrote 4 exchanges" in log, log

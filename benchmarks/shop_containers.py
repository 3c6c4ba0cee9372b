"""The shop's services in containers of a private dockerd: the reference `trproxy test`
is compared with when a project's dependencies come up as containers (docker run / Compose).

``ShopContainers(daemon).start()`` starts PostgreSQL, Redis, the librdkafka mock broker
and the pricing service as four containers at once (as ``docker compose up`` does), waits
until each answers, and gives the shop's environment; ``stop()`` removes them. The
image is the test image of ``tests.support.docker`` (the host's ``/usr`` mounted
read-only), so the servers are the very binaries the local reference runs.
"""

from __future__ import annotations

import pwd
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import ROOT, BenchError
from tests.support.docker import DockerDaemon
from tests.support.kafka_broker import _CHILD as KAFKA_CHILD
from tests.support.services import PostgresServer, _pg_bindir, free_port, wait_port

SHOP = ROOT / "examples" / "shop"
# initdb as the official image does on an empty volume, then a server reachable from the
# bridge (initdb's pg_hba.conf only lets loopback in)
POSTGRES = ("echo trproxy > /tmp/pw && {bin}/initdb -D /tmp/pg -U trproxy --pwfile /tmp/pw "
            "--auth scram-sha-256 -E UTF8 --locale C.UTF-8 >/dev/null && "
            "echo 'host all all 0.0.0.0/0 scram-sha-256' >> /tmp/pg/pg_hba.conf && "
            "exec {bin}/postgres -D /tmp/pg -h 0.0.0.0 -p 5432 -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c unix_socket_directories=''")
HOST_FILES = ("-v", "/etc/passwd:/etc/passwd:ro", "-v", "/etc/group:/etc/group:ro")
# the checkout with its venv, and the interpreter that venv points to (pyenv's, say)
ROOT_RO = ("-v", f"{ROOT}:{ROOT}:ro", "-v", f"{sys.base_prefix}:{sys.base_prefix}:ro")


def _postgres_user() -> str:
    """uid:gid of the host's postgres (the engine looks a name up in the image's passwd,
    before the host's is mounted; initdb then finds it in the mounted one)."""
    pw = pwd.getpwnam("postgres")
    return f"{pw.pw_uid}:{pw.pw_gid}"


def _postgres_ready(pg: PostgresServer, deadline: float) -> None:
    """Until the fresh cluster accepts connections, then CREATE DATABASE trproxy (the local
    reference's cluster has it from its initdb; the official image's POSTGRES_DB does this)."""
    while subprocess.run([_pg_bindir() / "pg_isready", "-h", pg.host, "-p", str(pg.port)],
                         capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise BenchError(f"postgres in its container at {pg.host} is not ready")
        time.sleep(0.05)
    pg.psql(f"CREATE DATABASE {pg.dbname}", dbname="postgres")


@dataclass
class ShopContainers:
    daemon: DockerDaemon
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    pricing_port: int = field(default_factory=free_port)
    shop_port: int = field(default_factory=free_port)
    names: list[str] = field(default_factory=list)
    _env: dict[str, str] = field(default_factory=dict)

    def _run(self, service: str, *cmd: str, options: tuple[str, ...] = ()) -> None:
        name = f"shop-{service}-{self.tag}"
        self.names.append(name)
        self.daemon.run(name, *cmd, options=options)

    def start(self, timeout: float = 60.0) -> ShopContainers:
        runs = [
            ("postgres", ("sh", "-c", POSTGRES.format(bin=_pg_bindir())), ("--user", _postgres_user(), *HOST_FILES)),
            ("redis", ("redis-server", "--port", "6379", "--bind", "0.0.0.0", "--save", "",
                       "--appendonly", "no", "--protected-mode", "no"), ()),
            ("kafka", (sys.executable, "-c", KAFKA_CHILD), ("--network", "host", *ROOT_RO)),
            ("pricing", (sys.executable, str(SHOP / "pricing.py")),
             ("--network", "host", "-e", f"PORT={self.pricing_port}", *ROOT_RO)),
        ]
        errors: list[BaseException] = []

        def run(args: tuple) -> None:
            try:
                self._run(args[0], *args[1], options=args[2])
            except BaseException as e:  # reported below, after every container was tried
                errors.append(e)

        threads = [threading.Thread(target=run, args=(r,)) for r in runs]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise BenchError(f"docker run failed: {errors[0]}")
            self._env = self._wait(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _name(self, service: str) -> str:
        return f"shop-{service}-{self.tag}"

    def _wait(self, timeout: float) -> dict[str, str]:
        pg_host = self.daemon.address(self._name("postgres"), "bridge")
        redis_host = self.daemon.address(self._name("redis"), "bridge")
        wait_port(redis_host, 6379, timeout)
        wait_port("127.0.0.1", self.pricing_port, timeout)
        deadline = time.monotonic() + timeout
        while ":" not in (bootstrap := self.daemon.docker("logs", self._name("kafka"))):
            if time.monotonic() > deadline:
                raise BenchError("the Kafka mock broker's container printed no address")
            time.sleep(0.05)
        wait_port(pg_host, 5432, timeout)
        pg = PostgresServer(host=pg_host, port=5432, datadir=Path("/nonexistent"))
        _postgres_ready(pg, deadline)
        return {
            "DATABASE_URL": pg.dsn,
            "REDIS_URL": f"redis://{redis_host}:6379/0",
            "KAFKA_BOOTSTRAP": next(line for line in bootstrap.splitlines() if ":" in line),
            "PRICING_URL": f"http://127.0.0.1:{self.pricing_port}",
            "PORT": str(self.shop_port),
        }

    def env(self) -> dict[str, str]:
        return dict(self._env)

    def stop(self) -> None:
        if self.names:
            self.daemon.docker("rm", "-f", "-v", *self.names, check=False, timeout=120)
        self.names = []

"""Real servers for tests, started on loopback on free ports and stopped by pid.

PostgreSQL and Redis come from Debian packages (``make setup``). Each server lives in
its own temporary directory, so two test runs on one machine never collide, and a
server can be stopped and started again on the same port (record, stop, replay).

Ports come from ``free_port()``: below the kernel's ephemeral range, so no ``bind(0)`` or
outgoing connection of any process on the machine takes one between the pick and the
server's own bind, and each held by a lock file while in use, so test processes (pytest-xdist
workers, other checkouts) never pick the same one. See docs/testing.md.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql")


def ends_with_tests(first=None):
    """A ``preexec_fn`` for a server a test starts: SIGTERM when the test process dies
    (PR_SET_PDEATHSIG), so a killed pytest leaves no server running; ``first`` before it (a
    demotion: changing the credentials clears the setting). The signal comes when the
    *thread* that started the server ends: only the main thread's servers get it."""
    if threading.current_thread() is not threading.main_thread():
        return first
    from trproxy.proxy.runner import dies_with_us

    last = dies_with_us(sig=signal.SIGTERM)

    def preexec() -> None:
        if first is not None:
            first()
        last()

    return preexec


PORT_LOCKS = Path(tempfile.gettempdir()) / "trproxy-test-ports"
_held: dict[int, int] = {}  # port -> fd of its lock file, while this process uses the port


def _port_range() -> tuple[int, int]:
    """[low, high): the ports below the ephemeral range (ip_local_port_range), from 20000."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    return (20000, ephemeral) if ephemeral > 22000 else (ephemeral - 2000, ephemeral)


def _bindable(port: int) -> bool:
    """Nobody has the port on any IPv4 or IPv6 address (listening, connected, TIME_WAIT)."""
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on every loopback address, reserved for this process until
    ``release_ports()``: the servers started on it can stop and start again on it."""
    low, high = _port_range()
    if not PORT_LOCKS.is_dir():
        PORT_LOCKS.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            PORT_LOCKS.chmod(0o1777)  # for every user's test runs
    for _ in range(1000):
        port = secrets.randbelow(high - low) + low
        if port in _held:
            continue
        fd = os.open(PORT_LOCKS / str(port), os.O_RDONLY | os.O_CREAT, 0o444)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        if _bindable(port):
            _held[port] = fd
            return port
        os.close(fd)
    raise RuntimeError(f"no free port in {low}-{high} after 1000 tries")


def held_ports() -> set[int]:
    return set(_held)


def release_ports(ports: set[int] | None = None) -> None:
    """Let other test processes pick these ports again (all of this process's when None);
    tests/conftest.py releases a test's ports once it is torn down."""
    for port in list(_held) if ports is None else ports:
        fd = _held.pop(port, None)
        if fd is not None:
            os.close(fd)


def wait_port(host: str, port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def _stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _pg_bindir() -> Path:
    versions = sorted(PG_BIN.glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        raise RuntimeError("PostgreSQL server binaries not found: run `make setup`")
    return versions[-1].parent


_pg_templates: dict[tuple, Path] = {}


def _pg_template(server: PostgresServer) -> Path:
    """The data directory of a stopped cluster made by initdb for ``server``'s settings, once
    per process (removed at exit); each server starts on a copy of it."""
    key = (server.user, server.password, server.auth, server.ssl, server.dbname)
    if key not in _pg_templates:
        made = PostgresServer(user=server.user, password=server.password, dbname=server.dbname,
                              auth=server.auth, ssl=server.ssl,
                              datadir=Path(tempfile.mkdtemp(prefix="trproxy-pg-template-")))
        atexit.register(shutil.rmtree, made.datadir, ignore_errors=True)
        try:
            _pg_templates[key] = made._initdb()
        finally:
            release_ports({made.port})
    return _pg_templates[key]


@dataclass
class PostgresServer:
    """A throwaway cluster: user ``trproxy`` / password ``trproxy`` (SCRAM), db ``trproxy``."""

    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    user: str = "trproxy"
    password: str = "trproxy"
    dbname: str = "trproxy"
    auth: str = "scram-sha-256"
    ssl: bool = False  # serve TLS (a self-signed certificate) to clients that ask
    datadir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="trproxy-pg-")))
    proc: subprocess.Popen | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.dbname}"

    def _as_postgres(self) -> dict:
        if os.geteuid() != 0:
            return {"preexec_fn": ends_with_tests()}
        pw = pwd.getpwnam("postgres")

        def demote() -> None:
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)

        return {"preexec_fn": ends_with_tests(demote)}

    def start(self) -> PostgresServer:
        data = self.datadir / "data"
        if not data.exists():  # a copy of this process's cluster made once by initdb: ~10x faster
            if os.geteuid() == 0:
                shutil.chown(self.datadir, "postgres", "postgres")
            subprocess.run(["cp", "-a", _pg_template(self), data], check=True, capture_output=True)
        self._run(data)
        return self

    def _run(self, data: Path) -> None:
        self.proc = subprocess.Popen(
            [_pg_bindir() / "postgres", "-D", data, "-p", str(self.port),
             "-h", "127.0.0.1,::1" if self.host == "127.0.0.1" else self.host],
            stdout=subprocess.DEVNULL, stderr=open(self.datadir / "log", "ab"),
            **self._as_postgres(),
        )
        wait_port(self.host, self.port, proc=self.proc)
        deadline = time.monotonic() + 60
        while subprocess.run([_pg_bindir() / "pg_isready", "-h", self.host, "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"postgres on {self.port} does not accept connections: {data}")
            time.sleep(0.1)

    def _initdb(self) -> Path:
        """A new cluster in ``datadir/data`` with ``dbname`` in it, stopped."""
        data = self.datadir / "data"
        if os.geteuid() == 0:
            shutil.chown(self.datadir, "postgres", "postgres")
        pwfile = self.datadir / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        subprocess.run(
            [_pg_bindir() / "initdb", "-D", data, "-U", self.user, "--pwfile", pwfile,
             "--auth", self.auth, "-E", "UTF8", "--locale", "C.UTF-8"],
            check=True, capture_output=True, **self._as_postgres(),
        )
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                       "max_connections = 200\nunix_socket_directories = ''\n")
            if self.ssl:
                subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                                "-subj", "/CN=localhost", "-keyout", data / "server.key",
                                "-out", data / "server.crt"], check=True, capture_output=True,
                               **self._as_postgres())
                conf.write("ssl = on\n")
        self._run(data)
        try:
            self.psql(f"CREATE DATABASE {self.dbname}", dbname="postgres")
        finally:
            self.stop()
        return data

    def psql(self, sql: str, dbname: str | None = None) -> str:
        env = dict(os.environ, PGPASSWORD=self.password)
        r = subprocess.run(
            ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.host,
             "-p", str(self.port), "-U", self.user, "-d", dbname or self.dbname, "-c", sql],
            capture_output=True, text=True, env=env,
        )
        if r.returncode != 0:
            raise RuntimeError(f"psql failed: {r.stderr}")
        return r.stdout

    def stop(self) -> None:
        _stop(self.proc, signal.SIGINT)  # fast shutdown
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.datadir, ignore_errors=True)


@dataclass
class MariaDBServer:
    """A throwaway MariaDB (Debian's mariadbd) with its own datadir: user ``trproxy`` /
    password ``trproxy`` (mysql_native_password), database ``trproxy``; root only over
    the server's own unix socket."""

    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    user: str = "trproxy"
    password: str = "trproxy"
    dbname: str = "trproxy"
    ssl: bool = False  # serve TLS (a self-signed certificate) to clients that ask
    datadir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="trproxy-mariadb-")))
    proc: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.datadir / "sock"

    def start(self) -> MariaDBServer:
        data = self.datadir / "data"
        owner = ["--user=mysql"] if os.geteuid() == 0 else []
        fresh = not data.exists()
        if fresh:
            if os.geteuid() == 0:
                shutil.chown(self.datadir, "mysql", "mysql")
            # once again on a failure (seen once in a loaded CI rehearsal, its output lost):
            # the second failure names what the tool said
            for attempt in (1, 2):
                done = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", *owner,
                                       "--auth-root-authentication-method=socket", "--skip-test-db"],
                                      capture_output=True, text=True)
                if done.returncode == 0:
                    break
                shutil.rmtree(data, ignore_errors=True)
                if attempt == 2:
                    raise RuntimeError(f"mariadb-install-db failed ({done.returncode}): "
                                       f"{(done.stderr or done.stdout)[-2000:]}")
        tls: list[str] = []
        if self.ssl:
            key, cert = self.datadir / "server.key", self.datadir / "server.crt"
            if not cert.exists():
                subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                                "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                               check=True, capture_output=True)
                if os.geteuid() == 0:
                    shutil.chown(key, "mysql", "mysql")
            tls = [f"--ssl-cert={cert}", f"--ssl-key={key}"]
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={data}", *owner, *tls, f"--port={self.port}",
             f"--bind-address={self.host}", f"--socket={self.socket}",
             f"--pid-file={self.datadir / 'pid'}", f"--log-error={self.datadir / 'log'}",
             "--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M",
             "--innodb-flush-log-at-trx-commit=0", "--skip-log-bin", "--max-connections=200"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.host, self.port, timeout=60, proc=self.proc)
        if fresh:
            self.root_sql(f"CREATE DATABASE {self.dbname}; "
                          f"CREATE USER '{self.user}'@'%' IDENTIFIED BY '{self.password}'; "
                          f"GRANT ALL ON *.* TO '{self.user}'@'%'; FLUSH PRIVILEGES;")
        return self

    def root_sql(self, sql: str) -> str:
        r = subprocess.run(["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot",
                            "-N", "-B", "-e", sql], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"mariadb failed: {r.stderr}")
        return r.stdout

    def stop(self) -> None:
        _stop(self.proc, timeout=30)
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.datadir, ignore_errors=True)


@dataclass
class RedisServer:
    """redis-server with no persistence; ``requirepass`` when a password is given."""

    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    password: str | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="trproxy-redis-")))
    proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: run `make setup`")
        args = [binary, "--port", str(self.port), "--bind", self.host, "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "no"]
        if self.host != "::1":
            args[args.index("--bind") + 1] = f"{self.host} ::1" if self.host == "127.0.0.1" else self.host
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=open(self.workdir / "log", "ab"), preexec_fn=ends_with_tests())
        wait_port(self.host, self.port, proc=self.proc)
        return self

    def cli(self, *args: str) -> str:
        cmd = ["redis-cli", "-h", self.host, "-p", str(self.port)]
        if self.password:
            cmd += ["--no-auth-warning", "-a", self.password]
        return subprocess.run(cmd + list(args), capture_output=True, text=True, check=True).stdout

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

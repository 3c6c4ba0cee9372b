"""The Redirector: one run's redirect of a cgroup's outbound TCP connections to a proxy.

A run is a cgroup plus an entry in the shared trp_config map (keyed by the cgroup id) plus
the programs' bpf_links on that cgroup. ``Redirector.create`` makes a new cgroup under
``<cgroup2 mount>/trproxy/``; ``Redirector.attach`` uses an existing one (e.g. a Docker
container's) and never removes it.

Invariants:
- Only the process that created a Redirector tears it down (``close`` in a forked child is
  a no-op), and ``close`` is idempotent; open Redirectors are closed at interpreter exit.
- The links die with the owner process, so a killed owner stops redirecting at once; its
  cgroup and map entries stay until ``cleanup_leftovers`` (called by every ``create``).
- The proxy must listen on ``proxy_ipv4:proxy_port`` and ``[proxy_ipv6]:proxy_port`` (the
  same port), outside the run's cgroup: the programs never redirect the proxy's port.
"""

from __future__ import annotations

import atexit
import ipaddress
import logging
import os
import socket
import threading
from pathlib import Path

from trproxy.bpf import loader
from trproxy.redirect import cgroup as cgroups
from trproxy.redirect.errors import RedirectError

log = logging.getLogger(__name__)
_open: set[Redirector] = set()
_open_lock = threading.Lock()


def require_root() -> None:
    if os.geteuid() != 0:
        raise RedirectError(
            "redirecting with eBPF needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN and "
            "write access to cgroups): run trproxy with sudo"
        )


def load_programs() -> loader.Programs:
    """loader.load() with its errors translated into actionable RedirectErrors."""
    try:
        return loader.load()
    except loader.BccMissingError as e:
        raise RedirectError(
            f"{e}. trproxy compiles its eBPF program with bcc on first use: run `make setup` "
            "(installs python3-bpfcc) and use a venv that sees /usr/lib/python3/dist-packages/bcc"
        ) from e
    except loader.KernelHeadersMissingError as e:
        raise RedirectError(
            f"{e}; bcc needs them to compile the eBPF program once: run `make setup` "
            "or `sudo scripts/kernel-headers.sh`"
        ) from e
    except (loader.BpfError, OSError) as e:
        raise RedirectError(
            f"cannot load the eBPF redirect programs: {e} (see `trproxy doctor`)"
        ) from e


class Redirector:
    """Redirect the TCP connections of the processes in one cgroup to a local proxy."""

    cgroup_path: str
    cgroup_id: int
    proxy_port: int

    def __init__(
        self,
        path: Path,
        proxy_port: int,
        *,
        owned: bool,
        shadow_ports: dict[int, int] | None,
        proxy_ipv4: str,
        proxy_ipv6: str,
    ) -> None:
        """Use ``create`` or ``attach``."""
        if not 0 < proxy_port < 65536:
            raise RedirectError(f"invalid proxy port {proxy_port}")
        self.cgroup_path = str(path)
        self.cgroup_id = cgroups.cgroup_id(path)
        self.proxy_port = proxy_port
        self._owned = owned
        self._owner_pid = os.getpid()
        self._procs_file = os.fsencode(path / "cgroup.procs")
        self._links: list[int] = []
        self._closed = False
        self._progs = load_programs()
        self._maps = self._progs.maps
        self._install(shadow_ports or {}, proxy_ipv4, proxy_ipv6)
        with _open_lock:
            _open.add(self)

    @classmethod
    def create(
        cls,
        proxy_port: int,
        *,
        shadow_ports: dict[int, int] | None = None,
        proxy_ipv4: str = "127.0.0.1",
        proxy_ipv6: str = "::1",
    ) -> Redirector:
        """A new cgroup whose processes' connections go to the proxy. Put processes in it with
        ``enter`` (e.g. ``subprocess.Popen(..., preexec_fn=r.enter)``).

        ``shadow_ports`` {X: S}: a bind() to port X inside the cgroup binds S instead, so the
        proxy can listen on X (inbound capture). Also removes leftovers of dead runs.
        """
        require_root()
        mount = cgroups.require_mount()
        load_programs()  # fail before creating anything
        from trproxy.redirect.cleanup import cleanup_leftovers

        try:
            for line in cleanup_leftovers():
                log.warning("cleaned up after an earlier run: %s", line)
        except RedirectError as e:  # a leftover must not block a new run
            log.warning("%s", e)
        path = cgroups.create_run(mount)
        try:
            return cls(
                path,
                proxy_port,
                owned=True,
                shadow_ports=shadow_ports,
                proxy_ipv4=proxy_ipv4,
                proxy_ipv6=proxy_ipv6,
            )
        except BaseException:
            cgroups.remove(path)
            raise

    @classmethod
    def attach(
        cls,
        cgroup: str,
        proxy_port: int,
        *,
        shadow_ports: dict[int, int] | None = None,
        proxy_ipv4: str = "127.0.0.1",
        proxy_ipv6: str = "::1",
    ) -> Redirector:
        """Redirect an existing cgroup: a path (absolute or relative to the cgroup2 mount)
        or a Docker container id. ``close`` detaches but leaves the cgroup alone.

        A container in its own network namespace cannot reach the host's loopback: pass
        ``proxy_ipv4``/``proxy_ipv6`` addresses it can reach, where the proxy listens.
        """
        require_root()
        mount = cgroups.require_mount()
        path = cgroups.resolve(cgroup, mount)
        own = mount / cgroups.own_cgroup().lstrip("/")
        if own == path or path in own.parents:
            raise RedirectError(
                f"trproxy itself runs in {path}: its own upstream connections would loop back "
                "into the proxy; run trproxy outside that cgroup"
            )
        return cls(
            path,
            proxy_port,
            owned=False,
            shadow_ports=shadow_ports,
            proxy_ipv4=proxy_ipv4,
            proxy_ipv6=proxy_ipv6,
        )

    def _install(self, shadow_ports: dict[int, int], ip4: str, ip6: str) -> None:
        existing = self._maps.config(self.cgroup_id)
        if existing and cgroups.owner_alive(existing.owner_pid, existing.owner_start):
            raise RedirectError(
                f"{self.cgroup_path} is already redirected by trproxy pid {existing.owner_pid}"
            )
        cfg = loader.Config()
        cfg.owner_pid = self._owner_pid
        cfg.owner_start = cgroups.proc_start_time(self._owner_pid) or 0
        try:
            cfg.proxy_ip4[:] = socket.inet_pton(socket.AF_INET, ip4)
            cfg.proxy_ip6[:] = socket.inet_pton(socket.AF_INET6, ip6)
        except OSError as e:
            raise RedirectError(f"invalid proxy address {ip4!r} / {ip6!r}: {e}") from e
        cfg.proxy_port = self.proxy_port
        cfg.flags = loader.FLAG_SHADOW if shadow_ports else 0
        try:
            for port, shadow in shadow_ports.items():
                self._maps.set_shadow(self.cgroup_id, port, shadow)
            self._maps.set_config(self.cgroup_id, cfg)  # before attaching: no unknown-run window
            fd = os.open(self.cgroup_path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                self._links = self._progs.attach(fd)
            finally:
                os.close(fd)
        except OSError as e:
            self._maps.forget_run(self.cgroup_id)
            raise RedirectError(f"cannot attach the redirect to {self.cgroup_path}: {e}") from e

    def enter(self) -> None:
        """Move the calling process into the cgroup. Meant as ``preexec_fn``: runs between
        fork and exec, so everything the child execs and forks is redirected. Only raw
        syscalls here (no locks, no buffered files)."""
        fd = os.open(self._procs_file, os.O_WRONLY)
        try:
            os.write(
                fd, b"0"
            )  # "0" = the writing process (Documentation/admin-guide/cgroup-v2.rst)
        finally:
            os.close(fd)

    def original_destination(self, peer: tuple) -> tuple[str, int] | None:  # type: ignore[type-arg]
        """Where a connection accepted by the proxy was going, from the accepted socket's
        peer address as asyncio gives it (``transport.get_extra_info("peername")``):
        ``(host, port)`` with the host as the app wrote it (an IPv4-mapped IPv6 address is
        returned as plain IPv4), or None if the connection was not redirected by this run's
        programs to ``proxy_port``."""
        host, port = peer[0], peer[1]
        ip = ipaddress.ip_address(str(host).split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack listener shows IPv4 clients as ::ffff:a.b.c.d
        key = loader.TupleKey()
        key.family = loader.AF_INET if ip.version == 4 else loader.AF_INET6
        key.saddr[: len(ip.packed)] = ip.packed
        key.sport = port
        key.dport = self.proxy_port
        orig = self._maps.original(key)
        if orig is None or orig.family == 0:
            return None
        if orig.family == loader.AF_INET:
            return str(ipaddress.IPv4Address(bytes(orig.addr[:4]))), orig.port
        dst = ipaddress.IPv6Address(bytes(orig.addr))
        return str(dst.ipv4_mapped or dst), orig.port

    def listening_ports(self) -> set[int]:
        """Ports that processes in the cgroup listen on (as they asked for them in bind(),
        i.e. before a shadow rewrite)."""
        return set(self._maps.listening(self.cgroup_id))

    def shadowed_ports(self) -> dict[int, int]:
        """{port X the app listens on: shadow port S it is really bound to}, for listeners
        that are up now and were shadowed."""
        return {p: b for p, b in self._maps.listening(self.cgroup_id).items() if p != b}

    def shadow_ports(self) -> dict[int, int]:
        """The configured shadow map {X: S} of this run."""
        return self._maps.shadows(self.cgroup_id)

    def close(self) -> None:
        """Stop redirecting: detach, forget the run's map entries and, for a cgroup made by
        ``create``, move surviving processes to the parent and remove it. Idempotent."""
        if self._closed or os.getpid() != self._owner_pid:
            return
        self._closed = True
        with _open_lock:
            _open.discard(self)
        for fd in self._links:
            os.close(fd)  # closing the last reference to a bpf_link detaches it
        self._links = []
        errors = []
        try:
            self._maps.forget_run(self.cgroup_id)
        except OSError as e:
            errors.append(f"map entries: {e}")
        if self._owned:
            try:
                cgroups.remove(Path(self.cgroup_path))
            except (OSError, RedirectError) as e:
                errors.append(str(e))
        if errors:
            raise RedirectError(f"closing {self.cgroup_path}: " + "; ".join(errors))

    def __enter__(self) -> Redirector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Redirector {self.cgroup_path} -> port {self.proxy_port} ({state})>"


@atexit.register
def _close_all() -> None:
    with _open_lock:
        pending = list(_open)
    for r in pending:
        try:
            r.close()
        except RedirectError:
            pass

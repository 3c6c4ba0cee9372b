"""The Redirector: one run's redirect of a cgroup's outbound TCP connections to a proxy.

A run is a cgroup plus an entry in the shared trp_config map (keyed by the cgroup id) plus
the programs' bpf_links on that cgroup, pinned in bpffs. ``Redirector.create`` makes a new
cgroup under ``<cgroup2 mount>/trproxy/v2/``; ``Redirector.attach`` uses an existing one
(e.g. a Docker container's) and never removes it.

Invariants:
- Only the process that created a Redirector tears it down (``close`` in a forked child is
  a no-op), and ``close`` is idempotent; open Redirectors are closed at interpreter exit.
- The owner holds the run's lock (``locks.run_lock``) from before it installs anything
  until ``close`` has removed it all: cleanup by any other trproxy keeps off a run whose
  owner lives, and two trproxy cannot redirect one cgroup at once.
- Fail closed: the links are pinned, so they outlive a killed owner, and every connect of
  the run first checks that the owner's marker socket (a UDP socket on 127.0.0.1 that the
  kernel closes when the owner dies) is still there; once it is gone every TCP connect of
  the run fails with EPERM, except to ports the run itself listens on. The pins, config and
  cgroup stay until ``cleanup_leftovers`` finds the run's processes all gone.
- The check looks the marker up in the connecting process's network namespace: a run whose
  processes live in another one (a container) has it off (``check_owner``); there a dead
  owner's run still sends connections to the proxy's address, where nothing listens.
- The proxy must listen on ``proxy_ipv4:proxy_port`` and ``[proxy_ipv6]:proxy_port`` (the
  same port), outside the run's cgroup: the programs never redirect the proxy's port.
- The original destination of a connection is given out once, to the proxy's accept of
  that very 4-tuple, and only if the run's programs recorded it.
- Inbound capture (``capture_sockets``): new connections from outside the run to any port
  the run listens on are accepted by the owner's capture sockets instead of the app
  (sk_lookup on the owner's network namespace); the run's own connections, and the
  owner's relays announced with ``to_app``, reach the app. The app binds its real port,
  so bind() succeeds or fails as without trproxy. The sk_lookup link and the sockets live
  only in the owner: once it is gone, connections reach the app directly (nothing is
  recorded, nothing leaves the machine that the app did not already expose).
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from trproxy.bpf import loader, syscall
from trproxy.redirect import cgroup as cgroups
from trproxy.redirect import cleanup, containers, locks, sockdiag
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
    """loader.load() with its errors translated into actionable RedirectErrors. The
    version is marked used first: no cleanup removes its pins while this process lives."""
    try:
        locks.use_version(loader.source_hash())
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
        check_owner: bool,
        capture_sockets: Iterable[socket.socket] = (),
        dns_port: int = 0,
        pass_closed: bool = False,
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
        self._links: dict[str, int] = {}
        self._lookup_link: int | None = None
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._progs = load_programs()
        self._maps = self._progs.maps
        try:
            lock = locks.run_lock(self.cgroup_id)  # held for the owner's lifetime
            owner = cleanup.live_owner(self.cgroup_id)
        except OSError as e:
            raise RedirectError(f"cannot read the redirect maps: {e}") from e
        if lock is None or owner is not None:
            if lock is not None:
                lock.release()
            by = (f"trproxy pid {owner}" if owner else
                  f"another trproxy (it holds {locks.LOCK_DIR}/run-{self.cgroup_id}.lock)")
            raise RedirectError(f"{self.cgroup_path} is already redirected by {by}")
        self._lock = lock
        self.dns_port = dns_port
        try:
            self._install(shadow_ports or {}, proxy_ipv4, proxy_ipv6, check_owner,
                          list(capture_sockets), pass_closed)
        except BaseException:
            self._release()
            raise
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
        capture_sockets: Iterable[socket.socket] = (),
        dns_port: int = 0,
        pass_closed: bool = False,
    ) -> Redirector:
        """A new cgroup whose processes' connections go to the proxy. Put processes in it with
        ``enter`` (e.g. ``subprocess.Popen(..., preexec_fn=r.enter)``).

        ``shadow_ports`` {X: S}: a bind() to port X inside the cgroup binds S instead, so the
        proxy can listen on X (inbound capture of known ports). ``capture_sockets``: listening
        TCP sockets (one IPv4, one IPv6) that accept every connection from outside the run
        to any port the run listens on (inbound capture of every port; see the module
        docstring). ``dns_port``: the proxy's UDP port (on the same addresses) that the
        run's DNS queries over UDP go to (0: they go where the app sends them).
        ``pass_closed``: a connect to a local address (loopback, unspecified) whose port
        nothing listens on in the caller's network namespace is left to the kernel, which
        refuses it as without trproxy (or NAT forwards it), instead of reaching the proxy
        (for runs that dial the real destinations: record, passthrough); counted in
        ``closed()`` and ``reached()``. Also removes leftovers of dead runs.
        """
        require_root()
        mount = cgroups.require_mount()
        load_programs()  # fail before creating anything
        try:
            for line in cleanup.cleanup_leftovers():
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
                check_owner=True,
                capture_sockets=capture_sockets,
                dns_port=dns_port,
                pass_closed=pass_closed,
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
        check_owner: bool | None = None,
        pass_closed: bool = False,
    ) -> Redirector:
        """Redirect an existing cgroup: a path (absolute or relative to the cgroup2 mount)
        or a container (id, id prefix, name, Compose service: ``containers.resolve``). ``close`` detaches but leaves the cgroup alone.

        A container in its own network namespace cannot reach the host's loopback: pass
        ``proxy_ipv4``/``proxy_ipv6`` addresses it can reach, where the proxy listens.
        ``check_owner`` (fail closed when trproxy dies, see the module docstring) needs the
        cgroup's processes in trproxy's network namespace; None: on unless a process now in
        the cgroup is in another one. ``pass_closed``: as in ``create`` (a local port is
        looked up in the connecting process's network namespace: a container's own).
        """
        require_root()
        mount = cgroups.require_mount()
        path = containers.resolve(cgroup, mount)
        own = mount / cgroups.own_cgroup().lstrip("/")
        if own == path or path in own.parents:
            raise RedirectError(
                f"trproxy itself runs in {path}: its own upstream connections would loop back "
                "into the proxy; run trproxy outside that cgroup"
            )
        if check_owner is None:
            check_owner = not cgroups.other_netns(path)
            if not check_owner:
                log.warning(
                    "%s runs in another network namespace: if trproxy dies, its connections "
                    "still go to the proxy's address (refused while nothing listens there)",
                    path,
                )
        return cls(
            path,
            proxy_port,
            owned=False,
            shadow_ports=shadow_ports,
            proxy_ipv4=proxy_ipv4,
            proxy_ipv6=proxy_ipv6,
            check_owner=check_owner,
            pass_closed=pass_closed,
        )

    def _install(
        self,
        shadow_ports: dict[int, int],
        ip4: str,
        ip6: str,
        check_owner: bool,
        capture: list[socket.socket],
        pass_closed: bool,
    ) -> None:
        cfg = loader.Config()
        cfg.owner_pid = self._owner_pid
        cfg.owner_start = cgroups.proc_start_time(self._owner_pid) or 0
        try:
            cfg.proxy_ip4[:] = socket.inet_pton(socket.AF_INET, ip4)
            cfg.proxy_ip6[:] = socket.inet_pton(socket.AF_INET6, ip6)
        except OSError as e:
            raise RedirectError(f"invalid proxy address {ip4!r} / {ip6!r}: {e}") from e
        cfg.proxy_port = self.proxy_port
        cfg.dns_port = self.dns_port
        cfg.flags = (
            (loader.FLAG_SHADOW if shadow_ports else 0)
            | (loader.FLAG_CHECK_OWNER if check_owner else 0)
            | (loader.FLAG_CAPTURE if capture else 0)
            | (loader.FLAG_PASS_CLOSED if pass_closed else 0)
        )
        try:
            cfg.alive_port = self._marker_socket()
            cfg.refuse_port = self._refuse_sockets()
            cleanup.forget_dead_run(self.cgroup_id)  # a dead trproxy's, on an attached cgroup
            for port, shadow in shadow_ports.items():
                self._maps.set_shadow(self.cgroup_id, port, shadow)
            if capture:
                self._capture(capture)
            self._maps.set_config(self.cgroup_id, cfg)  # before attaching: no unknown-run window
            fd = os.open(self.cgroup_path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                self._links = self._progs.attach(fd)
            finally:
                os.close(fd)
            loader.pin_links(self.cgroup_id, self._links)
        except OSError as e:
            raise RedirectError(
                f"cannot attach the redirect to {self.cgroup_path}: {e} (see `trproxy doctor`)"
            ) from e

    def _capture(self, sockets: list[socket.socket]) -> None:
        """Register the capture sockets and attach trp_lookup to this process's network
        namespace (where the run's processes listen: ``create`` only), unpinned: it
        detaches when this process dies."""
        for s in sockets:
            family = loader.AF_INET6 if s.family == socket.AF_INET6 else loader.AF_INET
            self._maps.set_capture_socket(self.cgroup_id, family, s.fileno())
        netns = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            self._lookup_link = syscall.link_create(
                self._progs.prog_fds[loader.LOOKUP.name], netns, loader.LOOKUP.attach_type
            )
        finally:
            os.close(netns)

    @contextlib.contextmanager
    def to_app(self, sock: socket.socket, host: str, port: int) -> Iterator[None]:
        """While connecting ``sock`` (bound, not yet connected) to the app's ``host:port``,
        the connection reaches the app, not a capture socket."""
        local = sock.getsockname()
        key = loader.TupleKey()
        src, dst = _ip(local[0]), _ip(host)
        key.family = loader.AF_INET if dst.version == 4 else loader.AF_INET6
        key.saddr[: len(src.packed)] = src.packed
        key.daddr[: len(dst.packed)] = dst.packed
        key.sport = local[1]
        key.dport = port
        self._maps.set_inner(key, True)
        try:
            yield
        finally:
            self._maps.set_inner(key, False)

    def _marker_socket(self) -> int:
        """The owner's marker: a UDP socket on 127.0.0.1 marked with the run's id in
        trp_sock; it closes when this process dies. Returns its port."""
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sockets.append(s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # it never reads anything
        s.bind(("127.0.0.1", 0))
        self._maps.mark_alive(s.fileno(), self.cgroup_id)
        return int(s.getsockname()[1])

    def _refuse_sockets(self) -> int:
        """A TCP port held bound (never listening, no SO_REUSEADDR: nobody else can listen
        there) on 127.0.0.1 and ::1; connects sent there get a reset: ECONNREFUSED."""
        for _ in range(20):
            s4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s4.bind(("127.0.0.1", 0))
            port = int(s4.getsockname()[1])
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            try:
                s6.bind(("::1", port))
            except OSError:
                s4.close()
                s6.close()
                continue
            self._sockets += [s4, s6]
            return port
        raise OSError("no port free on both 127.0.0.1 and ::1")

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

    def original_destination(self, peer: tuple, local: tuple) -> tuple[str, int] | None:  # type: ignore[type-arg]
        """Where a connection accepted by the proxy was going, from the accepted socket's
        addresses as asyncio gives them (``transport.get_extra_info("peername")`` and
        ``("sockname")``): ``(host, port)`` with the host as the app wrote it (an
        IPv4-mapped IPv6 address is returned as plain IPv4), or None if this run's
        programs did not redirect this very connection from the run's cgroup (a connection
        from elsewhere, or one that reuses the 4-tuple of a connection already taken).
        Answers once per connection: the entry is removed."""
        client, proxy = _ip(peer[0]), _ip(local[0])
        if client.version != proxy.version:
            return None
        key = loader.TupleKey()
        key.family = loader.AF_INET if client.version == 4 else loader.AF_INET6
        key.saddr[: len(client.packed)] = client.packed
        key.daddr[: len(proxy.packed)] = proxy.packed
        key.sport = peer[1]
        key.dport = local[1]
        orig = self._maps.take_original(key)
        if orig is None or orig.family == 0 or orig.cgroup_id != self.cgroup_id:
            return None
        if orig.family == loader.AF_INET:
            return str(ipaddress.IPv4Address(bytes(orig.addr[:4]))), orig.port
        dst = ipaddress.IPv6Address(bytes(orig.addr))
        return str(dst.ipv4_mapped or dst), orig.port

    def dns_server(self, peer: tuple, local: tuple) -> tuple[str, int] | None:  # type: ignore[type-arg]
        """The DNS server that a query the proxy received on its DNS port was sent to, from
        the datagram's sender ``peer`` and our ``local`` address: None unless this run's
        programs redirected that very socket of the run's cgroup (the sender's socket is
        found by its addresses, its entry by its cookie: see ``sockdiag``)."""
        try:
            cookie = sockdiag.udp_cookie(peer[:2], local[:2])
        except (OSError, ValueError):
            return None
        orig = self._maps.dns_original(cookie) if cookie is not None else None
        if orig is None or orig.cgroup_id != self.cgroup_id:
            return None
        if orig.family == loader.AF_INET:
            return str(ipaddress.IPv4Address(bytes(orig.addr[:4]))), orig.port
        dst = ipaddress.IPv6Address(bytes(orig.addr))
        return str(dst.ipv4_mapped or dst), orig.port

    def refuse(self, destinations: Iterable[tuple[str, int]]) -> None:
        """Connects of the run to these ``(ip, port)`` fail with ECONNREFUSED (they never
        reach the proxy). Loopback addresses are one place: refusing 127.0.0.1:P refuses
        ::1:P, every 127.x.y.z:P and the unspecified 0.0.0.0:P and [::]:P too."""
        for key in [_dst_key(self.cgroup_id, ip, port) for ip, port in destinations]:
            self._maps.set_dst_verdict(key, loader.DST_REFUSE)

    def allow_only(self, destinations: Iterable[tuple[str, int]]) -> None:
        """From now on a redirected connect whose destination is not among these (nor
        among those of earlier calls) fails with ECONNREFUSED; ``refuse`` still wins.
        Loopback addresses are one place, as in ``refuse``."""
        for key in [_dst_key(self.cgroup_id, ip, port) for ip, port in destinations]:
            if self._maps.dst_verdict(key) != loader.DST_REFUSE:
                self._maps.set_dst_verdict(key, loader.DST_ALLOW)
        cfg = self._maps.config(self.cgroup_id)
        if cfg is None:
            raise RedirectError(f"{self.cgroup_path} is no longer redirected")
        if not cfg.flags & loader.FLAG_ALLOW_ONLY:
            cfg.flags |= loader.FLAG_ALLOW_ONLY
            self._maps.set_config(self.cgroup_id, cfg)

    def refused(self) -> dict[tuple[str, int], int]:
        """{(ip, port) as the app dialed it (v4-mapped as IPv4): connects refused}."""
        return self._connects("trp_refused")

    def closed(self) -> dict[tuple[str, int], int]:
        """{(ip, port) the kernel connected to (0.0.0.0 as 127.0.0.1, v4-mapped as IPv4):
        connects left to the kernel at a local port nothing listened on (``pass_closed``)
        that failed (refused, as without trproxy)}."""
        return self._connects("trp_closed")

    def reached(self) -> dict[tuple[str, int], int]:
        """Like ``closed``, for those connects that were established all the same: NAT
        forwarded the port (a container's port published without docker-proxy, an iptables
        REDIRECT). They never reached the proxy."""
        return self._connects("trp_reached")

    def _connects(self, counts: str) -> dict[tuple[str, int], int]:
        out = {}
        for key, count in self._maps.connects(self.cgroup_id, counts):
            if key.family == loader.AF_INET:
                ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
                    bytes(key.addr[:4])
                )
            else:
                ip = ipaddress.IPv6Address(bytes(key.addr))
            out[(str(ip), int(key.port))] = count
        return out

    def listening_ports(self) -> set[int]:
        """Ports that processes in the cgroup listen on (as they asked for them in bind(),
        i.e. before a shadow rewrite)."""
        return set(self._maps.listening(self.cgroup_id))

    def shadowed_ports(self) -> dict[int, int]:
        """{port X the app listens on: shadow port S it is really bound to}, for listeners
        that are up now and were shadowed."""
        return {p: b for p, b in self._maps.listening(self.cgroup_id).items() if p != b}

    def captured_ports(self) -> set[int]:
        """Ports of the run whose outside connections go to the capture sockets now."""
        return self._maps.capturing(self.cgroup_id)

    def shadow_ports(self) -> dict[int, int]:
        """The configured shadow map {X: S} of this run."""
        return self._maps.shadows(self.cgroup_id)

    def _release(self) -> list[str]:
        """Detach (pins and fds), forget the run's map entries, close the sockets;
        returns what failed."""
        errors = []
        if self._lookup_link is not None:  # first: no connection is steered to a closing socket
            os.close(self._lookup_link)
            self._lookup_link = None
        try:
            loader.unpin_links(self.cgroup_id)
        except OSError as e:
            errors.append(f"link pins: {e}")
        for fd in self._links.values():
            os.close(fd)  # closing the last reference to a bpf_link detaches it
        self._links = {}
        try:
            self._maps.forget_run(self.cgroup_id)
        except OSError as e:
            errors.append(f"map entries: {e}")
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()
        self._sockets = []
        self._lock.release(remove=True)  # last: until here a cleaner keeps off the run
        return errors

    def close(self) -> None:
        """Stop redirecting: detach, forget the run's map entries and, for a cgroup made by
        ``create``, move surviving processes to the parent and remove it. Idempotent."""
        if self._closed or os.getpid() != self._owner_pid:
            return
        self._closed = True
        with _open_lock:
            _open.discard(self)
        errors = self._release()
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


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as asyncio reports it; a dual-stack listener shows IPv4 peers as
    ::ffff:a.b.c.d, which is IPv4 on the wire."""
    ip = ipaddress.ip_address(str(host).split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _dst_key(cgroup_id: int, host: str, port: int) -> loader.DstKey:
    """trp_dst's key of a destination: every loopback or unspecified address is one key, as
    the store treats them as one place (store/matcher.destination_key)."""
    try:
        ip = _ip(host)
    except ValueError:
        raise RedirectError(f"destination {host!r} is not an IP address") from None
    if not 0 < port < 65536:
        raise RedirectError(f"destination {host}:{port}: invalid port")
    key = loader.DstKey()
    key.cgroup_id = cgroup_id
    key.port = port
    if ip.is_loopback or ip.is_unspecified:
        key.family = loader.DST_LOOPBACK
    else:
        key.family = loader.AF_INET if ip.version == 4 else loader.AF_INET6
        key.addr[: len(ip.packed)] = ip.packed
    return key


@atexit.register
def _close_all() -> None:
    with _open_lock:
        pending = list(_open)
    for r in pending:
        try:
            r.close()
        except RedirectError:
            pass

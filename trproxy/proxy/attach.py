"""``trproxy attach``: redirect a cgroup or container that trproxy did not start, and keep
redirecting it across restarts.

A container in its own network namespace reaches the host by its gateway, not by
127.0.0.1 (its own loopback): the proxy listens on that address too, on the redirect port,
and the redirect rewrites the container's connections to it.

A restarted container gets a new cgroup (same path, new cgroup id: the old programs went
with the old directory) and a new network namespace. The cgroup path is polled every
``POLL`` seconds; when it is back, the redirect is attached to it at once with the previous
addresses, then the addresses are read again (the container may have come back on another
network). Connections the container opens between its start and the re-attach (at most one
poll interval) are not seen; attaching a ``--cgroup-parent`` given to the container
(``--cgroup PARENT``) has no such gap, since the parent outlives the container's restarts.

Destinations on the container's own loopback (a sidecar sharing its network namespace)
are dialled from inside that namespace (``netns.py``), not on the host's loopback.

``--install-ca`` writes trproxy's CA into the container's trust store
(``tls.container_trust``) when attaching and takes it out when detaching; a restart keeps
the container's file system, so the CA stays in across it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..redirect import cgroup as cgroups
from ..redirect import containers
from ..redirect.errors import RedirectError
from ..tls import container_trust
from .server import Proxy

if TYPE_CHECKING:
    from ..redirect import Redirector

log = logging.getLogger("trproxy")
POLL = 0.1  # seconds between looks at the cgroup
SETTLE = 10.0  # seconds a restarted container has to bring its network up


def say(text: str) -> None:
    print(f"trproxy: {text}", file=sys.stderr, flush=True)


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


class Attachment:
    """The redirect of one cgroup, renewed whenever the cgroup is created again.
    ``on_attach``/``on_detach`` see every Redirector (replay fences it, then reports what
    it refused)."""

    def __init__(self, spec: str, proxy: Proxy, shadows: dict[int, int],
                 on_attach: Callable[[Redirector], None],
                 on_detach: Callable[[Redirector], None],
                 hosts: tuple[str, str] | None = None, install_ca: bytes | None = None,
                 pass_closed: bool = False) -> None:
        """``hosts``: where the cgroup's processes will reach the host, for a cgroup with
        no process yet (a Compose project's parent before it starts). ``install_ca``:
        the CA certificate (PEM) to write into the container's trust store.
        ``pass_closed``: see ``Redirector.create``."""
        self.spec = spec
        self.proxy = proxy
        self.shadows = shadows
        self.on_attach = on_attach
        self.on_detach = on_detach
        self.redirector: Redirector | None = None
        self.path = Path()
        self.hosts = containers.HostAddresses(*(hosts or containers.LOOPBACK),
                                              other_netns=hosts is not None and hosts[0] not in containers.LOOPBACK)
        self.restarts = 0
        self.install_ca = install_ca
        self.pass_closed = pass_closed
        self.installed: container_trust.Installed | None = None

    async def start(self) -> Redirector:
        self.path = containers.resolve(self.spec, cgroups.require_mount())
        self.hosts = containers.host_addresses(self.path) or self.hosts
        also = tuple(h for h in (self.hosts.ipv4, self.hosts.ipv6) if h not in containers.LOOPBACK)
        try:
            await self.proxy.listen_redirect(also)
        except OSError as e:
            raise RedirectError(f"cannot listen on {', '.join(also)}, where {self.spec} "
                                f"reaches the host: {e}") from e
        if self.hosts.other_netns:
            log.warning("%s runs in another network namespace: if trproxy dies, its connections "
                        "still go to %s (refused while nothing listens there)", self.spec, self.hosts.ipv4)
        if self.install_ca is not None:
            self._install_ca(self.install_ca)
        redirector = self._attach()
        proxy = {f"{h}:{self.proxy.port}" if ":" not in h else f"[{h}]:{self.proxy.port}"
                 for h in ("127.0.0.1", *self.proxy.addresses)}  # made since: redirected
        if already := [c for c in containers.open_connections(self.path)
                       if c.split(" -> ")[1] not in proxy]:
            say(f"{len(already)} connection(s) of {self.spec} opened before attach are not seen "
                f"(only new connections are redirected): {', '.join(already[:5])}")
        where = "" if not self.hosts.other_netns else f", reaching the host at {self.hosts.ipv4}"
        say(f"attached to {self.spec} (cgroup {self.path}{where}); press Ctrl-C to stop")
        return redirector

    def _container_pid(self, namespace: str = "mnt") -> int | None:
        """A process of the cgroup in a ``namespace`` (mnt, net) other than trproxy's."""
        own = os.stat(f"/proc/self/ns/{namespace}").st_ino
        for pid in cgroups.all_procs(self.path):
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{pid}/ns/{namespace}").st_ino != own:
                    return pid
        return None

    def _netns_pid(self, app: tuple | None) -> int | None:  # type: ignore[type-arg]
        """The process holding the app's connection (``app``: its peername and sockname
        at the proxy), in whose namespace its local destinations are; else any process of
        the cgroup in another network namespace (a single container has one)."""
        owner = containers.socket_owner(self.path, *app) if app is not None else None
        return owner[0] if owner is not None else self._container_pid("net")

    def _install_ca(self, cert: bytes) -> None:
        pid = self._container_pid()
        if pid is None:
            raise RedirectError(f"--install-ca: no process of {self.spec} has a file system of its "
                                "own (a plain cgroup, or a stopped container): nothing to install into")
        try:
            self.installed = container_trust.install(container_trust.root_of(pid), cert)
        except container_trust.TrustError as e:
            raise RedirectError(f"--install-ca: {e}") from e
        say(container_trust.advice(self.installed))

    def _remove_ca(self) -> None:
        installed, self.installed = self.installed, None
        if installed is None:
            return
        pid = self._container_pid()
        try:
            if pid is None:
                raise container_trust.TrustError("no process left to reach its file system through")
            container_trust.remove(container_trust.root_of(pid), installed)
        except container_trust.TrustError as e:
            say(f"trproxy's CA stays in {self.spec} ({', '.join(installed.bundles)}): {e}")
            return
        say(f"trproxy's CA removed from {self.spec}")

    def _attach(self) -> Redirector:
        from ..redirect import Redirector  # bcc: imported only when redirecting

        r = Redirector.attach(str(self.path), self.proxy.port, shadow_ports=self.shadows,
                              proxy_ipv4=self.hosts.ipv4, proxy_ipv6=self.hosts.ipv6,
                              check_owner=not self.hosts.other_netns,
                              pass_closed=self.pass_closed)
        self.redirector = r
        self.proxy.resolver = r.original_destination
        # the container's own loopback is dialled in its network namespace (netns.py)
        self.proxy.ctx.upstream_netns = self._netns_pid if self.hosts.other_netns else None
        self.on_attach(r)
        return r

    def _detach(self) -> None:
        r, self.redirector = self.redirector, None
        if r is not None:
            self.on_detach(r)
            try:
                r.close()
            except RedirectError as e:  # the cgroup is gone: little left to undo
                log.info("%s", e)

    async def follow(self) -> None:
        """Re-attach whenever the cgroup is created again; returns only when cancelled."""
        waiting = False
        while True:
            await asyncio.sleep(POLL)
            inode = _inode(self.path)
            if self.redirector is not None and inode == self.redirector.cgroup_id:
                continue
            self._detach()
            if inode is None:
                if not waiting:
                    say(f"{self.spec} stopped (its cgroup is gone): waiting for it to start again")
                    waiting = True
                continue
            try:
                self._attach()
            except RedirectError as e:  # gone again already, or in the middle of starting
                log.info("re-attaching %s: %s", self.spec, e)
                continue
            await self._readdress()
            waiting = False
            self.restarts += 1
            say(f"{self.spec} restarted: attached again (cgroup {self.path}, restart {self.restarts})")

    async def _readdress(self) -> None:
        """Once the restarted container's network is up: if it reaches the host by other
        addresses now, listen there too and attach again with them. A container that was
        in its own network namespace is only taken to be in trproxy's after ``SETTLE``
        seconds (while it starts, its processes join their namespace one by one)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE
        hosts = None
        while loop.time() < deadline:
            with contextlib.suppress(RedirectError):  # interfaces not configured yet
                hosts = containers.host_addresses(self.path)
            if hosts is not None and (hosts.other_netns or not self.hosts.other_netns):
                break
            await asyncio.sleep(POLL)
        if hosts is None or hosts == self.hosts:
            return
        for host in (hosts.ipv4, hosts.ipv6):
            if host not in containers.LOOPBACK and host not in self.proxy.addresses:
                await self.proxy.listen_also(host)
        self.hosts = hosts
        self._detach()
        self._attach()

    def close(self) -> None:
        self._detach()
        self._remove_ca()

"""Listeners of the proxy and dispatch of each accepted connection to its session.

The redirect listener serves 127.0.0.1 and ::1 on one port (the eBPF program sends
IPv4 connections to the first and IPv6 to the second), and the same port on the addresses
by which attached containers reach the host; each accepted connection's
original destination comes from the redirector, which knows only connections the app's
cgroup made (anything else that connects to the port is reset). Forward listeners (``--forward``,
the fallback where eBPF is unavailable) have a fixed destination each.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .context import Mode, RunContext, format_destination
from .record import passthrough_or_record
from .relay import CHUNK, reset
from .replay import replay

log = logging.getLogger("trproxy")
BACKLOG = 4096  # apps open pools of connections at once; a short queue drops them
ACCEPT_BATCH = 256  # connections taken from the kernel's queue per wakeup of the loop
ACCEPT_RETRY = 1.0  # seconds before accepting again after EMFILE/ENFILE/ENOBUFS
Resolver = Callable[[tuple, tuple], "tuple[str, int] | None"]  # (peername, sockname)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Listener:
    """Listening sockets that accept up to ``ACCEPT_BATCH`` connections per wakeup.

    Why not ``asyncio.start_server``: under uvloop (libuv >= 1.49) it accepts ONE
    connection per loop iteration, and with 1,000 busy connections an iteration takes
    hundreds of milliseconds: an app's burst of connects waited in the kernel's queue for
    up to 29 s (soak, 1,000 connections: the last connections' first reply 28.9 s, the
    accept queue draining at ~3 connections/s). The stdlib loop takes a batch too.
    """

    def __init__(self, host: str, port: int, handler: Handler,
                 family: socket.AddressFamily = socket.AF_UNSPEC) -> None:
        self._loop = asyncio.get_running_loop()
        self._handler = handler
        self._starting: set[asyncio.Task] = set()  # strong references until they run
        self.sockets: list[socket.socket] = []
        try:
            infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0,
                                       socket.AI_PASSIVE)
            for af, kind, proto, _name, address in dict.fromkeys(infos):
                sock = socket.socket(af, kind, proto)
                self.sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if af == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(BACKLOG)
                sock.setblocking(False)
        except OSError:
            self.close()
            raise
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _peer = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:  # out of file descriptors or memory: pause, do not spin
                log.warning("accept failed: %s; accepting again in %.0f s", exc, ACCEPT_RETRY)
                self._loop.remove_reader(sock.fileno())
                self._loop.call_later(ACCEPT_RETRY, self._resume, sock)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._serve(conn))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    def _resume(self, sock: socket.socket) -> None:
        if sock in self.sockets and sock.fileno() != -1:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    async def _serve(self, conn: socket.socket) -> None:
        reader = asyncio.StreamReader(limit=CHUNK)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await self._loop.connect_accepted_socket(lambda: protocol, conn)
        except OSError:
            conn.close()
            return
        await self._handler(reader, asyncio.StreamWriter(transport, protocol, reader, self._loop))

    def close(self) -> None:
        """Stop accepting (connections already accepted go on)."""
        for sock in self.sockets:
            if sock.fileno() != -1:
                self._loop.remove_reader(sock.fileno())
                sock.close()
        self.sockets = []


def parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass
class Proxy:
    ctx: RunContext
    resolver: Resolver | None = None
    servers: list[Listener] = field(default_factory=list)
    port: int = 0
    addresses: list[str] = field(default_factory=list)  # redirect listeners besides 127.0.0.1
    _tasks: set[asyncio.Task] = field(default_factory=set)

    async def listen_redirect(self, also: tuple[str, ...] = ()) -> int:
        """Listen on 127.0.0.1, ::1 and the addresses ``also`` (where containers reach the
        host) on one free port; returns the port."""
        for _attempt in range(20):
            before = len(self.servers)  # forward listeners may be there already
            v4 = Listener("127.0.0.1", 0, self._accept(None))
            self.port = v4.sockets[0].getsockname()[1]
            self.servers.append(v4)
            try:
                for host in ("::1", *also):
                    await self.listen_also(host)
            except OSError as exc:
                for server in self.servers[before:]:
                    server.close()
                del self.servers[before:]
                self.addresses = []
                if exc.errno == errno.EADDRINUSE:
                    continue  # the port is taken at one of the addresses: another port
                raise  # e.g. EADDRNOTAVAIL: not an address of this host

            return self.port
        raise OSError(f"no port free on all of 127.0.0.1, ::1 {' '.join(also)}")

    async def listen_also(self, host: str) -> None:
        """Listen on ``host`` too, on the redirect port (a container's gateway address)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server = Listener(host, self.port, self._accept(None), family)
        self.servers.append(server)
        self.addresses.append(host)

    async def listen_forward(self, listen: tuple[str, int], upstream: tuple[str, int]) -> None:
        server = Listener(listen[0], listen[1], self._accept(upstream))
        self.servers.append(server)
        log.info("forwarding %s -> %s", format_destination(*listen), format_destination(*upstream))

    def _accept(self, fixed: tuple[str, int] | None):
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await self._serve(reader, writer, fixed)
            except asyncio.CancelledError:
                reset(writer)  # shutting down: the peer sees a reset, we see no noise
            finally:
                self._tasks.discard(task)
        return handle

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     fixed: tuple[str, int] | None) -> None:
        self.ctx.connections += 1
        peer = writer.get_extra_info("peername")
        dest = fixed
        if dest is None and self.resolver is not None:
            dest = self.resolver(peer, writer.get_extra_info("sockname"))
        if dest is None:
            log.warning("connection from %s was not redirected from the app's cgroup: reset", peer)
            reset(writer)
            return
        host, port = dest
        mode = self.ctx.mode
        if mode is Mode.NEW_EPISODES:
            known = self.ctx.pool.has_destination(format_destination(host, port))
            mode = Mode.REPLAY if known else Mode.RECORD
        log.info("%s -> %s (%s)", peer, format_destination(host, port), mode.value)
        try:
            if mode is Mode.REPLAY:
                await replay(self.ctx, (reader, writer), host, port)
            else:
                await passthrough_or_record(self.ctx, (reader, writer), host, port,
                                            record=mode is Mode.RECORD)
        except Exception:  # a bug in one session must not take the proxy down
            log.exception("session to %s failed", format_destination(host, port))
            reset(writer)

    async def close(self, grace: float = 2.0) -> None:
        """Stop accepting; give open sessions ``grace`` seconds to finish, then cancel."""
        for server in self.servers:
            server.close()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

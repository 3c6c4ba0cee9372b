"""Replay for dialect tests without the proxy: a dialect's replayer driven by the real
replay engine, answered from the real store.

``Mocks`` keeps recorded interactions in a real ``trproxy.store.MockPool`` (keyed with
``trproxy.protocols.registry.match_key``), after the trip through the store's YAML that a
recording makes, and answers a replayer's bytes through ``trproxy.proxy.engine.Session``,
the very rules of the proxy (misses, handshakes, partial answers, ``close_after``,
holds, resets): there is no second copy of them here.

``ReplayServer`` puts that behind a loopback socket, one replayer per connection (built
with ``Dialect.replayer_for``, as the proxy does). With ``ca`` it terminates TLS itself
with the sans-I/O ``TlsEndpoint``, choosing the first protocol of ``alpn`` that the
client offers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tests.support.tee import Listener
from trproxy.protocols.base import Interaction, Lookup, Replayer
from trproxy.protocols.postgres.identity import BACKENDS, Backends
from trproxy.protocols.registry import by_name, match_key
from trproxy.proxy.context import Mode, RunContext
from trproxy.proxy.engine import (
    ClientClosed,
    ClientData,
    Close,
    Command,
    Drain,
    Drained,
    Event,
    Injected,
    Miss,
    Notify,
    Opened,
    OutOfOrder,
    Reset,
    Send,
    Session,
    TimerFired,
    Wake,
)
from trproxy.store import Exchange, MockPool
from trproxy.store.yamlio import dump, load_one

if TYPE_CHECKING:
    from trproxy.tls.ca import CertificateAuthority
    from trproxy.tls.endpoint import TlsEndpoint

Recorded = Interaction | Exchange | dict[str, Any]  # a dict: ``request``, ``responses``...


class _Watched:
    """A replayer whose lookups are noted (for assertions), otherwise itself."""

    def __init__(self, replayer: Replayer, lookups: list[Lookup]) -> None:
        self._replayer, self._lookups = replayer, lookups

    def feed(self, data: bytes) -> list:
        events = self._replayer.feed(data)
        self._lookups += [e for e in events if isinstance(e, Lookup)]
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._replayer, name)


class Mocks:
    """Recorded interactions of one protocol at one destination, in a real ``MockPool``."""

    def __init__(self, protocol: str, recorded: Iterable[Recorded] = (),
                 destination: str = "127.0.0.1:0") -> None:
        self.protocol = protocol
        self.destination = destination
        self.ctx = RunContext(Mode.REPLAY, pool=MockPool(match_key))
        self.exchanges: list[Exchange] = []
        self.lookups: list[Lookup] = []
        self.lock = threading.RLock()  # one engine step at a time (the pool is shared)
        self.backends = Backends()  # the Postgres pids of this run (a process has one)
        self.add(recorded)

    @property
    def pool(self) -> MockPool:
        return self.ctx.pool

    @property
    def misses(self) -> list[dict[str, Any]]:
        """The misses the engine reported (report entries: request, reason...)."""
        return self.ctx.misses

    def add(self, recorded: Iterable[Recorded]) -> None:
        for item in recorded:
            exchange = self._exchange(item)
            # through YAML, as the store keeps recordings
            exchange = Exchange.from_doc(load_one(dump(exchange.to_doc())))
            with self.lock:
                self.exchanges.append(exchange)
                self.pool.add(exchange)

    def _exchange(self, item: Recorded) -> Exchange:
        """Numbered as one recorded connection's exchanges (a dict may say otherwise:
        ``connection``, ``seq``, ``order``, ``metadata``-like keys)."""
        seq = len(self.exchanges) + 1
        if isinstance(item, Exchange):  # recorded by the proxy's Capture: kept, moved here
            return dataclasses.replace(item, destination=self.destination)
        if isinstance(item, Interaction):
            return Exchange(self.protocol, self.destination, item.request, item.responses,
                            item.lifetime, item.summary, connection=1, seq=seq)
        return Exchange(self.protocol, self.destination, item["request"], item["responses"],
                        item.get("lifetime", "data"), item.get("summary", ""),
                        connection=item.get("connection", 1), seq=item.get("seq", seq),
                        order=item.get("order", 0))

    def unused(self) -> list[Exchange]:
        """The recordings no lookup was answered with."""
        with self.lock:
            return [e.exchange for e in self.pool.entries() if not e.used]

    def session(self, replayer: Replayer) -> Session:
        dialect = by_name(self.protocol)
        assert dialect is not None, self.protocol
        if getattr(replayer, "backends", None) is BACKENDS:
            replayer.backends = self.backends  # type: ignore[attr-defined]
        return Session(self.ctx, dialect, _Watched(replayer, self.lookups),  # type: ignore[arg-type]
                       self.destination)

    def step(self, session: Session, event: Event, now: float | None = None) -> list[Command]:
        """One engine step; misses go to the report as the proxy's driver sends them."""
        with self.lock:
            commands = session.handle(event, time.monotonic() if now is None else now)
            for c in commands:
                if isinstance(c, Notify) and callable(c.target.owner):
                    c.target.owner(c.event)  # another connection of this server
                elif isinstance(c, Miss):
                    self.ctx.missed(c.entry)
                elif isinstance(c, OutOfOrder):
                    self.ctx.served_out_of_order(c.entry)
                elif isinstance(c, Injected):
                    self.ctx.fault_injected(c.entry)
        return commands

    def replay(self, session: Session, data: bytes) -> tuple[bytes, bool]:
        """What a replaying proxy sends back for ``data`` at once (held answers too, as
        if their time had come), and whether it then ends the connection."""
        out = bytearray()
        pending: list[Command] = self.step(session, ClientData(data), 0.0)
        while pending:
            command = pending.pop(0)
            if isinstance(command, Send):
                out += command.data
            elif isinstance(command, (Close, Reset)):
                return bytes(out), True
            elif isinstance(command, Wake):
                pending += self.step(session, TimerFired(), command.at)
            elif isinstance(command, Drain):
                pending += self.step(session, Drained(), 0.0)
        return bytes(out), False

    def replay_bytes(self, replayer: Replayer, data: bytes) -> bytes:
        return self.replay(self.session(replayer), data)[0]


class ReplayServer(Listener):
    """A loopback server answering real clients from ``Mocks`` (started by ``start``)."""

    def __init__(self, protocol: str, recorded: Iterable[Recorded] = (), host: str = "127.0.0.1",
                 port: int = 0, *, ca: CertificateAuthority | None = None,
                 alpn: tuple[str, ...] = ()) -> None:
        super().__init__(host, port)
        dialect = by_name(protocol)
        assert dialect is not None, protocol
        self.dialect = dialect
        self.mocks = Mocks(protocol, recorded, self.address)
        self.ca = ca
        self.alpn_offer = alpn
        self.alpn: list[str | None] = []  # what each TLS connection chose
        self.errors: list[BaseException] = []

    @property
    def misses(self) -> list[dict[str, Any]]:
        return self.mocks.misses

    @property
    def lookups(self) -> list[Lookup]:
        return self.mocks.lookups

    def add(self, recorded: Iterable[Recorded]) -> None:
        self.mocks.add(recorded)

    def _connected(self, sock: socket.socket) -> None:
        threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            self._follow(sock)
        except ConnectionError:
            pass  # the client hung up
        except Exception as exc:  # surfaced by the tests through .errors
            if not (isinstance(exc, OSError) and self.closing):
                self.errors.append(exc)
        finally:
            sock.close()

    def _follow(self, sock: socket.socket) -> None:
        tls, pending = None, b""
        if self.ca is not None:
            tls, pending = self._tls(sock)
            if tls is None:
                return
        session = self.mocks.session(self.dialect.replayer_for(tls is not None, self.mocks.destination))
        wake: float | None = None  # a held answer's time (the engine's Wake)

        def send(data: bytes) -> None:
            if tls is not None:
                tls.send(data)
                data = tls.outgoing()
            if data:
                sock.sendall(data)

        def carry_out(commands: list[Command]) -> bool:
            """Do what the engine says; True when it ended the connection."""
            nonlocal wake
            while commands:
                command = commands.pop(0)
                if isinstance(command, Send):
                    send(command.data)
                elif isinstance(command, Wake):
                    wake = command.at
                elif isinstance(command, Drain):
                    commands += self.mocks.step(session, Drained())
                elif isinstance(command, Reset):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                    with contextlib.suppress(OSError):  # also wakes this connection's thread
                        sock.shutdown(socket.SHUT_RDWR)
                    return True
                elif isinstance(command, Close):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_WR)  # FIN, as the server did
                    return True
            return False

        # what other connections' requests cause on this one (pushes, closes, interrupts)
        session.owner = lambda event: carry_out(self.mocks.step(session, event))
        if self.dialect.greeting is not None and carry_out(self.mocks.step(session, Opened())):
            return  # the server speaks first (MySQL), and this one hung up at once
        try:
            while True:
                if wake is not None:
                    sock.settimeout(max(0.0, wake - time.monotonic()))
                try:
                    data, pending = pending or sock.recv(65536), b""
                except TimeoutError:
                    wake = None
                    if carry_out(self.mocks.step(session, TimerFired())):
                        return
                    continue
                finally:
                    sock.settimeout(None)
                if tls is not None:
                    plain = tls.receive(data)
                    if out := tls.outgoing():
                        sock.sendall(out)
                    if tls.peer_closed:
                        data = b""
                    elif data:
                        data = plain
                        if not data:
                            continue
                if data:
                    if carry_out(self.mocks.step(session, ClientData(data))):
                        return
                    continue
                ended = carry_out(self.mocks.step(session, ClientClosed()))
                while not ended and wake is not None:  # held answers still go out
                    time.sleep(max(0.0, wake - time.monotonic()))
                    wake = None
                    ended = carry_out(self.mocks.step(session, TimerFired()))
                return
        finally:
            session.close()

    def _tls(self, sock: socket.socket) -> tuple[TlsEndpoint | None, bytes]:
        """The server side of TLS after the client's hello (None: it hung up first)."""
        from trproxy.tls.endpoint import TlsEndpoint, parse_client_hello

        first = b""
        while (hello := parse_client_hello(first)) is None:
            data = sock.recv(65536)
            if not data:
                return None, b""
            first += data
        chosen = next((p for p in self.alpn_offer if p in hello.alpn), None)
        self.alpn.append(chosen)
        assert self.ca is not None
        context = self.ca.server_context(hello.sni or self.host, [chosen] if chosen else [])
        return TlsEndpoint.server(context), first

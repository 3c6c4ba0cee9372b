"""Replay for dialect tests without the proxy: a dialect's replayer answered from the
real store.

``Mocks`` keeps recorded interactions in a real ``trproxy.store.MockPool`` (keyed with
``trproxy.proxy.context.match_key``), after the trip through the store's YAML that a
recording makes, and answers a replayer's lookups as the proxy's replay session does:
a miss is answered with the replayer's ``miss``; a request that expects no reply is
still matched (and uses its recording) but answered with nothing; an empty miss answer
that is not partial, or ``close_after``, closes the connection.

``ReplayServer`` puts that behind a loopback socket, one replayer per connection (built
with ``Dialect.replayer_for``, as the proxy does). With ``ca`` it terminates TLS itself
with the sans-I/O ``TlsEndpoint``, choosing the first protocol of ``alpn`` that the
client offers.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tests.support.tee import Listener
from trproxy.protocols.base import Interaction, Lookup, Replayer, Reply
from trproxy.protocols.registry import by_name, match_key
from trproxy.store import Affinity, Exchange, MockPool, NoMatch
from trproxy.store.yamlio import dump, load_one

if TYPE_CHECKING:
    from trproxy.tls.ca import CertificateAuthority
    from trproxy.tls.endpoint import TlsEndpoint

Recorded = Interaction | dict[str, Any]  # a dict: ``request``, ``responses``, ``lifetime``?


class Mocks:
    """Recorded interactions of one protocol at one destination, in a real ``MockPool``."""

    def __init__(self, protocol: str, recorded: Iterable[Recorded] = (),
                 destination: str = "127.0.0.1:0") -> None:
        self.protocol = protocol
        self.destination = destination
        self.pool = MockPool(match_key)
        self.exchanges: list[Exchange] = []
        self.lookups: list[Lookup] = []
        self.misses: list[Lookup] = []
        self._served: set[int] = set()
        self._lock = threading.Lock()
        self.add(recorded)

    def add(self, recorded: Iterable[Recorded]) -> None:
        for item in recorded:
            exchange = self._exchange(item)
            # through YAML, as the store keeps recordings
            exchange = Exchange.from_doc(load_one(dump(exchange.to_doc())))
            with self._lock:
                self.exchanges.append(exchange)
                self.pool.add(exchange)

    def _exchange(self, item: Recorded) -> Exchange:
        if isinstance(item, Interaction):
            return Exchange(self.protocol, self.destination, item.request, item.responses,
                            item.lifetime, item.summary)
        return Exchange(self.protocol, self.destination, item["request"], item["responses"],
                        item.get("lifetime", "data"), item.get("summary", ""))

    def unused(self) -> list[Exchange]:
        """The recordings no lookup was answered with."""
        with self._lock:
            return [e for e in self.exchanges if id(e) not in self._served]

    def answer(self, replayer: Replayer, lookup: Lookup, affinity: Affinity | None = None) -> bytes | None:
        """The bytes for one lookup; None: close the connection (no native error exists)."""
        with self._lock:
            self.lookups.append(lookup)
            try:
                served = self.pool.find(self.protocol, self.destination, lookup.request,
                                        lookup.summary, affinity,
                                        repeat_last=bool(lookup.context.get("repeat_last")))
            except NoMatch as miss:
                self.misses.append(lookup)
                if not lookup.expects_reply:
                    return b""
                out = replayer.miss(lookup, miss.reason)
                return out if out or lookup.context.get("partial") else None
            self._served.add(id(served.exchange))
            if served.repeat:
                lookup.context["repeat"] = True  # as the proxy's session does
        return replayer.respond(lookup, served.exchange.responses) if lookup.expects_reply else b""

    def replay(self, replayer: Replayer, data: bytes,
               affinity: Affinity | None = None) -> tuple[bytes, bool]:
        """What a replaying proxy sends back for ``data``, and whether it then closes."""
        out = bytearray()
        for event in replayer.feed(data):
            if isinstance(event, Reply):
                out += event.data
                continue
            answer = self.answer(replayer, event, affinity)
            if answer is None:
                return bytes(out), True
            out += answer
        return bytes(out), bool(getattr(replayer, "close_after", False))

    def replay_bytes(self, replayer: Replayer, data: bytes) -> bytes:
        return self.replay(replayer, data)[0]


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
    def misses(self) -> list[Lookup]:
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
        replayer = self.dialect.replayer_for(tls is not None, self.mocks.destination)
        affinity = Affinity()  # per connection, as the proxy keeps it
        while True:
            data, pending = pending or sock.recv(65536), b""
            if tls is not None:
                plain = tls.receive(data)
                if out := tls.outgoing():
                    sock.sendall(out)
                if not data or tls.peer_closed:
                    return
                data = plain
                if not data:
                    continue
            elif not data:
                return
            out, close = self.mocks.replay(replayer, data, affinity)
            if out and tls is not None:
                tls.send(out)
                out = tls.outgoing()
            if out:
                sock.sendall(out)
            if close:
                return

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

"""A socket server that answers from recorded interactions through ``HttpReplayer``.

A stand-in for the proxy's replay mode, so the dialect can be checked against real
clients without the proxy: per connection an ``HttpReplayer`` turns client bytes
into ``Lookup``s; each is answered by the first unused recording with an equal
``match_key`` (data lifetime: used once, in order), else by ``miss`` (a 502).
With ``ca`` it terminates TLS itself with the sans-I/O ``TlsEndpoint`` (ALPN: ``h2``
when the client offers it and ``prefer_h2``, else ``http/1.1``), as the proxy would.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

from trproxy.protocols.base import Lookup, Reply
from trproxy.protocols.http import HttpReplayer, match_key
from trproxy.proxy.tls import CertificateAuthority, TlsEndpoint, parse_client_hello


class ReplayServer:
    def __init__(self, interactions: list[dict[str, Any]], host: str = "127.0.0.1", port: int = 0,
                 ca: CertificateAuthority | None = None, prefer_h2: bool = True) -> None:
        self.unused = list(interactions)
        self.misses: list[dict[str, Any]] = []
        self.served: list[dict[str, Any]] = []
        self.alpn: list[str | None] = []
        self.ca = ca
        self.prefer_h2 = prefer_h2
        self.listener = socket.create_server((host, port))
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()

    def start(self) -> ReplayServer:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def answer(self, replayer: HttpReplayer, lookup: Lookup) -> bytes:
        key = match_key(lookup.request)
        with self._lock:
            for i, item in enumerate(self.unused):
                if match_key(item["request"]) == key:
                    self.served.append(self.unused.pop(i))
                    return replayer.respond(lookup, item["responses"])
            self.misses.append(lookup.request)
        return replayer.miss(lookup, f"no unused recording has the key {key}")

    def _serve(self, sock: socket.socket) -> None:
        with contextlib.closing(sock), contextlib.suppress(OSError):
            tls, scheme, first = None, "http", b""
            if self.ca is not None:
                while (hello := parse_client_hello(first)) is None:
                    data = sock.recv(65536)
                    if not data:
                        return
                    first += data
                offers = hello.alpn
                chosen = ("h2" if self.prefer_h2 and "h2" in offers else
                          "http/1.1" if "http/1.1" in offers else None)
                self.alpn.append(chosen)
                tls = TlsEndpoint.server(self.ca.server_context(hello.sni or "127.0.0.1",
                                                                [chosen] if chosen else []))
                scheme = "https"
            replayer = HttpReplayer(scheme=scheme)

            def send(data: bytes) -> None:
                if tls is None:
                    sock.sendall(data)
                else:
                    tls.send(data)
                    sock.sendall(tls.outgoing())

            while True:
                data = first or sock.recv(65536)
                first = b""
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
                for event in replayer.feed(data):
                    if isinstance(event, Reply):
                        send(event.data)
                    else:
                        send(self.answer(replayer, event))

"""TLS interception in the sessions: pumping ``tls.TlsEndpoint`` over asyncio streams.

``TlsStream`` looks like a StreamReader and a StreamWriter at once (the subset the
relay and the replay loop use), so the sessions run unchanged over decrypted bytes.
``intercept_record`` / ``intercept_replay`` perform the handshakes the way
``endpoint.py``'s docstring prescribes: in record mode the upstream handshake comes first
(offering the app's ALPNs), and the app is then answered with what the server chose.
The same serves TLS that starts inside a protocol (Postgres SSLRequest answered 'S'):
the session settles that exchange, then the ClientHello follows as usual.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from ..proxy.relay import CHUNK
from .ca import CertificateAuthority, upstream_context
from .endpoint import ClientHelloInfo, TlsEndpoint, parse_client_hello
from .errors import NotTls, TlsError

log = logging.getLogger("trproxy")
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class TlsSettings:
    """How a run intercepts TLS: our CA, upstream verification, who refused our
    certificate for which host.

    A refusal is remembered per client process (``identify`` finds the process that
    holds a connection: its pid and start time; None when it cannot be told): that
    process is passed through for that host from then on, since a client that does not
    trust our CA (or pins) keeps refusing; another process, say one started later with
    the CA installed, is intercepted. Clients that cannot be told apart share one
    refusal, as before."""

    ca: CertificateAuthority
    verify: bool = True
    ca_file: Path | None = None
    refusals: dict[str, set[object]] = field(default_factory=dict)  # host -> clients
    identify: Callable[[tuple, tuple], object] | None = None  # (peername, sockname) -> client

    def client_of(self, writer: asyncio.StreamWriter) -> asyncio.Future[object]:
        """Who holds the app side of this connection, looked up in a thread (to be
        awaited while the connection is surely open: a refusing client hangs up at once)."""
        identify = self.identify
        if identify is None:
            done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        peer, local = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
        return asyncio.ensure_future(asyncio.to_thread(identify, peer, local))

    def passes_through(self, name: str, client: object) -> bool:
        return client in self.refusals.get(name, ())

    def refused(self, name: str, client: object) -> None:
        self.refusals.setdefault(name, set()).add(client)


class TlsStream:
    """Plaintext view of a TLS connection: ``read``/``write``/``drain``/``write_eof``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 endpoint: TlsEndpoint, buffered: bytes = b"") -> None:
        self._reader, self._writer, self.endpoint = reader, writer, endpoint
        self._plain = bytearray(buffered)
        self.transport = writer.transport

    async def read(self, n: int = CHUNK) -> bytes:
        while not self._plain:
            if self.endpoint.peer_closed:
                return b""
            data = await self._reader.read(CHUNK)
            self._plain += self.endpoint.receive(data)
            self._flush()
            if not data:
                break
        out = bytes(self._plain[:n])
        del self._plain[:n]
        return out

    def write(self, data: bytes) -> None:
        self.endpoint.send(data)
        self._flush()

    def _flush(self) -> None:
        out = self.endpoint.outgoing()
        if out and not self._writer.is_closing():
            self._writer.write(out)

    async def drain(self) -> None:
        await self._writer.drain()

    def can_write_eof(self) -> bool:
        return self._writer.can_write_eof()

    def write_eof(self) -> None:
        self.endpoint.close()  # close_notify, then FIN
        self._flush()
        self._writer.write_eof()

    def is_closing(self) -> bool:
        return self._writer.is_closing()

    def close(self) -> None:
        self._writer.close()

    def get_extra_info(self, name: str, default=None):
        return self._writer.get_extra_info(name, default)


async def _handshake(endpoint: TlsEndpoint, streams: Streams, first: bytes = b"") -> bytes:
    """Pump until the handshake completes; returns plaintext that arrived with it."""
    reader, writer = streams
    plain = endpoint.receive(first) if first else b""
    while not endpoint.handshake_complete:
        out = endpoint.outgoing()
        if out:
            writer.write(out)
            await writer.drain()
        data = await reader.read(CHUNK)
        plain += endpoint.receive(data)
    out = endpoint.outgoing()
    if out:
        writer.write(out)
        await writer.drain()
    return plain


async def intercept_record(settings: TlsSettings, client: Streams, upstream: Streams,
                           hello: ClientHelloInfo, first: bytes, name: str, *,
                           system_trust: bool = True) -> tuple[TlsStream, TlsStream]:
    """TLS to the real server first, then to the app with the server's ALPN choice.

    The server is verified for ``name`` (the SNI, else the destination IP). With
    ``system_trust=False`` (in-band upgrades such as Postgres SSLRequest, whose servers
    mostly have self-signed certificates that libpq's ``sslmode=require`` accepts), it
    is verified only when ``--tls-ca`` names its issuer.
    """
    verify = settings.verify and (system_trust or settings.ca_file is not None)
    up = TlsEndpoint.client(upstream_context(verify=verify, ca_file=settings.ca_file,
                                             alpn=hello.alpn), server_hostname=name)
    up_plain = await _handshake(up, upstream)
    chosen = up.alpn
    down = TlsEndpoint.server(settings.ca.server_context(name, [chosen] if chosen else []))
    down_plain = await _handshake(down, client, first)
    log.info("TLS intercepted for %s (ALPN %s)", name, chosen or "-")
    return TlsStream(*client, down, down_plain), TlsStream(*upstream, up, up_plain)


async def intercept_replay(settings: TlsSettings, client: Streams, hello: ClientHelloInfo,
                           first: bytes, name: str, recorded_alpn: Collection[str]) -> TlsStream:
    """TLS to the app alone, selecting the ALPN protocol the server chose when recording
    (``recorded_alpn``, the first of the client's offers among them).

    Recordings without ``metadata.alpn`` (made before it was recorded) get "http/1.1" when
    offered (an HTTP/2 recording is served in HTTP/1.1 as well), else "postgresql":
    PostgreSQL 17 clients starting TLS directly (``sslnegotiation=direct``, no SSLRequest)
    refuse a server that does not select it.
    """
    offers = hello.alpn
    chosen = next((p for p in offers if p in recorded_alpn), None)
    if chosen is None and not recorded_alpn:
        chosen = next((p for p in ("http/1.1", "postgresql") if p in offers), None)
    down = TlsEndpoint.server(settings.ca.server_context(name, [chosen] if chosen else []))
    plain = await _handshake(down, client, first)
    return TlsStream(*client, down, plain)


__all__ = ["TlsError", "TlsSettings", "TlsStream", "intercept_record", "intercept_replay"]


async def read_client_hello(reader: asyncio.StreamReader, data: bytes) -> tuple[ClientHelloInfo | None, bytes]:
    """The ClientHello if ``data`` starts one (reading the rest of it), and all bytes read."""
    if data[:1] != b"\x16":
        return None, data
    while True:
        try:
            hello = parse_client_hello(data)
        except NotTls:
            return None, data
        if hello is not None:
            return hello, data
        more = await reader.read(CHUNK)
        if not more:
            return None, data
        data += more

"""Sans-I/O TLS: the ClientHello parser and ``TlsEndpoint`` (no sockets).

``parse_client_hello(data)`` gives ``ClientHelloInfo(sni, alpn)`` once the whole
ClientHello is buffered, None before, ``NotTls`` if the bytes are not TLS.
``TlsEndpoint`` is ``ssl.SSLObject`` over two ``ssl.MemoryBIO``: ``receive(enc) ->
plaintext``, ``send(plain)``, ``outgoing() -> enc``, ``handshake_complete``, ``alpn``,
close_notify handling (``close()``, ``peer_closed``); server role toward the app (our
certificate), client role toward the upstream. A server-role endpoint raises
``CertificateRejected`` when the app refuses our certificate (pinning), so the proxy can
pass that host through.

How a session drives one intercepted connection (``tls/stream.py`` does it)::

    buffer client bytes until parse_client_hello(buf) is not None
      (NotTls -> not TLS: hand the buffered bytes to protocol detection instead)
    sni, offers = hello;  name = sni or original_destination_ip
    if this client refused our certificate for name before: relay bytes untouched, stop here
    RECORD:
      up = TlsEndpoint.client(upstream_context(alpn=offers), server_hostname=name)
      pump until up.handshake_complete (verification errors: TlsError); chosen = up.alpn
      down = TlsEndpoint.server(ca.server_context(name, [chosen] if chosen else []))
    REPLAY (no upstream):
      chosen = the ALPN recorded for this destination if the client offers it
      down = TlsEndpoint.server(ca.server_context(name, [chosen] if chosen else []))
    down.receive(buf); write down.outgoing() to the app; pump until handshake_complete
      CertificateRejected -> remember (name, client process) as refused, report it
"""

from __future__ import annotations

import contextlib
import ssl
from typing import NamedTuple

from .errors import CertificateRejected, NotTls, TlsError

#: TLS alerts a client sends when it refuses the server certificate (RFC 8446 §6.2)
REJECTION_ALERTS = frozenset({
    "TLSV1_ALERT_UNKNOWN_CA",
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "SSLV3_ALERT_CERTIFICATE_REVOKED",
    "TLSV1_ALERT_ACCESS_DENIED",
})


# -- ClientHello --------------------------------------------------------------------------


class ClientHelloInfo(NamedTuple):
    sni: str | None
    alpn: list[str]


MAX_CLIENT_HELLO = 64 * 1024


def parse_client_hello(data: bytes) -> ClientHelloInfo | None:
    """SNI and ALPN offers of a buffered ClientHello (RFC 8446 §4.1.2, RFC 6066 §3,
    RFC 7301 §3.1); None until it is complete; ``NotTls`` if it cannot be one."""
    if not data:
        return None
    # record header: handshake(22), legacy version 3.x (RFC 8446 §5.1)
    if data[0] != 0x16 or (len(data) > 1 and data[1] != 0x03) or (len(data) > 2 and data[2] > 0x03):
        raise NotTls(f"not a TLS handshake record: {data[:8]!r}")
    # mitmproxy's proxy layers cost ~0.3 s to import: only runs that see TLS pay it
    from mitmproxy.proxy.layers.tls import get_client_hello
    from mitmproxy.tls import ClientHello

    try:
        raw = get_client_hello(data)
    except ValueError as e:
        raise NotTls(str(e)) from e
    if raw is None:
        if len(data) > MAX_CLIENT_HELLO:
            raise NotTls("ClientHello larger than 64 KiB")
        if len(data) > 5 and data[5] != 0x01:
            raise NotTls("first handshake message is not a ClientHello")
        return None
    if raw[0] != 0x01:
        raise NotTls("first handshake message is not a ClientHello")
    try:
        hello = ClientHello(raw[4:])
        return ClientHelloInfo(hello.sni, [p.decode("latin-1") for p in hello.alpn_protocols])
    except Exception as e:  # kaitai raises assorted errors on malformed input
        raise NotTls(f"malformed ClientHello: {e}") from e


# -- sans-I/O endpoint ----------------------------------------------------------------------


class TlsEndpoint:
    """One side of a TLS connection over memory BIOs; the caller moves the bytes."""

    def __init__(self, context: ssl.SSLContext, *, server_side: bool,
                 server_hostname: str | None = None) -> None:
        self.server_side = server_side
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                     server_hostname=server_hostname)
        self.handshake_complete = False
        self.peer_closed = False  # close_notify or EOF received
        self.clean_close = False  # it was a close_notify
        self._pending: list[bytes] = []
        self._closing = False
        self._flight_sent = False
        if not server_side:
            self._handshake()  # the ClientHello goes out at once

    @classmethod
    def server(cls, context: ssl.SSLContext) -> TlsEndpoint:
        return cls(context, server_side=True)

    @classmethod
    def client(cls, context: ssl.SSLContext, server_hostname: str | None) -> TlsEndpoint:
        return cls(context, server_side=False, server_hostname=server_hostname)

    @property
    def alpn(self) -> str | None:
        return self._ssl.selected_alpn_protocol() if self.handshake_complete else None

    @property
    def version(self) -> str | None:
        return self._ssl.version() if self.handshake_complete else None

    def outgoing(self) -> bytes:
        """Encrypted bytes to write to the peer now."""
        return self._outgoing.read()

    def _fail(self, e: ssl.SSLError) -> TlsError:
        reason = getattr(e, "reason", None) or ""
        if isinstance(e, ssl.SSLEOFError):
            self.peer_closed = True
        if self.server_side and not self.handshake_complete:
            if reason in REJECTION_ALERTS:
                return CertificateRejected(f"peer refused our certificate: {reason}", reason)
            if isinstance(e, ssl.SSLEOFError) and self._flight_sent:
                # our certificate went out and the app hung up: many pinning clients
                # close without an alert
                return CertificateRejected("peer closed during the TLS handshake", None)
        if isinstance(e, ssl.SSLEOFError) and not self.handshake_complete:
            return TlsError("peer closed during the TLS handshake")
        return TlsError(f"TLS {'server' if self.server_side else 'client'}: {e}")

    def _handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flight_sent = self._flight_sent or self._outgoing.pending > 0
            return
        except ssl.SSLError as e:
            raise self._fail(e) from e
        self.handshake_complete = True
        pending, self._pending = self._pending, []
        for data in pending:
            self.send(data)

    def receive(self, data: bytes) -> bytes:
        """Feed encrypted bytes (``b""`` = TCP EOF); returns the plaintext they carried."""
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()
        if not self.handshake_complete:
            self._handshake()
            if not self.handshake_complete:
                if not data:  # EOF that OpenSSL did not turn into an error itself
                    self.peer_closed = True
                    raise self._fail(ssl.SSLEOFError("EOF during the handshake"))
                return b""
        chunks = []
        while True:
            try:
                chunk = self._ssl.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.peer_closed = self.clean_close = True
                break
            except ssl.SSLEOFError:
                self.peer_closed = True
                break
            except ssl.SSLError as e:
                raise self._fail(e) from e
            if not chunk:  # SSLObject.read returns b"" on close_notify
                self.peer_closed = self.clean_close = True
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def send(self, data: bytes) -> None:
        """Queue plaintext for the peer (held until the handshake completes)."""
        if not data:
            return
        if not self.handshake_complete:
            self._pending.append(data)
            return
        if self._closing:
            raise TlsError("send after close")
        try:
            self._ssl.write(data)
        except ssl.SSLError as e:
            raise self._fail(e) from e

    def close(self) -> None:
        """Send close_notify (RFC 8446 §6.1); read ``outgoing()`` afterwards."""
        if self._closing or not self.handshake_complete:
            self._closing = True
            return
        self._closing = True
        with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLZeroReturnError, ssl.SSLEOFError):
            self._ssl.unwrap()

"""TLS interception: our CA, per-host certificates, and sans-I/O TLS endpoints.

Pieces (none of them does socket I/O; the proxy session pumps bytes):

1. ``CertificateAuthority`` — a CA generated once per install under
   ``$TRPROXY_HOME`` (default ``~/.trproxy/``) by mitmproxy's ``CertStore``; the
   private key file ``trproxy-ca.pem`` is mode 0600. Leaf certificates are minted on
   the fly per server name (SNI, or the destination IP when the client sent none),
   cached under ``certs/``, and served through ``server_context(name, alpn)``.
2. ``TlsEndpoint`` — ``ssl.SSLObject`` over two ``ssl.MemoryBIO``: ``receive(enc) ->
   plaintext``, ``send(plain)``, ``outgoing() -> enc``, ``handshake_complete``,
   ``alpn``, close_notify handling (``close()``, ``peer_closed``). Server role toward
   the app (our certificate), client role toward the upstream.
3. ``parse_client_hello(data)`` — ``ClientHelloInfo(sni, alpn)`` once the whole
   ClientHello is buffered, None before, ``NotTls`` if the bytes are not TLS.
4. ``upstream_context(verify=..., ca_file=...)`` — verification of the real server in
   record mode against the system store (and certifi), an extra CA file, or none.
5. ``ca_env(ca)`` — environment for a wrapped process so it trusts our CA (and libpq
   skips SCRAM channel binding, which no interception can satisfy).
6. ``CertificateRejected`` — raised by a server-role endpoint when the app refuses
   our certificate (alert unknown_ca / bad_certificate / certificate_unknown, typical
   of certificate pinning), so the proxy can pass that host through untouched.

How the proxy session should orchestrate one intercepted connection::

    buffer client bytes until parse_client_hello(buf) is not None
      (NotTls -> not TLS: hand the buffered bytes to protocol detection instead)
    sni, offers = hello;  name = sni or original_destination_ip
    if name in passthrough_hosts: relay bytes untouched, stop here
    RECORD:
      up = TlsEndpoint.client(upstream_context(alpn=offers), server_hostname=name)
      write up.outgoing() to the upstream; pump upstream bytes into up.receive()
        until up.handshake_complete            (verification errors: TlsError)
      chosen = up.alpn                         (None if the server chose none)
      down = TlsEndpoint.server(ca.server_context(name, [chosen] if chosen else []))
    REPLAY (no upstream):
      chosen = "h2" if "h2" in offers and the recordings for this host are HTTP/2
               else "http/1.1" if "http/1.1" in offers else None
      down = TlsEndpoint.server(ca.server_context(name, [chosen] if chosen else []))
    down.receive(buf)  -- the ClientHello bytes already read are simply fed in
    write down.outgoing() to the app; pump until down.handshake_complete
      CertificateRejected -> add name to passthrough_hosts, report "pinned: name";
      the app will usually retry on a new connection, which is then passed through
    then: app bytes -> down.receive() -> plaintext -> codec/recorder -> up.send(),
          up.receive() -> plaintext -> recorder -> down.send(); after every call
          write down.outgoing()/up.outgoing() to the sockets; TCP EOF -> receive(b"");
          peer_closed -> close() the other side; scheme for the HTTP dialect = https.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import ssl
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from mitmproxy.certs import Cert, CertStore
from mitmproxy.proxy.layers.tls import get_client_hello
from mitmproxy.tls import ClientHello

from .tlserrors import CertificateRejected, NotTls, TlsError

HOME_ENV = "TRPROXY_HOME"
BASENAME = "trproxy"

#: environment variables that point TLS clients at a CA bundle (value: our bundle)
CA_BUNDLE_ENV_VARS = (
    "SSL_CERT_FILE",                     # OpenSSL default paths: Python ssl, aiohttp, Ruby, PHP
    "REQUESTS_CA_BUNDLE",                # requests
    "CURL_CA_BUNDLE",                    # curl, pycurl
    "PIP_CERT",                          # pip
    "GIT_SSL_CAINFO",                    # git
    "AWS_CA_BUNDLE",                     # botocore, aws cli
    "HTTPLIB2_CA_CERTS",                 # httplib2
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",  # grpc core
    "NIX_SSL_CERT_FILE",                 # nix-built programs
    "CARGO_HTTP_CAINFO",                 # cargo
    "DENO_CERT",                         # deno
    "BUNDLE_SSL_CA_CERT",                # bundler
    "COMPOSER_CAFILE",                   # composer
    "PGSSLROOTCERT",                     # libpq (psql, psycopg), asyncpg: Postgres verify-ca/-full
)
#: environment variables that *add* a CA to a built-in store (value: our CA alone)
CA_EXTRA_ENV_VARS = ("NODE_EXTRA_CA_CERTS",)
#: fixed settings a client needs to accept the interception
INTERCEPTION_ENV = {
    # libpq binds SCRAM authentication to the server's certificate (channel_binding=prefer
    # picks SCRAM-SHA-256-PLUS over TLS); the server sees its own certificate, the client
    # ours, so the server rejects the proof: behind trproxy, libpq authenticates without it
    "PGCHANNELBINDING": "disable",
}

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

_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",    # Fedora, RHEL
    "/etc/ssl/cert.pem",                   # macOS, OpenBSD
)


# -- the CA -----------------------------------------------------------------------------


def trproxy_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The config dir: ``home``, else ``$TRPROXY_HOME``, else ``~/.trproxy``."""
    if home is not None:
        return Path(home)
    env = os.environ.get(HOME_ENV)
    return Path(env) if env else Path.home() / ".trproxy"


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _name_kind(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return x509.DNSName(name.encode("idna").decode("ascii"))


class CertificateAuthority:
    """The per-install CA and the leaf certificates it signs."""

    def __init__(self, home: str | os.PathLike[str] | None = None, *, key_size: int = 2048,
                 cache_size: int = 256) -> None:
        self.home = trproxy_home(home)
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _locked(self.home / ".lock"):  # two first runs at once must not race
            self._store = CertStore.from_store(self.home, BASENAME, key_size)
            for secret in (self.key_path, self.home / f"{BASENAME}-ca.p12"):
                if secret.exists() and secret.stat().st_mode & 0o077:
                    secret.chmod(0o600)
        self._certs = self.home / "certs"
        self._certs.mkdir(mode=0o700, exist_ok=True)
        self._fingerprint = self._store.default_ca.fingerprint().hex()[:16]
        self._contexts: OrderedDict[tuple[str, tuple[str, ...]], ssl.SSLContext] = OrderedDict()
        self._cache_size = cache_size

    @property
    def key_path(self) -> Path:
        """CA private key + certificate (PEM, mode 0600)."""
        return self.home / f"{BASENAME}-ca.pem"

    @property
    def cert_path(self) -> Path:
        """CA certificate only (PEM): what clients must trust."""
        return self.home / f"{BASENAME}-ca-cert.pem"

    @property
    def certificate(self) -> Cert:
        return self._store.default_ca

    def leaf_path(self, server_name: str) -> Path:
        """PEM chain (leaf + CA) for ``server_name`` (host name or IP), minted if needed.

        Leaves share the CA's key pair (as in mitmproxy), so ``key_path`` is their key.
        """
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", server_name)[:200]
        path = self._certs / f"{safe}-{self._fingerprint}.pem"
        if path.exists():
            cert = Cert.from_pem(path.read_bytes())
            if not cert.has_expired():
                return path
        kind = _name_kind(server_name)
        common = server_name if isinstance(kind, x509.DNSName) else None
        entry = self._store.get_cert(common, [kind], organization=BASENAME)
        chain = entry.cert.to_pem() + b"".join(c.to_pem() for c in entry.chain_certs)
        _atomic_write(path, chain)
        return path

    def server_context(self, server_name: str, alpn: Sequence[str] = ()) -> ssl.SSLContext:
        """A server-side context presenting a certificate for ``server_name``.

        ``alpn`` is what we may select; pass exactly the protocol chosen upstream (or
        none), so the app ends up speaking what the real server speaks.
        """
        key = (server_name, tuple(alpn))
        ctx = self._contexts.get(key)
        if ctx is not None:
            self._contexts.move_to_end(key)
            return ctx
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.leaf_path(server_name), self.key_path)
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        self._contexts[key] = ctx
        if len(self._contexts) > self._cache_size:
            self._contexts.popitem(last=False)
        return ctx

    def bundle_path(self) -> Path:
        """System CAs + our CA in one PEM file, for clients that take one bundle."""
        system = system_ca_file()
        data = Path(system).read_bytes() if system else b""
        if data and not data.endswith(b"\n"):
            data += b"\n"
        path = self.home / f"{BASENAME}-ca-bundle.pem"
        ours = self.cert_path.read_bytes()
        if not path.exists() or path.read_bytes() != data + ours:
            _atomic_write(path, data + ours)
        return path


def system_ca_file() -> str | None:
    """The system's CA bundle file (OpenSSL's default, a known distro path, certifi)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, *_SYSTEM_BUNDLES):
        if candidate and os.path.isfile(candidate):
            return candidate
    try:
        import certifi
    except ImportError:  # pragma: no cover
        return None
    return certifi.where()


def ca_env(ca: CertificateAuthority) -> dict[str, str]:
    """Environment variables that make a wrapped process trust ``ca``.

    Bundle variables point at system CAs + our CA, so the app still reaches hosts we
    pass through; ``NODE_EXTRA_CA_CERTS`` adds our CA to Node's built-in store. (JVMs
    need a trust store instead and are not covered.) ``PGSSLROOTCERT`` also makes libpq
    verify the chain under ``sslmode=require``, which our certificates pass.
    """
    bundle = str(ca.bundle_path())
    env = {name: bundle for name in CA_BUNDLE_ENV_VARS}
    env.update({name: str(ca.cert_path) for name in CA_EXTRA_ENV_VARS})
    env.update(INTERCEPTION_ENV)
    return env


def upstream_context(*, verify: bool = True, ca_file: str | os.PathLike[str] | None = None,
                     alpn: Sequence[str] = ()) -> ssl.SSLContext:
    """Client context toward the real server (record mode).

    Verifies against the system store plus certifi's, plus ``ca_file`` if given;
    ``verify=False`` skips verification entirely (self-signed test servers).
    """
    ctx = ssl.create_default_context()
    with contextlib.suppress(ImportError, OSError, ssl.SSLError):
        import certifi
        ctx.load_verify_locations(certifi.where())
    if ca_file is not None:
        ctx.load_verify_locations(os.fspath(ca_file))
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


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

"""Our certificate authority and what trusts it: the CA files, per-host certificates,
the upstream verification context and the environment a wrapped process needs.

``CertificateAuthority`` is generated once per install under ``$TRPROXY_HOME`` (default
``~/.trproxy/``) by mitmproxy's ``CertStore``; the private key file ``trproxy-ca.pem`` is
mode 0600. Leaf certificates are minted per server name (SNI, or the destination IP when
the client sent none), cached under ``certs/``, and served through
``server_context(name, alpn)``. ``upstream_context`` verifies the real server in record
mode against the system store (and certifi), an extra CA file, or none. ``ca_env`` makes a
wrapped process trust our CA (and libpq skip SCRAM channel binding, which no
interception can satisfy).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import ipaddress
import os
import re
import ssl
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..home import trproxy_home

if TYPE_CHECKING:  # imported where used: ``installed_ca_env`` needs neither (~0.2 s)
    from cryptography import x509
    from mitmproxy.certs import Cert, CertStore

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

_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",    # Fedora, RHEL
    "/etc/ssl/cert.pem",                   # macOS, OpenBSD
)


# -- the CA -----------------------------------------------------------------------------


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
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return x509.DNSName(name.encode("idna").decode("ascii"))


class CertificateAuthority:
    """The per-install CA and the leaf certificates it signs. Its key is read when the
    first certificate is signed (loading an RSA key checks it: 0.4 s on a loaded
    machine), so a run whose app makes no TLS connection never reads it; a CA that does
    not exist yet is made at once."""

    def __init__(self, home: str | os.PathLike[str] | None = None, *, key_size: int = 2048,
                 cache_size: int = 256) -> None:
        self.home = trproxy_home(home)
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._key_size = key_size
        self._loaded: CertStore | None = None
        self._certs = self.home / "certs"
        self._certs.mkdir(mode=0o700, exist_ok=True)
        self._contexts: OrderedDict[tuple[str, tuple[str, ...]], ssl.SSLContext] = OrderedDict()
        self._cache_size = cache_size
        if not (self.cert_path.is_file() and self.key_path.is_file()):
            self._store()  # the first run: clients get the CA's files in their environment

    def _store(self) -> CertStore:
        """mitmproxy's store of the CA, read (or generated) on first use."""
        if self._loaded is None:
            from mitmproxy.certs import CertStore

            with _locked(self.home / ".lock"):  # two first runs at once must not race
                self._loaded = CertStore.from_store(self.home, BASENAME, self._key_size)
                for secret in (self.key_path, self.home / f"{BASENAME}-ca.p12"):
                    if secret.exists() and secret.stat().st_mode & 0o077:
                        secret.chmod(0o600)
        return self._loaded

    @functools.cached_property
    def _fingerprint(self) -> str:
        return self.certificate.fingerprint().hex()[:16]

    @property
    def key_path(self) -> Path:
        """CA private key + certificate (PEM, mode 0600)."""
        return _key_path(self.home)

    @property
    def cert_path(self) -> Path:
        """CA certificate only (PEM): what clients must trust."""
        return _cert_path(self.home)

    @property
    def certificate(self) -> Cert:
        return self._store().default_ca

    def leaf_path(self, server_name: str) -> Path:
        """PEM chain (leaf + CA) for ``server_name`` (host name or IP), minted if needed.

        Leaves share the CA's key pair (as in mitmproxy), so ``key_path`` is their key.
        """
        from cryptography import x509
        from mitmproxy.certs import Cert

        safe = re.sub(r"[^A-Za-z0-9._-]", "_", server_name)[:200]
        path = self._certs / f"{safe}-{self._fingerprint}.pem"
        if path.exists():
            cert = Cert.from_pem(path.read_bytes())
            if not cert.has_expired():
                return path
        kind = _name_kind(server_name)
        common = server_name if isinstance(kind, x509.DNSName) else None
        entry = self._store().get_cert(common, [kind], organization=BASENAME)
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
        return _bundle_path(self.home)


def _key_path(home: Path) -> Path:
    return home / f"{BASENAME}-ca.pem"


def _cert_path(home: Path) -> Path:
    return home / f"{BASENAME}-ca-cert.pem"


def _bundle_path(home: Path) -> Path:
    system = system_ca_file()
    data = Path(system).read_bytes() if system else b""
    if data and not data.endswith(b"\n"):
        data += b"\n"
    path = home / f"{BASENAME}-ca-bundle.pem"
    ours = _cert_path(home).read_bytes()
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
    return _env(ca.home)


def installed_ca_env(home: str | os.PathLike[str] | None = None) -> dict[str, str] | None:
    """``ca_env`` of the CA generated under ``home`` by an earlier run, from its files
    alone: no mitmproxy, no cryptography, so ``trproxy test`` starts the app before it
    loads them. None when there is no CA yet (``CertificateAuthority`` makes it)."""
    path = trproxy_home(home)
    if not (_cert_path(path).is_file() and _key_path(path).is_file()):
        return None
    return _env(path)


def _env(home: Path) -> dict[str, str]:
    bundle = str(_bundle_path(home))
    env = {name: bundle for name in CA_BUNDLE_ENV_VARS}
    env.update({name: str(_cert_path(home)) for name in CA_EXTRA_ENV_VARS})
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

"""trproxy.tls: the CA, minted certificates, the sans-I/O endpoint, ClientHello
parsing, upstream contexts, the environment for wrapped processes, pinning detection.

Fast tests pump two endpoints against each other in memory. Slow tests use real
sockets on 127.0.0.1: a real ``ssl`` server, real clients (ssl, requests, httpx with
HTTP/2, curl, a subprocess trusting us through ``ca_env``), and an interceptor that
follows the orchestration written in tls.py's docstring (upstream first, ALPN
mirrored) while an ``HttpRecorder`` reads the plaintext.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import requests
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from trproxy.protocols.base import Direction
from trproxy.protocols.http import HttpRecorder
from trproxy.tls.ca import (
    CA_BUNDLE_ENV_VARS,
    CertificateAuthority,
    ca_env,
    system_ca_file,
    trproxy_home,
    upstream_context,
)
from trproxy.tls.endpoint import ClientHelloInfo, TlsEndpoint, parse_client_hello
from trproxy.tls.errors import CertificateRejected, NotTls, TlsError


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("trproxy-home"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory) -> CertificateAuthority:
    """A second CA standing in for a real server's issuer."""
    return CertificateAuthority(tmp_path_factory.mktemp("upstream-ca"))


def client_context(ca: CertificateAuthority, alpn=("h2", "http/1.1")) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def pump(a: TlsEndpoint, b: TlsEndpoint, rounds: int = 10) -> tuple[bytes, bytes]:
    """Move bytes both ways until quiet; returns plaintext each side received."""
    got_a = got_b = b""
    for _ in range(rounds):
        moved = False
        if data := a.outgoing():
            got_b += b.receive(data)
            moved = True
        if data := b.outgoing():
            got_a += a.receive(data)
            moved = True
        if not moved:
            break
    return got_a, got_b


# -- the CA --------------------------------------------------------------------------------


def test_ca_is_created_once_with_a_private_key_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TRPROXY_HOME", str(tmp_path / "home"))
    assert trproxy_home() == tmp_path / "home"
    ca = CertificateAuthority()
    assert ca.home == tmp_path / "home"
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.home.stat().st_mode) == 0o700
    assert b"PRIVATE KEY" in ca.key_path.read_bytes()
    assert b"PRIVATE KEY" not in ca.cert_path.read_bytes()
    assert ca.certificate.is_ca
    again = CertificateAuthority()
    assert again.certificate.fingerprint() == ca.certificate.fingerprint()


def test_home_defaults_to_dot_trproxy(monkeypatch):
    monkeypatch.delenv("TRPROXY_HOME", raising=False)
    assert trproxy_home() == Path.home() / ".trproxy"


@pytest.mark.parametrize("name,kind", [("localhost", x509.DNSName), ("api.example.test", x509.DNSName),
                                       ("127.0.0.1", x509.IPAddress), ("::1", x509.IPAddress)])
def test_leaf_certificates_name_the_server(ca, name, kind):
    cert = x509.load_pem_x509_certificates(ca.leaf_path(name).read_bytes())[0]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    values = sans.get_values_for_type(kind)
    expected = ipaddress.ip_address(name) if kind is x509.IPAddress else name
    assert values == [expected]
    assert cert.issuer == ca.certificate._cert.subject


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "::1"])
def test_client_trusting_our_ca_accepts_the_minted_certificate(ca, name):
    client = TlsEndpoint.client(client_context(ca), server_hostname=name)
    server = TlsEndpoint.server(ca.server_context(name, ["h2"]))
    pump(client, server)
    assert client.handshake_complete and server.handshake_complete
    assert client.alpn == server.alpn == "h2"
    client.send(b"ping")
    server.send(b"pong")
    got_client, got_server = pump(client, server)
    assert (got_client, got_server) == (b"pong", b"ping")


def test_wrong_name_is_refused_by_the_client(ca):
    client = TlsEndpoint.client(client_context(ca), server_hostname="other.test")
    server = TlsEndpoint.server(ca.server_context("localhost"))
    with pytest.raises(TlsError, match="CERTIFICATE_VERIFY_FAILED|match"):
        pump(client, server)


# -- the sans-I/O endpoint ------------------------------------------------------------------


def test_data_sent_before_the_handshake_is_held_and_large_data_flows(ca):
    client = TlsEndpoint.client(client_context(ca, alpn=()), server_hostname="localhost")
    server = TlsEndpoint.server(ca.server_context("localhost"))
    client.send(b"early ")
    assert client.alpn is None
    big = os.urandom(1_000_000)
    got_client = got_server = b""
    for _ in range(10):
        a, b = pump(client, server)
        got_client, got_server = got_client + a, got_server + b
    server.send(big)
    for _ in range(200):
        a, b = pump(client, server)
        got_client, got_server = got_client + a, got_server + b
        if len(got_client) >= len(big):
            break
    assert got_server == b"early " and got_client == big
    assert server.alpn is None  # nothing offered, nothing chosen


def test_close_notify_both_ways(ca):
    client = TlsEndpoint.client(client_context(ca), server_hostname="localhost")
    server = TlsEndpoint.server(ca.server_context("localhost"))
    pump(client, server)
    client.send(b"last words")
    client.close()
    _, got = pump(client, server)
    assert got == b"last words" and server.peer_closed and server.clean_close
    server.close()
    pump(client, server)
    assert client.peer_closed and client.clean_close


def test_tcp_eof_without_close_notify_is_a_close_but_not_clean(ca):
    client = TlsEndpoint.client(client_context(ca), server_hostname="localhost")
    server = TlsEndpoint.server(ca.server_context("localhost"))
    pump(client, server)
    assert server.receive(b"") == b""
    assert server.peer_closed and not server.clean_close


def test_pinning_client_is_detected_by_its_alert(ca):
    """A client that does not trust our CA (as a pinning client) answers with an alert;
    the server endpoint reports it as CertificateRejected, naming the alert."""
    client = TlsEndpoint.client(ssl.create_default_context(), server_hostname="localhost")
    server = TlsEndpoint.server(ca.server_context("localhost"))
    server.receive(client.outgoing())
    with pytest.raises(TlsError):
        client.receive(server.outgoing())
    with pytest.raises(CertificateRejected) as info:
        server.receive(client.outgoing())
    assert info.value.alert == "TLSV1_ALERT_UNKNOWN_CA"


def test_client_hanging_up_after_our_certificate_counts_as_rejection(ca):
    client = TlsEndpoint.client(client_context(ca), server_hostname="localhost")
    server = TlsEndpoint.server(ca.server_context("localhost"))
    server.receive(client.outgoing())
    assert server.outgoing()  # our certificate went out
    with pytest.raises(CertificateRejected) as info:
        server.receive(b"")
    assert info.value.alert is None


def test_eof_before_any_tls_is_not_a_rejection(ca):
    server = TlsEndpoint.server(ca.server_context("localhost"))
    with pytest.raises(TlsError) as info:
        server.receive(b"")
    assert not isinstance(info.value, CertificateRejected)


# -- ClientHello ----------------------------------------------------------------------------


def _hello(sni: str | None, alpn=("h2", "http/1.1")) -> bytes:
    ctx = ssl.create_default_context()
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if sni is None:
        ctx.check_hostname = False
    return TlsEndpoint.client(ctx, server_hostname=sni).outgoing()


def test_client_hello_sni_and_alpn_at_every_split():
    hello = _hello("api.example.test")
    for k in range(len(hello)):
        assert parse_client_hello(hello[:k]) is None, k
    info = parse_client_hello(hello)
    assert info == ClientHelloInfo("api.example.test", ["h2", "http/1.1"])
    assert parse_client_hello(hello + b"\x17\x03\x03\x00\x05extra") == info


def test_client_hello_without_sni_or_alpn():
    assert parse_client_hello(_hello(None, alpn=())) == ClientHelloInfo(None, [])
    assert parse_client_hello(_hello("127.0.0.1")).sni is None  # IPs are never sent as SNI


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\n", b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
                                  b"PRI * HTTP/2.0", b"\x16\x02\x00", b"\x16\x03\x03\x00\x05\x02\x00\x00\x01\x00",
                                  b"\x17\x03\x03\x00\x10"])
def test_non_tls_bytes_are_refused(data):
    with pytest.raises(NotTls):
        parse_client_hello(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 600))
def test_client_hello_parser_only_raises_not_tls(noise, at):
    hello = bytearray(_HELLO)
    at %= len(hello)
    hello[at:at + len(noise)] = noise
    for data in (bytes(hello), noise, b"\x16\x03\x01" + noise):
        try:
            parse_client_hello(data)
        except NotTls:
            pass


_HELLO = _hello("fuzz.test")


# -- upstream contexts and the environment --------------------------------------------------------


def test_upstream_context_options(other_ca):
    strict = upstream_context()
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    assert strict.cert_store_stats()["x509_ca"] > 0  # system store (and certifi) loaded
    extra = upstream_context(ca_file=other_ca.cert_path)
    assert extra.cert_store_stats()["x509_ca"] == strict.cert_store_stats()["x509_ca"] + 1
    lax = upstream_context(verify=False)
    assert lax.verify_mode == ssl.CERT_NONE and not lax.check_hostname


def test_upstream_verification_with_and_without_the_issuer(other_ca):
    def handshake(ctx):
        client = TlsEndpoint.client(ctx, server_hostname="localhost")
        server = TlsEndpoint.server(other_ca.server_context("localhost"))
        pump(client, server)
        return client.handshake_complete

    assert handshake(upstream_context(ca_file=other_ca.cert_path))
    assert handshake(upstream_context(verify=False))
    with pytest.raises(TlsError, match="CERTIFICATE_VERIFY_FAILED"):
        handshake(upstream_context())


def test_ca_env_points_at_system_cas_plus_ours(ca):
    env = ca_env(ca)
    assert set(CA_BUNDLE_ENV_VARS) <= set(env)
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT",
                 "GIT_SSL_CAINFO", "AWS_CA_BUNDLE"):
        assert env[name] == env["SSL_CERT_FILE"]
    assert env["NODE_EXTRA_CA_CERTS"] == str(ca.cert_path)
    bundle = x509.load_pem_x509_certificates(Path(env["SSL_CERT_FILE"]).read_bytes())
    system = x509.load_pem_x509_certificates(Path(system_ca_file()).read_bytes())
    assert len(bundle) == len(system) + 1
    assert bundle[-1] == ca.certificate._cert


# -- real sockets (slow) ----------------------------------------------------------------------------


class TlsEndpointServer:
    """Accepts TCP connections and serves them through a server-role TlsEndpoint."""

    def __init__(self, ca: CertificateAuthority, handler, host: str = "127.0.0.1") -> None:
        self.ca, self.handler, self.host = ca, handler, host
        self.listener = socket.create_server((host, 0), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.port = self.listener.getsockname()[1]
        self.errors: list[Exception] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with contextlib.closing(sock):
            buf = b""
            try:
                while (hello := parse_client_hello(buf)) is None:
                    buf += sock.recv(4096)
                # no SNI: the proxy would use the original destination IP
                tls = TlsEndpoint.server(self.ca.server_context(hello.sni or self.host, ["http/1.1"]))
                data = buf
                while True:
                    plain = tls.receive(data)
                    if plain:
                        tls.send(self.handler(plain))
                    sock.sendall(tls.outgoing())
                    if tls.peer_closed:
                        return
                    data = sock.recv(65536)
            except (TlsError, OSError) as e:
                self.errors.append(e)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


def _http_ok(request: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"


@pytest.mark.slow
@pytest.mark.parametrize("host,name", [("127.0.0.1", "localhost"), ("127.0.0.1", "127.0.0.1"), ("::1", "::1")])
def test_real_ssl_client_against_the_endpoint(ca, host, name):
    server = TlsEndpointServer(ca, _http_ok, host)
    try:
        with socket.create_connection((host, server.port)) as raw, \
                client_context(ca, alpn=()).wrap_socket(raw, server_hostname=name) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := tls.recv(4096):
                data += chunk
                if data.endswith(b"hello"):
                    break
        assert data.endswith(b"\r\n\r\nhello")
    finally:
        server.close()
    assert server.errors == []


@pytest.mark.slow
def test_pinning_client_over_a_socket_is_reported(ca):
    server = TlsEndpointServer(ca, _http_ok)
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as raw, pytest.raises(ssl.SSLError):
            ssl.create_default_context().wrap_socket(raw, server_hostname="localhost")
        for _ in range(100):
            if server.errors:
                break
            threading.Event().wait(0.02)
    finally:
        server.close()
    assert [type(e) for e in server.errors] == [CertificateRejected]


def _ssl_server(ctx: ssl.SSLContext, handler) -> tuple[socket.socket, int]:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            with contextlib.suppress(OSError, ssl.SSLError), ctx.wrap_socket(raw, server_side=True) as s:
                handler(s)

    threading.Thread(target=serve, daemon=True).start()
    return listener, listener.getsockname()[1]


@pytest.mark.slow
def test_client_endpoint_against_a_real_ssl_server(other_ca):
    ctx = other_ca.server_context("localhost", ["http/1.1"])

    def handler(s: ssl.SSLSocket) -> None:
        s.recv(4096)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        s.unwrap()

    listener, port = _ssl_server(ctx, handler)
    try:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            tls = TlsEndpoint.client(upstream_context(ca_file=other_ca.cert_path, alpn=["h2", "http/1.1"]),
                                     server_hostname="localhost")
            sock.sendall(tls.outgoing())
            while not tls.handshake_complete:
                tls.receive(sock.recv(65536))
                sock.sendall(tls.outgoing())
            tls.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            sock.sendall(tls.outgoing())
            got = b""
            while not tls.peer_closed:
                data = sock.recv(65536)
                got += tls.receive(data)
                sock.sendall(tls.outgoing())
            assert tls.alpn == "http/1.1" and got.endswith(b"\r\n\r\nok") and tls.clean_close
    finally:
        listener.close()


class Interceptor:
    """The TLS orchestration of tls.py's docstring, record mode, on real sockets:
    ClientHello -> upstream TLS offering the client's ALPNs -> answer the client with the
    ALPN the upstream chose -> relay plaintext through an HttpRecorder."""

    def __init__(self, ca: CertificateAuthority, upstream_port: int, upstream_ca: Path) -> None:
        self.ca, self.upstream_port, self.upstream_ca = ca, upstream_port, upstream_ca
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.interactions: list = []
        self.alpn: list[tuple[list[str], str | None]] = []
        self.errors: list[Exception] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(sock,), daemon=True).start()

    def _session(self, app: socket.socket) -> None:
        try:
            buf = b""
            while (hello := parse_client_hello(buf)) is None:
                buf += app.recv(4096)
            name = hello.sni or "127.0.0.1"
            up_sock = socket.create_connection(("127.0.0.1", self.upstream_port))
            up = TlsEndpoint.client(upstream_context(ca_file=self.upstream_ca, alpn=hello.alpn),
                                    server_hostname=name)
            up_sock.sendall(up.outgoing())
            while not up.handshake_complete:
                up.receive(up_sock.recv(65536))
                up_sock.sendall(up.outgoing())
            chosen = up.alpn
            self.alpn.append((hello.alpn, chosen))
            down = TlsEndpoint.server(self.ca.server_context(name, [chosen] if chosen else []))
            recorder = HttpRecorder(scheme="https", authority=f"{name}:{self.upstream_port}")
            lock = threading.Lock()

            def pump(src: socket.socket, src_tls: TlsEndpoint, dst: socket.socket, dst_tls: TlsEndpoint,
                     direction: Direction, first: bytes = b"") -> None:
                data = first
                with contextlib.suppress(OSError):
                    while True:
                        data = data or src.recv(65536)
                        with lock:
                            plain = src_tls.receive(data)
                            if out := src_tls.outgoing():
                                src.sendall(out)
                            if plain:
                                self.interactions += recorder.feed(direction, plain)
                                dst_tls.send(plain)
                                dst.sendall(dst_tls.outgoing())
                            if not data or src_tls.peer_closed:
                                self.interactions += recorder.feed(direction, b"")
                                dst_tls.close()
                                dst.sendall(dst_tls.outgoing())
                                return
                        data = b""

            t = threading.Thread(target=pump, args=(up_sock, up, app, down, Direction.SERVER), daemon=True)
            t.start()
            pump(app, down, up_sock, up, Direction.CLIENT, buf)
            t.join(10)
            up_sock.close()
        except Exception as e:  # noqa: BLE001 - reported to the test
            self.errors.append(e)
        finally:
            app.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


@pytest.mark.slow
@pytest.mark.parametrize("client", ["httpx-h2", "requests"])
def test_interception_mirrors_upstream_alpn_and_records_plaintext(ca, other_ca, client):
    from tests.protocols.http.servers import H2Server  # the h2 test server, here over TLS

    upstream_ctx = other_ca.server_context("localhost", ["h2"])
    if client == "requests":  # an HTTP/1.1-only upstream
        upstream_ctx = other_ca.server_context("localhost", ["http/1.1"])

        def handler(s: ssl.SSLSocket) -> None:
            s.recv(65536)
            s.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\n'
                      b'Connection: close\r\n\r\n{"a": 1}')
            s.unwrap()

        listener, port = _ssl_server(upstream_ctx, handler)
        server = None
    else:
        server = H2Server(ssl_context=upstream_ctx).start()
        port = server.port
    proxy = Interceptor(ca, port, other_ca.cert_path)
    try:
        # the app reaches "localhost:port" through the interceptor and trusts only our CA
        if client == "requests":
            r = requests.get(f"https://localhost:{proxy.port}/json", verify=str(ca.cert_path))
            assert r.json() == {"a": 1}
        else:
            with httpx.Client(http2=True, verify=str(ca.cert_path)) as c:
                r = c.get(f"https://localhost:{proxy.port}/json")
                assert r.http_version == "HTTP/2" and r.json()["name"] == "widget"
        for _ in range(100):
            if proxy.interactions:
                break
            threading.Event().wait(0.02)
    finally:
        proxy.close()
        if server is not None:
            server.close()
        else:
            listener.close()
    assert proxy.errors == []
    expected = "h2" if client == "httpx-h2" else "http/1.1"
    assert proxy.alpn[0][1] == expected
    [item] = proxy.interactions[:1]
    assert item.request["url"].startswith("https://localhost:")
    assert item.request["http_version"] == ("HTTP/2.0" if expected == "h2" else "HTTP/1.1")
    assert item.responses[-1]["status"] == 200


@pytest.mark.slow
def test_wrapped_processes_trust_our_ca_through_ca_env(ca):
    server = TlsEndpointServer(ca, _http_ok)
    env = {**os.environ, **ca_env(ca)}
    url = f"https://localhost:{server.port}/"
    try:
        py = subprocess.run([sys.executable, "-c", f"import urllib.request; print(urllib.request.urlopen({url!r}).read())"],
                            env=env, capture_output=True, text=True, timeout=30)
        curl = subprocess.run(["curl", "-sS", url], env=env, capture_output=True, text=True, timeout=30)
        req = subprocess.run([sys.executable, "-c", f"import requests; print(requests.get({url!r}).text)"],
                             env=env, capture_output=True, text=True, timeout=30)
        plain = subprocess.run(["curl", "-sS", url], capture_output=True, text=True, timeout=30,
                               env={k: v for k, v in os.environ.items() if k not in env or k == "PATH"})
    finally:
        server.close()
    assert py.stdout.strip() == "b'hello'", py.stderr
    assert curl.stdout == "hello", curl.stderr
    assert req.stdout.strip() == "hello", req.stderr
    assert plain.returncode != 0  # without the environment, our CA is not trusted

"""Which dialect records a connection when the server speaks first (issue 16): ALPN
decides after TLS, and an HTTP/2 server's SETTINGS before the client's preface wait for
the preface instead of making the connection ``generic``."""

from __future__ import annotations

import h2.config
import h2.connection

from trproxy.protocols.http import H2_PREFACE
from trproxy.protocols.registry import by_alpn
from trproxy.proxy.context import Mode, RunContext
from trproxy.proxy.record import Capture


def _settings() -> bytes:
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    return server.data_to_send()


def test_settings_before_the_preface_wait_for_the_client():
    cap = Capture(RunContext(Mode.RECORD), "127.0.0.1:8081", 8081)
    cap.server(_settings())
    assert cap.dialect is None
    cap.client(H2_PREFACE)
    assert cap.dialect is not None and cap.dialect.name == "http"


def test_alpn_h2_decides_whoever_speaks_first():
    cap = Capture(RunContext(Mode.RECORD), "127.0.0.1:9443", 9443, tls=True, alpn="h2")
    cap.server(_settings())
    assert cap.dialect is not None and cap.dialect.name == "http"
    assert by_alpn("http/1.1") is not None and by_alpn("imap") is None and by_alpn(None) is None


def test_another_server_greeting_is_still_generic():
    cap = Capture(RunContext(Mode.RECORD), "127.0.0.1:25", 25)
    cap.server(b"220 mail.example.com ESMTP\r\n")
    assert cap.dialect is not None and cap.dialect.name == "generic"


def test_a_mysql_greeting_is_mysql_on_any_port():
    cap = Capture(RunContext(Mode.RECORD), "127.0.0.1:40001", 40001)
    cap.server(b"J\x00\x00\x00\n8.0.36\x00" + b"\x01" * 70)
    assert cap.dialect is not None and cap.dialect.name == "mysql"

"""TLS interception errors, importable without mitmproxy (the sessions catch them always)."""

from __future__ import annotations


class TlsError(Exception):
    """A TLS handshake or record failed."""


class NotTls(TlsError):
    """The client's first bytes are not a TLS ClientHello."""


class CertificateRejected(TlsError):
    """The app refused our certificate (likely pinning); ``alert`` is the TLS alert
    name, or None when the app just closed the connection mid-handshake."""

    def __init__(self, message: str, alert: str | None = None) -> None:
        super().__init__(message)
        self.alert = alert

"""Session encryption requests (protocol 3.0, "SSL Session Encryption", "GSSAPI Session
Encryption"): what the proxy answers before the StartupMessage. Sans-I/O.

The client sends an 8-byte SSLRequest (or GSSENCRequest) and waits for one unframed
byte: 'S' (a TLS handshake follows, then the normal startup inside TLS), 'G' (GSSAPI
encryption) or 'N' (go on in plaintext).

* ``decline_encryption``: 'N' to either request, as a server without TLS answers, so
  ``sslmode=prefer`` clients go on in plaintext (used when TLS is not intercepted).
* ``tls_upgrade``: the byte that accepts an SSLRequest ('S'). With TLS interception the
  proxy answers it and terminates TLS itself, so the startup and everything after it
  are read in plaintext inside. GSSAPI encryption cannot be intercepted: always 'N'.
"""

from __future__ import annotations

import struct

from .wire import GSSENC_REQUEST_CODE, SSL_REQUEST_CODE

SSL_REQUEST = struct.pack("!ii", 8, SSL_REQUEST_CODE)
GSSENC_REQUEST = struct.pack("!ii", 8, GSSENC_REQUEST_CODE)


def decline_encryption(data: bytes) -> bytes | None:
    """'N' if ``data`` is exactly an SSLRequest or a GSSENCRequest, else None."""
    return b"N" if data in (SSL_REQUEST, GSSENC_REQUEST) else None


def tls_upgrade(data: bytes) -> bytes | None:
    """'S' if ``data`` is exactly an SSLRequest (TLS may follow), else None."""
    return b"S" if data == SSL_REQUEST else None

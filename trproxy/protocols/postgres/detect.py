"""Is this new connection PostgreSQL? Judged from the client's first bytes.

A PostgreSQL client speaks first with an untyped startup-phase packet: Int32 length
(so the first byte is 0: the server refuses packets over 10000 bytes) then Int32
code - SSLRequest 80877103 (length 8), GSSENCRequest 80877104 (length 8),
CancelRequest 80877102 (length 16, or more in protocol 3.2) or a protocol version
with major 3 followed by NUL-terminated ``name\\0value\\0`` pairs. The port is only a
hint: HTTP ("GET ..."), a TLS ClientHello (0x16) or MySQL's handshake response on
port 5432 are rejected by these bytes alone.
"""

from __future__ import annotations

import struct

from .wire import (
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
    MAX_STARTUP_PACKET,
    SSL_REQUEST_CODE,
)

_HEAD = struct.Struct("!ii")


def detect(first_bytes: bytes, port: int = 5432) -> bool | None:
    """True / False, or None while fewer than 8 bytes leave it open."""
    data = first_bytes
    if not data:
        return None
    if data[0] != 0:
        return False
    if len(data) < 8:
        return None
    length, code = _HEAD.unpack_from(data)
    if code in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE):
        return length == 8
    if code == CANCEL_REQUEST_CODE:
        return 16 <= length <= 12 + 256
    if code >> 16 != 3 or not 8 < length <= MAX_STARTUP_PACKET:
        return False
    return _startup_parameters_plausible(data[8:length], complete=len(data) >= length)


def _startup_parameters_plausible(params: bytes, complete: bool) -> bool:
    """``name\\0value\\0...\\0``: names are printable ASCII and the list ends with an
    empty name at the end of the packet. An incomplete packet only has to look right so
    far (the header already fixed the length and the protocol version)."""
    pos = 0
    names = 0
    while pos < len(params):
        end = params.find(b"\0", pos)
        name = params[pos:] if end < 0 else params[pos:end]
        if not all(0x20 < b < 0x7F for b in name):
            return False
        if end < 0:
            return not complete
        if not name:
            return names > 0 and end == len(params) - 1
        vend = params.find(b"\0", end + 1)
        if vend < 0:
            return not complete
        names += 1
        pos = vend + 1
    return not complete

"""Is this connection HTTP? Judged from the client's first bytes alone.

True for the HTTP/2 preface (RFC 9113 §3.4) and for an HTTP/1.x request-line
``token SP request-target SP HTTP/1.x`` (RFC 9112 §3); None while the bytes so far
are a prefix of either and the first line is not complete; False otherwise. The port
is only a hint and is not used. Cost: one regex over at most the first line.
"""

from __future__ import annotations

import re

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 3.4, the client's first bytes

# RFC 9110 §5.6.2 tchar; methods are tokens, in practice upper case
_METHOD = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}"
_REQUEST_LINE = re.compile(rb"(" + _METHOD + rb") [^ \r\n]{1,8192} HTTP/1\.[01]\r?\n")
_PARTIAL = re.compile(rb"\A(?:" + _METHOD + rb"(?: (?:[^ \r\n]{1,8192}(?: (?:H(?:T(?:T(?:P(?:/(?:1(?:\.(?:[01]\r?)?)?)?)?)?)?)?)?)?)?)?)?\Z")
_MAX_LINE = 8192 + 64


def detect(first_bytes: bytes, port: int = 0) -> bool | None:
    data = first_bytes
    if not data:
        return None
    if data.startswith(H2_PREFACE):
        return True
    if H2_PREFACE.startswith(data):
        return None
    # skip the empty lines a client may send before a request (RFC 9112 §2.2)
    data = data.lstrip(b"\r\n")
    if not data:
        return None if len(first_bytes) < 16 else False
    if _REQUEST_LINE.match(data):
        return True
    line = data.split(b"\n", 1)[0]
    if b"\n" in data or len(line) > _MAX_LINE:
        return False
    return None if _PARTIAL.match(data) else False


def server_settings_first(data: bytes) -> bool:
    """An HTTP/2 server's first frame is SETTINGS (RFC 9113 §3.4): length a multiple of
    6, type 0x4, stream 0; it may come before the client's preface."""
    if len(data) < 9:
        return False
    length = int.from_bytes(data[:3], "big")
    return data[3] == 0x4 and length % 6 == 0 and int.from_bytes(data[5:9], "big") & 0x7FFFFFFF == 0

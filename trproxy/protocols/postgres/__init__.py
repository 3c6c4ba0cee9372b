"""PostgreSQL frontend/backend protocol 3.0: record and replay.

Modules (each says its role and invariants):

* ``wire``, ``frontend``, ``backend``: message types as frozen dataclasses named as in
  the spec ("Message Formats"), with their body encodings;
* ``codec``: ``PostgresCodec``, the sans-I/O state machine for one connection;
* ``readable``, ``values``: messages <-> readable YAML-safe data (secrets redacted);
* ``names``: per-connection prepared statements/portals (names -> SQL);
* ``sql``, ``matching``: SQL normalization, lifetimes, ``match_key``;
* ``recorder``: ``PostgresRecorder`` (record mode);
* ``render``, ``replayer``: ``PostgresReplayer`` (replay mode);
* ``detect``: is a new connection PostgreSQL.
"""

from __future__ import annotations

import struct

from ..base import Dialect
from .codec import PostgresCodec
from .detect import detect
from .matching import match_key
from .recorder import PostgresRecorder
from .replayer import PostgresReplayer
from .wire import GSSENC_REQUEST_CODE, SSL_REQUEST_CODE

_ENCRYPTION_REQUESTS = {struct.pack("!ii", 8, code) for code in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE)}


def decline_encryption(data: bytes) -> bytes | None:
    """Record mode: answer SSLRequest/GSSENCRequest with "N" (protocol 3.0, "SSL Session
    Encryption"), as a server without TLS does, so `sslmode=prefer` clients continue in
    plaintext that can be recorded, even when the real server offers TLS."""
    return b"N" if data in _ENCRYPTION_REQUESTS else None


DIALECT = Dialect(
    name="postgres",
    default_ports=(5432,),
    detect=detect,
    recorder=PostgresRecorder,
    replayer=PostgresReplayer,
    match_key=match_key,
    local_reply=decline_encryption,
)

__all__ = ["DIALECT", "PostgresCodec", "decline_encryption", "PostgresRecorder", "PostgresReplayer", "detect",
           "match_key"]

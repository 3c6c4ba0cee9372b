"""MySQL/MariaDB client/server protocol: record and replay.

Modules (each says its role and invariants):

* ``wire``: packet framing (3-byte length + sequence id, 16 MiB continuation),
  integers, capability/status/type constants;
* ``packets``: each packet type <-> its readable dict (values decoded by column type);
* ``codec``: ``MySQLCodec``, the state machine for one connection (greeting,
  authentication, commands and their answers);
* ``sql``, ``matching``: SQL normalization, lifetimes, ``match_key``, volatile values;
* ``recorder``: ``MySQLRecorder`` (record mode);
* ``replayer``: ``MySQLReplayer`` (replay mode).

The server speaks first: the connection is recognized by the server's greeting
(``greeting``: a HandshakeV10 with sequence id 0), never by the client's bytes.
"""

from __future__ import annotations

from ..base import Dialect
from .codec import MySQLCodec
from .matching import match_key, volatile
from .recorder import MySQLRecorder
from .replayer import MySQLReplayer, check_fault
from .wire import CLIENT_SSL


def detect(first_bytes: bytes, port: int) -> bool | None:
    """A MySQL client never speaks first: judged by the server's ``greeting`` instead."""
    return False


def greeting(server_bytes: bytes) -> bool:
    """Whether a server's first bytes are a HandshakeV10: a packet of sequence id 0 whose
    payload starts with protocol version 10 and a printable server version."""
    data = server_bytes
    if len(data) < 6 or data[3] != 0 or data[4] != 10:
        return False
    length = int.from_bytes(data[:3], "little")
    end = data.find(b"\0", 5, 4 + length)
    if not 30 <= length <= 4096 or end < 6:
        return False
    return all(0x20 <= b < 0x7F for b in data[5:end])


def tls_request(client_bytes: bytes) -> int:
    """The length of the SSLRequest the client's answer to the greeting starts with (a
    32-byte HandshakeResponse41 prefix, sequence id 1, CLIENT_SSL set; the ClientHello
    may follow in the same read), or 0."""
    data = client_bytes
    ok = (len(data) >= 36 and data[:4] == b"\x20\x00\x00\x01"
          and bool(int.from_bytes(data[4:8], "little") & CLIENT_SSL))
    return 36 if ok else 0


DIALECT = Dialect(
    name="mysql",
    default_ports=(3306,),
    detect=detect,
    recorder=MySQLRecorder,
    replayer=MySQLReplayer,
    match_key=match_key,
    volatile=volatile,
    greeting=greeting,
    tls_request=tls_request,
    connection_aware=True,
    check_fault=check_fault,
)

__all__ = ["DIALECT", "MySQLCodec", "MySQLRecorder", "MySQLReplayer", "detect", "greeting", "match_key",
           "tls_request"]

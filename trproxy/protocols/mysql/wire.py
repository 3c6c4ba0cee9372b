"""MySQL/MariaDB client/server protocol: framing, integers and constants (sans-I/O).

Every message travels in *packets*: a 3-byte little-endian payload length, a 1-byte
sequence id, the payload. A payload of exactly 0xFFFFFF bytes continues in the next
packet (16 MiB continuation); the logical packet ends with the first shorter one (an
empty one if need be). Sequence ids restart at 0 with each command and count every
packet of the exchange, both directions.

Names follow the MySQL "Client/Server Protocol" reference and MariaDB's additions
(extended capabilities in the greeting's reserved bytes when CLIENT_MYSQL is unset).
"""

from __future__ import annotations

import struct

from ..base import DecodeError

MAX_PAYLOAD = 0xFFFFFF
DEFAULT_MAX_PACKET = 64 * 1024 * 1024  # a logical packet larger than this: not followed

# capability flags (lower 32 bits: MySQL; upper 32: MariaDB's extended capabilities)
CLIENT_MYSQL = 1  # CLIENT_LONG_PASSWORD in MySQL; MariaDB servers leave it unset
CLIENT_FOUND_ROWS = 1 << 1
CLIENT_LONG_FLAG = 1 << 2
CLIENT_CONNECT_WITH_DB = 1 << 3
CLIENT_COMPRESS = 1 << 5
CLIENT_LOCAL_FILES = 1 << 7
CLIENT_PROTOCOL_41 = 1 << 9
CLIENT_SSL = 1 << 11
CLIENT_TRANSACTIONS = 1 << 13
CLIENT_SECURE_CONNECTION = 1 << 15
CLIENT_MULTI_STATEMENTS = 1 << 16
CLIENT_MULTI_RESULTS = 1 << 17
CLIENT_PS_MULTI_RESULTS = 1 << 18
CLIENT_PLUGIN_AUTH = 1 << 19
CLIENT_CONNECT_ATTRS = 1 << 20
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
CLIENT_SESSION_TRACK = 1 << 23
CLIENT_DEPRECATE_EOF = 1 << 24
CLIENT_OPTIONAL_RESULTSET_METADATA = 1 << 25
CLIENT_ZSTD_COMPRESSION_ALGORITHM = 1 << 26
CLIENT_QUERY_ATTRIBUTES = 1 << 27
MARIADB_CLIENT_PROGRESS = 1 << 32
MARIADB_CLIENT_EXTENDED_TYPE_INFO = 1 << 35
MARIADB_CLIENT_CACHE_METADATA = 1 << 36
# what replay's greeting never offers: the features it cannot follow or render
REPLAY_WITHHELD = (CLIENT_SSL | CLIENT_COMPRESS | CLIENT_ZSTD_COMPRESSION_ALGORITHM
                   | CLIENT_OPTIONAL_RESULTSET_METADATA | CLIENT_QUERY_ATTRIBUTES
                   | MARIADB_CLIENT_PROGRESS | MARIADB_CLIENT_CACHE_METADATA)

# server status flags
SERVER_STATUS_IN_TRANS = 1
SERVER_STATUS_AUTOCOMMIT = 2
SERVER_MORE_RESULTS_EXISTS = 8
SERVER_STATUS_CURSOR_EXISTS = 64
SERVER_SESSION_STATE_CHANGED = 1 << 14

# column flags
UNSIGNED_FLAG = 32
ZEROFILL_FLAG = 64

COMMANDS = {
    0x01: "COM_QUIT", 0x02: "COM_INIT_DB", 0x03: "COM_QUERY", 0x04: "COM_FIELD_LIST",
    0x09: "COM_STATISTICS", 0x0E: "COM_PING", 0x11: "COM_CHANGE_USER",
    0x16: "COM_STMT_PREPARE", 0x17: "COM_STMT_EXECUTE", 0x18: "COM_STMT_SEND_LONG_DATA",
    0x19: "COM_STMT_CLOSE", 0x1A: "COM_STMT_RESET", 0x1B: "COM_SET_OPTION",
    0x1C: "COM_STMT_FETCH", 0x1F: "COM_RESET_CONNECTION",
}
COMMAND_CODES = {name: code for code, name in COMMANDS.items()}

TYPES = {
    0: "DECIMAL", 1: "TINY", 2: "SHORT", 3: "LONG", 4: "FLOAT", 5: "DOUBLE", 6: "NULL",
    7: "TIMESTAMP", 8: "LONGLONG", 9: "INT24", 10: "DATE", 11: "TIME", 12: "DATETIME",
    13: "YEAR", 14: "NEWDATE", 15: "VARCHAR", 16: "BIT", 17: "TIMESTAMP2", 18: "DATETIME2",
    19: "TIME2", 245: "JSON", 246: "NEWDECIMAL", 247: "ENUM", 248: "SET",
    249: "TINY_BLOB", 250: "MEDIUM_BLOB", 251: "LONG_BLOB", 252: "BLOB", 253: "VAR_STRING",
    254: "STRING", 255: "GEOMETRY",
}
TYPE_CODES = {name: code for code, name in TYPES.items()}
INTEGER_TYPES = {"TINY", "SHORT", "LONG", "LONGLONG", "INT24", "YEAR"}

_U16, _U32, _U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")


def type_name(code: int) -> str:
    return TYPES.get(code, str(code))


def type_code(name: str | int) -> int:
    if isinstance(name, int):
        return name
    if name in TYPE_CODES:
        return TYPE_CODES[name]
    if name.isdigit():
        return int(name)
    raise DecodeError(f"unknown MySQL column type {name!r}")


class Reader:
    """Reads one payload front to back; running past its end is a ``DecodeError``."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise DecodeError(f"packet too short: wanted {n} bytes at offset {self.pos}")
        chunk, self.pos = self.data[self.pos:end], end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return _U16.unpack(self.take(2))[0]

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "little")

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def u64(self) -> int:
        return _U64.unpack(self.take(8))[0]

    def lenenc(self) -> int | None:
        """A length-encoded integer; None for 0xFB (NULL in a text row)."""
        first = self.u8()
        if first < 0xFB:
            return first
        if first == 0xFB:
            return None
        if first == 0xFC:
            return self.u16()
        if first == 0xFD:
            return self.u24()
        if first == 0xFE:
            return self.u64()
        raise DecodeError("0xFF is not a length-encoded integer")

    def lenenc_int(self) -> int:
        value = self.lenenc()
        if value is None:
            raise DecodeError("NULL where a length-encoded integer was expected")
        return value

    def lenenc_bytes(self) -> bytes | None:
        n = self.lenenc()
        return None if n is None else self.take(n)

    def lenenc_str(self) -> bytes:
        return self.take(self.lenenc_int())

    def nul_str(self, lenient: bool = False) -> bytes:
        """Up to a NUL (consumed); ``lenient``: or to the end (servers that omit it)."""
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            if not lenient:
                raise DecodeError("string without its terminating NUL")
            end = len(self.data)
            chunk, self.pos = self.data[self.pos:end], end
            return chunk
        chunk, self.pos = self.data[self.pos:end], end + 1
        return chunk

    def rest(self) -> bytes:
        chunk, self.pos = self.data[self.pos:], len(self.data)
        return chunk


def lenenc(n: int) -> bytes:
    if n < 0xFB:
        return bytes((n,))
    if n < 1 << 16:
        return b"\xfc" + _U16.pack(n)
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little")
    return b"\xfe" + _U64.pack(n)


def lenenc_str(data: bytes) -> bytes:
    return lenenc(len(data)) + data


def u16(n: int) -> bytes:
    return _U16.pack(n & 0xFFFF)


def u32(n: int) -> bytes:
    return _U32.pack(n & 0xFFFFFFFF)


def frame(payload: bytes, seq: int) -> tuple[bytes, int]:
    """The packets carrying ``payload`` from sequence id ``seq``, and the next id."""
    out = bytearray()
    pos = 0
    while True:
        chunk = payload[pos:pos + MAX_PAYLOAD]
        out += len(chunk).to_bytes(3, "little") + bytes((seq & 0xFF,)) + chunk
        seq = (seq + 1) & 0xFF
        pos += len(chunk)
        if len(chunk) < MAX_PAYLOAD:
            return bytes(out), seq


def frames(payloads: list[bytes], seq: int) -> tuple[bytes, int]:
    out = []
    for payload in payloads:
        data, seq = frame(payload, seq)
        out.append(data)
    return b"".join(out), seq


class PacketBuffer:
    """Bytes of one direction -> logical packets ``(first sequence id, payload)``."""

    def __init__(self, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        self.buf = bytearray()
        self.pos = 0
        self.max_packet = max_packet
        self._parts: list[bytes] = []
        self._size = 0
        self._seq: int | None = None

    def feed(self, data: bytes) -> None:
        if self.pos and self.pos == len(self.buf):
            self.buf.clear()
            self.pos = 0
        self.buf += data

    def pending(self) -> int:
        """Bytes received that are not yet part of a returned packet."""
        return len(self.buf) - self.pos + self._size

    def next(self) -> tuple[int, bytes] | None:
        while True:
            buf, pos = self.buf, self.pos
            if len(buf) - pos < 4:
                return None
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            if self._size + length > self.max_packet:
                raise DecodeError(f"packet of more than {self.max_packet} bytes")
            end = pos + 4 + length
            if end > len(buf):
                return None
            if self._seq is None:
                self._seq = buf[pos + 3]
            payload = bytes(buf[pos + 4:end])
            self.pos = end
            if self.pos > 65536:  # drop what was read, now and then
                del self.buf[:self.pos]
                self.pos = 0
            if length == MAX_PAYLOAD:
                self._parts.append(payload)
                self._size += length
                continue
            seq, self._seq = self._seq, None
            if self._parts:
                payload = b"".join([*self._parts, payload])
                self._parts, self._size = [], 0
            return seq, payload

"""DNS messages (RFC 1035 section 4.1): parse, serialize, and the TCP length prefix.

Sans-I/O. A message is a header, questions and three lists of resource records; names
are decoded with compression pointers followed (backwards only, so a loop is an error)
and encoded with compression. A, AAAA, CNAME (and NS, PTR: a name), SRV (RFC 2782) and
MX get typed data; every other type keeps its RDATA as bytes, unchanged. Malformed input
raises ``DnsError`` (a ``DecodeError``), never anything else.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Any

from ..base import DecodeError

TYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
         33: "SRV", 41: "OPT", 65: "HTTPS", 255: "ANY"}
TYPE_CODES = {v: k for k, v in TYPES.items()}
CLASSES = {1: "IN", 3: "CH", 255: "ANY"}
CLASS_CODES = {v: k for k, v in CLASSES.items()}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
RCODE_CODES = {v: k for k, v in RCODES.items()}
NAME_DATA = {2, 5, 12}  # NS, CNAME, PTR: RDATA is one (compressible) domain name

# header flags (RFC 1035 4.1.1)
QR, AA, TC, RD, RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
MAX_NAME = 255  # octets of a name in wire form (RFC 1035 2.3.4)
MAX_LABEL = 63


class DnsError(DecodeError):
    """Bytes that are not a DNS message."""


@dataclass
class Question:
    name: str
    type: int
    cls: int = 1


@dataclass
class Record:
    name: str
    type: int
    cls: int
    ttl: int
    # A/AAAA: the address text; NS/CNAME/PTR: a name; SRV: (priority, weight, port,
    # target); MX: (preference, exchange); other types: the RDATA bytes
    data: Any


@dataclass
class Message:
    id: int
    flags: int
    questions: list[Question] = field(default_factory=list)
    answers: list[Record] = field(default_factory=list)
    authority: list[Record] = field(default_factory=list)
    additional: list[Record] = field(default_factory=list)

    @property
    def rcode(self) -> int:
        return self.flags & 0xF

    @property
    def is_response(self) -> bool:
        return bool(self.flags & QR)


def type_name(code: int) -> str:
    return TYPES.get(code, f"TYPE{code}")  # RFC 3597 section 5


def type_code(name: str) -> int:
    name = name.upper()
    if name in TYPE_CODES:
        return TYPE_CODES[name]
    if name.startswith("TYPE") and name[4:].isdigit() and int(name[4:]) < 65536:
        return int(name[4:])
    raise ValueError(f"unknown DNS type {name!r}")


# --- names --------------------------------------------------------------------------------

def _label_text(raw: bytes) -> str:
    """A label in master-file form (RFC 1035 5.1): '.' and '\\' escaped, other bytes that
    are not printable ASCII as \\DDD."""
    out = []
    for b in raw:
        if b in (0x2E, 0x5C):
            out.append("\\" + chr(b))
        elif 0x21 <= b <= 0x7E:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    return "".join(out)


def _labels(name: str) -> list[bytes]:
    """The wire labels of a name in master-file form (the inverse of ``_label_text``)."""
    if name in ("", "."):
        return []
    labels: list[bytes] = []
    cur = bytearray()
    i = 0
    while i < len(name):
        c = name[i]
        if c == "\\":
            if name[i + 1:i + 4].isdigit() and len(name[i + 1:i + 4]) == 3:
                value = int(name[i + 1:i + 4])
                if value > 255:
                    raise ValueError(f"bad escape in DNS name {name!r}")
                cur.append(value)
                i += 4
                continue
            if i + 1 >= len(name):
                raise ValueError(f"DNS name ends in a backslash: {name!r}")
            cur += name[i + 1].encode()
            i += 2
            continue
        if c == ".":
            if not cur:
                raise ValueError(f"empty label in DNS name {name!r}")
            labels.append(bytes(cur))
            cur = bytearray()
        else:
            cur += c.encode()
        i += 1
    if cur:
        labels.append(bytes(cur))
    if any(len(label) > MAX_LABEL for label in labels) or sum(len(x) + 1 for x in labels) + 1 > MAX_NAME:
        raise ValueError(f"DNS name too long: {name[:80]!r}")
    return labels


def read_name(data: bytes, pos: int) -> tuple[str, int]:
    """The name at ``pos`` and the offset after it (after the first pointer, if any).
    A pointer must go back before the label it is in: that bounds the walk and rules
    out loops."""
    labels: list[str] = []
    end = None
    size = 1
    limit = pos  # pointers must point before the start of what we have read
    while True:
        if pos >= len(data):
            raise DnsError("DNS name runs past the end of the message")
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(data):
                raise DnsError("DNS name pointer cut short")
            target = (length & 0x3F) << 8 | data[pos + 1]
            if target >= limit:
                raise DnsError(f"DNS name pointer to {target} does not point backwards")
            if end is None:
                end = pos + 2
            pos = limit = target
            continue
        if length & 0xC0:
            raise DnsError(f"DNS label type {length >> 6} is not supported")
        if length == 0:
            return ".".join(labels) or ".", end if end is not None else pos + 1
        size += length + 1
        if size > MAX_NAME:
            raise DnsError("DNS name longer than 255 octets")
        if pos + 1 + length > len(data):
            raise DnsError("DNS label runs past the end of the message")
        labels.append(_label_text(data[pos + 1:pos + 1 + length]))
        pos += 1 + length


class _Writer:
    """Message bytes being built, with the offsets of names written (for compression)."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.names: dict[tuple[bytes, ...], int] = {}

    def name(self, name: str, compress: bool = True) -> None:
        labels = _labels(name)
        for i in range(len(labels)):
            suffix = tuple(labels[i:])  # exact bytes: a pointer keeps the case as written
            if compress and suffix in self.names:
                self.out += struct.pack("!H", 0xC000 | self.names[suffix])
                return
            if len(self.out) < 0x4000:
                self.names.setdefault(suffix, len(self.out))
            self.out += bytes([len(labels[i])]) + labels[i]
        self.out += b"\0"


# --- messages -----------------------------------------------------------------------------

def parse(data: bytes) -> Message:
    """One whole DNS message (a UDP payload, or a TCP message without its length)."""
    if len(data) < 12:
        raise DnsError(f"DNS message of {len(data)} bytes is shorter than its 12-byte header")
    ident, flags, qd, an, ns, ar = struct.unpack_from("!6H", data)
    msg = Message(ident, flags)
    pos = 12
    for _ in range(qd):
        name, pos = read_name(data, pos)
        if pos + 4 > len(data):
            raise DnsError("DNS question cut short")
        qtype, qclass = struct.unpack_from("!HH", data, pos)
        pos += 4
        msg.questions.append(Question(name, qtype, qclass))
    for section, count in ((msg.answers, an), (msg.authority, ns), (msg.additional, ar)):
        for _ in range(count):
            record, pos = _read_record(data, pos)
            section.append(record)
    if pos != len(data):
        raise DnsError(f"{len(data) - pos} bytes after the last DNS record")
    return msg


def _read_record(data: bytes, pos: int) -> tuple[Record, int]:
    name, pos = read_name(data, pos)
    if pos + 10 > len(data):
        raise DnsError("DNS resource record cut short")
    rtype, rclass, ttl, rdlength = struct.unpack_from("!HHIH", data, pos)
    pos += 10
    end = pos + rdlength
    if end > len(data):
        raise DnsError("DNS RDATA runs past the end of the message")
    return Record(name, rtype, rclass, ttl, _read_rdata(data, pos, end, rtype)), end


def _read_rdata(data: bytes, pos: int, end: int, rtype: int) -> Any:
    rdata = data[pos:end]
    if rtype == 1 and len(rdata) == 4:
        return str(ipaddress.IPv4Address(rdata))
    if rtype == 28 and len(rdata) == 16:
        return str(ipaddress.IPv6Address(rdata))
    if rtype in NAME_DATA:
        name, after = read_name(data[:end], pos)
        if after == end:
            return name
    if rtype == 33 and len(rdata) >= 7:
        target, after = read_name(data[:end], pos + 6)
        if after == end:
            return (*struct.unpack_from("!HHH", data, pos), target)
    if rtype == 15 and len(rdata) >= 3:
        exchange, after = read_name(data[:end], pos + 2)
        if after == end:
            return (struct.unpack_from("!H", data, pos)[0], exchange)
    return bytes(rdata)  # unknown type, or typed data of the wrong size: kept as it came


def serialize(msg: Message) -> bytes:
    w = _Writer()
    w.out += struct.pack("!6H", msg.id, msg.flags, len(msg.questions), len(msg.answers),
                         len(msg.authority), len(msg.additional))
    for q in msg.questions:
        w.name(q.name)
        w.out += struct.pack("!HH", q.type, q.cls)
    for section in (msg.answers, msg.authority, msg.additional):
        for r in section:
            w.name(r.name)
            w.out += struct.pack("!HHI", r.type, r.cls, r.ttl)
            at = len(w.out)
            w.out += b"\0\0"
            _write_rdata(w, r)
            struct.pack_into("!H", w.out, at, len(w.out) - at - 2)
    return bytes(w.out)


def _write_rdata(w: _Writer, r: Record) -> None:
    data = r.data
    if isinstance(data, bytes):
        w.out += data
    elif r.type == 1:
        w.out += ipaddress.IPv4Address(data).packed
    elif r.type == 28:
        w.out += ipaddress.IPv6Address(data).packed
    elif r.type in NAME_DATA:
        w.name(data)
    elif r.type == 33:
        priority, weight, port, target = data
        w.out += struct.pack("!HHH", priority, weight, port)
        w.name(target, compress=False)  # RFC 2782: no compression in SRV targets
    elif r.type == 15:
        preference, exchange = data
        w.out += struct.pack("!H", preference)
        w.name(exchange)
    else:
        raise ValueError(f"no RDATA encoding for {type_name(r.type)} data {data!r}")


# --- DNS over TCP (RFC 1035 4.2.2, RFC 7766) ---------------------------------------------

class TcpFramer:
    """Whole messages out of a TCP stream, each sent with a 2-byte length before it."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while len(self._buf) >= 2:
            size = int.from_bytes(self._buf[:2], "big")
            if len(self._buf) < 2 + size:
                break
            out.append(bytes(self._buf[2:2 + size]))
            del self._buf[:2 + size]
        return out

    @property
    def pending(self) -> int:
        """Bytes of a message not yet complete."""
        return len(self._buf)


def tcp_frame(message: bytes) -> bytes:
    return len(message).to_bytes(2, "big") + message

"""Rebuild TCP streams from the captures in ``../shared/vectors`` for codec tests.

A capture holds packets; a codec wants each direction of each connection as bytes in
order. ``tcp_streams`` returns, per connection, the chunks in the order they were seen
on the wire (so request/response interleaving survives), with retransmissions and
out-of-order segments resolved by TCP sequence number.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

import dpkt

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"


@dataclass
class Stream:
    """One TCP connection: ``client`` opened it (sent the SYN, or the first payload)."""

    client: tuple[str, int]
    server: tuple[str, int]
    chunks: list[tuple[str, bytes]] = field(default_factory=list)  # ("client"|"server", data)

    def data(self, side: str) -> bytes:
        return b"".join(d for s, d in self.chunks if s == side)


def _packets(path: Path):
    with path.open("rb") as f:
        magic = f.read(4)
        f.seek(0)
        reader = dpkt.pcapng.Reader(f) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(f)
        link = reader.datalink()
        for _ts, buf in reader:
            yield link, buf


def _ip(link: int, buf: bytes):
    if link == dpkt.pcap.DLT_EN10MB:
        eth = dpkt.ethernet.Ethernet(buf)
        return eth.data
    if link == dpkt.pcap.DLT_LINUX_SLL:
        return dpkt.sll.SLL(buf).data
    if link in (dpkt.pcap.DLT_RAW, 101, 228, 229):
        return dpkt.ip.IP(buf) if buf[0] >> 4 == 4 else dpkt.ip6.IP6(buf)
    if link == dpkt.pcap.DLT_NULL or link == dpkt.pcap.DLT_LOOP:
        return dpkt.loopback.Loopback(buf).data
    raise ValueError(f"unsupported link type {link}")


def _addr(ip) -> str:
    family = socket.AF_INET6 if isinstance(ip, dpkt.ip6.IP6) else socket.AF_INET
    return socket.inet_ntop(family, ip.src), socket.inet_ntop(family, ip.dst)


def tcp_streams(path: Path | str, server_port: int | None = None) -> list[Stream]:
    """All TCP connections with payload in the capture, in order of first appearance.

    The server side is the SYN's destination; without a SYN, ``server_port`` decides,
    else the side that sent the first payload is taken as the client.
    """
    streams: dict[frozenset, Stream] = {}
    next_seq: dict[tuple, int] = {}
    pending: dict[tuple, dict[int, bytes]] = {}
    for link, buf in _packets(Path(path)):
        try:
            ip = _ip(link, buf)
        except (dpkt.UnpackError, ValueError, IndexError):
            continue
        tcp = getattr(ip, "data", None)
        if not isinstance(tcp, dpkt.tcp.TCP):
            continue
        src, dst = _addr(ip)
        a, b = (src, tcp.sport), (dst, tcp.dport)
        key = frozenset((a, b))
        syn_only = (tcp.flags & dpkt.tcp.TH_SYN) and not (tcp.flags & dpkt.tcp.TH_ACK)
        if key not in streams:
            if syn_only or (server_port is not None and tcp.dport == server_port):
                streams[key] = Stream(client=a, server=b)
            elif server_port is not None and tcp.sport == server_port:
                streams[key] = Stream(client=b, server=a)
            elif tcp.data:
                streams[key] = Stream(client=a, server=b)
            else:
                continue
        stream = streams[key]
        flow = (a, b)
        if tcp.flags & dpkt.tcp.TH_SYN:
            next_seq[flow] = (tcp.seq + 1) & 0xFFFFFFFF
            continue
        if not tcp.data:
            continue
        side = "client" if a == stream.client else "server"
        expected = next_seq.get(flow)
        if expected is None:
            expected = tcp.seq
        buffered = pending.setdefault(flow, {})
        buffered.setdefault(tcp.seq, bytes(tcp.data))
        while True:
            seg = buffered.pop(expected, None)
            if seg is None:
                # a retransmission overlapping what we have: take only the new tail
                for seq in list(buffered):
                    offset = (expected - seq) & 0xFFFFFFFF
                    if 0 < offset < len(buffered[seq]):
                        seg = buffered.pop(seq)[offset:]
                        break
                    if 0 < offset < 1 << 31:
                        buffered.pop(seq)  # wholly old
                if seg is None:
                    break
            stream.chunks.append((side, seg))
            expected = (expected + len(seg)) & 0xFFFFFFFF
        next_seq[flow] = expected
    return [s for s in streams.values() if s.chunks]


def vector(*parts: str) -> Path:
    return VECTORS.joinpath(*parts)

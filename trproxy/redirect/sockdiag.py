"""The socket cookie of a datagram's sender, from the kernel's socket table (sock_diag).

A UDP datagram the proxy receives names its sender only by address and port; the redirect
keeps the DNS server each app socket asked under that socket's cookie (trp_dns). One
NETLINK_SOCK_DIAG request (linux/inet_diag.h, ``udp_dump_one``) finds the UDP socket that
this address and port belong to, in this network namespace, and gives its cookie.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
_HDR = struct.Struct("=IHHII")  # struct nlmsghdr
# struct inet_diag_req_v2 (family, protocol, ext, pad, states) + struct inet_diag_sockid
# (sport, dport big-endian; src[4], dst[4] as raw bytes; if, cookie[2])
_REQ = struct.Struct("=BBBxI2s2s16s16sIII")
_MSG = struct.Struct("=BBBB2s2s16s16sIII")  # the head of struct inet_diag_msg


def udp_cookie(sender: tuple[str, int], receiver: tuple[str, int]) -> int | None:
    """The cookie of the UDP socket at ``sender`` (address, port) that sent to
    ``receiver`` (our socket's address), or None if no such socket is here (gone already,
    or in another network namespace)."""
    src, dst = ipaddress.ip_address(sender[0]), ipaddress.ip_address(receiver[0])
    if isinstance(src, ipaddress.IPv6Address) and src.ipv4_mapped is not None:
        src = src.ipv4_mapped
    if isinstance(dst, ipaddress.IPv6Address) and dst.ipv4_mapped is not None:
        dst = dst.ipv4_mapped
    if src.version != dst.version:
        return None
    family = socket.AF_INET if src.version == 4 else socket.AF_INET6
    # the lookup is the one a packet from ``receiver`` to ``sender`` would make
    req = _REQ.pack(family, socket.IPPROTO_UDP, 0, 0xFFFFFFFF,
                    receiver[1].to_bytes(2, "big"), sender[1].to_bytes(2, "big"),
                    dst.packed.ljust(16, b"\0"), src.packed.ljust(16, b"\0"), 0,
                    INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
        nl.sendto(_HDR.pack(_HDR.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0) + req, (0, 0))
        reply = nl.recv(8192)
    if len(reply) < _HDR.size:
        return None
    _length, kind, _flags, _seq, _pid = _HDR.unpack_from(reply)
    if kind == NLMSG_ERROR:
        code = -struct.unpack_from("=i", reply, _HDR.size)[0]
        if code in (0, 2):  # ENOENT: no such socket
            return None
        raise OSError(code, f"sock_diag: {os.strerror(code)}")
    if kind != SOCK_DIAG_BY_FAMILY or len(reply) < _HDR.size + _MSG.size:
        return None
    *_, sport, _dport, local, _remote, _if, low, high = _MSG.unpack_from(reply, _HDR.size)
    if int.from_bytes(sport, "big") != sender[1] or local[: len(src.packed)] not in (src.packed, bytes(len(src.packed))):
        return None  # not a socket at the sender's address
    return low | high << 32

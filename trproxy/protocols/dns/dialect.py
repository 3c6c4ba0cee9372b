"""DNS over TCP (RFC 7766) as a dialect: each length-prefixed query paired with the answer
of the same id, recorded as the UDP listener records them (``kind: dns``), replayed with
the live query's id. Queries may be pipelined and answered out of order."""

from __future__ import annotations

from typing import Any

from ..base import Direction, Interaction, Lookup, Readable
from . import codec, readable


def _question(msg: codec.Message) -> dict[str, Any]:
    if len(msg.questions) != 1:
        raise codec.DnsError(f"a DNS query with {len(msg.questions)} questions")
    return readable.question(msg.questions[0])


class DnsRecorder:
    def __init__(self) -> None:
        self._framers = {Direction.CLIENT: codec.TcpFramer(), Direction.SERVER: codec.TcpFramer()}
        self._asked: dict[int, dict[str, Any]] = {}  # query id -> question

    def feed(self, direction: Direction, data: bytes) -> list[Interaction]:
        out = []
        for raw in self._framers[direction].feed(data):
            msg = codec.parse(raw)
            if direction is Direction.CLIENT:
                self._asked[msg.id] = _question(msg)
            elif (question := self._asked.pop(msg.id, None)) is not None:
                out.append(Interaction(question, [readable.answer(msg)], "session",
                                       readable.summary(question)))
        return out


class DnsReplayer:
    def __init__(self) -> None:
        self._framer = codec.TcpFramer()

    def feed(self, data: bytes) -> list[Lookup]:
        out = []
        for raw in self._framer.feed(data):
            query = codec.parse(raw)
            lookup = Lookup(_question(query), "session", readable.summary(_question(query)))
            lookup.context.private["query"] = query
            out.append(lookup)
        return out

    def respond(self, lookup: Lookup, responses: list[Readable]) -> bytes:
        query = lookup.context.private["query"]
        return codec.tcp_frame(codec.serialize(readable.reply(query, responses[0])))

    def miss(self, lookup: Lookup, reason: str) -> bytes:
        return codec.tcp_frame(codec.serialize(readable.failure(lookup.context.private["query"], "SERVFAIL")))


def detect(first_bytes: bytes, port: int) -> bool | None:
    """A 2-byte length, then a DNS header: a query (QR 0, opcode QUERY) of one question.
    Only on port 53: elsewhere two bytes of length and a header say too little."""
    if port != 53:
        return False
    if len(first_bytes) < 14:
        return None
    length = int.from_bytes(first_bytes[:2], "big")
    flags = int.from_bytes(first_bytes[4:6], "big")
    return length >= 12 and not flags & 0xF800 and first_bytes[6:8] == b"\x00\x01"


def match_key(request: Readable) -> Readable:
    return request

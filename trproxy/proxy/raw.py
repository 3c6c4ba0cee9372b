"""Never a silent hole: what record does once a dialect cannot follow a connection.

When a dialect's recorder raises on the server's bytes (a reply its codec cannot decode:
kafkajs' LeaveGroup v3 against librdkafka's broker), the connection goes on as opaque
*turns* (the client's bytes until the server answers, the server's until the client
speaks again, as ``generic`` records), starting with the turn that failed. Each turn's request is
still read by the dialect's own replayer, from the client's bytes alone, so the exchange
is recorded under the dialect with a request replay can match; its reply is the raw
bytes (``responses: [{raw: ...}]``, ``spec.raw``: why), which replay sends byte for
byte. A request the replayer cannot read either (a Postgres connection past its startup,
whose messages need the startup to be read) is lost, and reported as before.
"""

from __future__ import annotations

from ..protocols.base import Dialect, Direction, Interaction, Lookup, ProtocolError, blob, unblob

MAX_TURN_BYTES = 8 << 20  # a turn kept for a possible fallback (larger: not kept)


class RawTurns:
    """The rest of one connection as raw turns, requests read by the dialect's replayer."""

    def __init__(self, dialect: Dialect, tls: bool, destination: str, note: str) -> None:
        self.note = note
        self.lost = 0  # turns whose request the dialect could not read either
        self._requests = dialect.replayer_for(tls, destination, None)
        self.reading: list[Lookup] = []  # the requests of the turn in progress
        self._reply: bytearray | None = None  # the server's bytes of this turn, once it spoke

    def feed(self, direction: Direction, data: bytes) -> list[Interaction]:
        out: list[Interaction] = []
        if direction is Direction.SERVER:
            if data:
                self._reply = (self._reply or bytearray()) + data
            elif self.reading or self._reply is not None:  # the server closed: the turn ends
                out += self._turn_ended()
            return out
        if self._reply is not None or (not data and self.reading):  # the client speaks again
            out += self._turn_ended()
        if data:
            try:
                self.reading += [e for e in self._requests.feed(data) if isinstance(e, Lookup)]
            except ProtocolError:
                self.lost += 1
        return out

    def _turn_ended(self) -> list[Interaction]:
        lookups, self.reading = self.reading, []
        reply, self._reply = self._reply, None
        if not lookups:
            self.lost += 1
            return []
        out = []
        for i, lookup in enumerate(lookups):  # the reply goes with the turn's last request
            raw = bytes(reply) if reply is not None and i == len(lookups) - 1 else b""
            out.append(Interaction(lookup.request, [] if reply is None else [{"raw": blob(raw)}],
                                   lookup.lifetime, lookup.summary))
        return out


def raw_answer(responses: list, extra: dict) -> bytes | None:
    """The bytes of an exchange recorded raw (``spec.raw``), None for any other."""
    if not extra.get("raw"):
        return None
    return b"".join(unblob(r["raw"]) for r in responses if isinstance(r, dict) and "raw" in r)

"""Feeding captured streams to the codec and the recorder.

A stream is a list of ``(side, bytes)`` chunks in wire order; ``tests.support.chunking``
cuts it differently. Results are compared as data: events, or the error (type and text)
decoding stopped with.
"""

from __future__ import annotations

import glob
import os
from typing import Any

from tests.support.chunking import CLOSE, Chunks
from tests.support.pcap import tcp_streams, vector
from trproxy.protocols.base import Direction, Interrupt, ProtocolError, Pushed
from trproxy.protocols.postgres import PostgresCodec, PostgresRecorder

VECTORS = vector("postgres")

# Captures that are not (decodable) PostgreSQL, and why decoding stops.
NOT_DECODABLE = {
    "zeek-bad-startup-message-1.pcap": "invalid startup packet length 3",
    "zeek-bad-backend-message-1.pcap": "invalid length 1",
    "zeek-psql-aws-ssl-preferred.pcap": "encrypted",
    "zeek-psql-aws-ssl-require.pcap": "encrypted",
    "zeek-psql-aws-ssl-require-15432.pcap": "encrypted",
    "zeek-http-on-port-5432.pcap": "startup packet length starts with 0x47",
    "zeek-mysql-on-port-5432.pcap": "server sent data before the client's startup packet",
}
# deepflow's captures start mid-session (no startup packet): the codec starts "ready".
MID_SESSION = ("deepflow-",)


def vector_names() -> list[str]:
    return sorted(os.path.basename(p) for p in glob.glob(str(VECTORS / "*.pcap")))


def start_for(name: str) -> str:
    return "ready" if name.startswith(MID_SESSION) else "startup"


def vector_chunks(name: str) -> list[Chunks]:
    return [s.chunks for s in tcp_streams(VECTORS / name)]


def decode(chunks: Chunks, start: str = "startup", close: bool = True,
           **codec_args: Any) -> tuple[list[tuple[Direction, Any]], str | None]:
    """All (sender, message) events, and the error that stopped decoding (if any)."""
    codec = PostgresCodec(start=start, **codec_args)
    events: list[tuple[Direction, Any]] = []
    try:
        for side, data in (chunks + CLOSE if close else chunks):
            codec.feed(Direction(side), data)
            events += codec.events()
    except ProtocolError as exc:
        return events, f"{type(exc).__name__}: {exc}"
    return events, None


def record(chunks: Chunks, start: str = "startup") -> tuple[list[Any], str | None]:
    """All interactions as plain tuples, and the error that stopped recording (if any)."""
    recorder = PostgresRecorder(start=start)
    out: list[Any] = []
    try:
        for side, data in chunks + CLOSE:
            out += recorder.feed(Direction(side), data)
    except ProtocolError as exc:
        return _plain(out), f"{type(exc).__name__}: {exc}"
    return _plain(out), None


def _plain(interactions: list[Any]) -> list[Any]:
    """Interactions as tuples; pushed messages as ("pushed", messages); interrupts left out."""
    return [("pushed", i.responses) if isinstance(i, Pushed) else
            (i.request, i.responses, i.lifetime, i.summary)
            for i in interactions if not isinstance(i, Interrupt)]

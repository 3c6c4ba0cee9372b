"""What a replay run did with the recordings: the ones never used, and answers served out
of their recorded order. Both make a run's report say when an app got something else
than it got recording, even though no request missed (``--strict`` fails on them).

Definitions (docs/format.md, "Reports"):

* an **unused** recording is a ``data`` exchange no request was answered with by the end
  of the run (``session`` exchanges are optional: handshakes, catalog queries);
* an answer is **out of order** when a live connection that was already served from a
  recorded connection R is now served R's data exchange E while a data exchange of R
  whose request came between the last one served to that live connection and E's is
  still unused: the app skipped, or reordered, something it did when recording.
  "Between" is in the order the client's requests started (``metadata.order``, then
  ``seq``; recordings without ``order`` use ``seq`` alone), so a multiplexing server
  answering concurrent requests in another order changes nothing. Exchanges recorded
  from requests sent before any answer completed (Kafka's per-partition parts, a
  pipeline, concurrent HTTP/2 streams: the same ``order``) count as one, since their
  order is the client's whim; repeated answers (``repeat_last``) are never out of order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .matcher import Affinity, MockPool, destination_key
from .model import Exchange


@dataclass
class _Connection:
    """The data exchanges of one recorded connection, in the order of their requests."""

    entries: list[Any]  # matcher._Entry, whose ``used`` counts are live
    index: dict[int, int]  # id(exchange) -> its place in ``entries``


class Ledger:
    """Built on a pool's entries (their use counts are shared, not copied)."""

    def __init__(self, pool: MockPool) -> None:
        self.pool = pool
        # made per recorded connection when first served from: a million recorded
        # exchanges are not all looked at before the first answer (``packed.py``)
        self._connections: dict[tuple[str, str, int], _Connection] = {}

    def _connection(self, key: tuple[str, str, int]) -> _Connection:
        conn = self._connections.get(key)
        if conn is None:
            entries = sorted((e for e in self.pool.connection(*key) if e.exchange.lifetime == "data"),
                             key=lambda e: _rank(e.exchange))
            conn = self._connections[key] = _Connection(entries, {id(e.exchange): i for i, e in enumerate(entries)})
        return conn

    def served(self, exchange: Exchange, affinity: Affinity, repeat: bool = False) -> list[Exchange]:
        """Note that ``exchange`` was served to the live connection of ``affinity``; the
        recordings it skipped when that makes the answer out of order (else [])."""
        if exchange.lifetime != "data" or repeat:
            return []
        key = _key(exchange)
        conn = self._connection(key)
        at = conn.index.get(id(exchange))
        if at is None:  # not one of the pool's
            return []
        before = affinity.positions.get(key)
        if before is None or at > before:
            affinity.positions[key] = at
        if before is None or at <= before + 1:  # the first, the next one, or going back
            return []
        group = _group(exchange)
        return [e.exchange for e in conn.entries[before + 1:at]
                if not e.used and _group(e.exchange) != group]

    def unused(self) -> list[Exchange]:
        """The data exchanges no request was answered with, in recorded order."""
        keys = dict.fromkeys(_key(e.exchange) for e in self.pool.entries() if e.exchange.lifetime == "data")
        return [e.exchange for key in keys for e in self._connection(key).entries if not e.used]


def _key(exchange: Exchange) -> tuple[str, str, int]:
    return (exchange.protocol, destination_key(exchange.destination), exchange.connection)


def _rank(exchange: Exchange) -> tuple[int, int]:
    return (exchange.order, exchange.seq)


def _group(exchange: Exchange) -> Any:
    """Exchanges recorded from one request of the client share their ``order``."""
    return exchange.order if exchange.order else ("seq", exchange.seq)


def describe(exchange: Exchange) -> dict[str, Any]:
    """A report line for a recording."""
    return {"protocol": exchange.protocol, "destination": exchange.destination,
            "request": exchange.summary, "connection": exchange.connection, "seq": exchange.seq}

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
        self._connections: dict[tuple[str, str, int], _Connection] | None = None

    def _index(self) -> dict[tuple[str, str, int], _Connection]:
        if self._connections is None:
            grouped: dict[tuple[str, str, int], list[Any]] = {}
            for entry in self.pool.entries():
                ex = entry.exchange
                if ex.lifetime == "data":
                    grouped.setdefault(_key(ex), []).append(entry)
            self._connections = {}
            for key, entries in grouped.items():
                entries.sort(key=lambda e: _rank(e.exchange))
                self._connections[key] = _Connection(
                    entries, {id(e.exchange): i for i, e in enumerate(entries)})
        return self._connections

    def served(self, exchange: Exchange, affinity: Affinity, repeat: bool = False) -> list[Exchange]:
        """Note that ``exchange`` was served to the live connection of ``affinity``; the
        recordings it skipped when that makes the answer out of order (else [])."""
        if exchange.lifetime != "data" or repeat:
            return []
        key = _key(exchange)
        conn = self._index().get(key)
        if conn is None:
            return []
        at = conn.index[id(exchange)]
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
        return [e.exchange for conn in self._index().values() for e in conn.entries if not e.used]


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

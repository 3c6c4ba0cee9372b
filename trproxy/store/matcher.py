"""Matching live requests to recorded exchanges (protocol-independent).

Rules (DESIGN.md, "Matching and replay rules"):

* candidates share the protocol and destination; a request matches when its
  dialect's ``match_key`` equals the recorded one's;
* ``data`` exchanges are consumed once, in recorded order; ``session`` exchanges are
  served in recorded order and the last answer repeats when they run out; so does a
  ``data`` exchange when the caller asks (``repeat_last``: a Kafka Fetch of an offset
  whose recorded answers were used up gets the last one again, as a broker would);
* within a test window, mocks recorded inside that test come first, then the rest;
* a connection keeps *affinity* to the recorded connection it was last served from, so
  the statements of a transaction stay together when a pool spreads them differently;
* a miss raises ``NoMatch`` naming the nearest recordings with a readable diff.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import NoMatch
from .model import Exchange
from .yamlio import dump

KeyFn = Callable[[str, Any], Any]  # (protocol, request) -> match key

_MAX_NEAREST = 3
_MAX_COMPARED = 400


def destination_key(destination: str) -> str:
    """Loopback addresses are one place: a client may dial ::1 at replay and 127.0.0.1 at
    record time (happy eyeballs, ``localhost``), and the server there is the same. The
    unspecified addresses ``0.0.0.0`` and ``::`` count too: Linux connects them to the
    local host (a ``DATABASE_URL`` copied from a server's listen address)."""
    host, _, port = destination.rpartition(":")
    host = host.strip("[]")
    if host in ("::1", "localhost", "0.0.0.0", "::", "::ffff:0.0.0.0") or host.startswith(("127.", "::ffff:127.")):
        return f"loopback:{port}"
    return destination


def canonical(key: Any) -> str:
    """A stable string for a match key, so keys can be dict keys and compared fast."""
    return json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass
class Affinity:
    """Per live connection: which recorded connection it is following."""

    recorded_connection: int | None = None


@dataclass
class _Entry:
    exchange: Exchange
    key: str
    used: int = 0


class _Bucket(list):
    """The entries of one match key in recorded order, with cursors past the used ones.

    ``used`` only grows, so a lookup resumes where the last one stopped instead of
    rescanning every entry: thousands of identical requests (pgbench's ``BEGIN``/``END``,
    redis-benchmark's ``SET key:__rand_int__``) would otherwise cost O(n) each.
    """

    def __init__(self) -> None:
        super().__init__()
        self.head = 0  # every entry before it is used
        self.by_connection: dict[int, list[_Entry]] = {}
        self.connection_head: dict[int, int] = {}
        self.last_session: _Entry | None = None

    def add(self, entry: _Entry) -> None:
        self.append(entry)
        self.by_connection.setdefault(entry.exchange.connection, []).append(entry)
        if entry.exchange.lifetime == "session":
            self.last_session = entry

    def first_fresh(self) -> _Entry | None:
        entry, self.head = _first_fresh(self, self.head)
        return entry

    def first_fresh_of(self, connection: int) -> _Entry | None:
        entries = self.by_connection.get(connection)
        if entries is None:
            return None
        entry, self.connection_head[connection] = _first_fresh(entries, self.connection_head.get(connection, 0))
        return entry


def _first_fresh(entries: list[_Entry], start: int) -> tuple[_Entry | None, int]:
    while start < len(entries) and entries[start].used:
        start += 1
    return (entries[start] if start < len(entries) else None), start


@dataclass
class Served:
    exchange: Exchange
    repeat: bool = False


@dataclass
class MockPool:
    """All mocks of a test set, ready to answer live requests."""

    key_fn: KeyFn  # counting served exchanges and misses is the caller's (RunContext)
    _by_dest: dict[tuple[str, str], dict[str, _Bucket]] = field(default_factory=dict)
    # destinations with a connection recorded over TLS / HTTP recorded as HTTP/2: asked at
    # every replayed connection's start, so kept as they are added, not searched for
    _tls: set[str] = field(default_factory=set)
    _h2: set[str] = field(default_factory=set)

    @classmethod
    def build(cls, exchanges: list[Exchange], key_fn: KeyFn) -> MockPool:
        pool = cls(key_fn)
        for ex in exchanges:
            pool.add(ex)
        return pool

    def add(self, exchange: Exchange) -> None:
        key = canonical(self.key_fn(exchange.protocol, exchange.request))
        dest = destination_key(exchange.destination)
        by_key = self._by_dest.setdefault((exchange.protocol, dest), {})
        by_key.setdefault(key, _Bucket()).add(_Entry(exchange, key))
        if exchange.tls:
            self._tls.add(dest)
        request = exchange.request
        if (exchange.protocol == "http" and isinstance(request, dict)
                and str(request.get("http_version", "")).startswith("HTTP/2")):
            self._h2.add(dest)

    def __len__(self) -> int:
        return sum(len(v) for d in self._by_dest.values() for v in d.values())

    def has_destination(self, destination: str) -> bool:
        dest = destination_key(destination)
        return any(d == dest for (_p, d) in self._by_dest)

    def recorded_tls(self, destination: str) -> bool:
        """Whether a connection to this destination was recorded over TLS (replay accepts
        an in-band TLS request, a Postgres SSLRequest, only then, as the server did)."""
        return destination_key(destination) in self._tls

    def recorded_h2(self, destination: str) -> bool:
        """Whether HTTP at this destination was recorded as HTTP/2 (for ALPN at replay)."""
        return destination_key(destination) in self._h2

    def find(self, protocol: str, destination: str, request: Any, summary: str = "",
             affinity: Affinity | None = None, test: str | None = None,
             repeat_last: bool = False) -> Served:
        key = canonical(self.key_fn(protocol, request))
        entries = self._by_dest.get((protocol, destination_key(destination)), {}).get(key, _Bucket())
        chosen = self._choose(entries, affinity, test)
        if chosen is None and repeat_last and entries:
            chosen = entries[-1], True
        if chosen is None:
            raise self._explain(protocol, destination, key, summary or key[:80], entries)
        entry, repeat = chosen
        entry.used += 1
        if affinity is not None and entry.exchange.lifetime == "data":
            affinity.recorded_connection = entry.exchange.connection
        return Served(entry.exchange, repeat)

    @staticmethod
    def _choose(entries: _Bucket, affinity: Affinity | None,
                test: str | None) -> tuple[_Entry, bool] | None:
        if test is None:  # the best rank below: the followed connection's first fresh entry, else the first
            followed = affinity.recorded_connection if affinity else None
            best = entries.first_fresh_of(followed) if followed is not None else None
            best = best or entries.first_fresh()
            if best is not None:
                return best, False
            return (entries.last_session, True) if entries.last_session else None
        fresh = [e for e in entries if e.used == 0]
        if fresh:
            def rank(e: _Entry) -> tuple[int, int]:
                tests = e.exchange.tests
                in_test = 0 if test is None or test in tests else (1 if not tests else 2)
                same_conn = 0 if affinity and e.exchange.connection == affinity.recorded_connection else 1
                return (in_test, same_conn)

            best = min(fresh, key=rank)  # min keeps recorded order among equals
            return best, False
        sessions = [e for e in entries if e.exchange.lifetime == "session"]
        if sessions:
            return sessions[-1], True  # the last answer repeats
        return None

    def _explain(self, protocol: str, destination: str, key: str, summary: str,
                 same_key: list[_Entry]) -> NoMatch:
        if same_key:
            return NoMatch(summary, f"all {len(same_key)} recorded answers were already used", [])
        by_key = self._by_dest.get((protocol, destination_key(destination)))
        if not by_key:
            elsewhere = sorted(d for (p, d) in self._by_dest if p == protocol)
            hint = f" (recorded {protocol} destinations: {', '.join(elsewhere)})" if elsewhere else ""
            return NoMatch(summary, f"nothing recorded for {protocol} at {destination}{hint}", [])
        live = json.loads(key)
        scored = []
        for other_key, entries in list(by_key.items())[:_MAX_COMPARED]:
            ratio = difflib.SequenceMatcher(None, key, other_key, autojunk=False).quick_ratio()
            scored.append((ratio, other_key, entries))
        scored.sort(key=lambda t: -t[0])
        nearest = []
        for ratio, other_key, entries in scored[:_MAX_NEAREST]:
            diff = "".join(difflib.unified_diff(
                dump(json.loads(other_key)).splitlines(True)[1:], dump(live).splitlines(True)[1:],
                "recorded", "live", n=1))
            used = sum(1 for e in entries if e.used)
            nearest.append(f"{entries[0].exchange.summary or 'exchange'} "
                           f"(similarity {ratio:.0%}, {len(entries)} recorded, {used} used)\n{diff}")
        return NoMatch(summary, "no recorded request matches", nearest)

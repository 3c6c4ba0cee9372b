"""Matching live requests to recorded exchanges (protocol-independent).

Rules (DESIGN.md, "Matching and replay rules"):

* candidates share the protocol and destination; a request matches when its
  dialect's ``match_key`` equals the recorded one's;
* ``data`` exchanges are consumed once, in recorded order; ``session`` exchanges are
  served in recorded order and the last answer repeats when they run out; so does a
  ``data`` exchange when the caller asks (``repeat_last``: a Kafka Fetch of an offset
  whose recorded answers were used up gets the last one again, as a broker would);
* within a test window, mocks recorded inside that test come first, then mocks recorded
  outside any test, then the rest; when a test runner reports its tests over the control
  channel (the pytest plugin: ``scope``), the rest is never served: a data exchange
  recorded in one test is not another test's, session exchanges stay shareable, and a
  test that starts again with all its recordings used gets them again (a rerun);
* a connection keeps *affinity* to the recorded connection it was last served from, so
  the statements of a transaction stay together when a pool spreads them differently;
* a miss raises ``NoMatch`` saying why, at once; ``nearest`` finds the closest
  recordings with a readable diff, bounded in time and size, for the report.
"""

from __future__ import annotations

import difflib
import functools
import json
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..protocols.registry import configured, match_key, shipped_match_key
from ..protocols.volatile import MASK, mask, recorded_values
from .errors import NoMatch
from .model import Exchange
from .packed import BY_CONNECTION, BY_KEY, BY_MASKED, BY_PLACE, Exchanges, Packed
from .similar import differences, skeleton
from .yamlio import dump

KeyFn = Callable[[str, Any], Any]  # (protocol, request) -> match key

_MAX_NEAREST = 3
_MAX_COMPARED = 400  # recordings compared with a request that missed
_MAX_TEXT = 4000  # characters of a match key compared, and shown in a diff
_MAX_LINES = 200
_MAX_KEYS = 4096  # match keys kept by ``same_as`` (emptied when full)


@functools.lru_cache(maxsize=4096)  # asked several times per replayed request
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


# what ``json.dumps`` with these options makes anew for every call (asked once per lookup)
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode


def canonical(key: Any) -> str:
    """A stable string for a match key, so keys can be dict keys and compared fast."""
    try:
        return _ENCODE(key)
    except TypeError:  # keys of several types cannot be sorted: a recording's YAML may
        return canonical(_text_keys(key))  # have `on:` (true) or `1:` beside `a:`


def _text_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _text_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text_keys(v) for v in value]
    return value


def packed_keys(exchange: Exchange) -> dict[str, Any]:
    """What the cache's index keeps of an exchange's matching (``packed.py``), so that
    loading computes nothing per exchange: its destination key, its match key and, when its recording names
    volatile values, those and its key with them masked; under the shipped dialects' match
    keys (a pool with another key function, or a dialect the user's config rebuilt,
    computes its own)."""
    if exchange.event is not None:
        return {}
    protocol = exchange.protocol
    keys: dict[str, Any] = {"_dest": destination_key(exchange.destination),
                            "_key": canonical(shipped_match_key(protocol, exchange.request))}
    if values := recorded_values(exchange.extra):
        keys["_volatile"] = values
        keys["_masked"] = canonical(shipped_match_key(protocol, mask(exchange.request, values)))
    return keys


_NOT_PACKED: dict[str, Any] = {}
_NO_BUCKETS: dict[str, Any] = {}
Place = tuple[str, str]  # (protocol, destination key)


@dataclass
class Affinity:
    """Per live connection: which recorded connection it is following; ``positions``:
    how far it got in each recorded connection it was served from (``ledger.Ledger``)."""

    recorded_connection: int | None = None
    positions: dict[tuple[str, str, int], int] = field(default_factory=dict)


@dataclass(slots=True)
class _Entry:
    exchange: Exchange
    key: str
    used: int = 0
    masked_key: str | None = None  # the key with its volatile values masked (``spec.volatile``)
    volatile: list[str] = field(default_factory=list)  # those values (and the user's rules')


_NO_HEADS: dict[int, int] = {}  # of every bucket not followed yet (never written)


class _Bucket(list):
    """The entries of one match key in recorded order, with cursors past the used ones.

    ``used`` only grows, so a lookup resumes where the last one stopped instead of
    rescanning every entry: thousands of identical requests (pgbench's ``BEGIN``/``END``,
    redis-benchmark's ``SET key:__rand_int__``) would otherwise cost O(n) each.
    """

    __slots__ = ("head", "_by_connection", "_connection_head", "last_session", "_groups")

    def __init__(self) -> None:
        self.head = 0  # every entry before it is used
        # per recorded connection, with cursors: made on the first lookup that follows one
        # (a million buckets of one entry each are made at load: each costs)
        self._by_connection: dict[int, list[_Entry]] | None = None
        self._connection_head: dict[int, int] = _NO_HEADS
        self.last_session: _Entry | None = None
        self._groups: dict[str, _Bucket] | None = None  # per test window; built on first use

    def add(self, entry: _Entry) -> None:
        self.append(entry)
        if self._by_connection is not None:
            self._by_connection.setdefault(entry.exchange.connection, []).append(entry)
        if entry.exchange.lifetime == "session":
            self.last_session = entry
        if self._groups is not None:
            self._group(entry)

    def group(self, window: str) -> _Bucket | None:
        """The entries recorded in one test window (``""``: outside any), as a bucket of its own:
        the entries are shared, so using one in a group uses it everywhere."""
        if self._groups is None:
            self._groups = {}
            for entry in self:
                self._group(entry)
        return self._groups.get(window)

    def _group(self, entry: _Entry) -> None:
        assert self._groups is not None
        for window in entry.exchange.tests or ("",):
            self._groups.setdefault(window, _Bucket()).add(entry)

    def first(self, followed: int | None) -> _Entry | None:
        """The followed connection's first fresh entry, else the first fresh one."""
        best = self.first_fresh_of(followed) if followed is not None else None
        return best or self.first_fresh()

    def rewind(self) -> None:
        """Cursors back to the start (entries were made fresh again); always correct, since
        a cursor only skips used entries."""
        self.head = 0
        if self._by_connection is not None:
            self._connection_head = {}
        for group in (self._groups or {}).values():
            group.rewind()

    def first_fresh(self) -> _Entry | None:
        entry, self.head = _first_fresh(self, self.head)
        return entry

    def first_fresh_of(self, connection: int) -> _Entry | None:
        if self._by_connection is None:
            self._by_connection, self._connection_head = {}, {}
            for entry in self:
                self._by_connection.setdefault(entry.exchange.connection, []).append(entry)
        entries = self._by_connection.get(connection)
        if entries is None:
            return None
        heads = self._connection_head
        entry, heads[connection] = _first_fresh(entries, heads.get(connection, 0))
        return entry


def _first_fresh(entries: list[_Entry], start: int) -> tuple[_Entry | None, int]:
    while start < len(entries) and entries[start].used:
        start += 1
    return (entries[start] if start < len(entries) else None), start


@dataclass
class Served:
    exchange: Exchange
    repeat: bool = False
    masked: bool = False  # matched through its volatile values
    # served by the similarity fallback: {recorded, reason, diff} (``similar.py``)
    similar: dict[str, str] | None = None
    # served by an exact match, found there: an equal request may look there too (``again``)
    exact: Exact | None = None


@dataclass(frozen=True, slots=True)
class Exact:
    """Where ``find`` looked for a request's exact matches: its match key, destination
    key, the bucket of that key, and the test windows it may be served from
    (``exclusive``: those alone). Valid while the pool's windows stay (one engine step)."""

    key: str
    dest: str
    entries: _Bucket
    windows: tuple[str, ...]
    exclusive: bool


# the similarity fallback's judge: (recording, its volatile values, the (recorded, live)
# tokens that differ) -> None to take it, else why not
Similar = Callable[[Exchange, list[str], list[tuple[str, str]]], str | None]


@dataclass
class MockPool:
    """All mocks of a test set, ready to answer live requests."""

    key_fn: KeyFn  # counting served exchanges and misses is the caller's (RunContext)
    # (protocol, request) -> values the user's rules call volatile (config.yaml)
    rules_fn: Callable[[str, Any], list[str]] | None = None
    # protocol -> whether the user has rules for it (None: ask ``rules_fn`` always); a
    # protocol without any is not asked, so that a packed exchange is not decoded for it
    rules_apply: Callable[[str], bool] | None = None
    _rules_cache: dict[str, bool] = field(default_factory=dict)
    _shipped_cache: dict[str, bool] = field(default_factory=dict)
    _by_dest: dict[tuple[str, str], dict[str, _Bucket]] = field(default_factory=dict)
    # the same entries by their keys with the volatile values masked (those that have any)
    _masked: dict[tuple[str, str], dict[str, _Bucket]] = field(default_factory=dict)
    # destinations with a connection recorded over TLS, and the ALPN protocols negotiated
    # there: asked at every replayed connection's start, so kept as exchanges are added
    _tls: set[str] = field(default_factory=set)
    _alpn: dict[str, set[str]] = field(default_factory=dict)
    # event documents (pushes, closes, resets, refused connects): never matched, replayed
    # by the engine's timeline; destinations only ever refused
    events: list[Exchange] = field(default_factory=list)
    _refused: set[str] = field(default_factory=set)
    # test windows open now, as a test runner reports them (``scope``); None: no runner does
    _running: tuple[str, ...] | None = None
    _by_window: dict[str, list[tuple[_Bucket, _Entry]]] = field(default_factory=dict)
    # (protocol, destination, masked) -> skeleton -> entries, built on the first fallback
    _skeletons: dict[tuple[str, str, bool], dict[str, list[_Entry]]] = field(default_factory=dict)
    # per protocol, the destinations recorded (as recorded: ``datagrams.py`` asks them)
    _places: dict[str, set[str]] = field(default_factory=dict)
    # a packed recording (``packed.py``): its entries and buckets are made, in the same
    # order as ``add`` makes them, when a lookup needs them (``_adopt``); by row
    _source: Packed | None = None
    _made: dict[int, _Entry] = field(default_factory=dict)
    # (protocol, destination, recorded connection) -> its entries, for the ledger and the timeline
    _connections: dict[tuple[str, str, int], list[_Entry]] | None = None
    # (protocol, ``same_as``) -> the match key of the requests that share it (``find``)
    _keys: dict[tuple[str, Hashable], str] = field(default_factory=dict)

    @classmethod
    def build(cls, exchanges: Sequence[Exchange], key_fn: KeyFn,
              rules_fn: Callable[[str, Any], list[str]] | None = None,
              rules_apply: Callable[[str], bool] | None = None) -> MockPool:
        pool = cls(key_fn, rules_fn, rules_apply)
        source = exchanges.source if isinstance(exchanges, Exchanges) else None
        if source is not None and all(pool._shipped_keys(p) and not pool._ruled(p) for p, _d in source.summary.places):
            pool._adopt(source)
            return pool
        add = pool.add
        for ex in exchanges:
            add(ex)
        return pool

    def _adopt(self, source: Packed) -> None:
        """Take a packed recording: what is per destination now, entries when asked for
        (``_entry``, ``_bucket``); loading a million exchanges makes no object per exchange."""
        summary = source.summary
        for protocol, destination in summary.places:
            self._by_dest.setdefault((protocol, destination_key(destination)), {})
            self._places.setdefault(protocol, set()).add(destination)
        self._tls.update(summary.tls)
        for dest, names in summary.alpn.items():
            self._alpn.setdefault(dest, set()).update(names)
        for n in summary.events:
            self.add(source.exchange(n))
        self._source = source

    def _entry(self, n: int) -> _Entry:
        """The entry of row ``n`` of the packed recording (one object per row; a search
        thread may make one at the same time: ``setdefault`` keeps one)."""
        entry = self._made.get(n)
        if entry is None:
            assert self._source is not None
            exchange = self._source.exchange(n)
            known = exchange.__dict__
            entry = _Entry(exchange, known["_key"])
            if (masked := known.get("_masked")) is not None and masked != entry.key:
                entry.masked_key, entry.volatile = masked, list(known["_volatile"])
            entry = self._made.setdefault(n, entry)
        return entry

    def _bucket(self, masked: bool, protocol: str, dest: str, key: str) -> _Bucket | None:
        """The entries of a match key (``masked``: of a masked one) at a destination; of a
        packed recording, made the first time (in recorded order, as ``add`` would)."""
        index = self._masked if masked else self._by_dest
        bucket = index.get((protocol, dest), _NO_BUCKETS).get(key)
        if bucket is None and self._source is not None:
            rows = self._source.rows(BY_MASKED if masked else BY_KEY, protocol, dest, key)
            self._source.make(rows)
            for n in rows:
                entry = self._entry(n)
                if ((entry.masked_key if masked else entry.key) == key and entry.exchange.protocol == protocol
                        and entry.exchange.__dict__["_dest"] == dest):
                    if bucket is None:
                        bucket = index.setdefault((protocol, dest), {})[key] = _Bucket()
                    bucket.add(entry)
        return bucket

    def _place(self, protocol: str, dest: str) -> Iterator[_Entry]:
        """Every entry at a destination, in the order ``entries`` gives them: by match key
        (first recorded first), then recorded order."""
        if self._source is None:
            for bucket in self._by_dest.get((protocol, dest), _NO_BUCKETS).values():
                yield from bucket
            return
        keys: dict[str, list[_Entry]] = {}
        for n in self._source.rows(BY_PLACE, protocol, dest):
            entry = self._entry(n)
            if entry.exchange.protocol == protocol and entry.exchange.__dict__["_dest"] == dest:
                keys.setdefault(entry.key, []).append(entry)
        for entries in keys.values():
            yield from entries

    def _settle(self) -> None:
        """Make every entry of a packed recording and put them in their buckets as ``add``
        would have (use counts stay: the entries are the same): the pool is then an
        ordinary one (``add`` after ``build``)."""
        source = self._source
        if source is None:
            return
        events = set(source.summary.events)
        entries = [self._entry(n) for n in range(len(source.exchanges())) if n not in events]
        self._source = None
        self._by_dest = {place: {} for place in self._by_dest}
        self._masked, self._by_window = {}, {}
        for entry in entries:
            self._insert(entry, entry.exchange.__dict__["_dest"])

    def connection(self, protocol: str, dest: str, connection: int) -> list[_Entry]:
        """The entries of one recorded connection (``dest``: its ``destination_key``)."""
        if self._source is not None:
            rows = self._source.rows(BY_CONNECTION, protocol, dest, connection)
            self._source.make(rows)  # adjacent rows in one read each, as ``_bucket`` does
            return [entry for n in rows
                    if (entry := self._entry(n)).exchange.connection == connection
                    and entry.exchange.protocol == protocol and entry.exchange.__dict__["_dest"] == dest]
        if self._connections is None:
            self._connections = {}
            for entry in self.entries():
                ex = entry.exchange
                self._connections.setdefault((ex.protocol, destination_key(ex.destination), ex.connection),
                                             []).append(entry)
        return self._connections.get((protocol, dest, connection), [])

    def add(self, exchange: Exchange) -> None:
        protocol = exchange.protocol
        dest = destination_key(exchange.destination)
        if exchange.event is not None:
            self.events.append(exchange)
            if exchange.event == "refused":
                self._refused.add(dest)
            return
        self._settle()
        # a packed exchange (``packed.py``) comes with its keys: its request stays packed
        known = exchange.__dict__ if self._shipped_keys(protocol) else _NOT_PACKED
        entry = _Entry(exchange, known.get("_key") or canonical(self.key_fn(protocol, exchange.request)))
        if "_key" in known:
            values, masked = list(known.get("_volatile", ())), known.get("_masked")
        else:
            values, masked = recorded_values(exchange.extra), None
        if self._ruled(protocol) and (ruled := self.rules_fn(protocol, exchange.request)):  # type: ignore[misc]
            values, masked = values + ruled, None
        if values:
            masked = masked or canonical(self.key_fn(exchange.protocol, mask(exchange.request, values)))
            if masked != entry.key:
                entry.masked_key, entry.volatile = masked, values
        self._insert(entry, dest)

    def _insert(self, entry: _Entry, dest: str) -> None:
        """Put an entry in the buckets of its keys and its test windows."""
        exchange, protocol = entry.exchange, entry.exchange.protocol
        self._connections = None
        self._places.setdefault(protocol, set()).add(exchange.destination)
        if self._skeletons:
            for masked_index in (False, True):
                self._skeletons.pop((protocol, dest, masked_index), None)
        by_key = self._by_dest.get((protocol, dest))
        if by_key is None:
            by_key = self._by_dest[(protocol, dest)] = {}
        bucket = by_key.get(entry.key)
        if bucket is None:
            bucket = by_key[entry.key] = _Bucket()
        bucket.add(entry)
        for window in exchange.tests:
            self._by_window.setdefault(window, []).append((bucket, entry))
        if entry.masked_key is not None:
            by_masked = self._masked.setdefault((exchange.protocol, dest), {})
            bucket = by_masked.setdefault(entry.masked_key, _Bucket())
            bucket.add(entry)
            for window in exchange.tests:
                self._by_window.setdefault(window, []).append((bucket, entry))
        if exchange.tls:
            self._tls.add(dest)
        if exchange.alpn:
            self._alpn.setdefault(dest, set()).add(exchange.alpn)

    def _shipped_keys(self, protocol: str) -> bool:
        """Whether this pool's keys for ``protocol`` are the ones a cache holds (asked once)."""
        if (shipped := self._shipped_cache.get(protocol)) is None:
            shipped = self._shipped_cache[protocol] = self.key_fn is match_key and not configured(protocol)
        return shipped

    def _ruled(self, protocol: str) -> bool:
        """Whether the user's volatile rules may apply to ``protocol`` (asked once each)."""
        if self.rules_fn is None:
            return False
        if (ruled := self._rules_cache.get(protocol)) is None:
            ruled = self._rules_cache[protocol] = self.rules_apply is None or self.rules_apply(protocol)
        return ruled

    def __len__(self) -> int:
        if self._source is not None:
            return self._source.summary.exchanges
        return sum(len(v) for d in self._by_dest.values() for v in d.values())

    def entries(self, protocol: str | None = None) -> Iterator[_Entry]:
        """Every mock (of ``protocol``) with its use count (``used``), destination by destination."""
        for p, dest in list(self._by_dest):
            if protocol is None or p == protocol:
                yield from self._place(p, dest)

    def orders(self) -> Sequence[int]:
        """The request orders of the recorded exchanges (not events), sorted (``timeline``)."""
        if self._source is not None:
            return self._source.summary.orders
        return sorted(e.exchange.order for e in self.entries() if e.exchange.order)

    def recorded_destinations(self, protocol: str) -> set[str]:
        """The destinations recorded for ``protocol``, as the app dialed them."""
        return self._places.get(protocol, set())

    def has_destination(self, destination: str) -> bool:
        """Whether anything was recorded there (a refused connect counts)."""
        dest = destination_key(destination)
        return dest in self._refused or any(d == dest for (_p, d) in self._by_dest)

    def destinations(self) -> set[str]:
        """Every destination recorded (as ``destination_key`` gives them: ``loopback:P``)."""
        return {d for (_p, d) in self._by_dest} | self._refused

    def refused_destinations(self) -> set[str]:
        """Destinations only ever refused when recording."""
        return {d for d in self._refused if self.refused(d)}

    def refused(self, destination: str) -> bool:
        """Whether connecting there was refused when recording, and never accepted."""
        dest = destination_key(destination)
        return dest in self._refused and not any(d == dest for (_p, d) in self._by_dest)

    def recorded_protocols(self, destination: str) -> set[str]:
        """The protocols recorded at this destination."""
        dest = destination_key(destination)
        return {p for (p, d) in self._by_dest if d == dest}

    def recorded_tls(self, destination: str) -> bool:
        """Whether a connection to this destination was recorded over TLS (replay accepts
        an in-band TLS request, a Postgres SSLRequest, only then, as the server did)."""
        return destination_key(destination) in self._tls

    def recorded_alpn(self, destination: str) -> set[str]:
        """The application protocols TLS negotiated at this destination when recording
        (``metadata.alpn``): replay selects one of them again when the client offers it."""
        return self._alpn.get(destination_key(destination), set())

    def scope(self, running: set[str] | frozenset[str], opened: str | None = None) -> None:
        """A test runner reports the test windows open now (``opened``: the one that just
        opened). From then on a data exchange recorded in a window is served to that window
        only. A window that opens again with all its data exchanges used (a rerun) gets
        them again; one with some left (recorded reruns) goes on with those."""
        self._running = tuple(sorted(running))
        window = opened or ""
        owned = self._by_window.get(window, [])
        if self._source is not None and window not in self._by_window:
            source, made = self._source, self._made
            if any(n not in made and source.exchange(n).lifetime == "data" for n in source.window(window)):
                return  # a data entry never made was never used: no rerun (and nothing made)
            owned = self._by_window[window] = self._window(window)
        data = [entry for _b, entry in owned if entry.exchange.lifetime == "data"]
        if data and all(entry.used for entry in data):
            for _b, entry in owned:
                entry.used = 0
            for bucket in {id(b): b for b, _e in owned}.values():
                bucket.rewind()

    def _window(self, window: str) -> list[tuple[_Bucket, _Entry]]:
        """A test window's entries with their buckets, from the packed recording."""
        assert self._source is not None
        owned = []
        for n in self._source.window(window):
            entry = self._entry(n)
            protocol, dest = entry.exchange.protocol, entry.exchange.__dict__["_dest"]
            owned.append((self._bucket(False, protocol, dest, entry.key), entry))
            if entry.masked_key is not None:
                owned.append((self._bucket(True, protocol, dest, entry.masked_key), entry))
        return owned  # type: ignore[return-value]

    def find(self, protocol: str, destination: str, request: Any, summary: str = "",
             affinity: Affinity | None = None, test: str | None = None,
             repeat_last: bool = False, masked: Callable[[], Any] | Any = None,
             accept: Callable[[Exchange, list[str]], str | None] | None = None,
             similar: Similar | None = None, same_as: Hashable | None = None) -> Served:
        """The recording that answers ``request``; else, with ``masked`` (the request with
        its volatile values masked, or a function that makes it: asked only when nothing
        matches exactly), one whose own volatile values are masked the same way and that
        ``accept`` takes, given those values (None: yes; else why not); else, with
        ``similar``, the most similar unused recording within the bounds of ``similar.py``
        that ``similar`` takes, given its volatile values and the tokens that differ.
        ``same_as``: a value only equal requests share (``LookupContext.same_as``): the
        key is computed once per distinct one."""
        exact = self._exact(protocol, destination, request, test, same_as)
        if (chosen := self._choose(exact.entries, affinity, exact.windows, exact.exclusive, repeat_last)) is not None:
            return self._use(chosen, affinity, exact=exact)
        key, dest, entries, windows, exclusive = exact.key, exact.dest, exact.entries, exact.windows, exact.exclusive
        through_mask, approximate = False, None
        if callable(masked):
            masked = masked()
        masked_key = canonical(self.key_fn(protocol, masked)) if masked is not None else None
        if masked_key is not None:
            alike = self._bucket(True, protocol, dest, masked_key)
            if alike and (chosen := self._choose(alike, affinity, windows, exclusive, repeat_last)):
                # a repeated answer (``repeat_last``) does not depend on the values: served
                # even when its recording's values already stand for other live ones
                if accept is not None and (refused := accept(chosen[0].exchange, chosen[0].volatile)) \
                        and not chosen[1]:
                    raise NoMatch(summary or key[:80], "the recording that matches with its volatile "
                                  f"values masked does not fit the values seen so far: {refused}", [])
                through_mask = True
        if chosen is None and similar is not None:
            for entry, pairs, diff in self._similar(protocol, dest, masked_key or key, masked_key is not None,
                                                    windows, exclusive):
                if similar(entry.exchange, entry.volatile if masked_key else [], pairs) is None:
                    chosen = entry, False
                    changed = ", ".join(f"{r} -> {v}" for r, v in pairs)
                    approximate = {"recorded": entry.exchange.summary[:200] or "exchange",
                                   "reason": f"no exact match; differs only in {len(pairs)} value(s) of "
                                             f"the same shape: {changed}", "diff": diff}
                    break
        if chosen is None and exclusive and (miss := _elsewhere(summary or key[:80], entries, windows)):
            raise miss
        if chosen is None:
            raise self._explain(protocol, destination, key, summary or key[:80], entries)
        return self._use(chosen, affinity, through_mask, approximate)

    def again(self, exact: Exact, affinity: Affinity | None = None, repeat_last: bool = False) -> Served | None:
        """``find``'s exact step alone, for a request equal to the one it served ``exact``
        for, right after it (the next of a pipeline of one command): the key, bucket and
        windows are not looked up again. None when no exact match answers: the request
        then takes ``find``'s whole way (its fallbacks, its miss)."""
        chosen = self._choose(exact.entries, affinity, exact.windows, exact.exclusive, repeat_last)
        return None if chosen is None else self._use(chosen, affinity, exact=exact)

    def _exact(self, protocol: str, destination: str, request: Any, test: str | None,
               same_as: Hashable | None) -> Exact:
        """Where ``find`` looks for a request's exact matches."""
        known = self._keys.get((protocol, same_as)) if same_as is not None else None
        if known is not None:
            key = known
        else:
            key = canonical(self.key_fn(protocol, request))
            if same_as is not None:
                if len(self._keys) >= _MAX_KEYS:
                    self._keys.clear()
                self._keys[(protocol, same_as)] = key
        dest = destination_key(destination)
        entries = self._bucket(False, protocol, dest, key) or _Bucket()
        windows = (test,) if test is not None else self._running or ()
        return Exact(key, dest, entries, windows, test is None and self._running is not None)

    @staticmethod
    def _use(chosen: tuple[_Entry, bool], affinity: Affinity | None, masked: bool = False,
             similar: dict[str, str] | None = None, exact: Exact | None = None) -> Served:
        """The chosen entry is used (once more); the connection follows its recording."""
        entry, repeat = chosen
        entry.used += 1
        if affinity is not None and entry.exchange.lifetime == "data":
            affinity.recorded_connection = entry.exchange.connection
        return Served(entry.exchange, repeat, masked, similar, exact)

    def _similar(self, protocol: str, dest: str, key: str, masked: bool, windows: tuple[str, ...],
                 exclusive: bool) -> list[tuple[_Entry, list[tuple[str, str]], str]]:
        """Unused ``data`` recordings of ``key``'s skeleton within the bounds (``similar.py``),
        the most similar first (fewest differing values, then recorded order), with a diff.
        Never a ``session`` exchange: logins (a password's hash) and settings stay exact."""
        shape = skeleton(key)
        index = self._skeletons.get((protocol, dest, masked))
        if index is None:
            index = self._skeletons[(protocol, dest, masked)] = {}
            for entry in self._place(protocol, dest):
                other = entry.masked_key or entry.key if masked else entry.key
                if (s := skeleton(other)) is not None:
                    index.setdefault(s, []).append(entry)
        found = []
        for entry in index.get(shape, []) if shape is not None else []:
            tests = entry.exchange.tests
            if entry.used or entry.exchange.lifetime != "data" or (
                    tests and not set(tests) & set(windows) and (exclusive or windows)):
                continue  # used, a login or a setting (compared exactly), another test's
            other = entry.masked_key or entry.key if masked else entry.key
            if (pairs := differences(other, key)) is not None:
                found.append((len(pairs), entry.exchange.order, entry, pairs, other))
        found.sort(key=lambda t: t[:2])
        return [(entry, pairs, "".join(difflib.unified_diff(_readable(other), _readable(key),
                                                            "recorded", "live", n=2)))
                for _n, _o, entry, pairs, other in found[:_MAX_NEAREST]]

    @staticmethod
    def _choose(entries: _Bucket, affinity: Affinity | None, windows: tuple[str, ...],
                exclusive: bool, repeat_last: bool) -> tuple[_Entry, bool] | None:
        """Fresh entries first: the running windows' own, then those recorded outside any
        window, then (unless ``exclusive``) any; then a repeat of the last session entry, or
        of the last data entry when the caller asks (``repeat_last``), in the same order."""
        followed = affinity.recorded_connection if affinity else None
        groups: list[_Bucket] = []
        if windows or exclusive:
            groups = [g for w in (*windows, "") if (g := entries.group(w)) is not None]
        if not exclusive:
            groups.append(entries)
        for group in groups:
            if (best := group.first(followed)) is not None:
                return best, False
        for group in groups + ([entries] if exclusive else []):  # session exchanges are shared
            if group.last_session is not None:
                return group.last_session, True
        for group in groups:
            if repeat_last and group:
                return group[-1], True
        return None

    def _explain(self, protocol: str, destination: str, key: str, summary: str,
                 same_key: list[_Entry]) -> NoMatch:
        if same_key:
            return NoMatch(summary, f"all {len(same_key)} recorded answers were already used", [])
        if (protocol, destination_key(destination)) not in self._by_dest:
            elsewhere = sorted(d for (p, d) in self._by_dest if p == protocol)
            hint = f" (recorded {protocol} destinations: {', '.join(elsewhere)})" if elsewhere else ""
            return NoMatch(summary, f"nothing recorded for {protocol} at {destination}{hint}", [])
        return NoMatch(summary, "no recorded request matches", [])

    def nearest(self, protocol: str, destination: str, request: Any, summary: str = "",
                deadline: float | None = None) -> list[str]:
        """The recordings closest to a request that missed, each with a diff, for the
        report. Bounded, because it runs for requests of any size while the run goes on
        (off the event loop): recordings of the same command (the first word of the
        summary) are compared first, texts are cut at ``_MAX_TEXT`` characters, and the
        search stops at ``deadline`` (``time.monotonic()``) with what it has."""
        dest = destination_key(destination)
        if (protocol, dest) not in self._by_dest:
            return []
        by_key: dict[str, list[_Entry]] = {}
        for entry in self._place(protocol, dest):  # not the pool's buckets: lookups add to them meanwhile
            by_key.setdefault(entry.key, []).append(entry)
        key = canonical(self.key_fn(protocol, request))
        if MASK in key:  # a request with volatile values: compared with recordings masked too
            by_key = {bucket[0].masked_key or k: bucket for k, bucket in by_key.items()}
        word = _first_word(summary)
        candidates = sorted(list(by_key.items())[:_MAX_COMPARED * 4],
                            key=lambda kv: _first_word(kv[1][0].exchange.summary) != word)
        scored = []
        for other_key, entries in candidates[:_MAX_COMPARED]:
            if deadline is not None and time.monotonic() > deadline:
                break
            ratio = difflib.SequenceMatcher(None, key[:_MAX_TEXT], other_key[:_MAX_TEXT],
                                            autojunk=False).quick_ratio()
            scored.append((ratio, other_key, entries))
        scored.sort(key=lambda t: -t[0])
        nearest = []
        for ratio, other_key, entries in scored[:_MAX_NEAREST]:
            if deadline is not None and time.monotonic() > deadline:
                break
            diff = "".join(difflib.unified_diff(_readable(other_key), _readable(key),
                                                "recorded", "live", n=1))
            used = sum(1 for e in entries if e.used)
            label = entries[0].exchange.summary[:200] or "exchange"
            nearest.append(f"{label} "
                           f"(similarity {ratio:.0%}, {len(entries)} recorded, {used} used)\n{diff}")
        return nearest


def _first_word(summary: str) -> str:
    words = summary.split(None, 1)
    return words[0] if words else ""


def _readable(key: str) -> list[str]:
    """A match key as YAML lines for a diff; a large one as its first characters."""
    if len(key) > _MAX_TEXT:
        return [key[:_MAX_TEXT] + " ...\n"]
    return dump(json.loads(key)).splitlines(True)[1:][:_MAX_LINES]


def _elsewhere(summary: str, entries: list[_Entry], windows: tuple[str, ...]) -> NoMatch | None:
    """The miss of a request recorded in other test windows (scoped replay never serves them)."""
    others = sorted({w for e in entries for w in e.exchange.tests if w not in windows})
    if not others:
        return None
    mine = sum(1 for e in entries if not e.exchange.tests or set(e.exchange.tests) & set(windows))
    listed = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    if mine:
        return NoMatch(summary, f"the {mine} answers recorded for this test were already used "
                                f"(also recorded in other tests: {listed})", [])
    return NoMatch(summary, f"recorded only in other tests: {listed}", [])

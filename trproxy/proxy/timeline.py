"""What happened between connections when recording, replayed (sans-I/O, one per run).

Each replayed connection is a ``engine.Session``; the timeline is what they share:

* **events**: messages the server pushed on its own and a server's close or reset
  (event documents, ``Exchange.event``) belong to a recorded connection R and carry
  ``after``, the run-wide request ``order`` reached when they happened. An event is
  released when the replay got that far: a data exchange whose request order is
  ``after`` or later was served (on any connection), or every one before it and no
  exchange has the orders in between (requests that never became exchanges: a
  Terminate, the first bytes of a connection the server had closed), and R's own
  exchanges recorded before the event were served. Or sooner, for R's live follower: when it asks for something R
  recorded after the event, or misses while R's recording ended there (a close). A
  released event goes to the live session following R (served from it last; a data
  exchange outranks a session one), or waits for one to follow R.
* **identities**: a session whose replayer names itself (Postgres: the backend key its
  startup sent) can be interrupted from another connection (``Interrupt``: a
  CancelRequest carries that key): its held answers go out at once.
* **waits**: an answer recorded after a long wait (``wait_ms`` at least ``LONG_WAIT_MS``
  and ``LONG_WAIT_FACTOR`` times the median of its recorded connection) is held that
  long (capped), so client timeouts, ``statement_timeout`` and cancels meet it as they
  met the server; unless requests of other connections started while it waited
  (``answered_after``), which it may have waited for: those are replayed at their own
  pace, and the answer is not held. A connection's usual wait is the median of its other
  answers'. An ``interrupted`` answer (it came because of a cancel) and one the dialect
  calls ``timed`` (it waited on purpose: ``pg_sleep``) are always held as recorded.
"""

from __future__ import annotations

import heapq
import math
import statistics
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..store import Exchange, MockPool
from ..store.matcher import destination_key

LONG_WAIT_MS = 100.0
LONG_WAIT_FACTOR = 10.0
MAX_WAIT_MS = 30_000.0

Key = tuple[str, str, int]  # (protocol, destination, recorded connection)
Deliveries = list[tuple[Any, list[Exchange]]]  # (live session, events for it)
_NONE: tuple[Deliveries, Deliveries] = ([], [])


def key_of(exchange: Exchange) -> Key:
    return (exchange.protocol, destination_key(exchange.destination), exchange.connection)


@dataclass
class _Recorded:
    """One recorded connection: its events, what of it was served, who follows it."""

    events: list[Exchange] = field(default_factory=list)  # pending, in seq order
    ready: list[Exchange] = field(default_factory=list)  # released, no follower yet
    seqs: list[int] = field(default_factory=list)  # seq of its exchanges (not events)
    progress: int = 0  # the highest seq served from it
    follower: Any = None  # the live session following it
    by_data: bool = False  # the follower was served a data exchange from it


class Timeline:
    def __init__(self, pool: MockPool) -> None:
        self.pool = pool
        self._recorded: dict[Key, _Recorded] = {}
        self._heap: list[tuple[int, int, int, Key]] = []  # (after, seq, n, key) of pending events
        self._served_order = 0  # the highest request order served
        self._orders: Sequence[int] | None = None  # the pool's exchange orders, when first needed
        self._identities: dict[bytes, list[Any]] = {}
        self._followed: dict[int, set[Key]] = {}  # id(session) -> what it follows (forget)
        # wait_ms of a recorded connection's exchanges, sorted: made on its first long wait,
        # so that a recording is not read through at load (``packed.py``)
        self._waits: dict[Key, list[float]] = {}
        self._with_events = any(ev.event != "refused" for ev in pool.events)
        for n, ev in enumerate(sorted(pool.events, key=lambda e: e.seq)):
            if ev.event == "refused":
                continue
            rec = self._recorded.setdefault(key_of(ev), _Recorded())
            rec.events.append(ev)
            heapq.heappush(self._heap, (ev.after, ev.seq, n, key_of(ev)))
        # the last exchange each event's connection recorded before it (served first)
        self._before: dict[int, int] = {}
        for key, rec in self._recorded.items():
            rec.seqs = [entry.exchange.seq for entry in pool.connection(*key)]
            for ev in rec.events:
                self._before[id(ev)] = max((s for s in rec.seqs if s < ev.seq), default=0)

    # -- holds -----------------------------------------------------------------------

    def hold_ms(self, exchange: Exchange, timed: bool = False) -> float | None:
        """How long to hold this answer: its recorded wait when that was long or ended by
        an interrupt (see the module doc), else None. Not when other requests started while it waited and it
        was not interrupted: the answer may have waited for them (a Kafka long poll for
        a Produce), and they are replayed at their own pace."""
        wait = exchange.wait_ms
        if wait is not None and (exchange.interrupted or timed):  # came because of the
            return min(max(wait, 1.0), MAX_WAIT_MS)  # cancel, or waited on purpose
        if wait is None or wait < LONG_WAIT_MS:
            return None
        if exchange.answered_after > exchange.order and not exchange.interrupted:
            return None
        others = list(self._connection_waits(key_of(exchange)))
        if wait in others:
            others.remove(wait)  # the usual is the connection's other answers
        if others and wait < LONG_WAIT_FACTOR * statistics.median(others):
            return None
        return min(wait, MAX_WAIT_MS)

    def _connection_waits(self, key: Key) -> list[float]:
        """The recorded waits of a connection's answers, sorted (made when first asked)."""
        if (waits := self._waits.get(key)) is None:
            waits = self._waits[key] = sorted(entry.exchange.wait_ms for entry in self.pool.connection(*key)
                                              if entry.exchange.wait_ms is not None)
        return waits

    # -- events ----------------------------------------------------------------------

    def served(self, session: Any, exchange: Exchange) -> tuple[Deliveries, Deliveries]:
        """``exchange`` was served to ``session``: who gets which events now, as (those to
        send before its answer: recorded before it on its connection, or waiting for a
        follower; those the replay reached with it, after the answer)."""
        if not self._with_events:  # nothing happened between connections: nothing to do
            return _NONE
        key = key_of(exchange)
        rec = self._recorded.setdefault(key, _Recorded())
        data = exchange.lifetime == "data"
        out: list[tuple[Any, list[Exchange]]] = []
        if rec.follower is not session and (data or not rec.by_data or rec.follower is None):
            rec.follower, rec.by_data = session, data
            self._followed.setdefault(id(session), set()).add(key)
            if rec.ready:
                out.append((session, rec.ready))
                rec.ready = []
        elif data:
            rec.by_data = True
        rec.progress = max(rec.progress, exchange.seq)
        earlier = [ev for ev in rec.events if ev.seq < exchange.seq]
        if earlier:
            out.append((session, self._take(rec, earlier)))
        if data:  # session answers repeat out of turn: they do not move the replay on
            self._served_order = max(self._served_order, exchange.order)
        return out, (self._due() if self._heap else [])

    def missed(self, session: Any) -> list[tuple[Any, list[Exchange]]]:
        """``session`` asked for something no recording answers: if a recorded connection
        it follows ended (closed, reset) right after what was served of it, that ending
        comes now (the request went to a server that had gone, and was never recorded)."""
        out: list[tuple[Any, list[Exchange]]] = []
        for key in self._followed.get(id(session), ()):
            rec = self._recorded[key]
            if rec.follower is not session:
                continue
            end = next((i for i, ev in enumerate(rec.events) if ev.event in ("close", "reset")), None)
            if end is not None and rec.progress >= self._before[id(rec.events[end])]:
                out.append((session, self._take(rec, rec.events[:end + 1])))
        return out

    def _due(self) -> list[tuple[Any, list[Exchange]]]:
        """Events the replay has reached (see the module doc), grouped per target."""
        out: list[tuple[Any, list[Exchange]]] = []
        held: list[tuple[int, int, int, Key]] = []
        reach = self._reach()
        while self._heap and self._heap[0][0] <= reach:
            item = heapq.heappop(self._heap)
            rec = self._recorded[item[3]]
            ev = next((e for e in rec.events if e.seq == item[1]), None)
            if ev is None:
                continue  # released already (its connection asked past it)
            if rec.progress < self._before[id(ev)]:
                held.append(item)  # its connection's own earlier exchanges come first
                continue
            events = self._take(rec, [e for e in rec.events if e.seq <= ev.seq])
            if rec.follower is None:
                rec.ready += events
            elif (mine := next((got for target, got in out if target is rec.follower), None)) is not None:
                mine += events  # one delivery, so one write: a server's NOTIFYs of one COMMIT came together
            else:
                out.append((rec.follower, events))
        for item in held:
            heapq.heappush(self._heap, item)
        return out

    def _reach(self) -> float:
        """How far the replay got: the highest order served, and the orders after it up to
        the next one an exchange has (those were requests nothing answers)."""
        if self._heap[0][0] <= self._served_order:
            return self._served_order
        if self._orders is None:
            self._orders = self.pool.orders()
        at = bisect_right(self._orders, self._served_order)
        return self._orders[at] - 1 if at < len(self._orders) else math.inf

    @staticmethod
    def _take(rec: _Recorded, events: list[Exchange]) -> list[Exchange]:
        taken = {id(e) for e in events}
        rec.events = [e for e in rec.events if id(e) not in taken]
        return events

    # -- identities and interrupts -----------------------------------------------------

    def identify(self, session: Any, identity: bytes) -> None:
        sessions = self._identities.setdefault(identity, [])
        if session not in sessions:
            sessions.append(session)
            session_identity = getattr(session, "_identity", None)
            if session_identity is not None and session_identity != identity:
                self._drop_identity(session, session_identity)

    def hand_over(self, key: Key, identity: bytes, deliveries: Deliveries) -> Deliveries:
        """An answer ended the live connection named ``identity`` where it ended recorded
        connection ``key`` (Postgres ``pg_terminate_backend``): that live one follows
        ``key`` now, and gets what of it ``deliveries`` (or nobody yet) released."""
        sessions = self._identities.get(identity, [])
        rec = self._recorded.get(key)
        if len(sessions) != 1 or rec is None:
            return deliveries
        target = sessions[0]
        rec.follower, rec.by_data = target, True
        self._followed.setdefault(id(target), set()).add(key)
        out = [(target if events and key_of(events[0]) == key else who, events) for who, events in deliveries]
        if rec.ready:
            out.append((target, rec.ready))
            rec.ready = []
        return out

    def interrupt(self, identity: bytes) -> list[Any]:
        """The live sessions an ``Interrupt`` with this identity is meant for."""
        return list(self._identities.get(identity, []))

    def forget(self, session: Any, identity: bytes | None = None) -> None:
        """``session`` ended: it follows nothing and can be interrupted no more."""
        for key in self._followed.pop(id(session), ()):
            rec = self._recorded[key]
            if rec.follower is session:
                rec.follower, rec.by_data = None, False
        if identity is not None:
            self._drop_identity(session, identity)

    def _drop_identity(self, session: Any, identity: bytes) -> None:
        sessions = self._identities.get(identity, [])
        if session in sessions:
            sessions.remove(session)
        if not sessions:
            self._identities.pop(identity, None)

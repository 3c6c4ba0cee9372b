"""What one run shares across connections: mode, mocks, the writer, counters, report.

The sessions call back into ``RunContext`` for everything that outlives a connection,
so that counting, logging and reporting live in one place.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..protocols.base import Dialect
from ..protocols.registry import match_key
from ..protocols.volatile import ValueMap
from ..store import DirBlobStore, Exchange, Ledger, MockPool
from ..store.ledger import describe
from ..store.offload import MockWriterProcess
from .faults import FaultPlan
from .timeline import Timeline

if TYPE_CHECKING:
    from ..tls.stream import TlsSettings  # mitmproxy: imported only when TLS is intercepted

log = logging.getLogger("trproxy")
NEAREST_SECONDS = 2.0  # how long the search for a miss's nearest recordings may take
_MAX_SEARCHES = 200  # misses whose nearest recordings are searched (the rest are counted)


class Mode(enum.Enum):
    PASSTHROUGH = "passthrough"
    RECORD = "record"
    REPLAY = "replay"
    AUTO = "auto"  # record when no recording exists, else replay (VCR.py "once")
    NEW_EPISODES = "new-episodes"  # replay known destinations, record the others; HTTP: per request


def format_destination(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class RunContext:
    mode: Mode
    pool: MockPool = field(default_factory=lambda: MockPool(match_key))
    writer: MockWriterProcess | None = None
    blobs: DirBlobStore | None = None  # large bodies of the test set (bodies/<sha256>)
    connect_timeout: float = 10.0
    current_test: str | None = None  # replay: the test being run (its mocks come first)
    open_tests: set[str] = field(default_factory=set)  # record: inbound requests in progress
    windows: set[str] = field(default_factory=set)  # test windows a test runner reports (control.py)
    recorded: Counter = field(default_factory=Counter)
    served_count: Counter = field(default_factory=Counter)
    misses: list[dict[str, Any]] = field(default_factory=list)
    out_of_order: list[dict[str, Any]] = field(default_factory=list)
    # answers from a similar recording, not an exact match (``store/similar.py``); off
    # with ``--strict``, where such a request is a miss
    similar: list[dict[str, Any]] = field(default_factory=list)
    similar_fallback: bool = True
    problems: list[str] = field(default_factory=list)
    connections: int = 0
    tests_recorded: int = 0
    tls: TlsSettings | None = None  # intercept TLS (record/replay); None: leave it alone
    # attach: the process whose network namespace local destinations are dialled in, given
    # the app's connection (peername, sockname) when known (netns.py)
    upstream_netns: Callable[[tuple | None], int | None] | None = None  # type: ignore[type-arg]
    vault: Any = None  # the run's named secrets (protocols/secrets.SecretVault), if any
    last_order: int = 0  # the run-wide number of the last request that started (record)
    captures: dict[bytes, Any] = field(default_factory=dict)  # record: Capture by identity
    # replay: when the run started (volatile epoch numbers are near it), and the values the
    # app generated in place of recorded ones, per test (``protocols/volatile.py``)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    values: dict[str | None, ValueMap] = field(default_factory=dict)
    run_values: ValueMap = field(default_factory=ValueMap)  # every test's pairs: the fallback
    faults: FaultPlan | None = None  # replay: the requests that fail on purpose (faults.py)
    injected: list[dict[str, Any]] = field(default_factory=list)
    raw: Counter = field(default_factory=Counter)  # exchanges recorded / served as raw bytes
    # record, passthrough: destination -> connects refused at connect because nothing
    # listened on that local port (the redirect's ``closed()``), as without trproxy
    closed: Counter = field(default_factory=Counter)
    _ledger: Ledger | None = None
    _timeline: Timeline | None = None
    _searcher: concurrent.futures.ThreadPoolExecutor | None = None
    _searches: list[concurrent.futures.Future] = field(default_factory=list)
    _unused: tuple[Any, list[dict[str, Any]]] | None = None  # (what was served, ``unused()``)

    def next_order(self) -> int:
        """A number for a request that starts now, in the order requests start run-wide."""
        self.last_order += 1
        return self.last_order

    @property
    def timeline(self) -> Timeline:
        """What happened between connections when recording, over the current pool."""
        if self._timeline is None or self._timeline.pool is not self.pool:
            self._timeline = Timeline(self.pool)
        return self._timeline

    @property
    def ledger(self) -> Ledger:
        """Unused recordings and answers out of order, over the current pool."""
        if self._ledger is None or self._ledger.pool is not self.pool:
            self._ledger = Ledger(self.pool)
        return self._ledger

    def room(self) -> asyncio.Future[None] | None:
        """What a recording connection waits for before it reads more: the recording's
        writer is far behind (``MockWriterProcess.room``); None: go on."""
        return self.writer.room() if self.writer is not None else None

    def record(self, exchange: Exchange) -> None:
        if self.writer is not None:
            self.writer.write(exchange)
        if exchange.event is not None:
            log.debug("recorded %s %s: %s", exchange.protocol, exchange.destination, exchange.summary)
            return
        self.recorded[exchange.protocol] += 1
        if exchange.extra.get("raw"):
            self.raw[exchange.protocol] += 1
        log.debug("recorded %s %s: %s", exchange.protocol, exchange.destination, exchange.summary)

    def value_map(self) -> ValueMap:
        """The recorded -> live values of the test running now (the run's, outside tests)."""
        values = self.values.get(self.test)
        if values is None:
            values = self.values[self.test] = ValueMap(earlier=self.run_values)
        return values

    def set_windows(self, windows: set[str], opened: str | None = None) -> None:
        """The test windows open now, as the test runner reports them (``control.py``):
        record tags what starts inside them, replay serves each its own recordings; a
        test that starts (again) starts with no values mapped."""
        if opened is not None:
            self.values = {t: m for t, m in self.values.items()
                           if t is None or opened not in t.split(", ")}
        self.open_tests.difference_update(self.windows)
        self.open_tests.update(windows)
        self.windows = set(windows)
        self.pool.scope(self.windows, opened)

    def served(self, protocol: str, destination: str, exchange: Exchange) -> None:
        self.served_count[protocol] += 1
        if exchange.extra.get("raw"):
            self.raw[protocol] += 1
        if log.isEnabledFor(logging.DEBUG):  # a packed exchange's summary is decoded when read
            log.debug("served %s %s: %s", protocol, destination, exchange.summary)

    @property
    def test(self) -> str | None:
        """The test a miss or an answer out of order belongs to: the inbound test being
        replayed, else the windows a test runner reports open (``control.py``)."""
        return self.current_test or ", ".join(sorted(self.windows)) or None

    def missed(self, entry: dict[str, Any], request: Any = None) -> None:
        """A miss for the report: protocol, destination, request, reason, nearest, test.
        With the live ``request``, its nearest recordings are searched in a thread, bounded
        in time (``NEAREST_SECONDS``), while the run goes on."""
        self.misses.append(entry)
        log.warning("MISS %s %s: %s: %s", entry["protocol"], entry["destination"],
                    entry["request"], entry["reason"])
        if request is None or entry["nearest"] or len(self.misses) > _MAX_SEARCHES:
            return
        if self._searcher is None:
            self._searcher = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="trproxy-nearest")
        deadline = time.monotonic() + NEAREST_SECONDS  # waiting in line counts

        def search() -> None:
            entry["nearest"] = self.pool.nearest(entry["protocol"], entry["destination"], request,
                                                 entry["request"], deadline)
            for near in entry["nearest"][:1]:
                log.warning("  closest to %s: %s", entry["request"], near.rstrip())

        self._searches.append(self._searcher.submit(search))

    def finish_searches(self) -> None:
        """Wait (bounded) for the nearest-recording searches, before the report."""
        if self._searcher is not None:
            concurrent.futures.wait(self._searches, timeout=NEAREST_SECONDS + 1)
            self._searcher.shutdown(wait=False, cancel_futures=True)
            self._searcher = None

    def fault_injected(self, entry: dict[str, Any]) -> None:
        self.injected.append(entry)
        log.info("FAULT %s %s: %s: %s", entry["protocol"], entry["destination"],
                 entry["request"], entry["fault"])
    def served_similar(self, entry: dict[str, Any]) -> None:
        self.similar.append(entry)
        log.warning("SIMILAR %s %s: %s answered by %s: %s\n%s", entry["protocol"], entry["destination"],
                    entry["request"], entry["recorded"], entry["reason"], entry["diff"])

    def served_out_of_order(self, entry: dict[str, Any]) -> None:
        self.out_of_order.append(entry)
        log.warning("OUT OF ORDER %s %s: %s served before %s", entry["protocol"],
                    entry["destination"], entry["request"],
                    ", ".join(s["request"] for s in entry["skipped"][:3]))

    def unused(self) -> list[dict[str, Any]]:
        """Report lines for the data recordings no request used (replay modes only)."""
        if self.mode not in (Mode.REPLAY, Mode.NEW_EPISODES):
            return []
        # asked by the summary, the report and --strict at the end: one pass over every
        # recording, made again only when something was served since
        key = (id(self.pool), sum(self.served_count.values()))
        if self._unused is None or self._unused[0] != key:
            self._unused = (key, [describe(e) for e in self.ledger.unused()])
        return self._unused[1]

    def strict_failures(self) -> list[str]:
        """What makes a ``--strict`` run fail: misses, unused recordings, answers out of order."""
        unused = self.unused()
        return [f"{n} {what}" for n, what in ((len(self.misses), "misses"),
                                               (len(unused), "recordings never used"),
                                               (len(self.out_of_order), "answers out of order"))
                if n]

    def capture_failed(self, destination: str, dialect: Dialect | None, exc: Exception) -> None:
        name = dialect.name if dialect else "?"
        self.problems.append(f"capture stopped for a {name} connection to {destination}: {exc}")
        log.warning("capture stopped for %s connection to %s (traffic still relayed): %s",
                    name, destination, exc)

    def replay_failed(self, destination: str, dialect: Dialect | None, exc: Exception) -> None:
        name = dialect.name if dialect else "?"
        self.problems.append(f"replay could not follow a {name} connection to {destination}: {exc}")
        log.warning("replay closed a %s connection to %s: %s", name, destination, exc)

    def summary(self) -> str:
        lines = []
        if self.tests_recorded:
            lines.append(f"recorded {self.tests_recorded} test cases")
        if self.recorded:
            lines.append("recorded " + _counts(self.recorded))
        if self.served_count or self.mode in (Mode.REPLAY, Mode.NEW_EPISODES):
            lines.append(f"served {_counts(self.served_count) or '0'} from {len(self.pool)} mocks")
        if self.raw:  # replies a dialect could not decode: kept (and replayed) byte for byte
            done = "served" if self.mode in (Mode.REPLAY, Mode.NEW_EPISODES) else "recorded"
            lines.append(f"{done} as raw bytes (a reply the dialect could not decode): "
                         f"{_counts(self.raw)}")
        lines += [f"{n} connect{'s' if n > 1 else ''} to {dest} refused: nothing listened (as direct)"
                  for dest, n in sorted(self.closed.items())[:5]]
        if len(self.closed) > 5:
            lines.append(f"  ... {len(self.closed) - 5} more local ports refused in the report")
        lines.append(f"{len(self.misses)} misses" + (":" if self.misses else ""))
        for miss in self.misses[:10]:
            test = f"[{miss['test']}] " if miss["test"] else ""
            lines.append(f"  - {test}{miss['protocol']} {miss['destination']}: {miss['request']}: {miss['reason']}")
        if len(self.misses) > 10:
            lines.append(f"  ... {len(self.misses) - 10} more in the report")
        unused = self.unused()
        if unused:
            lines.append(f"{len(unused)} recordings never used:")
            lines += [f"  - {u['protocol']} {u['destination']}: {u['request']} "
                      f"(connection {u['connection']}, #{u['seq']})" for u in unused[:5]]
            if len(unused) > 5:
                lines.append(f"  ... {len(unused) - 5} more in the report")
        if self.out_of_order:
            lines.append(f"{len(self.out_of_order)} answers out of recorded order:")
            for o in self.out_of_order[:5]:
                skipped = ", ".join(s["request"] for s in o["skipped"][:3])
                lines.append(f"  - {o['protocol']} {o['destination']}: {o['request']} "
                             f"served before {skipped}")
        if self.injected:
            lines.append(f"{len(self.injected)} faults injected:")
            for f in self.injected[:5]:
                lines.append(f"  - {f['protocol']} {f['destination']}: {f['request']}: {f['fault']}")
            if len(self.injected) > 5:
                lines.append(f"  ... {len(self.injected) - 5} more in the report")
        if self.similar:
            lines.append(f"{len(self.similar)} answers from a similar recording (no exact match; "
                         "--strict refuses them):")
            lines += [f"  - {o['protocol']} {o['destination']}: {o['request']} answered by "
                      f"{o['recorded']}: {o['reason']}" for o in self.similar[:5]]
        lines += [f"note: {p}" for p in self.problems[:5]]
        return "trproxy: " + "\ntrproxy: ".join(lines)

    def report(self, test_set: Path | None, exit_status: int | None) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "test_set": str(test_set) if test_set else None,
            "exit_status": exit_status,
            "recorded": dict(self.recorded),
            "served": dict(self.served_count),
            "misses": self.misses,
            "misses_per_test": dict(Counter(m["test"] for m in self.misses if m["test"])),
            "unused": self.unused(),
            "out_of_order": self.out_of_order,
            "similar": self.similar,
            "problems": self.problems,
            "faults": self.injected,
            "raw": dict(self.raw),
            "closed": dict(self.closed),
        }


def _counts(counter: Counter) -> str:
    return ", ".join(f"{n} {proto}" for proto, n in sorted(counter.items()))

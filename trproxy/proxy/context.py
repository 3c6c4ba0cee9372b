"""What one run shares across connections: mode, mocks, the writer, counters, report.

The sessions call back into ``RunContext`` for everything that outlives a connection,
so that counting, logging and reporting live in one place.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..protocols.base import Dialect
from ..protocols.registry import match_key
from ..store import DirBlobStore, Exchange, MockPool, MockWriter, NoMatch

if TYPE_CHECKING:
    from ..tls.stream import TlsSettings  # mitmproxy: imported only when TLS is intercepted

log = logging.getLogger("trproxy")


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
    writer: MockWriter | None = None
    blobs: DirBlobStore | None = None  # large bodies of the test set (bodies/<sha256>)
    connect_timeout: float = 10.0
    current_test: str | None = None  # replay: the test being run (its mocks come first)
    open_tests: set[str] = field(default_factory=set)  # record: inbound requests in progress
    recorded: Counter = field(default_factory=Counter)
    served_count: Counter = field(default_factory=Counter)
    misses: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    connections: int = 0
    tests_recorded: int = 0
    tls: TlsSettings | None = None  # intercept TLS (record/replay); None: leave it alone
    vault: Any = None  # the run's named secrets (protocols/http/secrets.SecretVault), if any

    def record(self, exchange: Exchange) -> None:
        if self.writer is not None:
            self.writer.write(exchange)
        self.recorded[exchange.protocol] += 1
        log.debug("recorded %s %s: %s", exchange.protocol, exchange.destination, exchange.summary)

    def served(self, protocol: str, destination: str, exchange: Exchange) -> None:
        self.served_count[protocol] += 1
        log.debug("served %s %s: %s", protocol, destination, exchange.summary)

    def missed(self, protocol: str, destination: str, miss: NoMatch) -> None:
        self.misses.append({"protocol": protocol, "destination": destination,
                            "request": miss.summary, "reason": miss.reason,
                            "nearest": miss.nearest, "test": self.current_test})
        log.warning("MISS %s %s: %s: %s", protocol, destination, miss.summary, miss.reason)
        for near in miss.nearest[:1]:
            log.warning("  closest: %s", near.rstrip())

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
        lines.append(f"{len(self.misses)} misses" + (":" if self.misses else ""))
        for miss in self.misses[:10]:
            lines.append(f"  - {miss['protocol']} {miss['destination']}: {miss['request']}: {miss['reason']}")
        if len(self.misses) > 10:
            lines.append(f"  ... {len(self.misses) - 10} more in the report")
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
            "problems": self.problems,
        }


def _counts(counter: Counter) -> str:
    return ", ".join(f"{n} {proto}" for proto, n in sorted(counter.items()))

"""Transcripts of replayed connections for the replay engine's tests (mitmproxy's Playbook).

A playbook drives one ``trproxy.proxy.engine.Session`` with events (``>>``) and checks the
commands it gives back (``<<``), in order::

    assert (Playbook("redis", recorded)
            >> client(b"GET a\\r\\n") << send(b"$1\\r\\n1\\r\\n")
            >> client(b"GET b\\r\\n") << miss("GET b") << send(b"-ERR trproxy: ...")
            >> after(200) << close())

The clock is the playbook's: it starts at 0 and moves only with ``after(ms)``; when the
engine asked to be woken (``Wake``) by then, the playbook fires its timer. ``Wake``,
``Drain`` and ``Notify`` are the playbook's business (a drain is answered at once, a
notification handed to the other connection's playbook), so a transcript shows what the
client sees and what the run reports: bytes, closes, resets, misses, problems. Every
command must be expected, and nothing may be left over at the end.

Several connections of one run: ``other = book.connection()`` shares the recordings, the
run and the clock; what one connection's requests cause on another (a pushed message, a
close, an interrupt) shows up in the other's transcript::

    assert sub >> client(SUBSCRIBE) << send(confirmation)
    assert pub >> client(PUBLISH) << send(b":1\r\n")
    assert sub << send(message)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tests.support.replay_server import Mocks, Recorded
from trproxy.protocols.base import Replayer
from trproxy.protocols.registry import by_name
from trproxy.proxy.engine import (
    ClientClosed,
    ClientData,
    Close,
    Command,
    Drain,
    Drained,
    Event,
    Forward,
    Forwarded,
    Injected,
    Miss,
    Notify,
    OutOfOrder,
    Problem,
    Reset,
    Send,
    Session,
    TimerFired,
    Wake,
)


@dataclass(frozen=True)
class After:
    ms: float


@dataclass(frozen=True)
class Expect:
    """One expected command: a description for the transcript and a test. ``joined``:
    consecutive ``Send``s whose bytes together are these (one answer per request)."""

    text: str
    test: Callable[[Command], bool]
    joined: bytes | None = None

    def __repr__(self) -> str:
        return self.text


# --- events -------------------------------------------------------------------------------

def client(data: bytes) -> ClientData:
    return ClientData(data)


def client_closes() -> ClientClosed:
    return ClientClosed()


def after(ms: float) -> After:
    return After(ms)


# --- expected commands ---------------------------------------------------------------------

def send(data: bytes | Callable[[bytes], bool]) -> Expect:
    if callable(data):
        return Expect(f"send({getattr(data, '__name__', 'matching bytes')})",
                      lambda c: isinstance(c, Send) and bool(data(c.data)))
    return Expect(f"send({data!r})", lambda c: isinstance(c, Send) and c.data == data)


def sends(data: bytes) -> Expect:
    """One or more ``Send`` in a row, together ``data`` (pipelined answers)."""
    return Expect(f"sends({data!r})", lambda c: isinstance(c, Send), joined=data)


def close() -> Expect:
    return Expect("close()", lambda c: isinstance(c, Close))


def reset() -> Expect:
    return Expect("reset()", lambda c: isinstance(c, Reset))


def miss(summary: str, reason: str = "") -> Expect:
    """A reported miss of ``summary``, whose reason contains ``reason``."""
    return Expect(f"miss({summary!r}, {reason!r})",
                  lambda c: isinstance(c, Miss) and c.summary == summary and reason in c.reason)


def out_of_order(summary: str, *skipped: str) -> Expect:
    """An answer reported as served out of recorded order, before ``skipped`` ones."""
    def test(c: Command) -> bool:
        return (isinstance(c, OutOfOrder) and c.summary == summary
                and [s["request"] for s in c.entry["skipped"]] == list(skipped))
    return Expect(f"out_of_order({summary!r}, {skipped!r})", test)


def problem(text: str) -> Expect:
    return Expect(f"problem({text!r})", lambda c: isinstance(c, Problem) and text in c.text)


def injected(summary: str, fault: str) -> Expect:
    """A reported fault injected on ``summary`` (``fault``: ``error 40001``, ``reset``...)."""
    return Expect(f"injected({summary!r}, {fault!r})",
                  lambda c: isinstance(c, Injected) and c.summary == summary
                  and c.entry["fault"] == fault)


def forward() -> Expect:
    return Expect("forward()", lambda c: isinstance(c, Forward))


class Playbook:
    """One replayed connection of ``protocol`` answered from ``recorded`` (see module doc)."""

    def __init__(self, protocol: str, recorded: Iterable[Recorded] = (), *,
                 replayer: Replayer | None = None, destination: str = "127.0.0.1:1",
                 mocks: Mocks | None = None, forwarding: bool = False) -> None:
        self.mocks = mocks or Mocks(protocol, recorded, destination)
        dialect = by_name(protocol)
        assert dialect is not None, protocol
        self.session: Session = self.mocks.session(
            replayer or dialect.replayer_for(False, self.mocks.destination))
        self.session.forwarding = forwarding
        self.session.owner = self
        self.protocol = protocol
        self.clock: list[Playbook] = [self]  # the playbooks sharing this one's clock
        self.now = 0.0
        self.steps: list[Event | After | Expect] = []
        self.forwards: list[Forward] = []
        self._wake: float | None = None
        self._played = 0  # steps already played (a playbook can be extended and asserted again)
        self._pending: list[Command] = []
        self._log: list[str] = []

    def __rshift__(self, event: Event | After) -> Playbook:
        self.steps.append(event)
        return self

    def __lshift__(self, expected: Expect) -> Playbook:
        self.steps.append(expected)
        return self

    def connection(self, replayer: Replayer | None = None) -> Playbook:
        """Another connection of the same run (same recordings, run and clock)."""
        other = Playbook(self.protocol, replayer=replayer, mocks=self.mocks)
        other.clock = self.clock
        self.clock.append(other)
        other.now = self.now
        return other

    def play(self, event: Event | After) -> list[Command]:
        """Play ``event`` after the steps so far and return what the engine said, unchecked
        (for answers a test decodes itself, such as HTTP/2 frames)."""
        self.steps.append(event)
        self._run()
        out, self._pending = self._pending, []
        self._log.append(f"  << {len(out)} commands, checked by the test")
        return out

    def answer(self, forward: Forward, responses: list[Any] | None, reason: str = "") -> Forwarded:
        """The event that answers a ``Forward`` (new-episodes)."""
        return Forwarded(forward, responses, reason)

    def __bool__(self) -> bool:
        self._run()
        if self._pending:
            self._fail(f"unexpected {self._pending!r}")
        return True

    def _run(self) -> None:
        for step in self.steps[self._played:]:
            self._played += 1
            if isinstance(step, Expect):
                if not self._pending:
                    self._fail(f"expected {step!r}, but the engine said nothing more")
                actual = self._pending.pop(0)
                self._log.append(f"  << {actual!r}")
                if not step.test(actual):
                    self._fail(f"expected {step!r}, got {actual!r}")
                if step.joined is not None:
                    got = actual.data  # type: ignore[union-attr]
                    while len(got) < len(step.joined) and self._pending \
                            and isinstance(self._pending[0], Send):
                        got += self._pending.pop(0).data  # type: ignore[union-attr]
                    if got != step.joined:
                        self._fail(f"expected {step!r}, got sends({got!r})")
                continue
            if self._pending:
                self._fail(f"before {step!r}: unexpected {self._pending!r}")
            if isinstance(step, After):
                self._log.append(f"  after {step.ms} ms")
                now = self.now + step.ms / 1000
                for book in self.clock:  # every connection's timers that came due
                    book.now = now
                    if book._wake is not None and book._wake <= now + 1e-9:
                        book._wake = None
                        book._handle(TimerFired())
            else:
                self._log.append(f"  >> {step!r}")
                self._handle(step)

    def _handle(self, event: Event) -> None:
        queue = list(self.mocks.step(self.session, event, self.now))
        while queue:
            command = queue.pop(0)
            if isinstance(command, Wake):
                self._wake = command.at
            elif isinstance(command, Drain):
                queue += self.mocks.step(self.session, Drained(), self.now)
            elif isinstance(command, Notify):
                target = command.target.owner
                assert isinstance(target, Playbook), "a Notify for a connection of another run"
                target._log.append(f"  >> {command.event!r} (from another connection)")
                target._handle(command.event)
            else:
                if isinstance(command, Forward):
                    self.forwards.append(command)
                self._pending.append(command)

    def _fail(self, message: str) -> None:
        transcript = "\n".join(self._log)
        raise AssertionError(f"{message}\ntranscript so far:\n{transcript}")

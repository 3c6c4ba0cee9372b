"""The replay engine: what a replayed connection answers, when, and how it ends (sans-I/O).

One ``Session`` per replayed connection, once its protocol is known. It is driven by
events (``ClientData``, ``ClientClosed``, ``TimerFired``, ``Drained``, ``Forwarded``, and
from other connections ``Released`` and ``Interrupted``) and returns commands
(``Send``, ``Wake``, ``Drain``, ``Close``, ``Reset``, ``Forward``, ``Notify``, ``Miss``,
``OutOfOrder``, ``Problem``), in order. It never touches a socket or reads a clock: the
time comes with each event (``now``, seconds on the driver's monotonic clock), so every
rule below is tested with transcripts (``tests/proxy/test_engine*.py``), and the asyncio
driver (``replay.py``) only moves bytes, keeps timers, routes ``Notify`` and reports.
What connections share (events between them, identities) is the run's ``Timeline``.

The rules:

* the dialect's replayer turns client bytes into ``Reply`` (sent as is), ``Lookup`` and
  ``Interrupt``; a lookup is answered from the mock pool (``respond``), or is a miss: the
  replayer's protocol-native error, plus a ``Miss`` report unless the replayer answers it
  itself (``context.handshake``); an empty miss answer that is not ``partial`` resets the
  connection (no protocol-native error exists);
* a recorded answer that cannot be rendered (a wrong-typed field, absurd nesting) is a
  reported miss with the protocol's error, never a silent reset;
* output leaves in request order: an answer held (``context.hold_ms``, or recorded after
  a long wait) holds back what follows it until its time (``Wake``/``TimerFired``) or an
  ``Interrupted``; an answer never given (``unanswered``) holds it until the connection
  ends;
* recorded events reached by the replay (pushed messages, the server's close or reset)
  are queued like answers; a miss where the recorded connection ended ends this one;
* ``close_after`` (Postgres Terminate, a WebSocket Close) closes once the output is out;
  a client that closes still gets what was held, then the close;
* bodies streamed from blobs (``pull``) go out one piece per ``Drain``/``Drained``;
* new-episodes: a miss whose lookup can be forwarded becomes ``Forward``; its answer
  (``Forwarded``) takes that lookup's place in the output order;
* every answer served is shown to the run's ``Ledger``, which reports it ``OutOfOrder``
  when it skipped recordings of its connection;
* the equal requests of a pipeline (one read holding the same command N times: the same
  ``same_as``) are looked up where the first was found (``MockPool.again``) once it was
  matched exactly as it came: the value map is unchanged then, so each would have been
  looked up the same way; each is still served, counted, shown to the timeline and the
  ledger and answered on its own, in order. A fault plan asks about every request.
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from ..protocols.base import Dialect, Interrupt, Lookup, ProtocolError, Readable, Replayer, Reply
from ..protocols.credentials import is_hashed
from ..protocols.volatile import ValueMap, mask, occurrences
from ..store import Affinity, Exchange, NoMatch, canonical
from ..store.ledger import describe
from ..store.matcher import Served, destination_key
from .faults import describe as describe_fault
from .raw import raw_answer

if TYPE_CHECKING:
    from .context import RunContext

log = logging.getLogger("trproxy")
MAX_HOLD_MS = 5000  # bound of an answer held on the dialect's request (``context.hold_ms``)
INTERRUPT_GRACE_MS = 2000  # how much longer than recorded an interrupted answer waits for it


# --- events (into the engine) ---------------------------------------------------------------

@dataclass(frozen=True)
class ClientData:
    data: bytes


@dataclass(frozen=True)
class Opened:
    """The connection is open and the client silent: a server-first protocol's replayer
    (``opened()``) speaks first (the MySQL greeting)."""


@dataclass(frozen=True)
class ClientClosed:
    """The client sent EOF (or the connection died): nothing more will be asked."""


@dataclass(frozen=True)
class TimerFired:
    """The time a ``Wake`` asked for has come."""


@dataclass(frozen=True)
class Drained:
    """Everything sent so far was written (answers ``Drain``)."""


@dataclass(frozen=True)
class Forwarded:
    """new-episodes: the real server's answer to a ``Forward`` (``responses`` unredacted),
    or ``reason`` why it could not be had."""

    forward: Forward
    responses: list[Readable] | None = None
    reason: str = ""


@dataclass(frozen=True)
class Released:
    """From another connection (``Notify``), or the timeline: recorded events this
    connection reached: messages the server pushed, its close or reset (see
    ``timeline.py``)."""

    events: tuple[Exchange, ...]


@dataclass(frozen=True)
class Interrupted:
    """Another connection interrupted this one (a Postgres CancelRequest carrying this
    connection's key): what is held goes out now, as the server answered the cancel."""


Event = ClientData | Opened | ClientClosed | TimerFired | Drained | Forwarded | Released | Interrupted


def _replaced_secrets(values: ValueMap, request: Any) -> list[str]:
    """The hashed secrets in a live request that the run's own password change replaced
    (a recorded ``CONFIG SET requirepass`` now stands for the live password): the server
    would refuse them, so they must not match the recorded login that accepted them."""
    old = [r for r in values.live if is_hashed(r) and r not in values.recorded]
    return occurrences(request, old) if old else []


# --- commands (out of the engine) -----------------------------------------------------------

@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class Wake:
    """Send ``TimerFired`` at ``at`` (the driver's clock), unless the connection ended."""

    at: float


@dataclass(frozen=True)
class Drain:
    """Send ``Drained`` once what was sent has been written (flow control for streams)."""


@dataclass(frozen=True)
class Close:
    """Close the connection (FIN), as the server did."""


@dataclass(frozen=True)
class Reset:
    """Reset the connection (RST)."""


@dataclass(frozen=True, eq=False)
class Forward:
    """new-episodes: fetch this lookup from the real server; answer with ``Forwarded``."""

    lookup: Lookup


@dataclass(frozen=True)
class Miss:
    """Report a miss; ``entry`` is the report's record (the driver adds the nearest
    recordings to ``request``, a search it runs off the event loop, bounded in time)."""

    entry: dict[str, Any] = field(compare=False, repr=False)
    summary: str = ""
    reason: str = ""
    request: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class OutOfOrder:
    """Report an answer served while recordings before it on its recorded connection
    are still unused (``store.ledger``); ``entry`` is the report's record."""

    entry: dict[str, Any] = field(compare=False, repr=False)
    summary: str = ""


@dataclass(frozen=True)
class Similar:
    """Report an answer served from a similar recording, not an exact match
    (``store/similar.py``); ``entry`` is the report's record."""

    entry: dict[str, Any] = field(compare=False, repr=False)


@dataclass(frozen=True)
class Problem:
    """Report something replay could not do as recorded (one line)."""

    text: str


@dataclass(frozen=True)
class Injected:
    """Report a fault injected (``faults``); ``entry`` is the report's record."""

    entry: dict[str, Any] = field(compare=False, repr=False)
    summary: str = ""


@dataclass(frozen=True, eq=False)
class Notify:
    """Hand ``event`` to another connection's session (the driver routes it)."""

    target: Session
    event: Released | Interrupted


Command = (Send | Wake | Drain | Close | Reset | Forward | Miss | OutOfOrder | Similar
           | Problem | Notify | Injected)


@dataclass
class _Out:
    """An answer waiting its turn in the output: bytes (or a closing command) not before
    ``at`` (``inf``: an answer the server never gave, held until the client gives up);
    ``forward`` marks the place of an answer still being fetched upstream;
    ``interruptible``: a hold that an ``Interrupted`` ends."""

    data: bytes = b""
    at: float = 0.0
    end: Close | Reset | None = None
    forward: Forward | None = None
    interruptible: bool = False


class Session:
    """One replayed connection (see the module doc)."""

    def __init__(self, ctx: RunContext, dialect: Dialect, replayer: Replayer, destination: str,
                 *, forwarding: bool = False) -> None:
        self.ctx = ctx
        self.dialect = dialect
        self.replayer = replayer
        self.destination = destination
        self.forwarding = forwarding  # new-episodes: misses may be fetched upstream
        self.affinity = Affinity()
        self.ended = False  # Close or Reset was returned: nothing more happens
        self._out: deque[_Out] = deque()
        self._client_closed = False
        self._waking: float | None = None  # the Wake asked for and not yet fired
        self._streaming = False  # a Drain is outstanding for a pulled piece
        self._identity: bytes | None = None  # what the replayer says this connection is
        self.owner: Any = None  # the driver's, for routing ``Notify``

    # -- events --------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Command]:
        if self.ended:
            return []
        commands: list[Command] = []
        try:
            if isinstance(event, ClientData):
                self._client(event.data, now, commands)
            elif isinstance(event, Opened):
                if (opened := getattr(self.replayer, "opened", None)) is not None:
                    self._replayed(opened(), now, commands)
            elif isinstance(event, ClientClosed):
                self._client_closed = True
                self._drop_unanswered()
            elif isinstance(event, Released):
                self._released(event.events, now)
            elif isinstance(event, Interrupted):
                for out in self._out:
                    if out.interruptible:
                        out.at = min(out.at, now)
            elif isinstance(event, TimerFired):
                self._waking = None
            elif isinstance(event, Drained):
                self._streaming = False
            elif isinstance(event, Forwarded):
                self._forwarded(event, now, commands)
            self._flush(now, commands)
        except ProtocolError as exc:
            commands.append(Problem(f"replay could not follow a {self.dialect.name} connection "
                                    f"to {self.destination}: {exc}"))
            self._end(Reset(), commands)
        return commands

    def _client(self, data: bytes, now: float, commands: list[Command]) -> None:
        self._replayed(self.replayer.feed(data), now, commands)

    def _replayed(self, events: Sequence[Lookup | Reply | Interrupt], now: float,
                  commands: list[Command]) -> None:
        timeline = self.ctx.timeline
        i = 0
        while i < len(events):
            event = events[i]
            i += 1
            if isinstance(event, Reply):
                self._emit(event.data, now)
            elif isinstance(event, Interrupt):
                commands += [Notify(s, Interrupted()) for s in timeline.interrupt(event.identity)
                             if s is not self]
            else:
                i += self._lookup_or_fault(event, now, commands, _equal_after(event, events, i))
        identity = getattr(self.replayer, "identity", None)
        if identity and identity != self._identity:  # known once its startup was answered
            timeline.identify(self, identity)
            self._identity = identity
        if getattr(self.replayer, "close_after", False):
            self._out.append(_Out(at=now, end=Close()))  # the server hangs up now

    def _lookup(self, lookup: Lookup, now: float, commands: list[Command],
                run: Sequence[Lookup] = ()) -> int:
        """Answer ``lookup``; and, when an exact match answered it as it came, as many of
        ``run`` (equal lookups right after it: a pipeline) as exact matches answer,
        each found where its was (``MockPool.again``) and served as it would have been
        alone. How many of ``run`` it answered (the rest take this whole way each)."""
        ctx = self.ctx
        values = ctx.value_map()
        request = values.to_recorded(lookup.request)
        live: list[str] = []
        masked: Any = None
        adopted = False

        def masking() -> Any:  # asked only when nothing matches exactly
            nonlocal live, masked, adopted
            if self.dialect.volatile is not None:
                live = self.dialect.volatile(request, ctx.started)
                if values.adopt(live):  # values paired in an earlier test: look up again
                    adopted = True
                    return None
                masked = mask(request, live) if live else None
            return masked

        def accept(recorded: Exchange, volatile: list[str],
                   similar: list[tuple[str, str]] | None = None) -> str | None:
            # values pair up by their place in the requests with their objects' keys
            # sorted (or the dialect's form): a JSON body in another key order pairs right;
            # then the tokens a similar recording differs in (``store/similar.py``)
            pairs = similar or []
            if adopted:
                return "looked up again with the values of earlier tests"
            return values.bind(occurrences(self._pairing(recorded.request), volatile) + [r for r, _v in pairs],
                               occurrences(self._pairing(request), live) + [v for _r, v in pairs])

        try:
            if replaced := _replaced_secrets(values, lookup.request):
                raise NoMatch(lookup.summary, f"{len(replaced)} credential(s) recorded here were "
                              "replaced by the ones this run set itself: the old one is wrong now", [])
            served = ctx.pool.find(self.dialect.name, self.destination, request,
                                   lookup.summary, self.affinity, ctx.current_test,
                                   repeat_last=lookup.context.repeat_last, masked=masking,
                                   accept=accept, similar=accept if self._fallback(lookup) else None,
                                   same_as=lookup.context.same_as if request is lookup.request else None)
        except NoMatch as miss:
            if adopted:  # once: the values adopted are this test's own now
                return self._lookup(lookup, now, commands, run)
            if lookup.context.tentative:
                return 0  # maybe not the whole request yet: the replayer waits for more
            if self.forwarding and lookup.context.forward is not None:
                forward = Forward(lookup)
                self._out.append(_Out(at=now, forward=forward))
                commands.append(forward)
                return 0
            if ended := ctx.timeline.missed(self):
                # the recorded connection ended here (closed, reset): so does this one;
                # the request, sent to a server that had gone, was never recorded
                for _target, events in ended:
                    self._released(events, now)
                return 0
            self._put(self._miss(lookup, miss.summary, miss.reason, now, commands, miss.nearest,
                                 compared=masked if masked is not None else request))
            return 0
        self._serve(lookup, served, values, now, commands)
        if served.exact is None or request is not lookup.request:
            return 0  # the next equal request may be rewritten, or match otherwise
        # the value map is as it was (an exact match binds nothing), so the next equal
        # request is looked up as this one was, in the same bucket
        for n, follower in enumerate(run):
            if (more := ctx.pool.again(served.exact, self.affinity, follower.context.repeat_last)) is None:
                return n
            self._serve(follower, more, values, now, commands)
        return len(run)

    def _serve(self, lookup: Lookup, served: Served, values: ValueMap, now: float,
               commands: list[Command]) -> None:
        """``lookup`` is answered with ``served``: counted, the timeline and the ledger told,
        the answer queued with the events due before and after it."""
        ctx = self.ctx
        exchange = served.exchange
        ctx.served(self.dialect.name, self.destination, exchange)
        if served.similar is not None:
            commands.append(Similar({"protocol": self.dialect.name, "destination": self.destination,
                                     "request": lookup.summary, "test": ctx.test, **served.similar}))
        before, after = ctx.timeline.served(self, exchange)
        self._deliver(before, now, commands)  # recorded before this answer: sent first
        if skipped := ctx.ledger.served(served.exchange, self.affinity, served.repeat):
            commands.append(OutOfOrder({
                "protocol": self.dialect.name, "destination": self.destination,
                "request": lookup.summary, "recorded": describe(served.exchange),
                "skipped": [describe(e) for e in skipped], "test": ctx.test},
                lookup.summary))
        lookup.context.repeat = served.repeat
        self._answer(lookup, exchange, served.repeat, now, commands, values)
        if (ends := lookup.context.ends) is not None:  # the answer ends another connection
            after = ctx.timeline.hand_over((self.dialect.name, destination_key(self.destination), ends[0]),
                                           ends[1], after)
        self._deliver(after, now, commands)

    def _lookup_or_fault(self, lookup: Lookup, now: float, commands: list[Command],
                         run: Sequence[Lookup] = ()) -> int:
        """A request a fault rule picks (``faults``) fails as the rule says, without using
        up its recording (the app's retry gets it); any other is looked up (with ``run``,
        the equal ones after it, when no fault rule is asked about each). How many of
        ``run`` were answered too."""
        plan = self.ctx.faults
        if not plan:
            return self._lookup(lookup, now, commands, run)
        test = self.ctx.test
        rule = plan.pick(self.dialect.name, self.destination, lookup, test)
        if rule is None:
            return self._lookup(lookup, now, commands)
        entry = {"protocol": self.dialect.name, "destination": self.destination,
                 "request": lookup.summary, "fault": describe_fault(rule), "rule": rule.text,
                 "occurrence": rule.seen[test], "test": test}
        commands.append(Injected(entry, lookup.summary))
        at = now + rule.delay_ms / 1000
        if rule.hang:  # never answered, like ``unanswered``; a cancel (if the protocol has
            # one: a Postgres CancelRequest) ends it with the protocol's "canceled" answer
            cancelled = getattr(self.replayer, "cancelled", None)
            data = cancelled(lookup) if cancelled is not None else b""
            self._out.append(_Out(data, at=math.inf, interruptible=bool(data)))
        elif rule.reset:
            self._out.append(_Out(at=at, end=Reset()))
        elif rule.failure is not None:
            data = self.replayer.fault(lookup, rule.failure)  # type: ignore[attr-defined]
            if data or rule.close:
                self._out.append(_Out(data, at, end=Close() if rule.close else None))
        elif rule.close:
            self._out.append(_Out(at=at, end=Close()))
        else:  # latency alone: the recorded answer, later (a cancel ends the wait)
            n = len(self._out)
            self._lookup(lookup, now, commands)
            for out in list(self._out)[n:]:
                out.at, out.interruptible = max(out.at, at), True
        return 0

    def _fallback(self, lookup: Lookup) -> bool:
        """Whether a similar recording may answer (``store/similar.py``): not under
        ``--strict``, nor when the server can be asked (new episodes: it answers exactly)."""
        return self.ctx.similar_fallback and not (self.forwarding and lookup.context.forward is not None)

    def _pairing(self, request: Readable) -> Readable:
        """The form in which volatile values pair up by position: the request (or the
        dialect's ``pairing`` form of it) with its objects' keys sorted."""
        return _sorted(self.dialect.pairing(request) if self.dialect.pairing else request)

    def _answer(self, lookup: Lookup, exchange: Exchange, repeat: bool, now: float,
                commands: list[Command], values: ValueMap) -> None:
        if not lookup.expects_reply:
            return
        held = exchange.unanswered and not repeat  # never (wholly) answered: the rest waits
        if held and not exchange.responses:  # for the client to go
            self._out.append(_Out(at=math.inf))
            return
        try:
            out = raw_answer(exchange.responses, exchange.extra)  # recorded raw: as it was
            if out is None:
                lookup.context.recorded, lookup.context.connection = exchange.request, exchange.connection
                out = self.replayer.respond(lookup, values.to_live(exchange.responses))
        except Exception as exc:  # a recording is untrusted input (RecursionError included)
            # the recorded answer cannot be rendered (a wrong-typed field, absurd nesting):
            # the app gets the protocol's error and the report says why, never a silent reset
            reason = f"the recorded answer cannot be replayed: {_describe(exc)}"
            self._put(self._miss(lookup, lookup.summary, reason, now, commands))
            return
        if held:  # what came before the client left (a COPY's CopyInResponse), then nothing
            self._emit(out, now)
            self._out.append(_Out(at=math.inf))
            return
        if problem := lookup.context.unreplayable:  # matched, but not served as recorded
            commands.append(Problem(f"{self.dialect.name} {self.destination}: {lookup.summary}: "
                                    f"{problem}"))
        hold = lookup.context.hold_ms
        if out and hold:  # the dialect's own hold (a Kafka Fetch with nothing new)
            self._emit(out, now + min(hold, MAX_HOLD_MS) / 1000)
        elif out and not repeat and (wait := self.ctx.timeline.hold_ms(exchange,
                                                                        lookup.context.timed)):
            # recorded after a long wait: held as long, so that timeouts and cancels meet
            # it as they met the server; one that came because another connection
            # interrupted it waits for that interrupt (a bounded while longer, not less)
            if exchange.interrupted:
                wait += INTERRUPT_GRACE_MS
            self._out.append(_Out(out, now + wait / 1000, interruptible=True))
        else:
            self._emit(out, now)

    def _deliver(self, deliveries: list[tuple[Any, list[Exchange]]], now: float,
                 commands: list[Command]) -> None:
        for target, events in deliveries:
            if target is self:
                self._released(events, now)
            else:
                commands.append(Notify(target, Released(tuple(events))))

    def _released(self, events: Iterable[Exchange], now: float) -> None:
        """Recorded events this connection reached, queued behind what it already owes."""
        for ev in events:
            if ev.event == "push":
                push = getattr(self.replayer, "push", None)
                if push is not None:  # with the live values in place of recorded ones
                    self._emit(push(self.ctx.value_map().to_live(ev.responses)), now)
            elif ev.event in ("close", "reset"):
                self._drop_unanswered()
                self._out.append(_Out(at=now, end=Close() if ev.event == "close" else Reset()))

    def _miss(self, lookup: Lookup, summary: str, reason: str, now: float,
              commands: list[Command], nearest: list[str] | None = None,
              compared: Any = None) -> _Out | None:
        """Report the miss (unless the replayer answers it itself); the answer to send.
        ``compared``: the request as it was looked up (values mapped, volatile ones masked)."""
        if not lookup.context.handshake:  # handshakes the replayer answers itself
            request = summary or lookup.summary
            entry = {"protocol": self.dialect.name, "destination": self.destination,
                     "request": request, "reason": reason,
                     "nearest": list(nearest or []), "test": self.ctx.test}
            commands.append(Miss(entry, request, reason,
                                 lookup.request if compared is None else compared))
        if not lookup.expects_reply:
            return None
        out = self.replayer.miss(lookup, reason)
        if out or lookup.context.partial:
            return _Out(out, now) if out else None
        return _Out(at=now, end=Reset())  # no protocol-native error exists: hang up

    def _forwarded(self, event: Forwarded, now: float, commands: list[Command]) -> None:
        slot = next((o for o in self._out if o.forward is event.forward), None)
        if slot is None:
            return
        slot.forward = None
        lookup = event.forward.lookup
        if event.responses is None:
            reason = f"not recorded, and fetching it from the server failed: {event.reason}"
            answer = self._miss(lookup, lookup.summary, reason, now, commands)
            if answer is not None:  # in the forward's place in the output
                slot.data, slot.end = answer.data, answer.end
            return
        slot.data = self.replayer.respond(lookup, event.responses)

    def _drop_unanswered(self) -> None:
        """The connection ends: an answer the server never gave will not come, nor what
        was asked after it (the server never got to it)."""
        for i, out in enumerate(self._out):
            if out.at == math.inf:
                self._out = deque(list(self._out)[:i])
                return

    def _emit(self, data: bytes, at: float) -> None:
        if data:
            self._out.append(_Out(data, at))

    def _put(self, out: _Out | None) -> None:
        if out is not None:
            self._out.append(out)

    # -- output --------------------------------------------------------------------------

    def _flush(self, now: float, commands: list[Command]) -> None:
        """Send what is due, in order; a held or forwarded answer holds back the rest."""
        while self._out:
            head = self._out[0]
            if head.forward is not None:
                return
            if head.at > now:
                if self._waking != head.at and head.at != math.inf:
                    self._waking = head.at
                    commands.append(Wake(head.at))
                return
            self._out.popleft()
            if head.data:
                commands.append(Send(head.data))
            if head.end is not None:
                self._end(head.end, commands)
                return
        self._pull(commands)
        if self._client_closed and not self._streaming:
            self._end(Close(), commands)

    def _pull(self, commands: list[Command]) -> None:
        """The next piece of a body streamed from a blob, one per ``Drained``."""
        pull = getattr(self.replayer, "pull", None)
        if pull is None or self._streaming:
            return
        if piece := pull():
            commands += [Send(piece), Drain()]
            self._streaming = True

    def _end(self, how: Close | Reset, commands: list[Command]) -> None:
        commands.append(how)
        self.ended = True
        self._out.clear()
        self.close()

    def close(self) -> None:
        """Release what the replayer holds (open blobs); the driver calls it at the end."""
        self.ctx.timeline.forget(self, self._identity)
        if hasattr(self.replayer, "close"):
            self.replayer.close()


def _equal_after(lookup: Lookup, events: Sequence[Lookup | Reply | Interrupt], i: int) -> Sequence[Lookup]:
    """The lookups from ``events[i]`` on that are equal to ``lookup`` (the same
    ``same_as``, asked the same way): a pipeline of one command."""
    same_as = lookup.context.same_as
    if same_as is None:
        return ()
    j = i
    while j < len(events) and isinstance(e := events[j], Lookup) and e.context.same_as == same_as \
            and e.context.repeat_last == lookup.context.repeat_last:
        j += 1
    return cast(Sequence[Lookup], events[i:j])  # lookups, as checked above


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _sorted(request: Readable) -> Readable:
    """``request`` with the keys of its objects sorted (``Dialect.pairing``'s default)."""
    return json.loads(canonical(request))

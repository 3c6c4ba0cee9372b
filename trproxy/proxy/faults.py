"""Fault injection at replay: which requests fail, and how (sans-I/O).

A rule (``--fault RULE``, ``faults:`` in ``config.yaml``) selects requests by protocol,
destination, a pattern of the request's summary and which occurrence, and says what
the server does instead of its recorded answer: fail the request in its own protocol
(``error=``: a Postgres SQLSTATE, a Redis error, a Kafka error code, an HTTP status;
rendered by the dialect's ``Replayer.fault``), close or reset the connection, never
answer (``hang``), or answer late (``delay=MS``, alone: the recorded answer, held).

A failed request does not use up its recording, so the app's retry gets the recorded
answer, as a retry against a server that recovered would. The rule format is in
format.md ("Fault injection"). ``FaultPlan.pick`` is called by the engine for every
lookup; it counts occurrences per rule and per test (the test a test runner reports, or
``trproxy test``'s case; outside tests, over the run), so a test meets the same faults
whether it runs alone or in a suite, in any order.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from ..protocols.base import Failure, Lookup
from ..protocols.registry import by_name, dialects

_COUNTS = ("nth", "every", "first")
_FLAGS = ("close", "reset", "hang")
_KEYS = {"protocol", "to", "match", "error", "message", "retry_after", "delay", *_COUNTS,
         *_FLAGS}


@dataclass
class FaultRule:
    """One rule; ``text`` is how the report names it."""

    text: str
    protocol: str | None = None
    to: str | None = None  # a destination pattern (fnmatch): "127.0.0.1:5432", "*:6379"
    match: re.Pattern[str] | None = None  # searched in the request's summary
    nth: int | None = None  # only the nth matching request
    every: int | None = None  # every nth: the nth, 2nth...
    first: int | None = None  # the first n
    failure: Failure | None = None
    close: bool = False
    reset: bool = False
    hang: bool = False
    delay_ms: float = 0.0
    seen: dict[str | None, int] = field(default_factory=dict)  # matching requests per test

    def selects(self, protocol: str, destination: str, lookup: Lookup) -> bool:
        """Whether this rule is about ``lookup`` (before counting occurrences). Without a
        pattern only data requests count: not logins, handshakes or Kafka Metadata."""
        if self.protocol is not None and self.protocol != protocol:
            return False
        if self.to is not None and not fnmatch.fnmatchcase(destination, self.to):
            return False
        if self.match is not None:
            return bool(self.match.search(lookup.summary or ""))
        return lookup.lifetime == "data" and not lookup.context.handshake

    def fires(self, test: str | None = None) -> bool:
        """Counts one more matching request of ``test``; whether this one fails."""
        seen = self.seen[test] = self.seen.get(test, 0) + 1
        if self.nth is not None:
            return seen == self.nth
        if self.every is not None:
            return seen % self.every == 0
        if self.first is not None:
            return seen <= self.first
        return True


@dataclass
class FaultPlan:
    """The run's rules, in order: the first rule that fires on a request decides."""

    rules: list[FaultRule] = field(default_factory=list)

    def pick(self, protocol: str, destination: str, lookup: Lookup,
             test: str | None = None) -> FaultRule | None:
        if not lookup.expects_reply:
            return None
        chosen = None
        for rule in self.rules:  # every selecting rule counts the request
            if rule.selects(protocol, destination, lookup) and rule.fires(test) and chosen is None:
                chosen = rule
        return chosen


def parse_rule(spec: str | dict[str, Any]) -> FaultRule:
    """A rule from its text (``postgres error=40001 match=UPDATE first=1``) or its
    mapping in config.yaml; ValueError says what is wrong, in one line."""
    if isinstance(spec, str):
        try:
            words = shlex.split(spec)
        except ValueError as exc:
            raise ValueError(f"fault {spec!r}: {exc}") from exc
        fields: dict[str, Any] = {}
        for i, word in enumerate(words):
            key, sep, value = word.partition("=")
            if not sep and key in _FLAGS:
                fields[key] = True
            elif not sep and i == 0:
                fields["protocol"] = key
            elif not sep:
                raise ValueError(f"fault {spec!r}: {word!r} is not KEY=VALUE")
            else:
                fields[key] = value
        text = spec
    elif isinstance(spec, dict):
        fields, text = dict(spec), " ".join(f"{k}={v}" for k, v in spec.items())
    else:
        raise ValueError(f"a fault rule is a string or a mapping, not {type(spec).__name__}")
    try:
        return _build(text, fields)
    except ValueError as exc:
        raise ValueError(f"fault {text!r}: {exc}") from exc


def _build(text: str, fields: dict[str, Any]) -> FaultRule:
    unknown = sorted(set(map(str, fields)) - _KEYS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (keys: {', '.join(sorted(_KEYS))})")
    rule = FaultRule(text)
    protocol = fields.get("protocol")
    if protocol is not None and by_name(str(protocol)) is None:
        known = ", ".join(d.name for d in dialects())
        raise ValueError(f"unknown protocol {protocol!r} (one of {known})")
    rule.protocol = None if protocol is None else str(protocol)
    rule.to = None if fields.get("to") is None else str(fields["to"])
    if fields.get("match") is not None:
        try:
            rule.match = re.compile(str(fields["match"]))
        except re.error as exc:
            raise ValueError(f"match is not a regular expression: {exc}") from exc
    counts = [k for k in _COUNTS if fields.get(k) is not None]
    if len(counts) > 1:
        raise ValueError(f"{counts[0]} and {counts[1]} cannot go together")
    for key in counts:
        setattr(rule, key, _number(fields[key], key, minimum=1))
    for flag in _FLAGS:
        setattr(rule, flag, _flag(fields.get(flag), flag))
    if fields.get("delay") is not None:
        rule.delay_ms = float(_number(fields["delay"], "delay (ms)", minimum=0))
    if fields.get("error") is not None:
        retry = fields.get("retry_after")
        rule.failure = Failure(str(fields["error"]),
                               None if fields.get("message") is None else str(fields["message"]),
                               None if retry is None else _number(retry, "retry_after", minimum=0))
        if rule.protocol is None:
            raise ValueError("error= needs a protocol (its codes are the protocol's own)")
        _check(rule.protocol, rule.failure)
    elif fields.get("message") is not None or fields.get("retry_after") is not None:
        raise ValueError("message= and retry_after= go with error=")
    ends = [k for k, on in (("error=", rule.failure is not None), ("reset", rule.reset),
                            ("hang", rule.hang)) if on]
    if len(ends) > 1 or (rule.close and (rule.reset or rule.hang)):
        raise ValueError("choose one of error=, close, reset, hang (error= may take close)")
    if rule.failure is None and not (rule.close or rule.reset or rule.hang or rule.delay_ms):
        raise ValueError("says nothing to do: give error=, close, reset, hang or delay=MS")
    return rule


def _check(protocol: str, failure: Failure) -> None:
    dialect = by_name(protocol)
    if dialect is None or dialect.check_fault is None:
        raise ValueError(f"{protocol} has no protocol errors to inject (use close, reset, hang "
                         "or delay=)")
    dialect.check_fault(failure)


def _number(value: Any, what: str, minimum: int) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise ValueError(f"{what} must be a whole number, not {value!r}") from None
    if number < minimum:
        raise ValueError(f"{what} must be at least {minimum}")
    return number


def _flag(value: Any, what: str) -> bool:
    if value is None or value is False:
        return False
    if value is True or str(value).lower() in ("true", "yes", "1"):
        return True
    raise ValueError(f"{what} is a flag (true/false), not {value!r}")


def plan_from(rules: list[str], config: dict[str, Any], profile: str | None = None) -> FaultPlan | None:
    """The run's plan: config.yaml's ``faults:`` list, the rules of the profile named
    (``fault_profiles:``), then the ``--fault`` rules; None when there is none."""
    listed = config.get("faults") or []
    if not isinstance(listed, list):
        raise ValueError("`faults` must be a list of rules")
    if profile is not None:
        profiles = config.get("fault_profiles") or {}
        if not isinstance(profiles, dict) or not isinstance(profiles.get(profile), list):
            known = ", ".join(map(str, profiles)) if isinstance(profiles, dict) else ""
            raise ValueError(f"no fault profile {profile!r} in `fault_profiles` "
                             f"(profiles: {known or 'none'})")
        listed = [*listed, *profiles[profile]]
    plan = FaultPlan([parse_rule(r) for r in [*listed, *rules]])
    return plan if plan.rules else None


def describe(rule: FaultRule) -> str:
    """What the rule does, for the report: ``error 40001``, ``reset``, ``delay 200 ms``."""
    parts = []
    if rule.failure is not None:
        parts.append(f"error {rule.failure.error}")
    parts += [flag for flag in _FLAGS if getattr(rule, flag)]
    if rule.delay_ms:
        parts.append(f"delay {rule.delay_ms:g} ms")
    return " + ".join(parts)

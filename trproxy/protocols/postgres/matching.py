"""What replay compares, and each interaction's lifetime and label.

A readable request is a list of one-key message mappings (see ``readable``). Three
shapes: a *startup* (SSLRequest/GSSENCRequest, StartupMessage, redacted auth
answers), a simple *Query* (plus any COPY FROM STDIN data that followed it), and an
extended-protocol *batch* (Parse/Bind/Describe/Execute/Close ending at Sync or Flush).

``match_key`` normalizes what differs between runs and connections (DESIGN.md,
"Matching and replay rules"), so the store can pick an answer recorded on any
connection of a pool:

* startup -> ``{"startup": {"user": ..., "database": ...}}``, plus ``"password"``: the
  hashed cleartext password or MD5 answer (``credentials``) when the request carries
  one: a login is served only to the same credentials. application_name,
  client_encoding and the other options do not count (the replayer reports the live
  ones, ``startup.reflect``; a miss still gets a working default handshake). SCRAM
  exchanges are not compared (their proofs differ every time): see docs/format.md.
* SQL text is compared whitespace-insensitively (``sql.match_sql``).
* statement and portal names are dropped: Bind/Describe/Execute carry the SQL instead.
  A Parse whose statement is bound later in the same batch is dropped too, so the
  first execution (Parse+Bind+Execute) and a later one of an already prepared
  statement (Bind+Execute) have the same key - which connection prepared what differs
  between runs. Close is dropped (the replayer answers it itself).
* parameters compare by format and bytes (``values.canonical_value``), except pids given
  to ``pg_terminate_backend``/``pg_cancel_backend`` (``<pid>``; literals too,
  ``sql.match_sql``): which backend a live connection plays depends on connect order.
* COPY FROM STDIN data and anything after the batch's first Sync are dropped: the
  replayer must answer before the client sends them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..base import Lifetime, ProtocolError, Readable
from ..credentials import is_hashed
from ..volatile import find_volatile, volatile_value
from .readable import item_name
from .sql import (
    by_shape,
    first_words,
    is_schema_sql,
    is_session_sql,
    is_transaction_sql,
    match_sql,
    pid_parameters,
    summarize,
)
from .values import canonical_value

STARTUP_NAMES = {"SSLRequest", "GSSENCRequest", "StartupMessage", "PasswordMessage",
                 "SASLInitialResponse", "SASLResponse", "GSSResponse"}
EXTENDED_NAMES = {"Parse", "Bind", "Describe", "Execute", "Close", "Sync", "Flush"}
COPY_NAMES = {"CopyData", "CopyDone", "CopyFail"}
_ANSWERED_LOCALLY = {"Parse", "Close", "Sync", "Flush"}


def request_kind(request: Readable) -> str:
    """"startup", "query", "function" or "batch"."""
    names = [item_name(i) for i in request]
    if not STARTUP_NAMES.isdisjoint(names):
        return "startup"
    if names and names[0] == "Query":
        return "query"
    if names and names[0] == "FunctionCall":
        return "function"
    return "batch"


def is_trivial(request: Readable) -> bool:
    """A batch of only Parse/Close/Sync/Flush: a successful Parse and a Close have one
    possible answer (ParseComplete, CloseComplete), so the replayer answers it without the
    store - psycopg prepares with Parse+Sync on whichever connection reaches its threshold."""
    return all(item_name(i) in _ANSWERED_LOCALLY for i in request)


def _sql(value: Readable) -> Readable:
    return match_sql(value) if isinstance(value, str) else value


def _batch_key(request: list[dict[str, Any]]) -> list[Readable]:
    items = []
    for item in request:
        items.append(item)
        if item_name(item) == "Sync":
            break
    bound = {_hashable(i["Bind"].get("statement")) for i in items if item_name(i) == "Bind"}
    key: list[Readable] = []
    for item in items:
        name = item_name(item)
        v = item[name]
        if name == "Parse":
            if _hashable(v.get("statement")) not in bound:
                key.append({name: {"query": _sql(v.get("query")),
                                   "param_types": v.get("param_types", [])}})
        elif name == "Bind":
            query = v.get("query", v.get("statement"))
            pids = pid_parameters(query) if isinstance(query, str) else frozenset()
            key.append({name: {"query": _sql(query),
                               "parameters": [("<pid>" if i in pids else canonical_value(p))
                                              for i, p in enumerate(v.get("parameters", []))],
                               "result_formats": v.get("result_formats", [])}})
        elif name == "Describe":
            kind = "statement" if "statement" in v else "portal"
            key.append({name: {kind: _sql(v.get("query", v.get(kind)))}})
        elif name == "Execute":
            key.append({name: {"query": _sql(v.get("query", v.get("portal"))),
                               "max_rows": v.get("max_rows", 0)}})
        elif name in ("Sync", "Flush"):
            key.append({name: {}})
        # Close and COPY data: not compared (see module doc)
    return key


# asyncpg numbers its savepoints per connection: the counter differs between runs
_COUNTERS = r"\b__asyncpg_savepoint_[0-9a-f]+__\b"


@dataclass(frozen=True)
class Rules:
    """config.yaml ``postgres:``: ``volatile_parameters`` (a regular expression searched in
    the SQL -> parameter numbers, 1 for ``$1``) and ``volatile_literals`` (regular
    expressions whose matches in SQL text are volatile)."""

    parameters: tuple[tuple[re.Pattern[str], frozenset[int]], ...] = ()
    literals: str = ""  # one alternation


def rules_from_section(section: dict) -> Rules:
    """ValueError naming what is wrong."""
    given, literals = section.get("volatile_parameters") or {}, section.get("volatile_literals") or []
    if not isinstance(given, dict) or not isinstance(literals, list):
        raise ValueError("postgres.volatile_parameters must map SQL patterns to parameter numbers, "
                         "postgres.volatile_literals must be a list of patterns")
    parameters = []
    for pattern, numbers in given.items():
        if not isinstance(numbers, list) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in numbers):
            raise ValueError(f"postgres.volatile_parameters.{pattern}: must be a list of parameter "
                             "numbers (1 for $1)")
        parameters.append((_regex(pattern, "volatile_parameters"), frozenset(numbers)))
    for literal in literals:
        _regex(literal, "volatile_literals")
    return Rules(tuple(parameters), "|".join(f"(?:{p})" for p in literals))


def _regex(pattern: object, where: str) -> re.Pattern[str]:
    try:
        return re.compile(str(pattern))
    except re.error as exc:
        raise ValueError(f"postgres.{where}: {pattern!r} is not a regular expression: {exc}") from None


def volatile(request: Readable, now: datetime, rules: Rules = Rules()) -> list[str]:
    """The values the app generated in a request (``protocols.volatile``), in order: in
    SQL text (literals, asyncpg's savepoint names) and in Bind parameters (text, or the
    value of a decoded binary one: a uuid), and what the user's ``rules`` name. Never in
    a startup (logins are compared)."""
    return _volatile(request, rules, now)


def rule_values(rules: Rules, request: Readable) -> list[str]:
    """What the user's ``rules`` alone call volatile in a request (for older recordings)."""
    return _volatile(request, rules, None)


def _volatile(request: Readable, rules: Rules, now: datetime | None) -> list[str]:
    if not isinstance(request, list) or request_kind(request) == "startup":
        return []
    also = "|".join(p for p in (_COUNTERS if now else "", rules.literals) if p)

    def in_sql(text: str) -> list[str]:
        if now is not None:
            return find_volatile(text, now, also)
        return [m.group() for m in re.finditer(also, text) if m.group()] if also else []

    found: list[str] = []
    for item in request:
        if not isinstance(item, dict) or len(item) != 1:
            continue
        name = item_name(item)
        v = item[name]
        if name == "Query" and isinstance(v, str):
            found += in_sql(v)
        elif isinstance(v, dict) and name in ("Parse", "Bind", "Describe", "Execute"):
            query = v.get("query")
            if isinstance(query, str):
                found += in_sql(query)
            pinned = frozenset().union(*(numbers for pattern, numbers in rules.parameters
                                         if isinstance(query, str) and pattern.search(query)))
            for i, p in enumerate(v.get("parameters", []) if name == "Bind" else [], 1):
                value = p.get("value") if isinstance(p, dict) and "binary" in p else p
                if isinstance(value, bool) or not isinstance(value, str | int):
                    continue
                if i in pinned and str(value):
                    found.append(str(value))
                elif now is None:
                    continue
                elif isinstance(value, str):
                    found += find_volatile(value, now)
                elif volatile_value(value, now):  # a binary epoch
                    found.append(str(value))
    return found


def _hashable(name: Readable) -> Readable:
    return name if isinstance(name, str) or name is None else json.dumps(name, sort_keys=True)


def match_key(request: Readable) -> Readable:
    """The normalized request (see module doc). A request that is not in the shape this
    dialect records (a hand-edited recording) is its own key: it never matches a live one."""
    try:
        return _match_key(request)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError, ProtocolError):
        return {"unreadable": request}


def _match_key(request: Readable) -> Readable:
    kind = request_kind(request)
    if kind == "startup":
        params: dict[str, Any] = {}
        key: dict[str, Any] = {}
        for item in request:
            name = item_name(item)
            if name == "StartupMessage":
                params = item[name].get("parameters", {})
            elif name == "PasswordMessage" and is_hashed(item[name]):
                key["password"] = item[name]  # a plain <redacted> (older recordings): any
        user = params.get("user")
        return {"startup": {"user": user, "database": params.get("database", user), **key}}
    if kind == "query":
        return [{"Query": _sql(request[0]["Query"])}]
    if kind == "function":
        v = request[0]["FunctionCall"]
        return [{"FunctionCall": {"function_oid": v.get("function_oid"),
                                  "arguments": [canonical_value(a) for a in v.get("arguments", [])],
                                  "result_format": v.get("result_format", 0)}}]
    return _batch_key(request)


def executed_sql(request: Readable) -> list[str]:
    """The SQL a request runs (Query text, or the query of each Execute)."""
    out = []
    statement = None
    for item in request:
        name = item_name(item)
        if name == "Query" and isinstance(item[name], str):
            out.append(item[name])
        elif name == "Bind":
            statement = item[name].get("statement")
        elif name == "Execute":
            q = item[name].get("query")
            out.append(q if isinstance(q, str) else f"<statement {statement!r}>")
    return out


@dataclass(frozen=True, slots=True)
class Traits:
    """What the replayer asks of every request it looks up (the functions below), from
    one reading of its kind and its SQL."""

    lifetime: Lifetime
    summary: str
    repeats: bool
    sleeps: bool
    changes_transaction: bool


# (kind, the SQL a query or batch runs) -> its traits, which depend on nothing else there:
# a statement prepared once and executed again and again is classified once
_TRAITS: dict[tuple[str, ...], Traits] = {}
_MAX_TRAITS = 4096  # entries (emptied when full), of at most 4096 characters of SQL


def traits(request: Readable) -> Traits:
    kind, executed = request_kind(request), executed_sql(request)
    if not executed or kind not in ("query", "batch") or sum(map(len, executed)) > _MAX_TRAITS:
        return _traits(request, kind, executed)
    key = (kind, *executed)
    found = _TRAITS.get(key)
    if found is None:
        if len(_TRAITS) >= _MAX_TRAITS:
            _TRAITS.clear()
        found = _TRAITS[key] = _traits(request, kind, executed)
    return found


def _traits(request: Readable, kind: str, executed: list[str]) -> Traits:
    flags = [_statement(q) for q in executed]
    return Traits(_lifetime(kind, flags), _summary(request, kind, executed), _repeats(kind, flags),
                  any(f.sleeps for f in flags), _changes(kind, flags))


@dataclass(frozen=True, slots=True)
class _Flags:
    """What the traits ask of one statement."""

    session: bool  # ``is_session_sql``
    repeats: bool  # transaction control or a schema change
    sleeps: bool
    changes: bool  # may change the transaction status


_SLEEP = re.compile(r"\bpg_sleep(?:_for|_until)?\s*\(", re.I)
# statements that may change the transaction status (CALL and DO may COMMIT inside)
_STATUS_CHANGING = {"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT",
                    "RELEASE", "PREPARE", "CALL", "DO"}


@by_shape
def _statement(sql: str) -> _Flags:
    """One reading of a statement per shape (each function it asks reads by shape too)."""
    return _Flags(is_session_sql(sql), is_transaction_sql(sql) or is_schema_sql(sql), _sleeps(sql),
                  not _STATUS_CHANGING.isdisjoint(first_words(sql)))


def _flags(request: Readable) -> list[_Flags]:
    return [_statement(q) for q in executed_sql(request)]


def lifetime_of(request: Readable) -> Lifetime:
    return _lifetime(request_kind(request), _flags(request))


def _lifetime(kind: str, flags: list[_Flags]) -> Lifetime:
    if kind == "startup":
        return "session"
    if kind == "function":
        return "data"
    if kind == "batch" and not flags:
        return "session"  # prepares and describes: metadata, asked again per connection
    return "session" if flags and all(f.session for f in flags) else "data"


def repeats(request: Readable) -> bool:
    """Transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT...) and schema changes
    (CREATE, DROP, ALTER...): once its recorded answers are used up the last one serves
    again, so an app (or a pool) that opens a different number of transactions at replay,
    or a test suite that runs its setup again, does not miss on them."""
    return _repeats(request_kind(request), _flags(request))


def _repeats(kind: str, flags: list[_Flags]) -> bool:
    return kind in ("query", "batch") and bool(flags) and all(f.repeats for f in flags)


def sleeps(request: Readable) -> bool:
    """A statement that waits on purpose (``pg_sleep``, ``pg_sleep_for``...): replay holds
    its answer as long as recorded (``LookupContext.timed``)."""
    return any(f.sleeps for f in _flags(request))


@by_shape
def _sleeps(sql: str) -> bool:
    return _SLEEP.search(sql) is not None


def changes_transaction(request: Readable) -> bool:
    """Whether a request may change the transaction status (a FunctionCall: assume so)."""
    return _changes(request_kind(request), _flags(request))


def _changes(kind: str, flags: list[_Flags]) -> bool:
    return kind == "function" or any(f.changes for f in flags)


def summary_of(request: Readable) -> str:
    return _summary(request, request_kind(request), executed_sql(request))


def _summary(request: Readable, kind: str, executed: list[str]) -> str:
    if kind == "startup":
        key = match_key(request)["startup"]
        step = "password" if any(item_name(i) == "PasswordMessage" for i in request) else "startup"
        return f"{step} {key['user']}@{key['database']}"
    if kind == "function":
        return f"FunctionCall {request[0]['FunctionCall'].get('function_oid')}"
    if kind == "query":
        return f"Query {summarize(executed[0])}" if executed else "Query"
    if executed:
        more = f" (+{len(executed) - 1})" if len(executed) > 1 else ""
        return f"Execute {summarize(executed[0])}{more}"
    for item in request:
        name = item_name(item)
        if name in ("Parse", "Describe"):
            q = item[name].get("query")
            return f"{name} {summarize(q) if isinstance(q, str) else ''}".rstrip()
    return "+".join(item_name(i) for i in request)

"""What replay compares, and each interaction's lifetime and label.

A readable request is a one-key dict named after the packet that carries it:
``{"Connect": {}}`` (the server's greeting, asked for before the client says anything),
``{"HandshakeResponse": {...}}`` (the login, its password proof redacted; a
``COM_CHANGE_USER`` is another login),
``{"COM_QUERY": sql}``, ``{"COM_STMT_PREPARE": sql}``, ``{"COM_STMT_EXECUTE": {"sql",
"params", "types"}}``, ``{"COM_INIT_DB": name}``, ``{"COM_FIELD_LIST": {...}}``.

``match_key`` drops what differs between runs and connections: a login compares only
user and database (the proof is derived from a random scramble, so replay accepts any
password); SQL compares whitespace-insensitively (``sql.normalize_sql``); an execution
compares its statement's SQL and parameter values, never the statement id (ids are per
connection: the replayer hands out its own) nor the parameter types a driver picked.
"""

from __future__ import annotations

from datetime import datetime

from ..base import Lifetime, Readable
from ..sqltext import sort_in_lists
from ..volatile import find_volatile, volatile_value
from .sql import is_schema_sql, is_session_sql, is_transaction_sql, normalize_sql, summarize

_SESSION_REQUESTS = {"Connect", "HandshakeResponse", "COM_CHANGE_USER", "COM_STMT_PREPARE", "COM_INIT_DB",
                     "COM_FIELD_LIST", "COM_STATISTICS"}


def request_name(request: Readable) -> str:
    if isinstance(request, dict) and len(request) == 1:
        return str(next(iter(request)))
    return ""


def executed_sql(request: Readable) -> str | None:
    name = request_name(request)
    value = request.get(name) if name else None
    if name == "COM_QUERY" and isinstance(value, str):
        return value
    if name == "COM_STMT_EXECUTE" and isinstance(value, dict) and isinstance(value.get("sql"), str):
        return value["sql"]
    return None


def match_key(request: Readable) -> Readable:
    """The normalized request (module doc); a request not in a shape this dialect records
    (a hand-edited recording) is its own key: it never matches a live one."""
    name = request_name(request)
    value = request.get(name) if name else None
    if name in ("HandshakeResponse", "COM_CHANGE_USER") and isinstance(value, dict):
        return {"Login": {"user": value.get("user"), "database": value.get("database") or None}}
    if name in ("COM_QUERY", "COM_STMT_PREPARE") and isinstance(value, str):
        return {name: sort_in_lists(normalize_sql(value))}
    if name == "COM_STMT_EXECUTE" and isinstance(value, dict) and isinstance(value.get("sql"), str):
        return {name: {"sql": sort_in_lists(normalize_sql(value["sql"])), "params": value.get("params", [])}}
    if name:
        return request
    return {"unreadable": request}


def lifetime_of(request: Readable) -> Lifetime:
    name = request_name(request)
    if name in _SESSION_REQUESTS:
        return "session"
    sql = executed_sql(request)
    return "session" if sql is not None and is_session_sql(sql) else "data"


def repeats(request: Readable) -> bool:
    """Transaction control and schema changes: once their recorded answers are used the
    last one serves again (a pool opening a different number of transactions)."""
    sql = executed_sql(request)
    return sql is not None and (is_transaction_sql(sql) or is_schema_sql(sql))


def summary_of(request: Readable) -> str:
    name = request_name(request)
    value = request.get(name) if name else None
    if name in ("HandshakeResponse", "COM_CHANGE_USER") and isinstance(value, dict):
        step = "login" if name == "HandshakeResponse" else "change user"
        return f"{step} {value.get('user')}@{value.get('database') or ''}"
    if name == "Connect":
        return "greeting"
    sql = executed_sql(request)
    if sql is not None:
        return f"{'Query' if name == 'COM_QUERY' else 'Execute'} {summarize(sql)}"
    if name == "COM_STMT_PREPARE" and isinstance(value, str):
        return f"Prepare {summarize(value)}"
    return name or "?"


def volatile(request: Readable, now: datetime) -> list[str]:
    """The values the app generated in a request (``protocols.volatile``): in SQL text and
    in an execution's parameters. Never in a login."""
    sql = executed_sql(request)
    if sql is None:
        return []
    found = find_volatile(sql, now)
    if request_name(request) == "COM_STMT_EXECUTE":
        for value in request["COM_STMT_EXECUTE"].get("params") or []:
            if isinstance(value, str):
                found += find_volatile(value, now)
            elif isinstance(value, int | float) and volatile_value(value, now):
                found.append(str(value))
    return found


"""MySQL SQL text helpers for matching and lifetimes (no parser: a small lexer).

MySQL's lexical rules differ from PostgreSQL's (``postgres.sql``): backslash escapes in
'...' and "..." strings, `backquoted` identifiers, ``#`` comments. ``normalize_sql`` folds
whitespace outside literals and drops trailing semicolons; literals stay byte for byte.

``is_session_sql``: statements whose answer describes the session or the catalog, not
the application's data, so replay may serve them any number of times: SET, SHOW, USE,
``SELECT @@...`` and metadata functions (VERSION(), DATABASE(), CONNECTION_ID()...) that
drivers and SQLAlchemy send on connect, and information_schema / mysql.* queries.
Transaction control stays "data" but repeats (``is_transaction_sql``), as do schema
changes (``is_schema_sql``).
"""

from __future__ import annotations

import re
from functools import lru_cache

from ..sqltext import SqlLexer

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<quoted>'(?:[^'\\]+|\\.|'')*'?|"(?:[^"\\]+|\\.|"")*"?|`(?:[^`]+|``)*`?)
  | (?P<comment>(?:--(?=\s)|\#)[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<semi>;)
  | (?P<other>[^\s'"`;#/-]+|.)
""", re.S | re.X)
_SPECIAL = re.compile(r"['\"`#]|--|/\*")
_SESSION_COMMANDS = {"SET", "SHOW", "USE", "DESCRIBE", "DESC", "EXPLAIN", "HELP"}
_TRANSACTION = {"BEGIN", "START", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "XA"}
_SCHEMA = {"CREATE", "DROP", "ALTER", "TRUNCATE", "RENAME"}
_WRITES = re.compile(r"\b(INSERT|UPDATE|DELETE|REPLACE|CREATE|ALTER|DROP|TRUNCATE|INTO|"
                     r"GET_LOCK|RELEASE_LOCK|SLEEP|NEXTVAL|LAST_INSERT_ID|FOUND_ROWS|ROW_COUNT)\b", re.I)
_CATALOG = re.compile(r"\b(information_schema|performance_schema|mysql)\s*\.", re.I)
_METADATA = re.compile(
    r"^\s*SELECT\s+(@@|(VERSION|DATABASE|SCHEMA|USER|CURRENT_USER|SESSION_USER|SYSTEM_USER|"
    r"CONNECTION_ID|CHARSET|COLLATION)\s*\()", re.I)
_WORD = re.compile(r"[A-Za-z_]+")


_LEXER = SqlLexer(_TOKEN, _SPECIAL)
normalize_sql = _LEXER.normalize
split_statements = _LEXER.split_statements


def _first_word(stmt: str) -> str:
    m = _WORD.match(stmt.lstrip("( "))
    return m.group().upper() if m else ""


def _each(sql: str, test) -> bool:
    stmts = split_statements(sql)
    return bool(stmts) and all(test(s) for s in stmts)


def _session_statement(stmt: str) -> bool:
    word = _first_word(stmt)
    if word == "SET":
        return not re.match(r"\s*SET\s+(TRANSACTION|AUTOCOMMIT)\b", stmt, re.I) and \
            not re.search(r"\bautocommit\b", stmt, re.I)
    if word in _SESSION_COMMANDS:
        return True
    if word == "SELECT" and not _WRITES.search(stmt):
        return bool(_METADATA.match(stmt) or _CATALOG.search(stmt))
    return False


@lru_cache(maxsize=4096)
def is_session_sql(sql: str) -> bool:
    return _each(sql, _session_statement)


def is_transaction_sql(sql: str) -> bool:
    return _each(sql, lambda s: _first_word(s) in _TRANSACTION or bool(
        re.match(r"\s*SET\s+(SESSION\s+|@@)?(TRANSACTION|AUTOCOMMIT)\b", s, re.I)))


def is_schema_sql(sql: str) -> bool:
    return _each(sql, lambda s: _first_word(s) in _SCHEMA)


def summarize(sql: str, width: int = 60) -> str:
    return _LEXER.summarize(sql, width)

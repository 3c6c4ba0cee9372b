"""SQL text helpers for matching and lifetimes (no parser: a small lexer).

* ``normalize_sql``: whitespace-insensitive form compared at replay - runs of
  whitespace outside literals/quoted identifiers become one space, leading and trailing
  whitespace and trailing semicolons go; literals (``'...'``, ``E'...'``, ``"..."``,
  ``$tag$...$tag$``) are kept byte for byte.
* ``split_statements``: top-level statements of a simple Query (which may hold several).
* ``is_session_sql``: statements whose answer describes the session or the catalog,
  not the application's data, so replay may serve them any number of times: SET,
  SHOW, RESET, DISCARD, DEALLOCATE, CLOSE, LISTEN/UNLISTEN, ``SELECT version()``-style
  metadata functions and catalog / type introspection (pg_catalog, information_schema,
  ``::regtype``) as asyncpg, psycopg and SQLAlchemy send on connect, and the reset a
  connection pool runs on every release. Transaction control (BEGIN/COMMIT/ROLLBACK)
  stays "data": its ReadyForQuery status is the transaction state.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar

from ..sqltext import SqlLexer, sort_in_lists

# CLOSE (cursors), LISTEN/UNLISTEN: asyncpg's pool resets every released connection with
# "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL".
_SESSION_COMMANDS = {"SET", "SHOW", "RESET", "DISCARD", "DEALLOCATE", "CLOSE", "LISTEN",
                     "UNLISTEN"}
_READ_COMMANDS = {"SELECT", "WITH", "VALUES", "TABLE"}
_WRITES = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE|CREATE|ALTER|DROP|TRUNCATE|COPY|"
                     r"GRANT|REVOKE|NEXTVAL|SETVAL|INTO)\b", re.I)
_CATALOG = re.compile(
    r"\b(pg_catalog\s*\.|information_schema\s*\.|pg_type|pg_namespace|pg_class|"
    r"pg_attribute|pg_attrdef|pg_proc|pg_range|pg_enum|pg_index|pg_constraint|"
    r"pg_database|pg_roles|pg_settings|pg_extension|pg_description|pg_collation|"
    r"pg_am|pg_inherits|pg_tables|pg_views|pg_indexes|pg_sequences?|to_regtype|to_regclass)\b"
    r"|::\s*reg(type|class|proc|namespace)\b",
    re.I)
_METADATA = re.compile(
    r"^\s*SELECT\s+(pg_catalog\s*\.\s*)?(version|current_schema|current_schemas|current_setting|"
    r"set_config|current_database|current_catalog|current_user|session_user|current_role|"
    r"pg_backend_pid|pg_is_in_recovery|inet_server_addr|inet_server_port|"
    r"pg_advisory_unlock_all)\b",
    re.I)
_WORD = re.compile(r"[A-Za-z_]+")
# anything the lexer must see: quotes, comments, dollar quotes ($1 parameters are not)
_SPECIAL = re.compile(r"['\"]|--|/\*|\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$")


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<quoted>[eE]'(?:[^'\\]|\\.|'')*'?      # E'...' with backslash escapes
             | '(?:[^']|'')*'?                  # '...' ('' is a quote)
             | "(?:[^"]|"")*"?)                 # "identifier"
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<dollar>\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$)
  | (?P<semi>;)
  | (?P<other>[^\s'";$/-]+|.)
""", re.S | re.X)


_LEXER = SqlLexer(_TOKEN, _SPECIAL)

T = TypeVar("T")
_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_NUMBERED_TAG = re.compile(r"\$[A-Za-z_][A-Za-z_0-9]*[0-9][A-Za-z_0-9]*\$")
_MAX_SHAPES = 4096  # statement shapes kept per function (emptied when full)
SHAPE_MEMOS: list[dict] = []  # every ``by_shape`` table (tests empty them)


def by_shape(fn: Callable[[str], T]) -> Callable[[str], T]:
    """``fn`` memoized by the *shape* of its SQL: the text with every ASCII digit read as
    0. Only for a function that treats all digits alike (its patterns name no digit
    outside a ``0-9`` range, no digit's value counts): its answer is then the same for
    every statement that differs only in its numbers, which a benchmark or an app's ids
    make all distinct (``WHERE aid = 55526``). Not a text with a dollar-quote tag that
    holds a digit: ``$a1$`` closes at ``$a1$`` only, so there the digits' values count."""
    memo: dict[bytes, T] = {}

    def shaped(sql: str) -> T:
        if "$" in sql and _NUMBERED_TAG.search(sql):
            return fn(sql)
        key = sql.encode("utf-8", "surrogatepass").translate(_DIGITS)
        found = memo.get(key, memo)
        if found is memo:
            if len(memo) >= _MAX_SHAPES:
                memo.clear()
            found = memo[key] = fn(sql)
        return found  # type: ignore[return-value]

    shaped.__doc__, shaped.__name__, shaped.__wrapped__ = fn.__doc__, fn.__name__, fn  # type: ignore[attr-defined]
    SHAPE_MEMOS.append(memo)
    return shaped

_scan = _LEXER.scan
normalize_sql = _LEXER.normalize
split_statements = _LEXER.split_statements
_strip_comments = _LEXER.strip_comments


@by_shape
def is_session_sql(sql: str) -> bool:
    """True when every statement in ``sql`` is session/catalog metadata (see module doc)."""
    if not _SPECIAL.search(sql) and ";" not in sql.rstrip().rstrip(";"):
        return _session_statement(sql)  # one statement, nothing quoted: no need to split
    stmts = split_statements(sql)
    return bool(stmts) and all(_session_statement(s) for s in stmts)


def _session_statement(stmt: str) -> bool:
    plain = not _SPECIAL.search(stmt)
    bare = stmt if plain else _strip_comments(stmt)
    m = _WORD.search(bare)
    word = m.group(0).upper() if m else ""
    if word in _SESSION_COMMANDS:
        return True
    if word not in _READ_COMMANDS:
        return False
    code = bare if plain else "".join(tok for kind, tok in _scan(bare) if kind != "quoted")
    if _WRITES.search(code):
        return False
    return bool(_METADATA.match(bare) or _CATALOG.search(code))


_TRANSACTION_COMMANDS = {"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT",
                         "RELEASE"}


@by_shape
def first_words(sql: str) -> tuple[str, ...]:
    """The first word of each statement of ``sql``, upper-cased (``("LISTEN", "SELECT")``)."""
    if not _SPECIAL.search(sql) and ";" not in sql.rstrip().rstrip(";"):
        word = _WORD.search(sql)  # one statement, nothing quoted: no need to split
        return (word.group(0).upper(),) if word else ()
    found = (_WORD.search(_strip_comments(s)) for s in split_statements(sql))
    return tuple(m.group(0).upper() for m in found if m is not None)


@by_shape
def is_transaction_sql(sql: str) -> bool:
    """True when every statement only starts or ends a transaction (or a savepoint): its
    answer does not depend on any data, so replay may give it again (``repeat_last``)."""
    words = first_words(sql)
    return bool(words) and all(w in _TRANSACTION_COMMANDS for w in words)


_SCHEMA_COMMANDS = {"CREATE", "DROP", "ALTER", "TRUNCATE", "COMMENT", "GRANT", "REVOKE"}
_FILLED_FROM_A_QUERY = re.compile(r"\bAS[\s(]+(SELECT|WITH|VALUES|TABLE|EXECUTE)\b", re.I)


@by_shape
def is_schema_sql(sql: str) -> bool:
    """True when every statement changes the schema (CREATE/DROP/ALTER/TRUNCATE/COMMENT/
    GRANT/REVOKE): its answer is a command tag, not data, so replay may give it again
    when a setup runs more often than it was recorded. Not ``CREATE ... AS SELECT``, whose
    tag counts rows."""
    words = first_words(sql)  # without the lexer: most statements are not schema changes
    if not words or any(w not in _SCHEMA_COMMANDS for w in words):
        return False
    stmts = split_statements(sql)
    if len(stmts) != len(words):  # a statement without a word (``$$x$$``)
        return False
    for stmt in stmts:
        code = "".join(tok for kind, tok in _scan(stmt) if kind not in ("quoted", "comment"))
        if _FILLED_FROM_A_QUERY.search(code):
            return False
    return True


_DEALLOCATE = re.compile(r"^(DEALLOCATE\s+(?:PREPARE\s+)?)(?!ALL\b)(\S+)", re.I)
# a backend pid given to a function that signals it: pids differ between runs
_PID_ARGUMENT = re.compile(r"(\bpg_(terminate|cancel)_backend\s*\(\s*)(\$?)([0-9]+)", re.I)


@lru_cache(maxsize=4096)
def match_sql(sql: str) -> str:
    """``normalize_sql`` plus run-specific names and numbers dropped: ``DEALLOCATE
    <name>``, ``pg_terminate_backend(<pid>)`` (a literal pid; a ``$n`` stays); the items
    of an ``IN`` list of literals in a canonical order (``sort_in_lists``)."""
    text = sort_in_lists(_DEALLOCATE.sub(lambda m: m.group(1) + "<name>", normalize_sql(sql)))
    if "_backend" in text:
        text = _PID_ARGUMENT.sub(lambda m: m.group(0) if m.group(3) else m.group(1) + "<pid>", text)
    return text


def pid_parameters(sql: str) -> frozenset[int]:
    """0-based indexes of the parameters ``sql`` passes to ``pg_terminate_backend`` /
    ``pg_cancel_backend``: their values are pids, which differ between runs."""
    return frozenset(n - 1 for _signal, bound, n in pid_arguments(sql) if bound)


@lru_cache(maxsize=4096)
def pid_arguments(sql: str) -> tuple[tuple[str, bool, int], ...]:
    """What ``sql`` passes to ``pg_terminate_backend``/``pg_cancel_backend``: (``terminate``
    or ``cancel``, whether it is a ``$n`` parameter, the literal pid or ``n``)."""
    if "_backend" not in sql.lower():  # asked of every replayed statement: cached
        return ()
    return tuple((m.group(2).lower(), bool(m.group(3)), int(m.group(4))) for m in _PID_ARGUMENT.finditer(sql))


_SECRET_HINT = re.compile(r"password|://", re.I)
_PASSWORD_WORD = re.compile(r"(?:^|\W)password$", re.I)
# inside a literal, where quotes are doubled: password=value or password=''quoted value''
_CONNINFO_PASSWORD = re.compile(r"(\bpassword\s*=\s*)(''(?:[^']|'''')*?''(?!')|[^\s'&]+)", re.I)
_URI_PASSWORD = re.compile(r"(://[^:/@\s']*:)([^@\s']+)(@)")
REDACTED_LITERAL = "'<redacted>'"


@lru_cache(maxsize=4096)
def redact_sql(sql: str) -> str:
    """SQL with the passwords it carries replaced by ``<redacted>``: the literal after a
    ``PASSWORD`` keyword or option (``CREATE/ALTER ROLE|USER ... PASSWORD '...'``, psql's
    ``\\password`` sending ``'SCRAM-SHA-256$...'``, ``USER MAPPING ... OPTIONS (password
    '...')``) and the password of a connection string or URI inside a literal
    (``dblink_connect('... password=...')``, ``CREATE SUBSCRIPTION ... CONNECTION '...'``).
    Recorder and replayer both redact, so the live statement still matches; which password
    was set does not take part in matching."""
    if not _SECRET_HINT.search(sql):
        return sql
    out: list[str] = []
    after_keyword = False
    for kind, tok in _scan(sql):
        if kind == "quoted" and tok[:1] != '"':
            if after_keyword:
                tok = REDACTED_LITERAL
            else:
                tok = _URI_PASSWORD.sub(r"\1<redacted>\3",
                                        _CONNINFO_PASSWORD.sub(r"\1<redacted>", tok))
            after_keyword = False
        elif kind in ("quoted", "other"):
            after_keyword = tok.lower() == '"password"' or _PASSWORD_WORD.search(tok) is not None
        elif kind not in ("ws", "comment"):
            after_keyword = False
        out.append(tok)
    return "".join(out)


def summarize(sql: str, width: int = 72) -> str:
    return _LEXER.summarize(sql, width)

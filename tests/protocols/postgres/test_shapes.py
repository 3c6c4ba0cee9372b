"""Classification memoized by statement shape (``sql.by_shape``): a statement's answer
is kept under its text with every digit read as 0, so it must be the answer of every
statement that differs only in its digits. Each memoized function is compared with the
function it wraps, the memo first warmed by another statement of the same shape."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trproxy.protocols.base import EncodeError
from trproxy.protocols.postgres import backend as be
from trproxy.protocols.postgres import matching, replayer, sql
from trproxy.protocols.postgres.codec import PostgresCodec
from trproxy.protocols.postgres.wire import Writer

SHAPED = [sql.is_session_sql, sql.first_words, sql.is_transaction_sql, sql.is_schema_sql,
          matching._sleeps, matching._statement, replayer._is_rollback]
# every pattern those functions read the text with
PATTERNS = [sql._SPECIAL, sql._TOKEN, sql._WORD, sql._WRITES, sql._CATALOG, sql._METADATA,
            sql._FILLED_FROM_A_QUERY, matching._SLEEP]

CORPUS = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = 55526;", "SELECT 1", "select 10 ; ",
    "BEGIN", "COMMIT", "ROLLBACK", " rollback work ; ", "ROLLBACK 1", "ABORT;", "SAVEPOINT sp1",
    "RELEASE SAVEPOINT __asyncpg_savepoint_1f__", "SET statement_timeout = 1000", "SHOW TimeZone",
    "SELECT pg_sleep(0.5)", "select pg_sleep_for('1 second')", "SELECT pg_sleep1(2)",
    "SELECT oid FROM pg_type WHERE typname = 'int4'", "SELECT 'x1'::regtype", "SELECT 1::regclass",
    "SELECT * FROM pg_class WHERE oid = 1259", "SELECT * FROM pg_class1", "SELECT version()",
    "CREATE TABLE t1 (a int4 DEFAULT 1)", "CREATE TABLE t AS SELECT 1", "DROP TABLE t2; CREATE TABLE t3 (b int8)",
    "INSERT INTO t VALUES (1, 'a2')", "UPDATE t SET a = 2 WHERE b = 3", "WITH x AS (SELECT 1) SELECT * FROM x",
    "SELECT $1::int8, $2", "SELECT $a1$ 5 $a1$", "DO $$ BEGIN PERFORM 1; END $$", "$$1$$",
    "SET x = 1; SELECT 2", "-- 1\nSELECT 1", "/* 2 */ BEGIN", "SELECT E'\\\\1'", "SELECT '٣', 'x'",
    "SELECT '\udc80 1'", "SELECT \"col1\" FROM \"t2\"", "SELECT 1e10, 0x1F, 1.5", "COPY t FROM STDIN",
    "START TRANSACTION ISOLATION LEVEL SERIALIZABLE", "SELECT nextval('s1')", "TRUNCATE t1",
]


def other_digits(text: str, shift: int) -> str:
    return re.sub(r"[0-9]", lambda m: str((int(m.group()) + shift) % 10), text)


def test_the_patterns_name_no_digit():
    """What makes the memo right: no pattern tells one digit from another."""
    for pattern in PATTERNS:
        assert not re.search(r"[0-9]", pattern.pattern.replace("0-9", "")), pattern.pattern


def test_each_shaped_function_answers_as_the_function_it_wraps():
    for text in CORPUS:
        for shift in (1, 5):
            for memo in sql.SHAPE_MEMOS:
                memo.clear()
            for fn in SHAPED:
                fn(other_digits(text, shift))  # warms the memo with another number
                assert fn(text) == fn.__wrapped__(text), (fn.__name__, text)


def test_dollar_quote_tags_with_digits_are_not_read_by_shape():
    """``$a1$ ... $a2$`` does not close the quote that ``$a1$ ... $a1$`` closes: the same
    shape, other statements."""
    closed = "SELECT $a1$ x $a1$; CREATE TABLE t (i int)"
    open_ = "SELECT $a1$ x $a2$; CREATE TABLE t (i int)"
    assert sql.first_words.__wrapped__(closed) != sql.first_words.__wrapped__(open_)
    for first, then in ((closed, open_), (open_, closed)):
        for memo in sql.SHAPE_MEMOS:
            memo.clear()
        for fn in SHAPED:
            fn(first)
            assert fn(then) == fn.__wrapped__(then), (fn.__name__, then)


def test_request_traits_are_those_of_the_full_path():
    """lifetime, repeats, sleeps, status changes of whole requests, warm and emptied."""
    requests = [[{"Query": text}] for text in CORPUS] + [
        [{"Parse": {"statement": "", "query": text, "param_types": []}},
         {"Bind": {"portal": "", "statement": "", "query": text, "parameters": ["1"], "result_formats": []}},
         {"Execute": {"portal": "", "max_rows": 0, "query": text}}, {"Sync": {}}] for text in CORPUS]
    functions = [matching.lifetime_of, matching.repeats, matching.sleeps, matching.changes_transaction]

    def answers(request: list) -> list:
        return [fn(request) for fn in functions]

    for request in requests:
        for memo in sql.SHAPE_MEMOS:
            memo.clear()
        full = answers(request)
        shifted = [{k: ({kk: other_digits(vv, 3) if isinstance(vv, str) else vv for kk, vv in v.items()}
                        if isinstance(v, dict) else other_digits(v, 3))} for item in request for k, v in item.items()]
        answers(shifted)
        assert answers(request) == full, request


_WORDS = st.sampled_from(["SELECT", "BEGIN", "COMMIT", "ROLLBACK", "SET", "CREATE", "TABLE", "AS", "pg_sleep(",
                          "pg_class", "::regtype", "INSERT", "INTO", "t", ";", "'", '"', "$$", "$1", "--",
                          "/*", "*/", "\n", " ", "(", ")", ",", "1", "23", "0", "x9", "_7", "E'\\1'", "ABORT", "$a1$", "$a2$"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_WORDS, max_size=12).map(" ".join), st.integers(1, 9))
def test_any_text_gets_the_answer_of_the_full_path(text, shift):
    for fn in SHAPED:
        fn(other_digits(text, shift))
        assert fn(text) == fn.__wrapped__(text), (fn.__name__, text)


def test_traits_read_once_are_those_the_functions_give():
    """``traits`` (the replayer's one reading of a request) agrees with each function."""
    requests = [[{"Query": text}] for text in CORPUS] + [
        [{"StartupMessage": {"protocol": "3.0", "parameters": {"user": "u", "database": "d"}}}],
        [{"FunctionCall": {"function_oid": 1, "arguments": [], "result_format": 0}}],
        [{"Parse": {"statement": "s", "query": "SELECT 1", "param_types": []}}, {"Sync": {}}],
        [{"Bind": {"portal": "", "statement": "s", "parameters": [], "result_formats": []}},
         {"Execute": {"portal": "", "max_rows": 0}}, {"Sync": {}}]]
    for request in requests:
        matching._TRAITS.clear()
        found = matching.traits(request)
        assert (found.lifetime, found.summary, found.repeats, found.sleeps, found.changes_transaction) == (
            matching.lifetime_of(request), matching.summary_of(request), matching.repeats(request),
            matching.sleeps(request), matching.changes_transaction(request)), request
        assert matching.traits(request) is found or matching._TRAITS == {}  # read once per text


def test_traits_remembered_by_text_are_those_of_the_full_path():
    """``matching._TRAITS`` (a request's traits by its kind and SQL): warmed by every
    other request first, each request gets the traits it gets with the memo empty."""
    texts = [*CORPUS, *(other_digits(t, 4) for t in CORPUS)]
    requests = [[{"Query": t}] for t in texts] + [
        [{"Bind": {"portal": "", "statement": "s", "query": t, "parameters": ["1"], "result_formats": []}},
         {"Execute": {"portal": "", "max_rows": 0, "query": t}}, {"Sync": {}}] for t in texts] + [
        [{"Bind": {"portal": "", "statement": "s", "parameters": [], "result_formats": []}},
         {"Execute": {"portal": "", "max_rows": 0}}, {"Sync": {}}],
        [{"Parse": {"statement": "s", "query": "SELECT 1", "param_types": []}}, {"Sync": {}}]]
    full = []
    for request in requests:
        matching._TRAITS.clear()
        for memo in sql.SHAPE_MEMOS:
            memo.clear()
        full.append(matching.traits(request))
    for request in requests:
        matching.traits(request)
    assert [matching.traits(r) for r in requests] == full


def test_encoding_gives_the_bytes_and_errors_it_gave():
    """The shortcuts of the encoder (ReadyForQuery frames made once, a RowDescription's
    numbers packed at once, DataRow values without a call each) against the Writer."""
    codec = PostgresCodec()
    for status in ("I", "T", "E"):
        assert codec.encode(be.ReadyForQuery(status)) == b"Z\x00\x00\x00\x05" + status.encode()
    for status in ("X", ["I"], b"I"):
        with pytest.raises(EncodeError):
            codec.encode(be.ReadyForQuery(status))  # type: ignore[arg-type]
    field = be.FieldDescription("abalance", 16397, 3, 23, 4, -1, 0)
    w = Writer().count(1).cstring("abalance").uint32(16397).int16(3).uint32(23).int16(4).int32(-1).int16(0)
    assert be.RowDescription((field,)).body() == w.getvalue()
    for bad in (dataclasses.replace(field, column=70000), dataclasses.replace(field, table_oid=-1),
                dataclasses.replace(field, type_modifier=1.5)):
        with pytest.raises(EncodeError, match="out of range"):
            be.RowDescription((bad,)).body()
    assert be.DataRow((b"1", None, b"")).body() == Writer().count(3).value(b"1").value(None).value(b"").getvalue()

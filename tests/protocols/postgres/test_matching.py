"""match_key normalization, lifetimes and the SQL helpers behind them."""

from __future__ import annotations

import pytest

from trproxy.protocols.credentials import hashed
from trproxy.protocols.postgres import match_key
from trproxy.protocols.postgres.matching import lifetime_of, repeats, summary_of
from trproxy.protocols.postgres.sql import (
    is_schema_sql,
    is_session_sql,
    is_transaction_sql,
    match_sql,
    normalize_sql,
    redact_sql,
    split_statements,
)


def test_sql_is_compared_whitespace_insensitively_but_literals_are_kept():
    assert normalize_sql("  SELECT\n\t a ,  b\r\nFROM t ;; ") == "SELECT a , b FROM t"
    assert normalize_sql("SELECT 'a   b', \"x  y\", $$p  q$$") == "SELECT 'a   b', \"x  y\", $$p  q$$"
    assert normalize_sql("SELECT E'it\\'s  ok'") == "SELECT E'it\\'s  ok'"
    assert normalize_sql("SELECT 1 -- note  here\n") == "SELECT 1 -- note  here"


def test_split_statements_respects_quotes_and_comments():
    assert split_statements("SET a = ';'; SELECT 1; -- x;\n") == ["SET a = ';'", "SELECT 1"]
    assert split_statements("DO $f$ BEGIN; END $f$; SELECT 2") == ["DO $f$ BEGIN; END $f$", "SELECT 2"]


@pytest.mark.parametrize("sql", [
    "SET TIME ZONE 'UTC'", "show standard_conforming_strings", "RESET ALL", "DISCARD ALL",
    "DEALLOCATE _pg3_1", "select pg_catalog.version()", "SELECT version()", "select current_schema()",
    "SELECT current_setting('jit') AS cur, set_config('jit', 'off', false) AS new",
    "SELECT t.oid, typarray FROM pg_type t JOIN pg_namespace ns ON typnamespace = ns.oid WHERE typname = 'hstore'",
    "WITH RECURSIVE typeinfo_tree(oid) AS (SELECT 1 FROM pg_catalog.pg_type) SELECT * FROM typeinfo_tree",
    "SELECT typname, oid FROM pg_type t WHERE t.oid = $1::regtype",
    "/* probe */ SELECT * FROM information_schema.columns WHERE table_name = 'x'",
    "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;",  # asyncpg's pool
])
def test_session_sql(sql):
    assert is_session_sql(sql)


@pytest.mark.parametrize("sql", [
    "SELECT * FROM users", "BEGIN", "COMMIT", "INSERT INTO pg_typeish VALUES (1)",
    "SELECT nextval('seq')", "SELECT 'pg_catalog.pg_type' AS label FROM orders",
    "WITH x AS (DELETE FROM jobs RETURNING *) SELECT * FROM x JOIN pg_class ON true",
    "SET x = 1; SELECT * FROM users", "",
])
def test_data_sql(sql):
    assert not is_session_sql(sql)


def test_deallocate_names_are_normalized():
    assert match_sql("DEALLOCATE __asyncpg_stmt_3__") == match_sql("DEALLOCATE  __asyncpg_stmt_9__")
    assert match_sql("DEALLOCATE ALL") == "DEALLOCATE ALL"


def batch(statement, with_parse, params=("1",)):
    items = []
    if with_parse:
        items.append({"Parse": {"statement": statement, "query": "SELECT  $1", "param_types": []}})
    items += [{"Bind": {"portal": "", "statement": statement, "query": "SELECT $1\n",
                        "parameters": list(params), "result_formats": []}},
              {"Describe": {"portal": "", "query": "SELECT $1"}},
              {"Execute": {"portal": "", "max_rows": 0, "query": "SELECT $1"}},
              {"Close": {"statement": statement}}, {"Sync": {}}]
    return items


def test_an_in_list_of_literals_matches_in_any_order():
    # Django's create_permissions (run by every migrate) joins a Python set: its order
    # follows the process's hash seed, so it differs between the recording and the replay
    recorded = ("SELECT id FROM django_content_type WHERE (app_label = 'auth' AND "
                "model IN ('user', 'permission', 'group'))")
    live = recorded.replace("('user', 'permission', 'group')", "('permission', 'group', 'user')")
    assert match_key([{"Query": live}]) == match_key([{"Query": recorded}])
    assert match_sql("SELECT 1 WHERE x NOT IN (3,1,2)") == match_sql("SELECT 1 WHERE x NOT IN (1, 2, 3)")
    # another set of values, parameters or a subquery: compared as before
    assert match_sql("SELECT 1 WHERE x IN ('a', 'b')") != match_sql("SELECT 1 WHERE x IN ('a', 'c')")
    assert match_sql("SELECT 1 WHERE x IN ($2, $1)") != match_sql("SELECT 1 WHERE x IN ($1, $2)")
    assert "IN (SELECT b, a" in match_sql("SELECT 1 WHERE x IN (SELECT b, a FROM t)")
    assert match_sql("SELECT 'IN (''b'', ''a'')'") == "SELECT 'IN (''b'', ''a'')'"


def test_batch_key_ignores_names_and_whether_the_statement_was_prepared_here():
    keys = {repr(match_key(batch(name, parse))) for name in ("", "_pg3_0", "__asyncpg_stmt_1__", "S_18")
            for parse in (True, False)}
    assert len(keys) == 1
    assert match_key(batch("", True, ["2"])) != match_key(batch("", True))
    assert match_key(batch("", True, [{"binary": "int4", "value": 1}])) == match_key(
        batch("", True, [{"binary": 23, "hex": "00000001"}]))  # decoration does not count
    assert match_key(batch("", True, [{"binary": 23, "hex": "00000001"}])) != match_key(
        batch("", True, [{"hex": "00000001"}]))  # the format does


def test_prepare_only_batch_keeps_its_sql():
    prepare = [{"Parse": {"statement": "s1", "query": "SELECT 1", "param_types": []}},
               {"Describe": {"statement": "s1", "query": "SELECT 1"}}, {"Flush": {}}]
    other = [{"Parse": {"statement": "s1", "query": "SELECT 2", "param_types": []}},
             {"Describe": {"statement": "s1", "query": "SELECT 2"}}, {"Flush": {}}]
    assert match_key(prepare) != match_key(other)
    assert lifetime_of(prepare) == "session"
    assert summary_of(prepare) == "Parse SELECT 1"


def test_copy_data_and_messages_after_sync_are_not_compared():
    base = [{"Query": "COPY t FROM STDIN"}]
    assert match_key(base + [{"CopyData": "1\n"}, {"CopyDone": {}}]) == match_key(base)


def test_startup_key_is_user_database_and_hashed_password():
    def startup(password="<redacted>", **params):
        return [{"SSLRequest": {}}, {"StartupMessage": {"protocol": "3.0", "parameters": params}},
                {"PasswordMessage": password}]
    # a plain <redacted> (SASL, recordings made before passwords were hashed): not compared
    assert match_key(startup(user="a", database="d", application_name="psql")) == {
        "startup": {"user": "a", "database": "d"}}
    assert match_key(startup(user="a")) == {"startup": {"user": "a", "database": "a"}}
    pw = hashed(b"pw", "postgres a@a")
    assert match_key(startup(pw, user="a")) == {"startup": {"user": "a", "database": "a", "password": pw}}
    assert match_key(startup(pw, user="a")) != match_key(startup(hashed(b"pw2", "postgres a@a"), user="a"))
    # served in recorded order, the last one again: the live connection takes its identity
    assert lifetime_of(startup(user="a")) == "session"
    assert summary_of(startup(pw, user="a")) == "password a@a"
    assert summary_of(startup(user="a")[:2]) == "startup a@a"


def test_pids_given_to_backend_signals_are_not_compared():
    def bind(sql, *params):
        return [{"Bind": {"portal": "", "statement": "", "query": sql, "parameters": list(params),
                          "result_formats": []}}, {"Execute": {"portal": "", "max_rows": 0, "query": sql}},
                {"Sync": {}}]
    kill = "SELECT pg_terminate_backend($1)"
    assert match_key(bind(kill, "4242")) == match_key(bind(kill, "4194305"))
    assert match_key(bind(kill, {"binary": "int4", "value": 7})) == match_key(bind(kill, "8"))
    other = "SELECT pg_terminate_backend($2) WHERE $1"
    assert match_key(bind(other, "t", "1")) == match_key(bind(other, "t", "2"))
    assert match_key(bind(other, "t", "1")) != match_key(bind(other, "f", "1"))
    assert match_key(bind("SELECT $1::int", "1")) != match_key(bind("SELECT $1::int", "2"))
    assert match_key([{"Query": "select pg_cancel_backend( 4242 )"}]) == match_key(
        [{"Query": "select pg_cancel_backend( 17 )"}])
    assert match_key([{"Query": "SELECT abs(4242)"}]) != match_key([{"Query": "SELECT abs(17)"}])


@pytest.mark.parametrize("sql,expected", [
    ("BEGIN", True), ("begin isolation level serializable", True), ("START TRANSACTION", True),
    ("COMMIT", True), ("END", True), ("ROLLBACK", True), ("ROLLBACK TO SAVEPOINT s1", True),
    ("SAVEPOINT s1", True), ("RELEASE SAVEPOINT s1", True), ("/* tx */ COMMIT", True),
    ("BEGIN; COMMIT", True), ("BEGIN; SELECT 1", False), ("SELECT 1", False),
    ("UPDATE t SET x = 1", False), ("", False),
])
def test_transaction_control_sql(sql, expected):
    assert is_transaction_sql(sql) is expected


@pytest.mark.parametrize(("sql", "redacted"), [
    ("ALTER ROLE bob WITH PASSWORD 'hunter2'", "ALTER ROLE bob WITH PASSWORD '<redacted>'"),
    ("create user x encrypted password 'SCRAM-SHA-256$4096:c2FsdA==$a2V5:c2Vydg==' valid until 'infinity'",
     "create user x encrypted password '<redacted>' valid until 'infinity'"),
    ("ALTER USER \"bob\" PASSWORD E'it''s\\'s'", "ALTER USER \"bob\" PASSWORD '<redacted>'"),
    ("ALTER ROLE x PASSWORD /* new */ $q$dollar$q$", "ALTER ROLE x PASSWORD /* new */ '<redacted>'"),
    ("CREATE USER MAPPING FOR bob SERVER s OPTIONS (user 'bob', password 'pw1')",
     "CREATE USER MAPPING FOR bob SERVER s OPTIONS (user 'bob', password '<redacted>')"),
    ("ALTER USER MAPPING FOR u SERVER s OPTIONS (SET \"password\" 'pw2')",
     "ALTER USER MAPPING FOR u SERVER s OPTIONS (SET \"password\" '<redacted>')"),
    ("SELECT dblink_connect('host=h dbname=d password=s3cret user=u')",
     "SELECT dblink_connect('host=h dbname=d password=<redacted> user=u')"),
    ("SELECT dblink_connect('c', 'postgresql://u:s3cret@h/db?sslmode=disable')",
     "SELECT dblink_connect('c', 'postgresql://u:<redacted>@h/db?sslmode=disable')"),
    ("CREATE SUBSCRIPTION s CONNECTION 'host=h password=''a b'' port=5' PUBLICATION p",
     "CREATE SUBSCRIPTION s CONNECTION 'host=h password=<redacted> port=5' PUBLICATION p"),
    ("alter role a password 'x';alter role b password 'y'",
     "alter role a password '<redacted>';alter role b password '<redacted>'"),
    # not passwords: data, a NULL password, a column named password
    ("UPDATE users SET password = 'x'", None), ("SELECT 'password'", None),
    ("ALTER ROLE x PASSWORD NULL", None), ("INSERT INTO u (name, password) VALUES ('a', 'b')", None),
])
def test_passwords_in_sql_are_redacted(sql, redacted):
    assert redact_sql(sql) == (redacted or sql)


@pytest.mark.parametrize("sql,expected", [
    ('drop type if exists "e"; create type "e" as enum (\'a\')', True),
    ("create schema if not exists s; create type s.c as (foo text, bar int8)", True),
    ("CREATE TABLE IF NOT EXISTS t (data text)", True), ("TRUNCATE t", True),
    ("alter table t add column b int", True), ("GRANT SELECT ON t TO u", True),
    ("create function f() returns int as $$ select 1 $$ language sql", True),
    ("create table t as select 1", False), ("CREATE MATERIALIZED VIEW v AS (select 1)", False),
    ("create table t as table u", False), ("create table t (a int); insert into t values (1)", False),
    ("INSERT INTO t VALUES (1)", False), ("", False),
    # the first words are found without the lexer, comments and quotes included
    ("-- setup\nCREATE TABLE t (a int)", True), ("/* x; */ drop table t; TRUNCATE u", True),
    ("SELECT 'create table t' -- drop", False), ("select 1; drop table t", False),
    ("drop table t; /* only a comment */", True), ("drop table t; $$x$$", False),
])
def test_schema_changes_repeat_their_last_answer(sql, expected):
    """A setup run more often at replay than recorded (a test suite's session fixture
    rerun) gets the last recorded answer again: a command tag, not data."""
    assert is_schema_sql(sql) is expected
    assert repeats([{"Query": sql}]) is (expected and bool(sql))

"""Client programs for ``tests/e2e/test_postgres_fidelity.py``:
``python -m tests.e2e.apps.pg_fidelity SCENARIO HOST PORT [ARGS...]`` talks to PostgreSQL
(user and database ``trproxy``) and prints one result per line, so a recorded and a
replayed run compare as text. Nothing printed depends on the run (no raw pids).

* ``kill-psycopg PASSWORD ORDER``: two connections, opened victim first (``ORDER`` =
  ``victim-first``) or killer first; the victim's pid from BackendKeyData agrees with
  ``pg_backend_pid()`` and with the pid of its NOTIFY; the killer terminates it with
  ``pg_terminate_backend(pid)``; the victim's next query fails as the server said.
* ``suicide PASSWORD``: ``pg_terminate_backend(pg_backend_pid())`` (the server answers
  FATAL and hangs up mid-query), then libpq's ``PQreset`` logs in again.
* ``kill-asyncpg PASSWORD``: a pool of two; each connection's ``get_server_pid()`` agrees
  with ``pg_backend_pid()``; one terminates the other.
* ``settings PASSWORD APP DATESTYLE TIMEZONE ENCODING``: psycopg and asyncpg connect with
  these startup settings and print what the server reported back.
* ``big-bind PASSWORD``: psycopg binds 32,800 parameters (Parse, Bind and, through
  libpq's describe, ParameterDescription with more than 32,767 entries).
* ``logins PASSWORD...``: one psycopg connection per password; ``refused SQLSTATE`` or
  ``ok`` and a query's result.
* ``set-passwords PASSWORD``: what psql's ``\\password`` sends (a SCRAM verifier made
  by libpq, with a new salt each time), a role created with a password, a user mapping
  with a password option.
"""

from __future__ import annotations

import asyncio
import sys


def dsn(host: str, port: str, password: str, **params: str) -> str:
    extra = "".join(f"&{k}={v}" for k, v in params.items())
    return f"postgresql://trproxy:{password}@{host}:{port}/trproxy?sslmode=disable{extra}"


def kill_psycopg(host: str, port: str, password: str, order: str) -> None:
    import psycopg

    conns = {}
    for role in (("victim", "killer") if order == "victim-first" else ("killer", "victim")):
        conns[role] = psycopg.connect(dsn(host, port, password), autocommit=True)
    victim, killer = conns["victim"], conns["killer"]
    heard: list = []
    killer.add_notify_handler(heard.append)
    killer.execute("LISTEN jobs")
    pid = victim.execute("SELECT pg_backend_pid()").fetchone()[0]
    print("BackendKeyData agrees with pg_backend_pid():", victim.info.backend_pid == pid)
    victim.execute("NOTIFY jobs, 'bye'")
    print("terminated:", killer.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0])
    print("heard the victim:", [(n.channel, n.payload, n.pid == pid) for n in heard])
    try:
        victim.execute("SELECT 1")
        print("victim still alive")
    except psycopg.OperationalError as exc:
        print("victim:", type(exc).__name__, exc.sqlstate)
    victim.close()
    killer.close()


def suicide(host: str, port: str, password: str) -> None:
    import psycopg
    from psycopg import pq

    conn = psycopg.connect(dsn(host, port, password), autocommit=True)
    pgconn = conn.pgconn
    result = pgconn.exec_(b"select pg_terminate_backend(pg_backend_pid())")
    print(pq.ExecStatus(result.status).name, result.error_field(pq.DiagnosticField.SQLSTATE),
          pq.ConnStatus(pgconn.status).name)
    pgconn.reset()
    print("after reset", pq.ConnStatus(pgconn.status).name, pgconn.exec_(b"select 6 * 7").get_value(0, 0))
    pgconn.finish()


def kill_asyncpg(host: str, port: str, password: str) -> None:
    import asyncpg

    async def main() -> None:
        pool = await asyncpg.create_pool(dsn(host, port, password), min_size=2, max_size=2)
        a, b = await pool.acquire(), await pool.acquire()
        for conn in (a, b):
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            print("get_server_pid() agrees with pg_backend_pid():", conn.get_server_pid() == pid)
        print("terminated:", await a.fetchval("SELECT pg_terminate_backend($1)", b.get_server_pid()))
        pool.terminate()

    asyncio.run(main())


def settings(host: str, port: str, password: str, app: str, datestyle: str, timezone: str,
             encoding: str) -> None:
    import asyncpg
    import psycopg

    names = ("application_name", "DateStyle", "TimeZone", "client_encoding", "IntervalStyle")
    options = f"-c DateStyle={datestyle}"  # given without spaces
    with psycopg.connect(dsn(host, port, password), application_name=app, options=options,
                         client_encoding=encoding) as conn:
        print("psycopg", [conn.info.parameter_status(n) for n in names], conn.info.encoding)
        conn.execute("SET TimeZone = 'UTC'")  # a ParameterStatus of its own, recorded

    async def main() -> None:
        conn = await asyncpg.connect(dsn(host, port, password), server_settings={
            "application_name": app, "DateStyle": datestyle, "TimeZone": timezone})
        got = conn.get_settings()
        print("asyncpg", [getattr(got, n) for n in names])
        await conn.close()

    asyncio.run(main())


def big_bind(host: str, port: str, password: str) -> None:
    import psycopg

    n = 32800
    values = list(range(n))
    holes = ", ".join(["%s"] * n)
    with psycopg.connect(dsn(host, port, password)) as conn:
        count = conn.execute(f"SELECT count(*) FROM generate_series(0, 99999) g WHERE g IN ({holes})",
                             values).fetchone()
        print("matched", count)
        pg = conn.pgconn
        sql = "SELECT 1 WHERE 0 IN (" + ", ".join(f"${i + 1}::int" for i in range(n)) + ")"
        prepared = pg.prepare(b"wide", sql.encode())
        described = pg.describe_prepared(b"wide")
        print("parameters described", psycopg.pq.ExecStatus(prepared.status).name, described.nparams)
        conn.rollback()


def logins(host: str, port: str, *passwords: str) -> None:
    import psycopg

    for password in passwords:
        try:
            with psycopg.connect(dsn(host, port, password)) as conn:
                print("ok", conn.execute("SELECT 40 + 2").fetchone())
        except psycopg.OperationalError as exc:
            print("refused", getattr(exc, "sqlstate", None) or _sqlstate(str(exc)))


def _sqlstate(message: str) -> str:
    """libpq reports a failed login as text, without its SQLSTATE."""
    return "28P01" if "password authentication failed" in message else message


def set_passwords(host: str, port: str, password: str, new: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn(host, port, password), autocommit=True) as conn:
        conn.execute("DROP USER MAPPING IF EXISTS FOR trproxy SERVER loop")
        conn.execute("DROP SERVER IF EXISTS loop")
        conn.execute("DROP ROLE IF EXISTS app")
        conn.execute(f"CREATE ROLE app LOGIN PASSWORD '{new}-1'")
        verifier = conn.pgconn.encrypt_password(new.encode(), b"app", b"scram-sha-256").decode()
        conn.execute(sql.SQL("ALTER USER app PASSWORD {}").format(sql.Literal(verifier)))  # psql's \password
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgres_fdw")
        conn.execute("CREATE SERVER loop FOREIGN DATA WRAPPER postgres_fdw OPTIONS (dbname 'trproxy')")
        conn.execute(f"CREATE USER MAPPING FOR trproxy SERVER loop OPTIONS (user 'app', password '{new}-2')")
        print("roles", conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'app'").fetchone())


SCENARIOS = {"kill-psycopg": kill_psycopg, "suicide": suicide, "kill-asyncpg": kill_asyncpg, "settings": settings,
             "big-bind": big_bind, "logins": logins, "set-passwords": set_passwords}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](*sys.argv[2:])

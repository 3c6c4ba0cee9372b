"""Client programs whose SQL carries values they generate, for
``tests/e2e/test_postgres_volatile.py``: ``python -m tests.e2e.apps.pg_volatile SCENARIO
HOST PORT [ARG]`` (user, password and database ``trproxy``). Prints only what does not
change between runs.

* ``psycopg [NAME]``: a uuid4 primary key inserted with ``INSERT ... RETURNING id`` (a Bind
  parameter), read back with ``SELECT ... WHERE id = %s`` and with the id as a SQL literal,
  a row holding an epoch and a random token; ``NAME`` (default ``apple``) is an ordinary
  value, for the negative test.
* ``register``: a user registered with Werkzeug's salted scrypt hash (a new salt every
  run), then a login that reads the hash back and checks the password against it.
* ``asyncpg [BUMP]``: nested transactions (asyncpg's ``SAVEPOINT __asyncpg_savepoint_<n>__``),
  a uuid4 inserted and returned; ``BUMP`` ids are taken from asyncpg's process-wide
  counter first, as statements prepared earlier in a longer-running process would.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
import uuid

DSN = "postgresql://trproxy:trproxy@{host}:{port}/trproxy?sslmode=disable"


def with_psycopg(host: str, port: str, name: str = "apple") -> None:
    import psycopg

    with psycopg.connect(DSN.format(host=host, port=port), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS vol_items (id uuid PRIMARY KEY, name text, "
                     "token text, at bigint)")
        new_id, token, now = uuid.uuid4(), secrets.token_hex(16), int(time.time())
        returned = conn.execute("INSERT INTO vol_items (id, name, token, at) VALUES (%s, %s, %s, %s) "
                                "RETURNING id", [new_id, name, token, now]).fetchone()[0]
        print("returned", returned == new_id, type(returned).__name__)
        row = conn.execute("SELECT name, token, at FROM vol_items WHERE id = %s", [new_id]).fetchone()
        print("selected", row[0], row[1] == token, abs(row[2] - now) < 60)
        count = conn.execute(f"SELECT count(*) FROM vol_items WHERE id = '{new_id}'").fetchone()[0]
        print("literal", count)
        conn.execute("DELETE FROM vol_items WHERE id = %s", [new_id])


def register(host: str, port: str) -> None:
    import psycopg
    from werkzeug.security import check_password_hash, generate_password_hash

    with psycopg.connect(DSN.format(host=host, port=port), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS vol_users (name text PRIMARY KEY, hash text)")
        conn.execute("INSERT INTO vol_users VALUES (%s, %s)", ["ann", generate_password_hash("s3cret")])
        stored = conn.execute("SELECT hash FROM vol_users WHERE name = %s", ["ann"]).fetchone()[0]
        print("login", check_password_hash(stored, "s3cret"), check_password_hash(stored, "guess"))
        conn.execute("DELETE FROM vol_users WHERE name = %s", ["ann"])


async def with_asyncpg(host: str, port: str, bump: str = "0") -> None:
    import asyncpg

    conn = await asyncpg.connect(DSN.format(host=host, port=port))
    for _ in range(int(bump)):
        conn._get_unique_id("stmt")
    await conn.execute("CREATE TABLE IF NOT EXISTS vol_nested (id uuid PRIMARY KEY, n int)")
    new_id = uuid.uuid4()
    async with conn.transaction():
        async with conn.transaction():  # SAVEPOINT __asyncpg_savepoint_<n>__
            returned = await conn.fetchval("INSERT INTO vol_nested VALUES ($1, 1) RETURNING id", new_id)
            print("returned", returned == new_id)
        try:
            async with conn.transaction():
                await conn.execute("INSERT INTO vol_nested VALUES ($1, 2)", new_id)
        except asyncpg.UniqueViolationError:
            print("rolled back to the savepoint")
        print("n", await conn.fetchval("SELECT n FROM vol_nested WHERE id = $1", new_id))
        await conn.execute("DELETE FROM vol_nested WHERE id = $1", new_id)
    await conn.close()


if __name__ == "__main__":
    scenario, host, port, *rest = sys.argv[1:]
    if scenario == "psycopg":
        with_psycopg(host, port, *rest)
    elif scenario == "register":
        register(host, port)
    else:
        asyncio.run(with_asyncpg(host, port, *rest))

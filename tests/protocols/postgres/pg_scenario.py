"""Client programs for end-to-end tests: ``python -m tests.protocols.postgres.pg_scenario
CLIENT HOST PORT [PASSWORD]`` talks to PostgreSQL at HOST:PORT (user/db ``trproxy``) and
prints what it got, one result per line, so a recorded and a replayed run compare as text.

Clients: ``psycopg`` (pipeline mode, COPY in and out, binary cursor, server-side prepared
statements, an error), ``asyncpg`` (prepared statements, binary codecs for arrays, jsonb,
uuid, timestamptz and an enum - which makes asyncpg introspect types -, executemany, COPY,
a cursor in a transaction, a pool), ``psycopg2`` and ``sqlalchemy`` (its dialect's catalog
queries on connect, ORM-style inserts and selects). ``miss`` runs a query nobody recorded.
"""

from __future__ import annotations

import asyncio
import sys


def psycopg_client(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, prepare_threshold=2) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS item (id int PRIMARY KEY, name text, price numeric)")
        with conn.pipeline():
            conn.execute("INSERT INTO item VALUES (%s, %s, %s)", (1, "apple", 1.5))
            conn.execute("INSERT INTO item VALUES (%s, %s, %s)", (2, "pear", 2))
            cur = conn.execute("SELECT id, name FROM item WHERE id > %s ORDER BY id", (0,))
            print(cur.fetchall())
        for _ in range(4):
            print(conn.execute("SELECT name, price FROM item WHERE id = %s", (1,)).fetchone())
        with conn.cursor() as cur:
            with cur.copy("COPY item (id, name) FROM STDIN") as copy:
                copy.write_row((10, "kiwi"))
                copy.write_row((11, "lime"))
            with cur.copy("COPY (SELECT id, name FROM item ORDER BY id) TO STDOUT") as copy:
                print([tuple(r) for r in copy.rows()])
        with conn.cursor(binary=True) as cur:
            cur.execute("SELECT id, name, price, now() FROM item WHERE id = %s", (10,))
            print(cur.fetchall())
        conn.commit()
        try:
            conn.execute("SELECT * FROM no_such_table")
        except psycopg.Error as exc:
            print("error", exc.sqlstate, str(exc).splitlines()[0])
        conn.rollback()
        print(conn.execute("SELECT count(*) FROM item").fetchone())


def asyncpg_client(dsn: str) -> None:
    import asyncpg

    async def main() -> None:
        conn = await asyncpg.connect(dsn)
        await conn.execute("DROP TYPE IF EXISTS mood CASCADE; CREATE TYPE mood AS ENUM ('ok', 'sad')")
        await conn.execute("CREATE TABLE IF NOT EXISTS ev (id int, tags text[], doc jsonb, "
                           "at timestamptz, m mood, u uuid)")
        await conn.execute("INSERT INTO ev VALUES ($1, $2, $3, '2024-01-02T03:04:05Z', $4, $5)",
                           1, ["a", "b"], '{"k": [1, 2]}', "ok", "6f1a5b9e-0d3c-4c5e-9a1b-2c3d4e5f6a7b")
        print([tuple(r) for r in await conn.fetch("SELECT * FROM ev WHERE id = $1", 1)])
        stmt = await conn.prepare("SELECT count(*) FROM ev WHERE id >= $1")
        print(await stmt.fetchval(0), await stmt.fetchval(2))
        await conn.executemany("INSERT INTO ev (id, m) VALUES ($1, $2)", [(2, "sad"), (3, "ok")])
        await conn.copy_records_to_table("ev", records=[(4, ["x"])], columns=["id", "tags"])
        async with conn.transaction():
            print([r["id"] async for r in conn.cursor("SELECT id FROM ev ORDER BY id", prefetch=2)])
        try:
            await conn.fetch("SELECT 1/0")
        except asyncpg.PostgresError as exc:
            print("error", exc.sqlstate, exc)
        await conn.close()
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=2)
        print(sorted(await asyncio.gather(*(pool.fetchval("SELECT $1::int * 2", i) for i in range(8)))))
        await pool.close()

    asyncio.run(main())


def psycopg2_client(dsn: str) -> None:
    import psycopg2

    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("CREATE TABLE IF NOT EXISTS kv (k text PRIMARY KEY, v int)")
    cur.executemany("INSERT INTO kv VALUES (%s, %s)", [("a", 1), ("b", 2)])
    cur.execute("SELECT k, v FROM kv WHERE v >= %s ORDER BY k", (1,))
    print(cur.fetchall())
    conn.commit()
    conn.close()


def sqlalchemy_client(dsn: str) -> None:
    from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select

    engine = create_engine(dsn.replace("postgresql://", "postgresql+psycopg://"))
    meta = MetaData()
    plant = Table("plant", meta, Column("id", Integer, primary_key=True), Column("name", String(50)))
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(plant), [{"name": "fern"}, {"name": "moss"}])
    with engine.connect() as conn:
        print(conn.execute(select(plant).order_by(plant.c.id)).all())
    engine.dispose()


def miss_client(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute("SELECT 'this was never recorded'")
        except psycopg.Error as exc:
            print("error", exc.sqlstate, str(exc).splitlines()[0])
        print(conn.execute("SELECT 40 + 2").fetchone())  # the connection is still usable


CLIENTS = {"psycopg": psycopg_client, "asyncpg": asyncpg_client, "psycopg2": psycopg2_client,
           "sqlalchemy": sqlalchemy_client, "miss": miss_client}

if __name__ == "__main__":
    client, host, port = sys.argv[1:4]
    password = sys.argv[4] if len(sys.argv) > 4 else "trproxy"
    CLIENTS[client](f"postgresql://trproxy:{password}@{host}:{port}/trproxy?sslmode=prefer")

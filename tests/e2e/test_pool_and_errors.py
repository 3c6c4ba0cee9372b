"""PostgreSQL pools and server errors through the real CLI, with the eBPF redirect.

``trproxy record`` runs a real client against a real server, the server is stopped,
``trproxy replay`` runs the same client, and both runs must print the same thing:

* an asyncpg pool of 10 connections serving 40 concurrent tasks (parameterized
  SELECTs, transactions that INSERT then SELECT their row, prepared statements, binary
  codecs). Replay starts the tasks in reverse order, so the pool hands the queries to
  other connections in another order, and every task must still get its own answer
  (results are printed sorted by task id);
* a unique violation in psycopg 3 and in asyncpg: replay raises the same SQLSTATE
  (23505) with the same constraint name.
"""

from __future__ import annotations

import os
import sys
import textwrap

import pytest
import yaml

from tests.support.proc import run_trproxy
from tests.support.services import PostgresServer

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)


POOL_CLIENT = r'''
import asyncio, datetime, decimal, json, sys, uuid
import asyncpg

dsn = sys.argv[1]
TASKS = 40
ORDER = list(range(TASKS))[::-1] if sys.argv[2:] == ["reverse"] else list(range(TASKS))


async def task(pool, i):
    out = {"task": i}
    day = datetime.date(2024, 1, 1) + datetime.timedelta(days=i)
    # a parameterized SELECT, different parameters per task, binary codecs both ways
    row = await pool.fetchrow(
        "SELECT $1::int AS id, $2::numeric * 3 AS n, $3::date + 1 AS d, $4::uuid AS u, "
        "$5::int[] || $1::int AS arr, $6::jsonb AS jb, $7::json AS j",
        i, decimal.Decimal(f"{i}.125"), day, uuid.UUID(int=i + 1),
        [i, i * 2], json.dumps({"task": i, "tags": ["a", i]}), json.dumps([i, "x"]))
    out["select"] = [row["id"], str(row["n"]), row["d"].isoformat(), str(row["u"]),
                     row["arr"], json.loads(row["jb"]), json.loads(row["j"])]
    async with pool.acquire() as conn:
        # a transaction: INSERT then read the inserted row back
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO items (id, price, day, ref, nums, doc) VALUES ($1, $2, $3, $4, $5, $6)",
                i, decimal.Decimal(i) / 8, day, uuid.UUID(int=1000 + i), list(range(i % 5)),
                json.dumps({"owner": f"task-{i}"}))
            r = await conn.fetchrow("SELECT id, price, day, ref, nums, doc FROM items WHERE id = $1", i)
        out["txn"] = [r["id"], str(r["price"]), r["day"].isoformat(), str(r["ref"]), r["nums"],
                      json.loads(r["doc"])]
        # a prepared statement, run twice with different parameters
        stmt = await conn.prepare("SELECT $1::int * $2::int AS product, $3::text || '-' || $1::text AS label")
        a = await stmt.fetchrow(i, 7, f"t{i}")
        b = await stmt.fetchval(i + 1, 11, "x")
        out["prepared"] = [a["product"], a["label"], b]
    return out


async def main():
    pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, price numeric, "
                           "day date, ref uuid, nums int[], doc jsonb)")
    results = await asyncio.gather(*(task(pool, i) for i in ORDER))
    total = await pool.fetchval("SELECT count(*) FROM items")
    await pool.close()
    for r in sorted(results, key=lambda r: r["task"]):
        print(json.dumps(r, sort_keys=True))
    print("items", total)


asyncio.run(main())
'''

UNIQUE_CLIENT = r'''
import asyncio, sys
import asyncpg, psycopg

dsn = sys.argv[1]
with psycopg.connect(dsn, autocommit=True) as conn:
    conn.execute("CREATE TABLE accounts (id int CONSTRAINT accounts_pkey PRIMARY KEY, "
                 "email text CONSTRAINT accounts_email_key UNIQUE)")
    conn.execute("INSERT INTO accounts VALUES (%s, %s)", (1, "ann@example.com"))
    try:
        conn.execute("INSERT INTO accounts VALUES (%s, %s)", (1, "bob@example.com"))
    except psycopg.errors.UniqueViolation as e:
        print("psycopg", type(e).__name__, e.sqlstate, e.diag.constraint_name, e.diag.table_name)
    print("psycopg after", conn.execute("SELECT count(*) FROM accounts").fetchone())


async def main():
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO accounts VALUES ($1, $2)", 2, "ann@example.com")
    except asyncpg.UniqueViolationError as e:
        print("asyncpg", type(e).__name__, e.sqlstate, e.constraint_name, e.table_name)
    print("asyncpg after", await conn.fetchval("SELECT count(*) FROM accounts"))
    await conn.close()


asyncio.run(main())
'''


def _record_then_replay(tmp_path, server: PostgresServer, source: str,  # type: ignore[no-untyped-def]
                        replay_args: tuple[str, ...] = ()):
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(source))
    rec = tmp_path / "rec"
    command = [sys.executable, str(script), server.dsn]
    recorded = run_trproxy("record", "--dir", str(rec), "--", *command, timeout=60)
    server.stop()
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    replayed = run_trproxy("replay", "--dir", str(rec), "--", *command, *replay_args, timeout=60)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    return recorded, replayed, (rec / "test-set-0" / "mocks.yaml").read_text()


def test_asyncpg_pool_of_10_with_40_concurrent_tasks(tmp_path, postgres_server) -> None:
    # replay starts the tasks in reverse order: the pool hands them to other connections
    recorded, replayed, mocks = _record_then_replay(tmp_path, postgres_server, POOL_CLIENT,
                                                    replay_args=("reverse",))
    lines = recorded.stdout.splitlines()
    assert len(lines) == 41 and lines[-1] == "items 40", recorded.stderr
    assert '"select": [7, "21.375", "2024-01-09", "00000000-0000-0000-0000-000000000008", [7, 14, 7], ' \
           '{"tags": ["a", 7], "task": 7}, [7, "x"]]' in lines[7]
    assert '"prepared": [273, "t39-39", 440]' in lines[39]
    assert replayed.stdout == recorded.stdout
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr
    docs = [d for d in yaml.safe_load_all(mocks) if d]
    assert sum(d["spec"]["summary"] == "startup trproxy@trproxy" for d in docs) == 10  # the pool
    inserts = [d["spec"]["metadata"]["connection"] for d in docs
               if d["spec"]["summary"].startswith("Execute INSERT INTO items")]
    assert len(inserts) == 40 and len(set(inserts)) > 1  # spread over the pool's connections


def test_unique_violation_replays_sqlstate_and_constraint(tmp_path, postgres_server) -> None:
    recorded, replayed, mocks = _record_then_replay(tmp_path, postgres_server, UNIQUE_CLIENT)
    assert recorded.stdout.splitlines() == [
        "psycopg UniqueViolation 23505 accounts_pkey accounts",
        "psycopg after (1,)",
        "asyncpg UniqueViolationError 23505 accounts_email_key accounts",
        "asyncpg after 1",
    ], recorded.stderr
    assert replayed.stdout == recorded.stdout
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr
    assert "23505" in mocks

"""Real clients against a real PostgreSQL through a tee relay, then against the replayer.

For each client (psycopg 3, asyncpg, psycopg2, psql) a scenario runs once through
``Relay`` (bytes to a real server, teed into PostgresRecorder), the server is destroyed,
and the same scenario runs against ``ReplayServer`` (PostgresReplayer + the recorded
interactions in the real store, after a trip through YAML): the client must see the same
results. The
captured streams also decode the same whole, byte by byte and split anywhere.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Callable
from typing import Any

import asyncpg
import psycopg
import psycopg2
import pytest
import yaml

from tests.protocols.postgres.streams import decode, record
from tests.support.chunking import bytewise, offsets, split_at, total
from tests.support.replay_server import ReplayServer
from tests.support.services import PostgresServer
from tests.support.tee import Relay
from trproxy.protocols.postgres import PostgresRecorder
from trproxy.protocols.postgres.readable import item_name

pytestmark = pytest.mark.slow


def names(items) -> list[str]:
    return [item_name(i) for i in items]


def dsn(at: Relay | ReplayServer, user: str = "trproxy", password: str = "trproxy",
        db: str = "trproxy", **params: str) -> str:
    extra = "".join(f"&{k}={v}" for k, v in params.items())
    return f"postgresql://{user}:{password}@{at.host}:{at.port}/{db}?sslmode=disable{extra}"


def tee_relay(server: PostgresServer) -> Relay:
    """A relay to ``server`` that tees each connection into a ``PostgresRecorder``."""
    return Relay((server.host, server.port), recorder=PostgresRecorder).start()


def record_and_replay(scenario: Callable[[str], Any], server: PostgresServer, **params: str):
    relay = tee_relay(server)
    try:
        recorded = scenario(dsn(relay, user=server.user, password=server.password, **params))
        relay.wait()
    finally:
        relay.close()
    server.destroy()  # replay has no server at all
    assert [s.error for s in relay.streams] == [None] * len(relay.streams)
    replay = ReplayServer("postgres", relay.interactions()).start()
    try:
        replayed = scenario(dsn(replay, user=server.user))
    finally:
        replay.close()
    assert replay.errors == []
    return recorded, replayed, relay, replay


def assert_split_independent(relay: Relay) -> None:
    for stream in relay.streams:
        chunks = stream.data_chunks()
        expected = decode(chunks)
        assert expected[1] is None and expected[0]
        assert decode(bytewise(chunks)) == expected
        interactions = record(chunks)
        assert interactions[1] is None
        for offset in offsets(total(chunks), every_up_to=25, samples=25, ends=3):
            assert decode(split_at(chunks, offset)) == expected
            assert record(split_at(chunks, offset)) == interactions


# --- psycopg 3 -----------------------------------------------------------------------------


def psycopg_scenario(dsn: str) -> list:
    out: list = []
    with psycopg.connect(dsn, prepare_threshold=2) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS item (id int PRIMARY KEY, name text, price numeric)")
        with conn.pipeline():
            conn.execute("INSERT INTO item VALUES (%s, %s, %s)", (1, "apple", 1.5))
            conn.execute("INSERT INTO item VALUES (%s, %s, %s)", (2, "pear", 2))
            cur = conn.execute("SELECT id, name FROM item WHERE id > %s ORDER BY id", (0,))
            out.append(cur.fetchall())
            conn.execute("INSERT INTO item VALUES (%s, %s, %s)", (3, "fig", None))
        for _ in range(4):  # prepared after the 2nd execution: Parse+Sync, then Bind only
            out.append(conn.execute("SELECT name FROM item WHERE id = %s", (1,)).fetchone())
        with conn.cursor() as cur:
            with cur.copy("COPY item (id, name) FROM STDIN") as copy:
                copy.write_row((10, "kiwi"))
                copy.write_row((11, "lime"))
            with cur.copy("COPY (SELECT id, name FROM item ORDER BY id) TO STDOUT") as copy:
                out.append([tuple(r) for r in copy.rows()])
        with conn.cursor(binary=True) as cur:
            cur.execute("SELECT id, name, price, now() > '2000-01-01' FROM item WHERE id = %s", (1,))
            out.append(cur.fetchall())
        try:
            conn.execute("SELECT * FROM no_such_table")
        except psycopg.errors.UndefinedTable as exc:
            out.append(("error", exc.sqlstate))
        conn.rollback()
        out.append(conn.execute("SHOW server_version_num").fetchone())
        conn.commit()
        conn.autocommit = True
        conn.execute("LISTEN jobs")
        conn.execute("NOTIFY jobs, 'job-42'")  # delivered with the answer to NOTIFY
        out.append([(n.channel, n.payload) for n in conn.notifies(timeout=0.5, stop_after=1)])
    return out


def test_psycopg(postgres_server):
    recorded, replayed, relay, replay = record_and_replay(psycopg_scenario, postgres_server)
    assert replayed == recorded
    assert recorded[0] == [(1, "apple"), (2, "pear")] and ("error", "42P01") in recorded
    assert recorded[-1] == [("jobs", "job-42")]
    assert replay.misses == []
    interactions = relay.interactions()
    shapes = [names(i.request) for i in interactions]
    # the pipeline: three statements answered before psycopg sent Sync, ended by Flush
    assert ["Parse", "Bind", "Describe", "Execute"] * 3 + ["Flush"] in shapes
    # the prepare (Parse+Sync) is answered by the replayer itself, so it is not recorded
    assert ["Parse", "Sync"] not in shapes
    assert ["Bind", "Describe", "Execute", "Sync"] in shapes
    copy_in = next(i for i in interactions if "FROM STDIN" in str(i.request[0]))
    assert copy_in.request[1:] == [{"CopyData": "10\tkiwi\n11\tlime\n"}, {"CopyDone": {}}]
    binary = next(i for i in interactions if "now() >" in str(i.request))
    row = next(r["DataRow"] for r in binary.responses if "DataRow" in r)
    assert row[0] == {"binary": "int4", "value": 1} and row[1] == {"binary": "text", "value": "apple"}
    assert row[3] == {"binary": "bool", "value": True}
    lifetimes = {i.summary: i.lifetime for i in interactions}
    assert lifetimes["Query SHOW server_version_num"] == "session"
    assert lifetimes["startup trproxy@trproxy"] == "session"
    assert_split_independent(relay)


# --- asyncpg -------------------------------------------------------------------------------


def asyncpg_scenario(dsn: str) -> list:
    async def main() -> list:
        out: list = []
        conn = await asyncpg.connect(dsn)
        await conn.execute("DROP TYPE IF EXISTS mood CASCADE; CREATE TYPE mood AS ENUM ('ok', 'sad')")
        await conn.execute("CREATE TABLE IF NOT EXISTS ev (id int, tags text[], doc jsonb, "
                           "at timestamptz, m mood, u uuid)")
        await conn.execute("INSERT INTO ev VALUES ($1, $2, $3, '2024-01-02T03:04:05Z', $4, $5)",
                           1, ["a", "b"], '{"k": [1, 2]}', "ok", "6f1a5b9e-0d3c-4c5e-9a1b-2c3d4e5f6a7b")
        out.append([tuple(r) for r in await conn.fetch("SELECT * FROM ev WHERE id = $1", 1)])
        stmt = await conn.prepare("SELECT count(*) FROM ev WHERE id >= $1")
        out.append(await stmt.fetchval(0))
        out.append(await stmt.fetchval(1))
        await conn.executemany("INSERT INTO ev (id, m) VALUES ($1, $2)", [(2, "sad"), (3, "ok")])
        await conn.copy_records_to_table("ev", records=[(4, ["x"])], columns=["id", "tags"])
        async with conn.transaction():
            out.append([r["id"] async for r in conn.cursor("SELECT id FROM ev ORDER BY id", prefetch=2)])
        try:
            await conn.fetch("SELECT 1/0")
        except asyncpg.DivisionByZeroError as exc:
            out.append(("error", exc.sqlstate))
        out.append(await conn.fetchval("SELECT $1::int[]", [1, 2]))
        await conn.close()
        return out

    return asyncio.run(main())


def test_asyncpg(postgres_server):
    recorded, replayed, relay, replay = record_and_replay(asyncpg_scenario, postgres_server)
    assert replayed == recorded
    assert recorded[-3] == [1, 2, 3, 4]
    assert replay.misses == []
    interactions = relay.interactions()
    # asyncpg prepares with Parse+Describe+Flush (metadata: session) and executes separately
    prepares = [i for i in interactions if names(i.request) == ["Parse", "Describe", "Flush"]]
    assert prepares and all(i.lifetime == "session" for i in prepares)
    introspection = [i for i in interactions if "typeinfo_tree" in str(i.request)]
    assert introspection and all(i.lifetime == "session" for i in introspection)
    insert = next(i for i in interactions if "INSERT INTO ev VALUES" in str(i.request)
                  and "Bind" in names(i.request))
    params = insert.request[0]["Bind"]["parameters"]
    assert params[0] == {"binary": "int4", "value": 1}
    assert params[4] == {"binary": "uuid", "value": "6f1a5b9e-0d3c-4c5e-9a1b-2c3d4e5f6a7b"}
    assert_split_independent(relay)


def test_asyncpg_pool_replays_across_connections(postgres_server):
    async def main(dsn: str) -> list:
        pool = await asyncpg.create_pool(dsn, min_size=3, max_size=3)
        results = await asyncio.gather(*(pool.fetchval("SELECT $1::int * 2", i) for i in range(24)))
        await pool.close()
        return sorted(results)

    recorded, replayed, relay, replay = record_and_replay(lambda dsn: asyncio.run(main(dsn)),
                                                          postgres_server)
    assert recorded == replayed == [2 * i for i in range(24)]
    assert replay.misses == []


def test_more_transactions_at_replay_than_recorded_do_not_miss(postgres_server):
    """BEGIN/COMMIT answers hold no data: an app that opens another transaction at replay
    (a retry, a pool's different split) gets them again instead of a miss."""
    runs: list[str] = []

    def scenario(dsn: str) -> list:
        runs.append(dsn)
        out = []
        with psycopg.connect(dsn) as conn:  # not autocommit: BEGIN before each transaction
            for _ in range(len(runs)):  # one transaction recorded, two replayed
                out.append(conn.execute("SELECT current_setting('TimeZone')").fetchone())
                conn.commit()
        return out

    recorded, replayed, relay, replay = record_and_replay(scenario, postgres_server)
    assert len(recorded) == 1 and replayed == recorded * 2
    assert replay.misses == []
    transaction = [lk for lk in replay.lookups if lk.summary in ("Query BEGIN", "Query COMMIT")]
    assert [lk.context.repeat for lk in transaction] == [False, False, True, True]
    assert all(lk.context.repeat_last for lk in transaction)


def test_replay_miss_is_a_server_error_and_the_connection_stays_usable(postgres_server):
    async def asyncpg_part(dsn: str, replaying: bool) -> tuple:
        conn = await asyncpg.connect(dsn)
        miss = None
        if replaying:
            with pytest.raises(asyncpg.PostgresError) as info:
                await conn.fetchval("SELECT 'never recorded'")
            miss = (info.value.sqlstate, str(info.value))
        value = await conn.fetchval("SELECT 41 + 1")
        await conn.close()
        return miss, value

    def psycopg_part(dsn: str, replaying: bool) -> tuple:
        with psycopg.connect(dsn, autocommit=True) as conn:
            miss = None
            if replaying:
                with pytest.raises(psycopg.errors.InternalError_) as info:
                    with conn.pipeline():
                        conn.execute("SELECT %s::text", ("nope",))
                miss = str(info.value)
            return miss, conn.execute("SELECT 41 + 1").fetchone()

    relay = tee_relay(postgres_server)
    try:
        assert asyncio.run(asyncpg_part(dsn(relay), False)) == (None, 42)
        assert psycopg_part(dsn(relay), False) == (None, (42,))
        relay.wait()
    finally:
        relay.close()
    postgres_server.destroy()
    replay = ReplayServer("postgres", relay.interactions()).start()
    try:
        (sqlstate, message), value = asyncio.run(asyncpg_part(dsn(replay), True))
        psycopg_miss, psycopg_value = psycopg_part(dsn(replay), True)
    finally:
        replay.close()
    assert sqlstate == "XX000"
    assert message.startswith("trproxy: no recording for Parse SELECT 'never recorded'")
    assert value == 42
    assert psycopg_miss.startswith("trproxy: no recording for Execute SELECT $1::text")
    assert psycopg_value == (42,)
    assert len(replay.misses) == 2


# --- psycopg2 and psql ------------------------------------------------------------------------


def psycopg2_scenario(dsn: str) -> list:
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("CREATE TABLE IF NOT EXISTS kv (k text PRIMARY KEY, v int)")
    cur.executemany("INSERT INTO kv VALUES (%s, %s)", [("a", 1), ("b", 2)])
    cur.execute("SELECT k, v FROM kv WHERE v >= %s ORDER BY k", (1,))
    rows = cur.fetchall()
    conn.commit()
    conn.close()
    return rows


def test_psycopg2(postgres_server):
    recorded, replayed, relay, replay = record_and_replay(psycopg2_scenario, postgres_server)
    assert recorded == replayed == [("a", 1), ("b", 2)]
    assert replay.misses == []
    assert all(names(i.request)[0] in ("StartupMessage", "Query") for i in relay.interactions())


PSQL_SCRIPT = """
CREATE TABLE t (i int, s varchar);
INSERT INTO t VALUES (42, 'forty-two'), (86, 'eighty-six');
SELECT * FROM t ORDER BY i;
INSERT INTO t VALUES (now());
COPY t TO STDOUT;
SELECT count(*) FROM t;
"""


def psql_scenario(dsn: str) -> str:
    env = dict(os.environ, PGPASSWORD="trproxy", PGSSLMODE="prefer")  # SSLRequest, answered N
    dsn = dsn.replace("?sslmode=disable", "")
    r = subprocess.run(["psql", "-X", "-A", "-t", "-d", dsn, "-c", PSQL_SCRIPT.replace("\n", " ")],
                       capture_output=True, text=True, env=env, timeout=30)
    return r.stdout + r.stderr


def test_psql(postgres_server):
    recorded, replayed, relay, replay = record_and_replay(psql_scenario, postgres_server)
    assert "42|forty-two" in recorded and "ERROR:" in recorded
    assert replayed == recorded
    startup = relay.interactions()[0]
    assert names(startup.request)[:2] == ["SSLRequest", "StartupMessage"]


# --- authentication and redaction -------------------------------------------------------------


@pytest.mark.parametrize("auth", ["scram-sha-256", "md5", "password", "trust"])
def test_authentication_is_recorded_without_secrets(auth):
    server = PostgresServer(auth=auth, password="Sekr1t-Pa55").start()
    try:
        relay = tee_relay(server)
        try:
            with psycopg.connect(dsn(relay, password="Sekr1t-Pa55")) as conn:
                conn.execute("SELECT 1")
            relay.wait()
        finally:
            relay.close()
    finally:
        server.destroy()
    # a cleartext or MD5 login is two interactions: up to the password request, then the rest
    startup = relay.interactions()[:2 if auth in ("md5", "password") else 1]
    text = yaml.safe_dump([[i.request, i.responses] for i in startup])
    expected = {"scram-sha-256": ["AuthenticationSASL", "AuthenticationSASLContinue",
                                  "AuthenticationSASLFinal"],
                "md5": ["AuthenticationMD5Password"],
                "password": ["AuthenticationCleartextPassword"], "trust": []}[auth]
    assert [n for i in startup for n in names(i.responses) if n.startswith("Authentication")] == [
        *expected, "AuthenticationOk"]
    assert "secret_key: <redacted>" in text  # the cancel key, whatever the authentication
    assert ("<redacted:scrypt:" in text) is (auth in ("md5", "password"))
    assert "Sekr1t" not in text
    assert not re.search(r"md5[0-9a-f]{32}", text)
    assert "c=biws" not in text and "r=" not in text and "p=" not in text
    carried = {"scram-sha-256": b"c=biws", "md5": b"md5", "password": b"Sekr1t-Pa55", "trust": b""}
    assert carried[auth] in relay.streams[0].data("client")  # the bytes did carry them


def large_object_scenario(dsn: str) -> list:
    """libpq's large-object calls use the FunctionCall message (PQfn)."""
    conn = psycopg2.connect(dsn)
    lo = conn.lobject(0, "wb")
    lo.write(b"hello large object")
    oid = lo.oid
    lo.close()
    conn.commit()
    data = conn.lobject(oid, "rb").read()
    conn.commit()
    conn.close()
    return [data]


def test_function_calls_of_large_objects(postgres_server):
    recorded, replayed, relay, replay = record_and_replay(large_object_scenario, postgres_server)
    assert recorded == replayed == [b"hello large object"]
    assert replay.misses == []
    calls = [i for i in relay.interactions() if names(i.request) == ["FunctionCall"]]
    assert len(calls) >= 4  # lo_creat, lo_open, lowrite, lo_close, loread...
    assert all(names(i.responses) == ["FunctionCallResponse", "ReadyForQuery"] for i in calls)


def test_default_handshake_satisfies_real_clients():
    """With no recorded startup at all, the synthesized handshake lets clients connect."""
    replay = ReplayServer("postgres").start()

    async def with_asyncpg() -> tuple:
        conn = await asyncpg.connect(dsn(replay, user="someone", db="elsewhere"))
        version = conn.get_server_version()
        with pytest.raises(asyncpg.PostgresError, match="trproxy: no recording"):
            await conn.fetchval("SELECT 1")
        await conn.close()
        return version.major, version.minor

    try:
        assert asyncio.run(with_asyncpg()) == (15, 0)
        with psycopg.connect(dsn(replay, user="someone")) as conn:
            assert conn.info.server_version == 150000
            assert conn.info.parameter_status("client_encoding") == "UTF8"
        conn2 = psycopg2.connect(dsn(replay))
        assert conn2.server_version == 150000
        conn2.close()
    finally:
        replay.close()
    assert replay.errors == []

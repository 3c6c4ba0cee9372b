"""Replay's shortcuts serve what the full path serves (issue 15): a Redis chunk parsed
once (``replayer._CHUNKS``), a match key computed once per distinct request
(``LookupContext.same_as``, ``MockPool._keys``: Redis arguments, a Postgres Query's
text), an answer rendered once (``replayer._RENDERED``), a Postgres statement classified
once per shape (``sql.by_shape``). Each scenario is replayed twice on fresh runs: with every
memo emptied before each step (the full path), and with the memos warmed by a first
run; the transcripts (bytes, misses, answers out of order, closes) must be equal."""

from __future__ import annotations

from typing import Any

import pytest

from tests.protocols.postgres.build import HANDSHAKE, STARTUP, Replay, client, record, server, wire
from tests.support.replay_server import Mocks
from trproxy.protocols.postgres import backend as be
from trproxy.protocols.postgres import frontend as fe
from trproxy.protocols.postgres import sql as pg_sql
from trproxy.protocols.redis import replayer as redis_replayer
from trproxy.protocols.redis.resp import Command, encode_command
from trproxy.proxy.engine import ClientClosed, ClientData, Event, Miss, OutOfOrder, Send
from trproxy.store.model import Exchange

TOKEN = "1dd943eaeebc11f1bb1402fc00000001"  # recorded
LIVE = "7c21b0e4a9d811f1a3b502fc00000002"  # what the app sends at replay


def cmd(*args: str) -> bytes:
    return encode_command(Command(tuple(a.encode() for a in args)))


Script = list[tuple[int, Event]]  # (live connection, event)


def transcript(recorded: list[Any], script: Script, *, full: bool) -> list[tuple[int, str]]:
    """What each live connection got, step by step (``full``: no memo survives a step)."""
    mocks = Mocks("redis", recorded)
    sessions: dict[int, Any] = {}
    out: list[tuple[int, str]] = []
    for n, event in script:
        if n not in sessions:
            sessions[n] = mocks.session(redis_replayer.RedisReplayer())
        if full:
            redis_replayer._CHUNKS.clear()
            redis_replayer._RENDERED.clear()
            mocks.pool._keys.clear()
        for c in mocks.step(sessions[n], event, 1.0):
            if isinstance(c, Miss):
                out.append((n, f"miss {c.summary}: {c.reason}"))
            elif isinstance(c, OutOfOrder):
                out.append((n, f"out of order {c.summary}: {[s['request'] for s in c.entry['skipped']]}"))
            elif isinstance(c, Send):
                out.append((n, f"send {c.data!r}"))
            else:
                out.append((n, type(c).__name__))
    out.append((-1, f"unused {[e.summary for e in mocks.ctx.ledger.unused()]}"))
    return out


def same_both_ways(recorded: list[Any], script: Script, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """The transcript, checked equal with and without the memos; and that the memos
    were used (a chunk seen before is not parsed again)."""
    full = transcript(recorded, script, full=True)
    transcript(recorded, script, full=False)  # warms the memos
    parsed: list[tuple[bytes, ...]] = []
    command = redis_replayer._command
    monkeypatch.setattr(redis_replayer, "_command", lambda args: parsed.append(args) or command(args))
    fast = transcript(recorded, script, full=False)
    assert fast == full
    assert len(parsed) < sum(1 for _n, e in script if isinstance(e, ClientData))
    return full


def ex(request: list[str], responses: list[Any], *, connection: int = 1, seq: int = 0,
       summary: str = "", volatile: bool = False) -> Exchange:
    return Exchange("redis", "127.0.0.1:0", request, responses, summary=summary or request[0],
                    connection=connection, seq=seq, order=seq,
                    extra={"volatile": [TOKEN]} if volatile else {})


SET, GET = cmd("SET", "key:__rand_int__", "xxx"), cmd("GET", "key:__rand_int__")


def test_a_benchmark_gets_the_same_answers_misses_and_order_reports(monkeypatch):
    """Two recorded connections; the live ones take answers across them (out of order),
    pipeline, and run past the recordings (misses)."""
    set_, get = ["SET", "key:__rand_int__", "xxx"], ["GET", "key:__rand_int__"]
    recorded = [ex(set_, [{"simple": "OK"}], connection=1, seq=1), ex(["GET", "other"], [None], connection=1, seq=2),
                ex(set_, [{"simple": "OK"}], connection=1, seq=3), ex(get, ["xxx"], connection=1, seq=4),
                ex(set_, [{"simple": "OK"}], connection=2, seq=5), ex(set_, [{"simple": "OK"}], connection=2, seq=6),
                ex(get, ["xxx"], connection=2, seq=7)]
    script: Script = [(0, ClientData(SET)), (1, ClientData(SET)), (0, ClientData(GET)),
                      (1, ClientData(SET + SET)), (0, ClientData(GET + GET)), (1, ClientData(SET)),
                      (0, ClientData(cmd("GET", "other"))), (1, ClientClosed()), (0, ClientClosed())]
    out = same_both_ways(recorded, script, monkeypatch)
    assert any("out of order" in line for _n, line in out)
    assert any(line.startswith("miss SET") for _n, line in out)


def test_the_live_clients_resp_version_and_reply_mode_are_kept(monkeypatch):
    """The same bytes answered to a RESP3 client (after HELLO 3) and a RESP2 one differ;
    CLIENT REPLY SKIP silences the next (memoized) request; QUIT still closes."""
    answer = {"map": [["a", {"int": 1}]]}
    recorded = [ex(["HGETALL", "h"], [answer], seq=n) for n in range(1, 5)]
    recorded.append(ex(["HELLO", "3"], [{"map": [["proto", {"int": 3}]]}], seq=9))
    hgetall = cmd("HGETALL", "h")
    script: Script = [(0, ClientData(hgetall)), (1, ClientData(cmd("HELLO", "3"))), (1, ClientData(hgetall)),
                      (0, ClientData(hgetall)), (0, ClientData(cmd("CLIENT", "REPLY", "SKIP"))),
                      (0, ClientData(hgetall)), (0, ClientData(cmd("QUIT"))), (1, ClientData(cmd("QUIT")))]
    out = same_both_ways(recorded, script, monkeypatch)
    sends = [line for n, line in out if line.startswith("send")]
    assert sends[0] == "send b'*2\\r\\n$1\\r\\na\\r\\n:1\\r\\n'"  # RESP2: the map as an array
    assert "send b'%1\\r\\n$1\\r\\na\\r\\n:1\\r\\n'" in sends  # RESP3: a map
    assert [n for n, line in out if line == "Close"] == [0, 1]


def test_a_chunk_seen_whole_is_parsed_anew_after_a_partial_request(monkeypatch):
    """``GET a`` is memoized as a chunk; after ``SET a`` (inline, no line end yet) the
    same bytes end that request: one ``SET a GET a``, not a ``GET a``."""
    recorded = [ex(["GET", "a"], ["1"], seq=1), ex(["GET", "a"], ["2"], seq=2)]
    script: Script = [(0, ClientData(b"GET a\r\n")), (1, ClientData(b"SET a ")), (1, ClientData(b"GET a\r\n")),
                      (1, ClientData(b"GET a\r\n"))]
    out = same_both_ways(recorded, script, monkeypatch)
    assert (1, "miss SET: no recorded request matches") in out
    assert (1, "send b'$1\\r\\n2\\r\\n'") in out


def test_a_request_rewritten_with_mapped_values_is_looked_up_by_its_own_key(monkeypatch):
    """The same bytes twice: the first matches through its volatile value (and maps it),
    the second is rewritten to the recorded value first, and matches exactly a recording
    without volatile values: a key kept from the first bytes would miss it."""
    recorded = [ex(["GET", "k", TOKEN], ["first"], seq=1, volatile=True),
                ex(["GET", "k", TOKEN], ["second"], seq=2)]
    script: Script = [(0, ClientData(cmd("GET", "k", LIVE))), (0, ClientData(cmd("GET", "k", LIVE)))]
    out = same_both_ways(recorded, script, monkeypatch)
    assert out[:2] == [(0, "send b'$5\\r\\nfirst\\r\\n'"), (0, "send b'$6\\r\\nsecond\\r\\n'")]


def test_answers_equal_in_python_but_not_as_recorded_are_rendered_apart(monkeypatch):
    """``{"int": True} == {"int": 1}`` in Python, but only the second is a Redis integer:
    the render memo keys on the answer's text, so the first stays a reported miss."""
    recorded = [ex(["GET", "a"], [{"int": 1}], seq=1), ex(["GET", "a"], [{"int": True}], seq=2),
                ex(["GET", "a"], [{"int": 1}], seq=3)]
    script: Script = [(0, ClientData(cmd("GET", "a"))) for _ in range(3)]
    out = same_both_ways(recorded, script, monkeypatch)
    assert out[0] == (0, "send b':1\\r\\n'") and out[-2] == (0, "send b':1\\r\\n'")
    assert out[1][1].startswith("miss GET: the recorded answer cannot be replayed: EncodeError")


def test_only_small_requests_without_secrets_are_remembered():
    """The memos are bounded in size, and keep no password: a large request or a login
    is neither kept as a chunk nor named by its arguments (the pool keeps keys by them)."""
    replayer = redis_replayer.RedisReplayer()
    big, login = cmd("SET", "k", "x" * 5000), cmd("AUTH", "s3cret")
    lookups = replayer.feed(big) + replayer.feed(login) + replayer.feed(cmd("SET", "k", "x"))
    assert [lookup.context.same_as for lookup in lookups] == [None, None, (b"SET", b"k", b"x")]
    assert all(big not in chunks and login not in chunks for chunks in redis_replayer._CHUNKS.values())


# --- Postgres: classification by statement shape, match keys by statement text --------


def pg_transcript(recorded: list[Any], script: list[tuple[int, bytes]], *, full: bool) -> list[tuple[int, str]]:
    """What each live Postgres connection got (``full``: no shape memo nor key survives a
    step); each connection logs in first."""
    mocks = Mocks("postgres", recorded)
    replays: dict[int, Replay] = {}
    out: list[tuple[int, str]] = []
    for n, data in script:
        if full:
            for memo in pg_sql.SHAPE_MEMOS:
                memo.clear()
            mocks.pool._keys.clear()
        if n not in replays:
            replays[n] = Replay(mocks=mocks, backends=mocks.backends)
            out.append((n, f"login {replays[n].send(STARTUP)!r}"))
        answer = replays[n].send(raw=data)
        out.append((n, f"{answer!r} closed={replays[n].closed}"))
    out.append((-1, f"misses {[(m['request'], m['reason']) for m in mocks.misses]}"))
    out.append((-1, f"unused {[e.summary for e in mocks.unused()]}"))
    return out


def test_pgbench_like_statements_get_the_answers_of_the_full_path(monkeypatch):
    """Statements that differ only in their numbers share one classification: a pgbench
    SELECT, transaction control that repeats, a setting, a sleep, a ROLLBACK never
    recorded, pg_backend_pid; some recorded, some not (misses); Query texts repeated
    (the pool's keys by text)."""
    int4 = be.FieldDescription("abalance", 16397, 3, 23, 4, -1, 0)

    def select(aid: int) -> fe.Query:
        return fe.Query(f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid};")

    def rows(*values: bytes) -> list[Any]:
        return [be.RowDescription((int4,)), *(be.DataRow((v,)) for v in values),
                be.CommandComplete(f"SELECT {len(values)}"), be.ReadyForQuery("I")]

    chunks = [client(STARTUP), server(*HANDSHAKE)]
    for request, answer in [
            ([select(1)], rows(b"0")), ([select(22)], rows(b"-5")), ([select(1)], rows(b"7")),
            ([fe.Query("BEGIN")], [be.CommandComplete("BEGIN"), be.ReadyForQuery("T")]),
            ([select(333)], [be.RowDescription((int4,)), be.DataRow((b"1",)), be.CommandComplete("SELECT 1"),
                             be.ReadyForQuery("T")]),
            ([fe.Query("COMMIT")], [be.CommandComplete("COMMIT"), be.ReadyForQuery("I")]),
            ([fe.Query("SET statement_timeout = 1000")], [be.CommandComplete("SET"), be.ReadyForQuery("I")]),
            ([fe.Query("SELECT pg_sleep(0)")], rows(b"")),
            ([fe.Query("SELECT pg_backend_pid()")], rows(b"4242")),
            ([fe.Query("CREATE TABLE t1 (a int)")], [be.CommandComplete("CREATE TABLE"), be.ReadyForQuery("I")])]:
        chunks += [client(*request), server(*answer)]
    recorded = record(*chunks)
    script = [(0, wire(select(1))), (1, wire(select(22))), (0, wire(select(4444))), (1, wire(select(1))),
              (0, wire(fe.Query("BEGIN"))), (0, wire(select(333))), (0, wire(fe.Query("COMMIT"))),
              (1, wire(fe.Query("BEGIN"))), (1, wire(select(22))), (1, wire(fe.Query("COMMIT"))),
              (0, wire(fe.Query("SET statement_timeout = 2000"))), (0, wire(fe.Query("SET statement_timeout = 1000"))),
              (1, wire(fe.Query("SET statement_timeout = 1000"))), (0, wire(fe.Query("SELECT pg_sleep(0)"))),
              (1, wire(fe.Query("SELECT pg_sleep(1)"))), (0, wire(fe.Query("ROLLBACK"))),
              (1, wire(fe.Query("SELECT pg_backend_pid()"))), (0, wire(fe.Query("CREATE TABLE t1 (a int)"))),
              (1, wire(fe.Query("CREATE TABLE t1 (a int)"))), (1, wire(fe.Query("CREATE TABLE t2 (a int)"))),
              (0, wire(select(1), select(1)))]
    full = pg_transcript(recorded, script, full=True)
    pg_transcript(recorded, script, full=False)  # warms the memos
    classified: list[str] = []
    monkeypatch.setattr(pg_sql, "_session_statement",
                        lambda text, f=pg_sql._session_statement: classified.append(text) or f(text))
    assert pg_transcript(recorded, script, full=False) == full
    assert len(classified) < len(script)  # the shapes were known
    assert sum("no recording" in line for _n, line in full) >= 2  # misses were part of it

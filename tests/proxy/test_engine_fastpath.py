"""Replay's shortcuts serve what the full path serves (issue 15): a Redis chunk parsed
once (``replayer._CHUNKS``), a match key computed once per distinct request
(``LookupContext.same_as``, ``MockPool._keys``: Redis arguments, a Postgres Query's
text, an HTTP request's shared head), an answer rendered once (Redis and Postgres
``replayer._RENDERED``, HTTP's ``render._RENDERED``), a Postgres statement classified
once per shape (``sql.by_shape``) and per text (``matching._TRAITS``), an HTTP request
head parsed once (``h1._HEADS``) and made readable once (``h1_replay._KNOWN``), the equal
requests of a pipeline looked up in the bucket of the first (``MockPool.again``). Each
scenario is replayed twice on fresh runs: with every memo emptied before each step and
each request looked up alone (the full path), and with the memos warmed by a first run;
the transcripts (bytes, misses, answers out of order, closes) must be equal."""

from __future__ import annotations

from typing import Any

import pytest

from tests.protocols.postgres.build import HANDSHAKE, STARTUP, Replay, client, record, server, wire
from tests.support.replay_server import Mocks
from trproxy.protocols.http import h1, h1_replay
from trproxy.protocols.http import render as http_render
from trproxy.protocols.http.replayer import HttpReplayer
from trproxy.protocols.postgres import backend as be
from trproxy.protocols.postgres import frontend as fe
from trproxy.protocols.postgres import matching as pg_matching
from trproxy.protocols.postgres import render as pg_render
from trproxy.protocols.postgres import replayer as pg_replayer
from trproxy.protocols.postgres import sql as pg_sql
from trproxy.protocols.redis import replayer as redis_replayer
from trproxy.protocols.redis.resp import Command, encode_command
from trproxy.proxy import engine
from trproxy.proxy.engine import (
    ClientClosed,
    ClientData,
    Event,
    Injected,
    Miss,
    Notify,
    OutOfOrder,
    Send,
)
from trproxy.proxy.faults import FaultPlan, parse_rule
from trproxy.store.matcher import MockPool
from trproxy.store.model import Exchange

TOKEN = "1dd943eaeebc11f1bb1402fc00000001"  # recorded
LIVE = "7c21b0e4a9d811f1a3b502fc00000002"  # what the app sends at replay


def cmd(*args: str) -> bytes:
    return encode_command(Command(tuple(a.encode() for a in args)))


Script = list[tuple[int, Event]]  # (live connection, event)


#: the memos of the Redis and HTTP scenarios, emptied before each step of a full run
MEMOS: list[dict[Any, Any]] = [redis_replayer._CHUNKS, redis_replayer._RENDERED, h1._HEADS, h1_replay._KNOWN,
                               http_render._RENDERED]
REPLAYERS = {"redis": redis_replayer.RedisReplayer, "http": HttpReplayer}


def transcript(recorded: list[Any], script: Script, *, full: bool, protocol: str = "redis",
               faults: tuple[str, ...] = (), test: str | None = None) -> list[tuple[int, str]]:
    """What each live connection got, step by step (``full``: no memo survives a step,
    and each request of a pipeline is looked up alone); ``faults``: rules injected;
    ``test``: the test being replayed."""
    mocks = Mocks(protocol, recorded)
    mocks.ctx.faults = FaultPlan([parse_rule(r) for r in faults]) if faults else None
    mocks.ctx.current_test = test
    sessions: dict[int, Any] = {}
    out: list[tuple[int, str]] = []

    def step(n: int, event: Any) -> None:
        if full:
            for memo in MEMOS:
                memo.clear()
            mocks.pool._keys.clear()
        for c in mocks.step(sessions[n], event, 1.0):
            if isinstance(c, Miss):
                out.append((n, f"miss {c.summary}: {c.reason}"))
            elif isinstance(c, OutOfOrder):
                out.append((n, f"out of order {c.summary}: {[s['request'] for s in c.entry['skipped']]}"))
            elif isinstance(c, Send):
                out.append((n, f"send {c.data!r}"))
            elif isinstance(c, Injected):
                out.append((n, f"injected {c.summary}"))
            elif isinstance(c, Notify):  # another live connection's events: delivered now
                target = next(m for m, s in sessions.items() if s is c.target)
                out.append((n, f"notify {target}"))
                step(target, c.event)
            else:
                out.append((n, type(c).__name__))

    original = engine._equal_after
    try:
        if full:
            engine._equal_after = lambda *_args: ()
        for n, event in script:
            if n not in sessions:
                sessions[n] = mocks.session(REPLAYERS[protocol]())
            step(n, event)
    finally:
        engine._equal_after = original
    out.append((-1, f"unused {[e.summary for e in mocks.ctx.ledger.unused()]}"))
    return out


def same_both_ways(recorded: list[Any], script: Script, monkeypatch: pytest.MonkeyPatch,
                   **kw: Any) -> list[tuple[int, str]]:
    """The transcript, checked equal with and without the memos; and that the memos
    were used (a chunk seen before is not parsed again)."""
    full = transcript(recorded, script, full=True, **kw)
    transcript(recorded, script, full=False, **kw)  # warms the memos
    parsed: list[tuple[bytes, ...]] = []
    command = redis_replayer._command
    monkeypatch.setattr(redis_replayer, "_command", lambda args: parsed.append(args) or command(args))
    fast = transcript(recorded, script, full=False, **kw)
    assert fast == full
    assert len(parsed) < sum(1 for _n, e in script if isinstance(e, ClientData))
    return full


def ex(request: list[str], responses: list[Any], *, connection: int = 1, seq: int = 0,
       summary: str = "", volatile: bool = False, **fields: Any) -> Exchange:
    return Exchange("redis", "127.0.0.1:0", request, responses, summary=summary or request[0],
                    connection=connection, seq=seq, order=fields.pop("order", seq),
                    extra={"volatile": [TOKEN]} if volatile else {}, **fields)


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


# --- HTTP/1: request heads, readable requests and match keys, rendered answers --------

HTTP_TOKENS = ("1dd943ee-aeeb-41f1-bb14-02fc00000001", "5e0c7a14-3b2d-4c6e-8f90-02fc00000004")  # recorded
LIVE_A, LIVE_B = "7c21b0e4-a9d8-41f1-a3b5-02fc00000002", "0b6f3f7e-2c1d-4a5e-9f00-02fc00000003"


def http_ex(method: str, target: str, response: dict[str, Any], *, seq: int, volatile: list[str] | None = None,
            headers: list[list[str]] | None = None, body: str = "") -> Exchange:
    request = {"method": method, "url": f"http://api.test{target}", "http_version": "HTTP/1.1",
               "headers": [["Host", "api.test"], *(headers or [])], "body": body}
    answer = {"reason": "OK", "http_version": "HTTP/1.1", "body": "", **response}
    return Exchange("http", "127.0.0.1:0", request, [answer], summary=f"{method} api.test{target}",
                    connection=1, seq=seq, order=seq, extra={"volatile": volatile} if volatile else {})


def http_get(target: str, *lines: str, method: str = "GET", version: str = "HTTP/1.1", body: bytes = b"") -> bytes:
    head = [f"{method} {target} {version}", "Host: api.test", *lines]
    if body:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_http_answers_are_those_of_the_full_path(monkeypatch):
    """Requests repeated on several connections, answered from recordings that share an
    answer: the live version (HTTP/1.0 and 1.1), the method (HEAD: no body), a volatile
    value mapped into the answer (each live value its own), a secret's stand-in, JSON
    bodies equal in Python but not as recorded (``1``/``true``), a gzip body, an answer
    delimited by the close, a request with credentials, one with a body, misses."""
    def plain(body: str, *headers: list[str], **more: Any) -> dict[str, Any]:
        return {"status": 200, "headers": [["Content-Type", "text/plain"], *headers], "body": body, **more}

    recorded = [http_ex("GET", "/item", plain("hello"), seq=n) for n in range(1, 5)]
    recorded += [http_ex("HEAD", "/item", plain("", ["Content-Length", "5"]), seq=5),
                 *(http_ex("GET", f"/orders/{token}", plain(f"order {token}", ["X-Id", token]), seq=6 + i,
                           volatile=[token]) for i, token in enumerate(HTTP_TOKENS)),
                 http_ex("GET", "/key", plain("k", ["X-Key", "<secret:api-key>"]), seq=8),
                 http_ex("GET", "/json", {"status": 200, "headers": [["Content-Type", "application/json"]],
                                          "body": {"json": {"a": 1}}}, seq=9),
                 http_ex("GET", "/json", {"status": 200, "headers": [["Content-Type", "application/json"]],
                                          "body": {"json": {"a": True}}}, seq=10),
                 http_ex("GET", "/gz", plain("zipped " * 20, ["Content-Encoding", "gzip"], encoding="gzip"), seq=11),
                 http_ex("GET", "/gz", plain("zipped " * 20, ["Content-Encoding", "gzip"], encoding="gzip"), seq=12),
                 http_ex("GET", "/me", plain("me"), seq=13, headers=[["Authorization", "Bearer <secret:token>"]]),
                 http_ex("POST", "/form", plain("posted"), seq=14, body="a=1"),
                 http_ex("POST", "/form", plain("posted 2"), seq=15, body="a=2"),
                 http_ex("GET", "/old", plain("until the end", http_version="HTTP/1.0"), seq=16),
                 http_ex("GET", "/old", plain("until the end", http_version="HTTP/1.0"), seq=17)]
    script: Script = [(0, ClientData(http_get("/item"))), (1, ClientData(http_get("/item"))),
                      (2, ClientData(http_get("/item", version="HTTP/1.0"))),
                      (0, ClientData(http_get("/item") + http_get("/item", method="HEAD"))),
                      (1, ClientData(http_get("/item"))),  # past the recordings: a miss
                      (0, ClientData(http_get(f"/orders/{LIVE_A}"))), (1, ClientData(http_get(f"/orders/{LIVE_B}"))),
                      (0, ClientData(http_get("/key"))), (0, ClientData(http_get("/json"))),
                      (1, ClientData(http_get("/json"))), (0, ClientData(http_get("/gz"))),
                      (1, ClientData(http_get("/gz"))), (0, ClientData(http_get("/me", "Authorization: Bearer x"))),
                      (0, ClientData(http_get("/form", method="POST", body=b"a=1"))),
                      (1, ClientData(http_get("/form", method="POST", body=b"a=2"))),  # the same head
                      (3, ClientData(http_get("/old"))), (4, ClientData(http_get("/old"))),
                      (0, ClientData(http_get("/nowhere"))), (0, ClientClosed()), (1, ClientClosed())]
    full = transcript(recorded, script, full=True, protocol="http")
    transcript(recorded, script, full=False, protocol="http")  # warms the memos
    made: list[str] = []
    monkeypatch.setattr(h1_replay, "request_readable", lambda *a, f=h1_replay.request_readable: made.append("r") or f(*a))
    monkeypatch.setattr(http_render, "render_h1_parts", lambda *a, f=http_render.render_h1_parts: made.append("a") or f(*a))
    assert transcript(recorded, script, full=False, protocol="http") == full
    assert made.count("r") < 4 and made.count("a") < 6  # a body or credentials: made anew
    sends = "\n".join(line for _n, line in full)
    assert LIVE_A in sends and LIVE_B in sends and not any(token in sends for token in HTTP_TOKENS)
    assert "X-Key: trpx." in sends and '{"a":1}' in sends.replace(" ", "") and "true" in sends
    assert sends.count("HTTP/1.0 200 OK") == 1 and (3, "Close") in full and (4, "Close") in full
    assert sum(line.startswith("miss GET") for _n, line in full) == 2


def test_http_requests_with_credentials_or_a_body_are_not_remembered():
    """A head with credentials is parsed every time and not kept (``h1._HEADS``); nor is
    what is derived from it (``_KNOWN``), nor a request with a body: no ``same_as``."""
    for memo in MEMOS:
        memo.clear()
    replayer = HttpReplayer()
    lookups = [*replayer.feed(http_get("/me", "Authorization: Bearer s3cret")),
               *replayer.feed(http_get("/form", method="POST", body=b"a=1")), *replayer.feed(http_get("/a"))]
    assert [lookup.context.same_as is None for lookup in lookups] == [True, True, False]
    assert len(h1_replay._KNOWN) == 1 and all(b"s3cret" not in key for key in h1._HEADS)
    assert lookups[2].request is not replayer.feed(http_get("/a"))[0].request  # each lookup its own


def test_only_small_http_answers_held_in_memory_are_remembered(monkeypatch):
    """An answer over 16 KiB (as text or base64) is rendered every time and never packed
    for a key; a small one is rendered once."""
    http_render._RENDERED.clear()
    big = {"status": 200, "headers": [], "body": "x" * (http_render._MAX_ANSWER + 4)}
    small = {"status": 200, "headers": [], "body": "x"}
    packed: list[Any] = []
    monkeypatch.setattr(http_render, "_PACK", lambda r, f=http_render._PACK: packed.append(r) or f(r))
    for response in (big, {**big, "body": {"base64": big["body"]}}, small, small):
        data, rest, closes = http_render.render_h1_answer(response, "GET", "HTTP/1.1")
        assert (data, rest, closes) == (*http_render.render_h1_parts(response, "GET", "HTTP/1.1"), False)
    assert packed == [small, small] and len(http_render._RENDERED) == 1


# --- Postgres: classification by statement shape, match keys by statement text --------


def pg_transcript(recorded: list[Any], script: list[tuple[int, bytes]], *, full: bool) -> list[tuple[int, str]]:
    """What each live Postgres connection got (``full``: no shape memo nor key survives a
    step); each connection logs in first."""
    mocks = Mocks("postgres", recorded)
    replays: dict[int, Replay] = {}
    out: list[tuple[int, str]] = []
    for n, data in script:
        if full:
            for memo in [*pg_sql.SHAPE_MEMOS, pg_replayer._RENDERED, pg_matching._TRAITS]:
                memo.clear()
            mocks.pool._keys.clear()
        if n not in replays:
            replays[n] = Replay(mocks=mocks, backends=mocks.backends)
            out.append((n, f"login {replays[n].send(STARTUP)!r}"))
        looked = len(mocks.lookups)
        answer = replays[n].send(raw=data)
        out.append((n, f"{answer!r} closed={replays[n].closed}"))
        out += [(n, f"looked up {lookup.request}") for lookup in mocks.lookups[looked:]]
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


def test_prepared_statements_get_the_answers_of_the_full_path(monkeypatch):
    """Extended-protocol batches whose recorded answers are alike (pgbench ``-M prepared``)
    are rendered once (``replayer._RENDERED``) and classified once (``matching._TRAITS``):
    served from the memo, an answer still teaches the connection what its Describe said
    (a later binary Bind is typed by it), sets the transaction status and the skipping
    after an error; answers that name a pid or a notification's sender, or end the
    session, are rendered each time."""
    int4 = be.FieldDescription("abalance", 16397, 3, 23, 4, -1, 0)
    pick = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"

    def run(aid: bytes, *, fmt: int = 0, statement: str = "P_0") -> list[Any]:
        return [fe.Bind("", statement, (fmt,), (aid,), ()), fe.Describe("P", ""), fe.Execute("", 0), fe.Sync()]

    def rows(*values: bytes, tx: str = "I") -> list[Any]:
        return [be.BindComplete(), be.RowDescription((int4,)), *(be.DataRow((v,)) for v in values),
                be.CommandComplete(f"SELECT {len(values)}"), be.ReadyForQuery(tx)]

    typed = fe.Parse("P_1", "SELECT $1 + 0", (0,))
    described = [be.ParseComplete(), be.ParameterDescription((23,)), be.RowDescription((int4,)),
                 be.ReadyForQuery("I")]
    bad = [be.BindComplete(), be.ErrorResponse((("S", "ERROR"), ("C", "22P02"), ("M", "invalid input"))),
           be.ReadyForQuery("I")]
    chunks = [client(STARTUP), server(*HANDSHAKE),
              client(fe.Parse("P_0", pick, (23,)), fe.Sync()), server(be.ParseComplete(), be.ReadyForQuery("I")),
              client(typed, fe.Describe("S", "P_1"), fe.Sync()), server(*described)]
    for request, answer in [
            (run(b"1"), rows(b"0")), (run(b"22"), rows(b"0")), (run(b"333"), rows(b"7")),
            (run(b"4444"), rows(b"0")), (run(b"666"), rows(b"0")), (run(b"777"), rows(b"0")), (run(b"x"), bad), (run(b"y"), bad),
            (run(b"\x00\x00\x00\x05", fmt=1, statement="P_1"), rows(b"5")),
            ([fe.Query("BEGIN")], [be.CommandComplete("BEGIN"), be.ReadyForQuery("T")]),
            (run(b"55"), rows(b"0", tx="T")),
            ([fe.Query("COMMIT")], [be.CommandComplete("COMMIT"), be.ReadyForQuery("I")]),
            ([fe.Parse("", "SELECT pg_backend_pid()"), fe.Bind(), fe.Execute(), fe.Sync()],
             [be.ParseComplete(), be.BindComplete(), be.DataRow((b"4242",)), be.CommandComplete("SELECT 1"),
              be.ReadyForQuery("I")]),
            ([fe.Query("NOTIFY c")], [be.CommandComplete("NOTIFY"), be.NotificationResponse(4242, "c", "hi"),
                                      be.ReadyForQuery("I")]),
            ([fe.Query("NOTIFY d")], [be.CommandComplete("NOTIFY"), be.NotificationResponse(4242, "c", "hi"),
                                      be.ReadyForQuery("I")])]:
        chunks += [client(*request), server(*answer)]
    for aid in (b"z", b"w"):  # an error before the client's Sync: skipped to it, memo or not
        chunks += [client(*run(aid)[:-1], fe.Flush()), server(*bad[:-1]), client(fe.Sync()),
                   server(be.ReadyForQuery("I"))]
    recorded = record(*chunks)
    prepare = wire(fe.Parse("P_0", pick, (23,)), fe.Sync())
    describe = wire(typed, fe.Describe("S", "P_1"), fe.Sync())
    script = [(0, prepare), (1, prepare), (0, wire(*run(b"1"))), (1, wire(*run(b"22"))), (0, wire(*run(b"4444"))),
              (1, wire(*run(b"333"))), (0, wire(*run(b"9"))),  # a miss
              (1, wire(fe.Parse("P_9", pick, (23,)), *run(b"777", statement="P_9"))),  # + ParseComplete
              (0, describe), (1, describe),  # the second from the memo: it still learns int4
              (1, wire(*run(b"\x00\x00\x00\x05", fmt=1, statement="P_1"))),
              (0, wire(*run(b"x"))), (1, wire(*run(b"y"))),
              (1, wire(*run(b"x")[:-1], fe.Flush())), (1, wire(*run(b"1"))),  # an error, skipped to Sync
              (0, wire(fe.Query("BEGIN"))), (0, wire(*run(b"55"))), (1, wire(*run(b"4444"))),
              (0, wire(fe.Query("COMMIT"))),
              (1, wire(fe.Query("BEGIN"))), (1, wire(*run(b"666"))), (1, wire(fe.Query("COMMIT"))),
              (0, wire(fe.Parse("", "SELECT pg_backend_pid()"), fe.Bind(), fe.Execute(), fe.Sync())),
              (1, wire(fe.Query("NOTIFY c"))), (0, wire(fe.Query("NOTIFY d"))),
              (0, wire(*run(b"z")[:-1], fe.Flush())), (0, wire(fe.Sync())),
              (1, wire(*run(b"w")[:-1], fe.Flush())), (1, wire(*run(b"22"))), (1, wire(*run(b"4444")))]
    full = pg_transcript(recorded, script, full=True)
    pg_transcript(recorded, script, full=False)  # warms the memos
    rendered: list[int] = []
    monkeypatch.setattr(pg_replayer, "render_batch",
                        lambda *a, f=pg_render.render_batch, **k: rendered.append(1) or f(*a, **k))
    assert pg_transcript(recorded, script, full=False) == full
    batches = sum(data[:1] in (b"B", b"P") for _n, data in script)
    assert 0 < len(rendered) < batches  # some answers came from the memo, not all
    assert sum("no recording" in line for _n, line in full) >= 1


# --- a pipeline of one command, looked up in the bucket of its first (MockPool.again) ----


def batched(recorded: list[Any], script: Script, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> list[tuple[int, str]]:
    """``same_both_ways``, and the fast run did answer requests of pipelines by ``again``."""
    answered: list[Any] = []
    again = MockPool.again
    monkeypatch.setattr(MockPool, "again", lambda self, *a, **k: answered.append(found := again(self, *a, **k))
                        or found)
    out = same_both_ways(recorded, script, monkeypatch, **kw)
    assert any(answered)
    return out


SET_ = ["SET", "key:__rand_int__", "xxx"]


def test_pipelines_cross_recorded_connections_and_run_past_the_recordings(monkeypatch):
    """A pipeline follows its recorded connection, skips what the app did not ask for
    (out of order), goes on in another recorded connection, runs out (the rest miss,
    each on the full way), repeats a session answer; pipelines of mixed commands."""
    ok = [{"simple": "OK"}]
    recorded = [ex(SET_, ok, seq=1), ex(["GET", "other"], [None], seq=2), ex(SET_, ok, seq=3),
                ex(SET_, [{"simple": "OK2"}], seq=4), ex(["GET", "key:__rand_int__"], ["xxx"], seq=5),
                ex(SET_, ok, connection=2, seq=6), ex(SET_, [{"simple": "OK3"}], connection=2, seq=7),
                ex(["CONFIG", "GET", "save"], [["save", ""]], connection=3, seq=8, lifetime="session")]
    script: Script = [(0, ClientData(SET * 3)), (1, ClientData(SET * 4)), (0, ClientData(cmd("CONFIG", "GET", "save") * 3)),
                      (0, ClientData(GET * 2)), (1, ClientData(SET + SET + GET + GET + SET)),
                      (0, ClientData(SET * 2)), (0, ClientClosed()), (1, ClientClosed())]
    out = batched(recorded, script, monkeypatch)
    assert any("out of order SET" in line for _n, line in out)
    assert sum(line.startswith("miss SET") for _n, line in out) >= 3
    assert sum("save" in line for _n, line in out if line.startswith("send")) == 3  # repeated


def test_events_reached_inside_a_pipeline_come_between_its_answers(monkeypatch):
    """A push recorded after the second SET comes after its answer, before the third's;
    the recorded close of another connection reaches its live follower mid-pipeline."""
    ok = [{"simple": "OK"}]
    recorded = [ex(SET_, ok, seq=1), ex(SET_, ok, seq=2), ex(SET_, ok, seq=4), ex(SET_, ok, seq=5),
                ex([], [["message", "ch", "hi"]], summary="push", seq=3, order=0, event="push", after=2),
                ex(SET_, [{"simple": "TWO"}], connection=2, seq=1, order=6),
                ex(SET_, [{"simple": "TWO"}], connection=2, seq=2, order=7),
                ex([], [], summary="close", connection=2, seq=3, order=0, event="close", after=7)]
    script: Script = [(1, ClientData(SET)), (0, ClientData(SET * 4)), (1, ClientData(SET * 3)), (0, ClientData(SET))]
    out = batched(recorded, script, monkeypatch)
    assert any("message" in line for _n, line in out)


def test_fault_rules_are_asked_about_every_request_of_a_pipeline(monkeypatch):
    """With a fault plan, each request is asked about (the second SET fails); a test's
    own recordings come first, then those outside any test."""
    recorded = [ex(SET_, [{"simple": "OK"}], seq=n, tests=["t1"] if n > 2 else []) for n in range(1, 6)]
    script: Script = [(0, ClientData(SET * 3)), (0, ClientData(SET * 3))]
    out = same_both_ways(recorded, script, monkeypatch, faults=("redis error=LOADING nth=2",), test="t1")
    assert (0, "injected SET") in out
    assert batched(recorded, script, monkeypatch, test="t1")[-1] == (-1, "unused []")


def test_a_pipeline_keeps_reply_modes_and_mapped_values(monkeypatch):
    """CLIENT REPLY SKIP silences the first SET of the pipeline after it; a request with a
    volatile value matches through its mask first (the value is mapped), the equal ones
    after it are rewritten and looked up anew."""
    recorded = [ex(SET_, [{"simple": "OK"}], seq=n) for n in range(1, 5)]
    recorded += [ex(["GET", "k", TOKEN], ["v1"], seq=10, volatile=True), ex(["GET", "k", TOKEN], ["v2"], seq=11),
                 ex(["GET", "k", TOKEN], ["v3"], seq=12)]
    script: Script = [(0, ClientData(cmd("CLIENT", "REPLY", "SKIP") + SET * 2)), (0, ClientData(SET * 2)),
                      (0, ClientData(cmd("GET", "k", LIVE) * 3))]
    out = batched(recorded, script, monkeypatch)
    assert [line for _n, line in out] == ["send b'+OK\\r\\n'"] * 3 + [f"send b'$2\\r\\nv{n}\\r\\n'" for n in (1, 2, 3)] \
        + ["unused []"]

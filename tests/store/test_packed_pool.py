"""A pool over a packed recording (the cache) makes its entries when lookups need them
(``packed.py``, ``MockPool._adopt``); every answer, repeat, miss, skipped recording,
event and hold must be the one the pool of the parsed YAML gives, in the same order."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.support.recording import packed_and_parsed
from trproxy.protocols import registry
from trproxy.protocols.registry import has_volatile_rules, match_key, volatile_rules
from trproxy.protocols.volatile import mask
from trproxy.proxy.timeline import Timeline
from trproxy.store import (
    Affinity,
    Exchange,
    Ledger,
    MockPool,
    MockWriter,
    NoMatch,
    load_mocks,
    recording,
)
from trproxy.store import packed as packed_module
from trproxy.store.recording import MOCKS

_REDIS, _PG, _HTTP = "127.0.0.1:6379", "[::1]:5432", "127.0.0.1:8080"


@pytest.fixture(autouse=True)
def _shipped_dialects(monkeypatch):
    """Packed pools serve the shipped dialects' keys: a config.yaml another test of this
    worker applied (``registry.configure``) would make every pool here a plain one."""
    monkeypatch.setattr(registry, "_overrides", {})


def _recording(n: int) -> list[Exchange]:
    """Redis, Postgres (with volatile values) and HTTP over TLS, on a few connections, in
    and outside test windows, with repeated requests, session exchanges, long waits and
    events (pushes, closes)."""
    out: list[Exchange] = []
    order = 0
    for i in range(n):
        order += 2 if i % 13 == 6 else 1  # skipped: a request that never became an exchange
        connection, tests = i % 5, [["t1"], ["t2"], [], ["t1", "t2"], []][i % 5]
        meta: dict[str, Any] = {"connection": connection, "seq": i * 2 + 1, "order": order, "tests": tests,
                                "wait_ms": 150.0 if i % 11 == 0 else 1.0 + i % 3}
        kind = i % 4
        if kind == 0:
            out.append(Exchange("redis", _REDIS, ["GET", f"k{i % 7:05d}"], [{"bulk": f"v{i}"}], summary="GET", **meta))
        elif kind == 1:
            out.append(Exchange("redis", _REDIS, ["PING"], [{"simple": f"PONG{i}"}], lifetime="session",
                                summary="PING", **meta))
        elif kind == 2:
            token = f"tok-{i}"
            out.append(Exchange("postgres", _PG, [{"Query": f"SELECT now(), '{token}' FROM t WHERE id = {i % 3}"}],
                                [{"CommandComplete": f"SELECT {i}"}], summary="SELECT",
                                extra={"volatile": [token]}, **meta))
        else:
            out.append(Exchange("http", _HTTP, {"method": "GET", "url": f"http://api.test/items/{i % 5:06d}"},
                                [{"status": 200, "body": {"json": {"n": i}}}], summary=f"GET /items/{i % 5}",
                                tls=True, alpn="h2", **meta))
        if i % 9 == 4:
            out.append(Exchange("redis", _REDIS, None, [{"push": ["message", "c", str(i)]}], event="push",
                                after=order, seq=i * 2 + 2, connection=connection))
        if i == n - 7:
            out.append(Exchange("redis", _REDIS, None, [], event="close", after=order + 1, seq=i * 2 + 2,
                                connection=2))
    return out


def _pools(tmp_path, monkeypatch, exchanges: list[Exchange]) -> tuple[MockPool, MockPool]:
    packed, parsed = packed_and_parsed(tmp_path, monkeypatch, exchanges)
    assert {type(e).__name__ for e in parsed} == {"Exchange"}
    def pool(loaded: list[Exchange]) -> MockPool:
        return MockPool.build(loaded, match_key, volatile_rules, has_volatile_rules)
    return pool(packed), pool(parsed)


def _id(ex: Exchange) -> tuple[str, int, int]:
    return (ex.protocol, ex.connection, ex.seq)


def _events(deliveries) -> list[tuple[int, list[int]]]:
    return [(session, [ev.seq for ev in events]) for session, events in deliveries]


def _transcript(pool: MockPool, requests: list[Exchange], seed: int) -> list[Any]:
    """What a replay does with the pool, step by step, as plain data."""
    rng = random.Random(seed)
    ledger, timeline = Ledger(pool), Timeline(pool)
    affinities = [Affinity() for _ in range(6)]
    out: list[Any] = [len(pool), sorted(pool.destinations()), pool.recorded_tls(_HTTP), pool.recorded_alpn(_HTTP)]
    for step in range(400):
        if step % 60 == 0:
            windows = rng.choice([set(), {"t1"}, {"t2"}, {"t1", "t2"}])
            opened = rng.choice(sorted(windows)) if windows else None
            pool.scope(windows, opened)
            out.append(("scope", sorted(windows), opened))
        live = rng.randrange(len(affinities))
        recorded = rng.choice(requests)
        request, masked = recorded.request, None
        if recorded.protocol == "postgres":  # its volatile value is another one live
            request = [{"Query": request[0]["Query"].replace("tok-", "live-")}]
            masked = mask(request, [request[0]["Query"].split("'")[1]])
        if rng.random() < 0.15:  # never recorded; some of a recorded shape (the similarity fallback)
            n = rng.randrange(7, 10)
            request = rng.choice([{"redis": ["GET", "nowhere"], "postgres": [{"Query": "SELECT 'x'"}],
                                   "http": {"method": "DELETE", "url": "http://api.test/"}},
                                  {"redis": ["GET", f"k{n:05d}"], "postgres": [{"Query": f"SELECT now(), 'x' FROM t WHERE id = {n}"}],
                                   "http": {"method": "GET", "url": f"http://api.test/items/{n:06d}"}}])[recorded.protocol]
        test = rng.choice([None, None, "t1"])
        try:
            served = pool.find(recorded.protocol, recorded.destination, request, recorded.summary,
                               affinity=affinities[live], test=test, repeat_last=rng.random() < 0.3,
                               masked=masked, accept=lambda ex, values: None,
                               similar=(lambda ex, values, pairs: None) if rng.random() < 0.5 else None)
        except NoMatch as miss:
            out.append(("miss", miss.reason, _events([(live, ev) for _s, ev in timeline.missed(live)])))
            continue
        ex = served.exchange
        skipped = ledger.served(ex, affinities[live], served.repeat)
        before, after = timeline.served(live, ex)
        out.append((_id(ex), served.repeat, served.masked, served.similar is not None,
                    [_id(e) for e in skipped], _events(before), _events(after), timeline.hold_ms(ex),
                    ex.responses))
    out.append([_id(e) for e in ledger.unused()])
    out.append([(_id(e.exchange), e.used) for e in pool.entries()])
    out.append(pool.nearest("redis", _REDIS, ["GET", "k9"], "GET"))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_packed_pool_serves_what_the_parsed_one_serves(tmp_path, monkeypatch, seed):
    recorded = _recording(120)
    packed, parsed = _pools(tmp_path, monkeypatch, recorded)
    assert packed._source is not None and parsed._source is None  # the lazy pool, and the plain one
    requests = [e for e in recorded if e.event is None]
    assert list(packed.orders()) == list(parsed.orders()) == sorted(e.order for e in requests)
    assert _transcript(packed, requests, seed) == _transcript(parsed, requests, seed)


def test_a_packed_pool_makes_entries_only_for_what_is_asked(tmp_path, monkeypatch):
    """Loading, the ledger and the timeline make no entry per exchange; a lookup makes
    those of its match key (and the timeline those of a connection with events)."""
    recorded = [e for e in _recording(120) if e.event is None or e.connection == 2]  # events on one
    packed, _parsed = _pools(tmp_path, monkeypatch, recorded)
    assert packed._made == {}
    ledger, timeline = Ledger(packed), Timeline(packed)
    with_events = {e.seq for e in recorded if e.event is None and e.protocol == "redis" and e.connection == 2}
    assert {e.exchange.seq for e in packed._made.values()} == with_events
    served = packed.find("redis", _REDIS, ["GET", "k00003"]).exchange
    same_key = {e.seq for e in recorded if e.request == ["GET", "k00003"]}
    assert {e.exchange.seq for e in packed._made.values()} == with_events | same_key
    ledger.served(served, Affinity())
    timeline.hold_ms(served)
    its_connection = {e.seq for e in recorded if e.protocol == "redis" and e.connection == served.connection
                      and e.event is None}
    assert {e.exchange.seq for e in packed._made.values()} == with_events | same_key | its_connection
    assert len(packed._made) < len(packed) / 2


def test_adding_to_a_packed_pool_makes_it_a_plain_one_with_its_use_counts(tmp_path, monkeypatch):
    recorded = _recording(40)
    packed, parsed = _pools(tmp_path, monkeypatch, recorded)
    for pool in (packed, parsed):
        pool.find("redis", _REDIS, ["GET", "k00000"])
        pool.add(Exchange("redis", _REDIS, ["GET", "k00000"], [{"bulk": "new"}], seq=999))
    assert packed._source is None
    assert ([(_id(e.exchange), e.used) for e in packed.entries()]
            == [(_id(e.exchange), e.used) for e in parsed.entries()])
    answers = [[pool.find("redis", _REDIS, ["GET", "k00000"]).exchange.seq for _ in range(2)]
               for pool in (packed, parsed)]
    assert answers[0] == answers[1] and answers[0][-1] == 999


@pytest.mark.parametrize("where", ["row", "document"])
def test_a_document_changed_after_load_is_refused_not_served(tmp_path, monkeypatch, where):
    """Rows and documents are read from the cache when used, each checked against the
    digest its MAC'd index holds: bytes changed since the load are an error, not an
    answer. GET k4's small answer is in its row (``packed.SERVED``) and in its document:
    a changed row fails the lookup; a changed document, the first field read from it."""
    test_set = tmp_path / "test-set-0"
    writer = MockWriter(test_set / MOCKS)
    for ex in _recording(8):
        writer.write(ex)
    writer.close()
    packed = MockPool.build(load_mocks(test_set), match_key)
    assert packed._source is not None
    cache = test_set / (MOCKS + ".cache")
    data = bytearray(cache.read_bytes())
    # the rows come before the documents: the first "v4" is in GET k4's row, the last in its document
    at = data.index(b"v4") if where == "row" else data.rindex(b"v4")
    data[at:at + 2] = b"v5"
    with open(cache, "r+b") as f:  # the same file, written in place
        f.write(data)
    changed = pytest.raises(recording.FormatError, match="the cache changed since it was loaded")
    if where == "row":
        with changed:
            packed.find("redis", _REDIS, ["GET", "k00004"])
        return
    served = packed.find("redis", _REDIS, ["GET", "k00004"]).exchange
    assert served.responses == [{"bulk": "v4"}]  # from its row, checked
    with changed:
        _ = served.summary


def test_a_small_answer_is_served_from_its_row_a_big_one_from_its_document(tmp_path, monkeypatch):
    """What serving reads (``packed.SERVED``: request, responses, extra) is in a small
    exchange's row: its document is not read, checked and decoded per answer; a big
    one's is. Either way every field is what the YAML gives."""
    big = "x" * (packed_module.SMALL_SERVED + 1)
    recorded = [Exchange("redis", _REDIS, ["GET", "small"], [{"bulk": "v"}], summary="GET", extra={"note": 1}),
                Exchange("redis", _REDIS, ["GET", "big"], [{"bulk": big}], summary="GET")]
    packed, parsed = _pools(tmp_path, monkeypatch, recorded)
    decoded: list[int] = []
    real = packed_module.Packed.document
    monkeypatch.setattr(packed_module.Packed, "document", lambda self, i: decoded.append(i) or real(self, i))
    small = packed.find("redis", _REDIS, ["GET", "small"]).exchange
    assert (small.request, small.responses, small.extra) == (["GET", "small"], [{"bulk": "v"}], {"note": 1})
    assert decoded == []
    assert small.summary == "GET" and decoded == [0]  # the rest is still in the document
    served = packed.find("redis", _REDIS, ["GET", "big"]).exchange
    assert served.responses == [{"bulk": big}] and decoded == [0, 1]
    assert small == parsed.find("redis", _REDIS, ["GET", "small"]).exchange
    assert served == parsed.find("redis", _REDIS, ["GET", "big"]).exchange


def test_a_prepared_pgbench_batch_is_served_from_its_row(tmp_path, monkeypatch):
    """A pgbench ``-M prepared`` transaction (Bind/Describe/Execute/Sync, each naming the
    statement's SQL, and its answer: ~500 packed bytes) fits ``SMALL_SERVED``: serving it
    reads no document (issue 15)."""
    sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"
    request = [{"Bind": {"portal": "", "statement": "P_0", "query": sql, "parameters": ["70183"],
                         "result_formats": [0]}},
               {"Describe": {"portal": "", "query": sql}},
               {"Execute": {"portal": "", "max_rows": 0, "query": sql}}, {"Sync": {}}]
    responses = [{"BindComplete": {}},
                 {"RowDescription": [{"name": "abalance", "table_oid": 16391, "column": 3, "type_oid": 23,
                                      "type_size": 4, "type_modifier": -1, "format": 0}]},
                 {"DataRow": ["0"]}, {"CommandComplete": "SELECT 1"}, {"ReadyForQuery": "I"}]
    recorded = Exchange("postgres", _PG, request, responses, summary=f"Execute {sql}")
    packed, parsed = _pools(tmp_path, monkeypatch, [recorded])
    decoded: list[int] = []
    real = packed_module.Packed.document
    monkeypatch.setattr(packed_module.Packed, "document", lambda self, i: decoded.append(i) or real(self, i))
    served = packed.find("postgres", _PG, request).exchange
    assert (served.request, served.responses, served.extra) == (request, responses, {}) and decoded == []
    assert served == parsed.find("postgres", _PG, request).exchange


def test_the_config_record_writes_keeps_the_shipped_dialects_and_the_packed_pool(tmp_path, monkeypatch):
    """``trproxy record`` writes config.yaml with a section per protocol and no rules in
    them: that rebuilds no dialect, so the cache loads without a pass over every exchange
    (it used to make every pool a plain one); a section with a rule still rebuilds one.
    HTTP keeps its own dialect (the run's secrets are set on it), with the shipped match
    keys while its section adds no noise and no volatile rules: packed too; with a rule,
    plain."""
    from trproxy.apptest.noise import write_default_config
    from trproxy.store.config import configure_protocols

    write_default_config(tmp_path)
    configure_protocols(tmp_path)
    assert not any(registry.configured(p) for p in ("redis", "postgres", "kafka"))
    no_http = [e for e in _recording(40) if e.protocol != "http"]
    packed, _parsed = _pools(tmp_path, monkeypatch, no_http)
    assert packed._source is not None
    (tmp_path / "config.yaml").write_text("redis:\n  volatile_arguments: {SET: [2]}\n")
    configure_protocols(tmp_path)
    assert registry.configured("redis")
    ruled, _parsed = _pools(tmp_path / "again", monkeypatch, no_http)
    assert ruled._source is None
    write_default_config(tmp_path / "http")
    configure_protocols(tmp_path / "http")
    assert registry.by_name("http") is not registry._shipped("http") and not registry.configured("http")
    with_http, _parsed = _pools(tmp_path / "http", monkeypatch, _recording(40))
    assert with_http._source is not None
    (tmp_path / "http" / "config.yaml").write_text("http:\n  match:\n    ignore_query: [ts]\n")
    configure_protocols(tmp_path / "http")
    assert registry.configured("http")


def test_a_packed_exchange_decodes_its_document_as_the_parsed_one(tmp_path, monkeypatch):
    """Served from the cache, an exchange's document is decoded without ``from_doc``'s
    checks (``packed._heavy``): each field must still be what the YAML gives, of the
    same type (an integral duration, an empty summary, a null answer, extra keys)."""
    recorded = _recording(24) + [
        Exchange("redis", _REDIS, ["GET", "n"], [None], summary="", duration_ms=3, name="named",
                 extra={"volatile": ["x"], "raw": {"hex": "00"}}),
        Exchange("postgres", _PG, {"Query": "SELECT 1"}, [], started="2026-12-03T00:00:00+00:00"),
    ]
    packed, parsed = packed_and_parsed(tmp_path, monkeypatch, recorded)
    assert {type(e).__name__ for e in packed} == {"PackedExchange"}
    for got, want in zip(packed, parsed, strict=True):
        for name in ("request", "responses", "summary", "name", "started", "duration_ms", "extra"):
            value = getattr(got, name)
            assert value == getattr(want, name) and type(value) is type(getattr(want, name)), name
        assert got == want

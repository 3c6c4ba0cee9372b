"""Matching rules: order, consumption, session repeats, affinity, test windows, misses."""

from __future__ import annotations

import pytest

from trproxy.store import Affinity, Exchange, MockPool, NoMatch


def key(protocol, request):
    return request


def ex(request, answer, lifetime="data", connection=1, test=None, dest="127.0.0.1:6379"):
    return Exchange(protocol="redis", destination=dest, request=request, responses=[answer],
                    lifetime=lifetime, connection=connection, tests=[test] if test else [],
                    summary=" ".join(request))


def answer(pool, request, **kw):
    return pool.find("redis", kw.pop("dest", "127.0.0.1:6379"), request, **kw).exchange.responses[0]


def test_identical_requests_are_served_in_recorded_order_then_miss():
    pool = MockPool.build([ex(["INCR", "c"], 1), ex(["INCR", "c"], 2)], key)
    assert [answer(pool, ["INCR", "c"]) for _ in range(2)] == [1, 2]
    with pytest.raises(NoMatch, match="already used"):
        answer(pool, ["INCR", "c"])


def test_session_exchanges_repeat_their_last_answer():
    pool = MockPool.build([ex(["PING"], "PONG1", "session"), ex(["PING"], "PONG2", "session")], key)
    assert [answer(pool, ["PING"]) for _ in range(4)] == ["PONG1", "PONG2", "PONG2", "PONG2"]


def test_data_exchanges_repeat_their_last_answer_when_asked():
    pool = MockPool.build([ex(["FETCH", "0"], "r1"), ex(["FETCH", "0"], "r2")], key)
    served = [pool.find("redis", "127.0.0.1:6379", ["FETCH", "0"], repeat_last=True) for _ in range(3)]
    assert [(s.exchange.responses[0], s.repeat) for s in served] == [("r1", False), ("r2", False),
                                                                      ("r2", True)]
    with pytest.raises(NoMatch, match="no recorded request matches"):  # never recorded: a miss
        pool.find("redis", "127.0.0.1:6379", ["FETCH", "9"], repeat_last=True)


def test_recorded_tls_and_alpn_are_per_destination():
    tls = ex(["GET", "a"], "x", dest="127.0.0.1:5432")
    tls.tls = True
    pool = MockPool.build([tls, ex(["GET", "a"], "x", dest="127.0.0.1:6379")], key)
    assert pool.recorded_tls("[::1]:5432") and not pool.recorded_tls("127.0.0.1:6379")
    assert not pool.recorded_tls("127.0.0.1:7000")
    pool.add(Exchange("http", "127.0.0.1:8443", {"method": "GET"}, [], tls=True, alpn="h2"))
    pool.add(Exchange("http", "127.0.0.1:8443", {"method": "GET"}, [], tls=True, alpn="http/1.1"))
    pool.add(Exchange("http", "127.0.0.1:8080", {"method": "GET"}, []))
    assert pool.recorded_alpn("[::1]:8443") == {"h2", "http/1.1"}
    assert pool.recorded_alpn("127.0.0.1:8080") == set()
    # metadata.alpn survives the trip through the file format; old documents have none
    doc = Exchange("http", "x:1", {}, [], tls=True, alpn="h2").to_doc()
    assert doc["spec"]["metadata"]["alpn"] == "h2" and Exchange.from_doc(doc).alpn == "h2"
    del doc["spec"]["metadata"]["alpn"]
    assert Exchange.from_doc(doc).alpn is None


def test_loopback_addresses_are_one_destination():
    pool = MockPool.build([ex(["GET", "a"], "x", dest="127.0.0.1:6379")], key)
    assert answer(pool, ["GET", "a"], dest="[::1]:6379") == "x"
    with pytest.raises(NoMatch, match="nothing recorded for redis at 127.0.0.1:6380"):
        answer(pool, ["GET", "a"], dest="127.0.0.1:6380")


@pytest.mark.parametrize("recorded", ["0.0.0.0:6379", "[::]:6379"])
def test_the_unspecified_address_is_loopback_too(recorded):
    """An app dialing 0.0.0.0 (a listen address copied into its DATABASE_URL) at record
    time and 127.0.0.1 at replay, or the other way round, reaches the same server."""
    pool = MockPool.build([ex(["GET", "a"], "x", dest=recorded)], key)
    assert answer(pool, ["GET", "a"], dest="127.0.0.1:6379") == "x"
    pool = MockPool.build([ex(["GET", "a"], "x", dest="127.0.0.1:6379")], key)
    assert answer(pool, ["GET", "a"], dest=recorded) == "x"


def test_affinity_keeps_a_transaction_on_its_recorded_connection():
    # two connections ran the same statements with different results
    pool = MockPool.build([
        ex(["MULTI"], "OK", connection=1), ex(["GET", "k"], "one", connection=1),
        ex(["MULTI"], "OK", connection=2), ex(["GET", "k"], "two", connection=2),
    ], key)
    a, b = Affinity(), Affinity()
    assert answer(pool, ["MULTI"], affinity=b) == "OK"  # b takes connection 1's MULTI
    assert answer(pool, ["MULTI"], affinity=a) == "OK"  # a takes connection 2's
    assert answer(pool, ["GET", "k"], affinity=a) == "two"
    assert answer(pool, ["GET", "k"], affinity=b) == "one"


def test_mocks_of_the_current_test_come_first():
    pool = MockPool.build([ex(["GET", "k"], "t1", test="test-1"), ex(["GET", "k"], "t2", test="test-2")], key)
    assert answer(pool, ["GET", "k"], test="test-2") == "t2"
    assert answer(pool, ["GET", "k"], test="test-2") == "t1"  # then others, never a silent network call


def test_miss_names_the_nearest_recording_with_a_diff():
    pool = MockPool.build([ex(["GET", "user:1"], "a"), ex(["SET", "other", "x"], "OK")], key)
    with pytest.raises(NoMatch) as err:
        answer(pool, ["GET", "user:2"])
    assert err.value.reason == "no recorded request matches"
    assert err.value.nearest == []  # the search is the report's, off the event loop
    nearest = pool.nearest("redis", "127.0.0.1:6379", ["GET", "user:2"], "GET user:2")[0]
    assert nearest.startswith("GET user:1")
    assert "-[GET, 'user:1']" in nearest and "+[GET, 'user:2']" in nearest


def test_nearest_is_bounded_in_size_and_time():
    """A 1 MiB request that misses: compared and shown cut to a few KB, the same command's
    recordings first; a deadline already past gives what it has (nothing)."""
    big = "x" * (1 << 20)
    others = [ex(["SET", f"k{i}", "y" * 5000], "OK") for i in range(50)]
    pool = MockPool.build([*others, ex(["GET", big + "a"], "v")], key)
    near = pool.nearest("redis", "127.0.0.1:6379", ["GET", big + "b"], "GET k")
    assert near[0].startswith("GET ") and len("".join(near)) < 40_000
    assert pool.nearest("redis", "127.0.0.1:6379", ["GET", big], "GET k", deadline=0.0) == []


def scoped_pool():
    """A suite recorded with the pytest plugin: three tests set and read the same keys."""
    return MockPool.build([
        ex(["PING"], "PONG", "session"),  # before any test: shared
        ex(["SET", "suite", "on"], "OK"),  # a session fixture's window
        ex(["SET", "k", "a"], "OK", test="pytest:t.py::test_a"),
        ex(["GET", "k"], "a", test="pytest:t.py::test_a"),
        ex(["INCR", "n"], 1, test="pytest:t.py::test_a"),
        ex(["HELLO", "3"], "hi-b", "session", test="pytest:t.py::test_b"),
        ex(["SET", "k", "b"], "OK", test="pytest:t.py::test_b"),
        ex(["GET", "k"], "b", test="pytest:t.py::test_b"),
        ex(["INCR", "n"], 1, test="pytest:t.py::test_b"),
        ex(["INCR", "n"], 2, test="pytest:t.py::test_b"),
    ], key)


def test_a_scoped_test_is_served_its_own_recordings_in_any_order():
    pool = scoped_pool()
    pool.scope(set())  # the plugin connected
    assert answer(pool, ["PING"]) == "PONG"
    pool.scope({"pytest:t.py::test_b"}, opened="pytest:t.py::test_b")  # test_b alone (-k), first
    assert answer(pool, ["GET", "k"]) == "b"
    assert [answer(pool, ["INCR", "n"]) for _ in range(2)] == [1, 2]
    pool.scope({"pytest:t.py::test_a"}, opened="pytest:t.py::test_a")
    assert answer(pool, ["GET", "k"]) == "a"
    assert answer(pool, ["INCR", "n"]) == 1


def test_a_scoped_test_never_gets_another_tests_data():
    pool = scoped_pool()
    pool.scope({"pytest:t.py::test_a"}, opened="pytest:t.py::test_a")
    assert answer(pool, ["INCR", "n"]) == 1
    with pytest.raises(NoMatch) as err:  # test_b's INCRs are test_b's
        answer(pool, ["INCR", "n"])
    assert err.value.reason == ("the 1 answers recorded for this test were already used "
                                "(also recorded in other tests: pytest:t.py::test_b)")
    with pytest.raises(NoMatch) as err:
        answer(pool, ["SET", "k", "b"])
    assert err.value.reason == "recorded only in other tests: pytest:t.py::test_b"
    pool.scope(set())  # between tests: what was recorded outside any test, and sessions
    with pytest.raises(NoMatch, match="recorded only in other tests"):
        answer(pool, ["GET", "k"])
    assert answer(pool, ["SET", "suite", "on"]) == "OK"
    assert answer(pool, ["HELLO", "3"]) == "hi-b"  # a session exchange is anyone's
    assert answer(pool, ["PING"]) == "PONG"


def test_without_a_runner_the_pool_is_one_pool_as_before():
    pool = scoped_pool()
    assert answer(pool, ["GET", "k"]) == "a"
    assert [answer(pool, ["INCR", "n"]) for _ in range(3)] == [1, 1, 2]


def test_a_rerun_gets_its_recordings_again_once_it_used_them_all():
    pool = scoped_pool()
    b = "pytest:t.py::test_b"
    for _attempt in range(2):
        pool.scope({b}, opened=b)
        assert [answer(pool, r) for r in (["SET", "k", "b"], ["GET", "k"], ["INCR", "n"], ["INCR", "n"])] \
            == ["OK", "b", 1, 2]
        pool.scope(set())
    pool.scope({b}, opened=b)  # a third attempt that stops half-way...
    assert answer(pool, ["INCR", "n"]) == 1
    pool.scope({b}, opened=b)  # ...and the next goes on with what is left
    assert answer(pool, ["INCR", "n"]) == 2
    with pytest.raises(NoMatch):
        answer(pool, ["INCR", "n"])


def test_recorded_reruns_replay_in_recorded_order():
    a = "pytest:t.py::test_flaky"
    pool = MockPool.build([ex(["GET", "k"], "first try", test=a), ex(["GET", "k"], "second try", test=a)], key)
    pool.scope({a}, opened=a)
    assert answer(pool, ["GET", "k"]) == "first try"
    pool.scope({a}, opened=a)  # the rerun: something is left, so no rewind
    assert answer(pool, ["GET", "k"]) == "second try"


def test_nested_fixture_window_and_concurrent_tests():
    fixture, a, b = "pytest-fixture:db", "pytest:t.py::test_a", "pytest:t.py::test_b"
    pool = MockPool.build([ex(["GET", "k"], "f", test=fixture), ex(["GET", "k"], "ab", test=a),
                           ex(["GET", "k"], "b", test=b)], key)
    pool.scope({fixture}, opened=fixture)
    assert answer(pool, ["GET", "k"]) == "f"
    pool.scope({a, b}, opened=b)  # two workers (pytest-xdist): either's recordings
    assert sorted(answer(pool, ["GET", "k"]) for _ in range(2)) == ["ab", "b"]


def test_repeat_last_stays_in_scope():
    a, b = "pytest:t.py::test_a", "pytest:t.py::test_b"
    pool = MockPool.build([ex(["FETCH", "0"], "a1", test=a), ex(["FETCH", "0"], "b1", test=b)], key)
    pool.scope({a}, opened=a)
    served = [pool.find("redis", "127.0.0.1:6379", ["FETCH", "0"], repeat_last=True) for _ in range(2)]
    assert [(s.exchange.responses[0], s.repeat) for s in served] == [("a1", False), ("a1", True)]
    pool.scope({"pytest:t.py::test_c"}, opened="pytest:t.py::test_c")
    with pytest.raises(NoMatch, match="recorded only in other tests"):
        pool.find("redis", "127.0.0.1:6379", ["FETCH", "0"], repeat_last=True)


def test_an_inbound_test_repeats_its_own_last_session_answer():
    pool = MockPool.build([ex(["INFO"], "t1", "session", test="test-1"),
                           ex(["INFO"], "t2", "session", test="test-2")], key)
    # fresh ones first (its own, then others'), then its own last answer again
    assert [answer(pool, ["INFO"], test="test-1") for _ in range(3)] == ["t1", "t2", "t1"]


def test_a_request_with_keys_of_several_types_is_matched():
    # a recording's YAML may have `on:` (true) or `1:` beside text keys; sorting them for
    # the key's canonical form must not raise at load
    request = {True: 1, "a": {2: "x", "b": None}}
    pool = MockPool.build([Exchange(protocol="p", destination="127.0.0.1:1", request=request,
                                    responses=["hit"])], key)
    assert pool.find("p", "127.0.0.1:1", {True: 1, "a": {2: "x", "b": None}}).exchange.responses == ["hit"]
    with pytest.raises(NoMatch):
        pool.find("p", "127.0.0.1:1", {True: 1, "a": {2: "y", "b": None}})

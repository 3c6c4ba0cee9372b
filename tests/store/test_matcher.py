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


def test_recorded_tls_and_h2_are_per_destination():
    tls = ex(["GET", "a"], "x", dest="127.0.0.1:5432")
    tls.tls = True
    pool = MockPool.build([tls, ex(["GET", "a"], "x", dest="127.0.0.1:6379")], key)
    assert pool.recorded_tls("[::1]:5432") and not pool.recorded_tls("127.0.0.1:6379")
    assert not pool.recorded_tls("127.0.0.1:7000")
    h2 = Exchange("http", "127.0.0.1:8443", {"method": "GET", "http_version": "HTTP/2.0"}, [])
    h1 = Exchange("http", "127.0.0.1:8080", {"method": "GET", "http_version": "HTTP/1.1"}, [])
    pool.add(h2)
    pool.add(h1)
    assert pool.recorded_h2("[::1]:8443") and not pool.recorded_h2("127.0.0.1:8080")


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
    nearest = err.value.nearest[0]
    assert nearest.startswith("GET user:1")
    assert "-[GET, 'user:1']" in nearest and "+[GET, 'user:2']" in nearest

"""The bounded similarity fallback (``store/similar.py``, ``MockPool.find(similar=...)``):
the most similar unused recording of the same skeleton, when only value-like tokens of
the same shape differ; never across a command, key prefix, word or short number."""

from __future__ import annotations

import pytest

from trproxy.protocols.registry import match_key
from trproxy.store import Exchange, MockPool, NoMatch, canonical
from trproxy.store.similar import differences, skeleton


def key(request: list[str]) -> str:
    return canonical(match_key("redis", request))


@pytest.mark.parametrize(("recorded", "live", "pairs"), [
    (["SET", "order:482913", "pending"], ["SET", "order:771234", "pending"], [("482913", "771234")]),
    (["SET", "n:9f3a2b1c", "x"], ["SET", "n:0a1b2c3d", "x"], [("9f3a2b1c", "0a1b2c3d")]),  # hex
    (["SET", "a:123456", "b:123456"], ["SET", "a:654321", "b:654321"], [("123456", "654321")]),
    (["SET", "order:482913", "pending"], ["SET", "order:482913", "pending"], []),
])
def test_tokens_of_the_same_shape_may_differ(recorded, live, pairs) -> None:  # type: ignore[no-untyped-def]
    assert skeleton(key(recorded)) == skeleton(key(live))
    assert differences(key(recorded), key(live)) == pairs


@pytest.mark.parametrize(("recorded", "live"), [
    (["SET", "order:482913", "pending"], ["GET", "order:771234"]),  # another command
    (["SET", "order:482913", "pending"], ["SET", "invoice:771234", "pending"]),  # another prefix
    (["SET", "order:482913", "pending"], ["SET", "order:771234", "paid"]),  # another word
    (["SET", "order:1234", "pending"], ["SET", "order:5678", "pending"]),  # too short: a number
    (["SET", "order:482913", "pending"], ["SET", "order:4829135", "pending"]),  # another length
    (["SET", "order:482913", "pending"], ["SET", "order:4829ab", "pending"]),  # another shape
    (["SET", "a:123456", "b:123456"], ["SET", "a:654321", "b:111111"]),  # one value for two
    (["MSET", "a:111111", "b:222222", "c:333333"], ["MSET", "a:444444", "b:555555", "c:666666"]),  # > 2
])
def test_a_real_difference_is_not_similar(recorded, live) -> None:  # type: ignore[no-untyped-def]
    same = skeleton(key(recorded)) == skeleton(key(live))
    assert not same or differences(key(recorded), key(live)) is None


def ex(request: list[str], responses: list, order: int) -> Exchange:
    return Exchange("redis", "127.0.0.1:1", request, responses, summary=request[0], connection=1,
                    seq=order, order=order)


def test_the_pool_serves_the_most_similar_unused_recording_and_says_why() -> None:
    pool = MockPool.build([ex(["SET", "order:482913", "a"], ["OK1"], 1),
                           ex(["SET", "order:555555", "a"], ["OK2"], 2)], match_key)
    taken: list = []

    def judge(exchange, volatile, pairs):  # type: ignore[no-untyped-def]
        taken.append(pairs)
        return None

    with pytest.raises(NoMatch):  # without the fallback: a miss
        pool.find("redis", "127.0.0.1:1", ["SET", "order:771234", "a"])
    served = pool.find("redis", "127.0.0.1:1", ["SET", "order:771234", "a"], similar=judge)
    assert served.exchange.responses == ["OK1"] and taken == [[("482913", "771234")]]
    assert served.similar is not None and "482913 -> 771234" in served.similar["reason"]
    assert "-[SET, 'order:482913', a]\n+[SET, 'order:771234', a]" in served.similar["diff"]
    served = pool.find("redis", "127.0.0.1:1", ["SET", "order:771234", "a"], similar=judge)
    assert served.exchange.responses == ["OK2"]  # the first one is used now
    with pytest.raises(NoMatch):  # all used: the fallback never repeats a recording
        pool.find("redis", "127.0.0.1:1", ["SET", "order:771234", "a"], similar=judge)


def test_a_recording_the_judge_refuses_is_not_served() -> None:
    pool = MockPool.build([ex(["SET", "order:482913", "a"], ["OK1"], 1)], match_key)
    with pytest.raises(NoMatch):
        pool.find("redis", "127.0.0.1:1", ["SET", "order:771234", "a"],
                  similar=lambda exchange, volatile, pairs: "contradicts")


def test_a_session_exchange_such_as_a_login_is_never_served_by_similarity() -> None:
    login = Exchange("redis", "127.0.0.1:1", ["AUTH", "default", "5f2c9a1b7d3e"], [{"simple": "OK"}],
                     summary="AUTH", connection=1, seq=1, order=1, lifetime="session")
    pool = MockPool.build([login], match_key)
    with pytest.raises(NoMatch):
        pool.find("redis", "127.0.0.1:1", ["AUTH", "default", "0a1b2c3d4e5f"],
                  similar=lambda exchange, volatile, pairs: None)


def test_a_request_with_a_redacted_secret_has_no_skeleton() -> None:
    """A Redis ``AUTH`` is a ``data`` command: its hashed password (hex of a fixed shape)
    must never be answered by another password's recording."""
    key = canonical(["AUTH", "default", "<redacted:scrypt:0a1b2c3d4e5f:9f8e7d6c5b4a39281706>"])
    assert skeleton(key) is None
    assert skeleton(canonical(["GET", "order:123456"])) is not None

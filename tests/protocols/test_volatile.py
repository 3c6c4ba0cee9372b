"""Values the app generates (``trproxy.protocols.volatile``): found in request texts,
masked, listed with a recording, and mapped recorded -> live."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from trproxy.protocols.postgres.matching import rule_values as pg_rule_values
from trproxy.protocols.postgres.matching import rules_from_section as pg_rules_from_section
from trproxy.protocols.postgres.matching import volatile as pg_volatile
from trproxy.protocols.redis.commands import rule_values, rules_from_section
from trproxy.protocols.redis.commands import volatile as redis_volatile
from trproxy.protocols.registry import match_key
from trproxy.protocols.volatile import ValueMap, find_volatile, mask, occurrences, recorded_values
from trproxy.proxy.context import Mode, RunContext
from trproxy.store import Exchange, MockPool, NoMatch

NOW = datetime(2026, 12, 3, 1, 0, 0, tzinfo=UTC)
EPOCH = str(int(NOW.timestamp()))
UUID = "0f4a6c3e-2b1d-4e8f-9a7c-5d3b1e2f4a6c"
TOKEN = "1dd943eaeebc11f1bb1402fc00000001"  # redis-py Lock: uuid1().hex
OTHER = "7c21b0e4a9d811f1a3b502fc00000002"


@pytest.mark.parametrize(("text", "found"), [
    (TOKEN, [TOKEN]),
    # a uuid1 whose node part is mostly zeros: too little entropy for a random token (1.5%
    # of redis-py's lock tokens were missed so), a UUID by its version and variant digits
    ("b7c7ff00eebc11f1823702fc00000001", ["b7c7ff00eebc11f1823702fc00000001"]),
    (f"session:{UUID}", [UUID]),  # the key's prefix is kept
    (f"SESSION_{UUID.replace('-', '')}", [UUID.replace("-", "")]),
    (EPOCH, [EPOCH]),
    (EPOCH + "123", [EPOCH + "123"]),  # milliseconds
    ('{"csrf": "Xk9fA2Lm0QpZt7Rb3Vc8", "at": ' + EPOCH + "}", ["Xk9fA2Lm0QpZt7Rb3Vc8", EPOCH]),
    (f"{UUID} {UUID}", [UUID, UUID]),
    ("INSERT INTO users VALUES ('ann', '$2b$12$KIXQJ9v1ZcO1mQ0yX6pQeO0vXcBq4mWZ1m7Zb9y8d3xJr5T1uV2aG')",
     ["$2b$12$KIXQJ9v1ZcO1mQ0yX6pQeO0vXcBq4mWZ1m7Zb9y8d3xJr5T1uV2aG"]),
    ("$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
     ["$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"]),
    ("pbkdf2_sha256$600000$Xk9fA2Lm0QpZ$q1w2e3r4t5y6u7i8o9p0=", ["pbkdf2_sha256$600000$Xk9fA2Lm0QpZ$q1w2e3r4t5y6u7i8o9p0="]),
    ("scrypt:32768:8:1$Xk9fA2Lm0QpZt7Rb$0a1b2c3d4e5f", ["scrypt:32768:8:1$Xk9fA2Lm0QpZt7Rb$0a1b2c3d4e5f"]),
])
def test_volatile_parts_of_a_text(text, found):
    assert find_volatile(text, NOW) == found


@pytest.mark.parametrize("text", [
    "lock:resource", "10000", "getUserProfileById", "user_profile_cache_v2", "1234567890",
    "release2024", "hello world", "__asyncpg_savepoint_3__",
])
def test_ordinary_values_are_not_volatile(text):
    assert find_volatile(text, NOW) == []


def test_django_signed_values_their_time_and_whole_signature_and_placeholders():
    """Django's session data (``signing``): ``payload:<base62 seconds>:<base64url HMAC>``.
    The seconds are a time near now; the signature is one value even when a random ``_``
    makes its start look like a readable prefix (``trQBh_...``)."""
    seconds = "".join("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"[
        int(NOW.timestamp()) // 62 ** k % 62] for k in range(5, -1, -1))
    signature = "trQBh_prasfiGTRbWmS7-8HVZsQa5fuU34la5TAVfn4"
    sql = f"INSERT INTO django_session VALUES ('<secret:cookie.sessionid>', 'e30:{seconds}:{signature}')"
    found = find_volatile(sql, NOW)
    assert {"<secret:cookie.sessionid>", seconds, signature} <= set(found)
    assert mask(sql, found) == "INSERT INTO django_session VALUES ('<volatile>', 'e30:<volatile>:<volatile>')"
    # six base62 characters between colons that are no time near now: data
    assert find_volatile("k:SELECT:abcdefghijklmnopqrstuvwx", NOW) == []


def test_redis_arguments_skip_logins_and_script_hashes():
    sha = "c3f8721cbb97f72bc19e972846bd7aaf91901658"
    assert redis_volatile(["EVALSHA", sha, "1", "resource", TOKEN], NOW) == [TOKEN]
    assert redis_volatile(["AUTH", "default", TOKEN], NOW) == []
    assert redis_volatile(["SET", f"session:{UUID}", "v", "EX", "60"], NOW) == [UUID]
    assert redis_volatile([{"hex": "00ff"}], NOW) == []


def test_masking_replaces_whole_occurrences_only():
    request = ["SET", f"s:{UUID}", f"x{TOKEN}", TOKEN]
    assert mask(request, [TOKEN, UUID]) == ["SET", "s:<volatile>", f"x{TOKEN}", "<volatile>"]
    assert occurrences(request, [TOKEN, UUID]) == [UUID, TOKEN]
    assert recorded_values({"volatile": [TOKEN, 3, None, ""]}) == [TOKEN]
    assert recorded_values({"volatile": "not a list"}) == []


def test_a_value_map_keeps_pairs_and_refuses_contradictions():
    values = ValueMap()
    assert values.bind([TOKEN], [OTHER]) is None
    assert values.to_recorded(["GET", f"lock:{OTHER}"]) == ["GET", f"lock:{TOKEN}"]
    assert values.to_live([TOKEN, {"map": [["k", f'"{TOKEN}"']]}]) == [
        OTHER, {"map": [["k", f'"{OTHER}"']]}]
    assert values.bind([TOKEN], [OTHER]) is None  # the same pair again
    assert "already stands for" in (values.bind([TOKEN], [UUID]) or "")
    assert "already stands for" in (values.bind([UUID], [OTHER]) or "")
    assert values.bind([TOKEN, UUID], [OTHER]) is not None  # not the same shape


def test_a_test_adopts_the_pairs_of_earlier_tests_for_values_it_has_not_paired():
    run = ValueMap()
    first, second = ValueMap(earlier=run), ValueMap(earlier=run)
    assert first.bind([TOKEN], [OTHER]) is None
    assert second.to_recorded(["GET", f"lock:{OTHER}"]) == ["GET", f"lock:{OTHER}"]  # not before a miss
    assert second.adopt([OTHER, UUID]) is True and second.adopt([OTHER]) is False
    assert second.to_recorded(["GET", f"lock:{OTHER}"]) == ["GET", f"lock:{TOKEN}"]
    assert second.to_live([TOKEN]) == [OTHER]
    # a third test pairs TOKEN itself (a rerun made a new value): its pair is the run's latest
    third = ValueMap(earlier=run)
    assert third.bind([TOKEN], [UUID]) is None and run.recorded == {UUID: TOKEN}
    assert third.adopt([OTHER]) is False and third.to_live([TOKEN]) == [UUID]


def test_a_clock_reading_may_stand_for_another_live_one_an_id_may_not():
    """Django signs a session's INSERT and its UPDATE in the same recorded second; at
    replay, slower, the UPDATE's second is the next one: no contradiction for a time."""
    values = ValueMap()
    assert values.bind(["1xZ5Wa", UUID], ["1xZ5Wv", OTHER]) is None
    assert values.bind(["1xZ5Wa"], ["1xZ5Ww"]) is None
    assert values.to_live(["1xZ5Wa"]) == ["1xZ5Ww"]
    at, later = "2026-12-03 01:00:00.5+00", "2026-12-03 01:00:01.7+00"
    assert values.bind([at], [later]) is None and values.bind([at], [at.replace("00.5", "02.0")]) is None
    assert "already stands for" in (values.bind([UUID], [TOKEN]) or "")
    assert values.bind(["job512"], ["job513"]) is None  # an id a rule names: six characters, no time
    assert "already stands for" in (values.bind(["job512"], ["job514"]) or "")


def _pool(*exchanges: Exchange) -> MockPool:
    return MockPool.build(list(exchanges), match_key)


def _set(token: str, volatile: list[str] | None = None) -> Exchange:
    return Exchange("redis", "127.0.0.1:6379", ["SET", "lock:a", token, "NX"], [{"simple": "OK"}],
                    extra={"volatile": volatile} if volatile is not None else {})


def test_the_pool_matches_through_listed_volatile_values_only():
    live = ["SET", "lock:a", OTHER, "NX"]
    masked = mask(live, [OTHER])
    pool = _pool(_set(TOKEN, [TOKEN]))
    served = pool.find("redis", "127.0.0.1:6379", live, "SET", masked=masked)
    assert served.masked and served.exchange.request[2] == TOKEN
    with pytest.raises(NoMatch):  # used up
        pool.find("redis", "127.0.0.1:6379", live, "SET", masked=masked)
    unlisted = _pool(_set(TOKEN))  # the user removed spec.volatile: exact values only
    with pytest.raises(NoMatch):
        unlisted.find("redis", "127.0.0.1:6379", live, "SET", masked=masked)
    exact = _pool(_set(TOKEN, [TOKEN]))  # the same value matches exactly, not masked
    assert not exact.find("redis", "127.0.0.1:6379", ["SET", "lock:a", TOKEN, "NX"], "SET",
                          masked=mask(["SET", "lock:a", TOKEN, "NX"], [TOKEN])).masked


def test_a_masked_match_the_caller_refuses_is_a_miss_and_stays_unused():
    pool = _pool(_set(TOKEN, [TOKEN]))
    live = ["SET", "lock:a", OTHER, "NX"]
    with pytest.raises(NoMatch, match="does not fit the values seen so far: no"):
        pool.find("redis", "127.0.0.1:6379", live, "SET", masked=mask(live, [OTHER]),
                  accept=lambda exchange, values: "no")
    assert [e.used for e in pool.entries()] == [0]


def test_a_repeated_answer_is_served_whatever_value_its_recording_stands_for():
    """asyncpg's SAVEPOINT __asyncpg_savepoint_<n>__ once the recorded ones are used up
    (transaction control repeats its last answer): that recording's name already stands
    for another live name, but a repeated answer does not depend on it."""
    pool = _pool(_set(TOKEN, [TOKEN]))
    first = ["SET", "lock:a", OTHER, "NX"]
    assert not pool.find("redis", "127.0.0.1:6379", first, "SET", masked=mask(first, [OTHER])).repeat
    third = ["SET", "lock:a", "f" * 32, "NX"]
    with pytest.raises(NoMatch):  # not a request that repeats: the mapping decides
        pool.find("redis", "127.0.0.1:6379", third, "SET", masked=mask(third, ["f" * 32]),
                  accept=lambda exchange, values: "no")
    served = pool.find("redis", "127.0.0.1:6379", third, "SET", masked=mask(third, ["f" * 32]),
                       repeat_last=True, accept=lambda exchange, values: "no")
    assert served.repeat and served.exchange.request[2] == TOKEN


def test_a_real_difference_still_misses_and_its_diff_shows_the_masks():
    pool = _pool(Exchange("redis", "127.0.0.1:6379", ["SET", f"session:{UUID}", "a"], [{"simple": "OK"}],
                          summary="SET", extra={"volatile": [UUID]}))
    for live, shown in ((["SET", f"token:{OTHER}", "a"], "token:<volatile>"),
                        (["SET", f"session:{OTHER}", "b"], "b]")):
        masked = mask(live, [OTHER])
        with pytest.raises(NoMatch):
            pool.find("redis", "127.0.0.1:6379", live, "SET", masked=masked)
        diff = pool.nearest("redis", "127.0.0.1:6379", masked, "SET")[0]
        assert "-[SET, 'session:<volatile>', a]" in diff and shown in diff, diff


def test_a_test_that_starts_again_starts_with_no_values_mapped():
    ctx = RunContext(Mode.REPLAY)
    ctx.set_windows({"t1"}, "t1")
    assert ctx.value_map().bind([TOKEN], [OTHER]) is None
    ctx.set_windows({"t1", "t2"}, "t2")
    ctx.set_windows({"t1"})
    assert ctx.value_map().live == {TOKEN: OTHER}  # t1 goes on
    ctx.set_windows(set())
    assert ctx.value_map().live == {}  # outside any test: the run's own
    ctx.set_windows({"t1"}, "t1")  # t1 again (a rerun)
    assert ctx.value_map().live == {}


def _insert(uid: str, name: str, at: int) -> list:
    query = "INSERT INTO t (id, name, at) VALUES ($1, $2, $3) RETURNING id"
    return [{"Parse": {"statement": "", "query": query, "param_types": []}},
            {"Bind": {"portal": "", "statement": "", "query": query, "result_formats": [0],
                      "parameters": [{"binary": "uuid", "value": uid}, name,
                                     {"binary": "int8", "value": at}]}},
            {"Execute": {"portal": "", "max_rows": 0, "query": query}}, {"Sync": {}}]


def test_postgres_bind_parameters_literals_and_savepoint_counters():
    at = int(NOW.timestamp())
    request = _insert(UUID, "apple", at)
    assert pg_volatile(request, NOW) == [UUID, str(at)]
    assert pg_volatile([{"Query": f"SELECT 1 FROM t WHERE id = '{UUID}'"}], NOW) == [UUID]
    assert pg_volatile([{"Query": "RELEASE SAVEPOINT __asyncpg_savepoint_1a__"}], NOW) == [
        "__asyncpg_savepoint_1a__"]
    assert pg_volatile([{"StartupMessage": {"protocol": "3.0", "parameters": {"user": UUID}}}], NOW) == []
    live_uuid, live_at = "9b2d4f6a-1c3e-4a5b-8d7f-0e1f2a3b4c5d", at + 5
    live = _insert(live_uuid, "apple", live_at)
    assert match_key("postgres", mask(request, [UUID, str(at)])) == \
        match_key("postgres", mask(live, pg_volatile(live, NOW)))
    other = _insert(live_uuid, "pear", live_at)  # an ordinary value differs: still differs masked
    assert match_key("postgres", mask(request, [UUID, str(at)])) != \
        match_key("postgres", mask(other, pg_volatile(other, NOW)))
    values = ValueMap()
    assert values.bind(occurrences(request, [UUID, str(at)]), pg_volatile(live, NOW)) is None
    row = [{"DataRow": [UUID, {"binary": "uuid", "value": UUID}, {"binary": "int8", "value": at}]}]
    assert values.to_live(row) == [{"DataRow": [live_uuid, {"binary": "uuid", "value": live_uuid},
                                                {"binary": "int8", "value": live_at}]}]


def test_redis_rules_from_config_yaml():
    rules = rules_from_section({"volatile_arguments": {"set": [2], "HSET": [3, 5]}})
    assert rules == {"SET": frozenset({2}), "HSET": frozenset({3, 5})}
    assert redis_volatile(["SET", "job", "1234"], NOW, rules) == ["1234"]
    assert redis_volatile(["SET", "job", "1234"], NOW) == []
    for bad in ({"volatile_arguments": ["SET"]}, {"volatile_arguments": {"SET": [0]}},
                {"volatile_arguments": {"SET": "2"}}, {"volatile_arguments": {"SET": [True]}}):
        with pytest.raises(ValueError, match="volatile_arguments"):
            rules_from_section(bad)


def test_a_rule_applies_to_recordings_made_before_it():
    recorded = Exchange("redis", "127.0.0.1:6379", ["SET", "job", "1234"], [{"simple": "OK"}])
    rules = rules_from_section({"volatile_arguments": {"SET": [2]}})
    pool = MockPool.build([recorded], match_key, lambda _p, request: rule_values(rules, request))
    live = ["SET", "job", "5678"]
    seen: list = []
    served = pool.find("redis", "127.0.0.1:6379", live, "SET",
                       masked=mask(live, redis_volatile(live, NOW, rules)),
                       accept=lambda exchange, values: seen.append(values))
    assert served.masked and seen == [["1234"]]
    with pytest.raises(NoMatch):  # another key is not covered by the rule
        _pool(recorded).find("redis", "127.0.0.1:6379", live, "SET", masked=mask(live, ["5678"]))


def test_bulk_payloads_are_not_searched():
    assert find_volatile("x" * 17000 + " " + UUID, NOW) == []
    assert find_volatile("x" * 16000 + " " + UUID, NOW) == [UUID]


def test_postgres_rules_from_config_yaml():
    rules = pg_rules_from_section({"volatile_parameters": {"INSERT INTO t": [2]},
                                   "volatile_literals": ["ord-[0-9]+"]})
    request = _insert(UUID, "apple", 7)
    assert pg_volatile(request, NOW, rules) == [UUID, "apple"]  # $2 named; 7 is no epoch
    assert pg_rule_values(rules, request) == ["apple"]
    query = [{"Query": "SELECT 1 FROM orders WHERE ref = 'ord-1234'"}]
    assert pg_volatile(query, NOW, rules) == ["ord-1234"] and pg_rule_values(rules, query) == ["ord-1234"]
    assert pg_volatile(query, NOW) == []
    for bad, message in (({"volatile_parameters": ["x"]}, "must map"),
                         ({"volatile_parameters": {"x": [0]}}, "parameter numbers"),
                         ({"volatile_literals": ["("]}, "not a regular expression")):
        with pytest.raises(ValueError, match=message):
            pg_rules_from_section(bad)


def test_a_postgres_rule_applies_to_older_recordings():
    rules = pg_rules_from_section({"volatile_parameters": {"INSERT INTO t": [2]}})
    # recorded before the rule: its uuid listed (spec.volatile), the name not
    recorded = Exchange("postgres", "127.0.0.1:5432", _insert(UUID, "apple", 7),
                        [{"CommandComplete": "INSERT 0 1"}], extra={"volatile": [UUID]})
    live = _insert("9b2d4f6a-1c3e-4a5b-8d7f-0e1f2a3b4c5d", "pear", 7)
    seen: list = []
    pool = MockPool.build([recorded], match_key, lambda _p, request: pg_rule_values(rules, request))
    served = pool.find("postgres", "127.0.0.1:5432", live, "INSERT",
                       masked=mask(live, pg_volatile(live, NOW, rules)),
                       accept=lambda exchange, values: seen.append(values))
    assert served.masked and seen == [[UUID, "apple"]]
    unruled = MockPool.build([recorded], match_key)
    with pytest.raises(NoMatch):  # without the rule, pear is not apple
        unruled.find("postgres", "127.0.0.1:5432", live, "INSERT",
                     masked=mask(live, pg_volatile(live, NOW)))


def test_a_text_seen_before_is_not_searched_again(monkeypatch):
    """The detectors run once per text (record pays them per request otherwise): the same
    key again gets the same answer from memory, also a text with nothing volatile."""
    from trproxy.protocols import volatile as v

    monkeypatch.setattr(v, "_MEMO", {})
    searched: list[str] = []
    find = v._find
    monkeypatch.setattr(v, "_find", lambda text, now, also: searched.append(text) or find(text, now, also))
    for _ in range(3):
        assert find_volatile(f"session:{UUID}", NOW) == [UUID]
        assert find_volatile("key:__rand_int__", NOW) == []
    assert searched == [f"session:{UUID}", "key:__rand_int__"]
    found = find_volatile(f"session:{UUID}", NOW)
    found.append("changed")  # the caller's list, not the remembered answer
    assert find_volatile(f"session:{UUID}", NOW) == [UUID]


def test_an_answer_that_depends_on_the_time_is_not_remembered(monkeypatch):
    """An epoch number or a date is volatile only near the time of the recording: asked
    again at another time, the text is searched again and may answer otherwise."""
    from trproxy.protocols import volatile as v

    monkeypatch.setattr(v, "_MEMO", {})
    later = datetime(2027, 6, 1, tzinfo=UTC)
    for text in (f"ts:{EPOCH}", "day 2026-12-03 at noon"):
        assert find_volatile(text, NOW) != []
        assert find_volatile(text, later) == []
        assert find_volatile(text, NOW) != []
    assert v._MEMO == {}


def test_the_memory_of_texts_is_bounded(monkeypatch):
    from trproxy.protocols import volatile as v

    monkeypatch.setattr(v, "_MEMO", {})
    monkeypatch.setattr(v, "_MEMO_SIZE", 8)
    for i in range(20):
        find_volatile(f"key:{i:04d}:name", NOW)
    assert len(v._MEMO) == 8 and ("key:0019:name", "") in v._MEMO
    find_volatile("x" * (v._MEMO_TEXT + 1), NOW)
    assert ("x" * (v._MEMO_TEXT + 1), "") not in v._MEMO

"""Recorder pairing, redaction, lifetimes, match keys, replay and detection (no servers)."""

from __future__ import annotations

import pytest
import yaml

from tests.protocols.redis.redis_support import record
from tests.support.chunking import bytewise, side_bytes
from tests.support.recording import capture, capture_run
from tests.support.replay_server import Mocks
from trproxy.protocols.base import Direction, Lookup, LookupContext, Pushed, UnexpectedMessage
from trproxy.protocols.credentials import hashed
from trproxy.protocols.redis import DIALECT, RedisRecorder, RedisReplayer, match_key


def stream(*pairs: tuple[str, bytes]) -> list[tuple[str, bytes]]:
    return list(pairs)


def plain(chunks, **kw):  # type: ignore[no-untyped-def]
    rec = record(chunks, **kw)
    assert rec.error is None, rec.error
    # cutting the bytes differently never changes the result
    assert record(bytewise(chunks), **kw).plain() == rec.plain()
    return [("pushed", i["pushed"], None) if "pushed" in i else
            (i["request"], i["responses"], i["lifetime"]) for i in rec.plain()]


def test_pipelined_requests_pair_in_order() -> None:
    got = plain(stream(("client", b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\nPING\r\n"),
                       ("server", b"$1\r\n1\r\n$-1\r\n"), ("server", b"+PONG\r\n")))
    assert got == [(["GET", "a"], ["1"], "data"), (["GET", "b"], [None], "data"),
                   (["PING"], [{"simple": "PONG"}], "session")]


def test_interactions_are_emitted_as_soon_as_answered() -> None:
    recorder = RedisRecorder()
    assert recorder.feed(Direction.CLIENT, b"GET a\r\nGET b\r\n") == []
    first = recorder.feed(Direction.SERVER, b"$1\r\n1\r\n")
    assert [i.request for i in first] == [["GET", "a"]]
    assert [i.request for i in recorder.feed(Direction.SERVER, b"$1\r\n2\r\n")] == [["GET", "b"]]


def test_client_reply_off_skip_on() -> None:
    got = plain(stream(("client", b"CLIENT REPLY SKIP\r\nSET a 1\r\nSET b 2\r\nCLIENT REPLY OFF\r\n"
                                  b"SET c 3\r\nCLIENT REPLY ON\r\nGET c\r\n"),
                       ("server", b"+OK\r\n+OK\r\n$1\r\n3\r\n")))
    assert [(r, s) for r, s, _ in got] == [
        (["CLIENT", "REPLY", "SKIP"], []), (["SET", "a", "1"], []), (["SET", "b", "2"], [{"simple": "OK"}]),
        (["CLIENT", "REPLY", "OFF"], []), (["SET", "c", "3"], []),
        (["CLIENT", "REPLY", "ON"], [{"simple": "OK"}]), (["GET", "c"], ["3"]),
    ]


def test_multi_exec_queued_replies() -> None:
    got = plain(stream(("client", b"MULTI\r\nINCR n\r\nCLIENT REPLY OFF\r\nEXEC\r\nGET n\r\n"),
                       ("server", b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n+OK\r\n$1\r\n1\r\n")))
    assert [s for _, s, _ in got] == [[{"simple": "OK"}], [{"simple": "QUEUED"}],
                                      [{"simple": "QUEUED"}], [[{"int": 1}, {"simple": "OK"}]], ["1"]]


RESP2_PUBSUB = stream(
    ("client", b"SUBSCRIBE a b\r\n"),
    ("server", b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"),
    ("server", b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nm1\r\n"),  # between the confirmations
    ("server", b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"),
    ("server", b"*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$2\r\nm2\r\n"),
    ("client", b"PING\r\n"),
    ("server", b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nm3\r\n"),  # before PING's reply
    ("server", b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
    ("client", b"UNSUBSCRIBE\r\n"),
    ("server", b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n"),
    ("client", b"GET k\r\n"),
    ("server", b"$7\r\nmessage\r\n"),  # not subscribed any more: a plain reply
)


def test_resp2_pubsub_messages_are_pushed_as_they_arrive() -> None:
    """Out-of-band messages are returned as ``Pushed`` the moment they arrive (the proxy
    records when), between the interactions, even between two confirmations."""
    got = plain(RESP2_PUBSUB)
    assert got == [
        ("pushed", [["message", "a", "m1"]], None),
        (["SUBSCRIBE", "a", "b"], [["subscribe", "a", {"int": 1}], ["subscribe", "b", {"int": 2}]],
         "data"),
        ("pushed", [["message", "b", "m2"]], None),
        ("pushed", [["message", "a", "m3"]], None),
        (["PING"], [["pong", ""]], "session"),
        (["UNSUBSCRIBE"], [["unsubscribe", "a", {"int": 1}], ["unsubscribe", "b", {"int": 0}]], "data"),
        (["GET", "k"], ["message"], "data"),
    ]


def test_a_subscription_is_returned_at_its_confirmation() -> None:
    recorder = RedisRecorder()
    recorder.feed(Direction.CLIENT, b"SUBSCRIBE a\r\n")
    [sub] = recorder.feed(Direction.SERVER, b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n")
    assert sub.request == ["SUBSCRIBE", "a"]
    [msg] = recorder.feed(Direction.SERVER, b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n")
    assert isinstance(msg, Pushed) and msg.responses == [["message", "a", "x"]]
    assert msg.summary == "message a"
    assert recorder.feed(Direction.SERVER, b"") == []


def test_resp3_pushes_are_pushed_and_a_ping_stays_session() -> None:
    got = plain(stream(
        ("client", b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\nc\r\n"),
        ("server", b">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"),
        ("client", b"PING\r\n"),
        ("server", b"+PONG\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n"),
        ("client", b"UNSUBSCRIBE c\r\n"),
        ("server", b">3\r\n$11\r\nunsubscribe\r\n$1\r\nc\r\n:0\r\n"),
    ))
    assert got == [
        (["SUBSCRIBE", "c"], [{"push": ["subscribe", "c", {"int": 1}]}], "data"),
        (["PING"], [{"simple": "PONG"}], "session"),
        ("pushed", [{"push": ["message", "c", "hi"]}], None),
        (["UNSUBSCRIBE", "c"], [{"push": ["unsubscribe", "c", {"int": 0}]}], "data"),
    ]


def test_an_unsolicited_push_is_pushed_between_interactions() -> None:
    got = plain(stream(("client", b"GET a\r\n"), ("server", b"$1\r\n1\r\n"),
                       ("server", b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\na\r\n"),
                       ("client", b"GET a\r\n"), ("server", b"$1\r\n2\r\n")))
    assert [s for _, s, _ in got] == [["1"], [{"push": ["invalidate", ["a"]]}], ["2"]]


def test_monitor_lines_are_out_of_band() -> None:
    got = plain(stream(("client", b"MONITOR\r\n"), ("server", b"+OK\r\n"),
                       ("server", b'+1700000000.123456 [0 127.0.0.1:5000] "GET" "k"\r\n'),
                       ("client", b"RESET\r\n"), ("server", b"+RESET\r\n")))
    assert [s for _, s, _ in got] == [
        [{"simple": "OK"}], [{"simple": '1700000000.123456 [0 127.0.0.1:5000] "GET" "k"'}],
        [{"simple": "RESET"}]]
    assert got[1][0] == "pushed"


def test_errors_end_subscriptions_and_blocking_replies_pair_normally() -> None:
    got = plain(stream(("client", b"SUBSCRIBE\r\nBLPOP q 1\r\n"),
                       ("server", b"-ERR wrong number of arguments for 'subscribe' command\r\n"),
                       ("server", b"*-1\r\n")))
    assert [s for _, s, _ in got] == [[{"error": "ERR wrong number of arguments for 'subscribe' command"}],
                                      [{"array": None}]]


def test_unanswered_requests_at_close_are_recorded_as_such() -> None:
    """A blocking BLPOP the client gave up on: recorded with no answer and ``unanswered``
    (replay holds it: it sends nothing until the client goes, as the server did)."""
    rec = record(stream(("client", b"GET a\r\nBLPOP q 0\r\n"), ("server", b"$1\r\n1\r\n")))
    assert [(i.request, i.responses, i.unanswered) for i in rec.interactions] == [
        (["GET", "a"], ["1"], False), (["BLPOP", "q", "0"], [], True)]
    assert rec.unanswered == [["BLPOP", "q", "0"]]


def test_a_reply_without_request_is_unexpected() -> None:
    with pytest.raises(UnexpectedMessage):
        RedisRecorder().feed(Direction.SERVER, b"+OK\r\n")


def test_an_error_after_complete_interactions_is_raised_on_the_next_feed() -> None:
    recorder = RedisRecorder()
    recorder.feed(Direction.CLIENT, b"PING\r\n")
    assert len(recorder.feed(Direction.SERVER, b"+PONG\r\n\x00garbage\r\n")) == 1
    with pytest.raises(Exception) as info:
        recorder.feed(Direction.CLIENT, b"PING\r\n")
    assert "type byte" in str(info.value)


def test_secrets_never_reach_the_readable_form() -> None:
    secret = "s3cr3t-pw"
    got = plain(stream(
        ("client", b"AUTH s3cr3t-pw\r\nAUTH user s3cr3t-pw\r\nHELLO 3 AUTH user s3cr3t-pw SETNAME app\r\n"
                   b"CONFIG SET requirepass s3cr3t-pw maxmemory 1mb\r\nCONFIG GET requirepass\r\n"
                   b"ACL SETUSER bob on >s3cr3t-pw ~* +@all\r\n"
                   b"MIGRATE h 1 k 0 5 COPY AUTH2 user s3cr3t-pw KEYS a\r\n"),
        ("server", b"+OK\r\n+OK\r\n%1\r\n$5\r\nproto\r\n:3\r\n+OK\r\n"
                   b"*2\r\n$11\r\nrequirepass\r\n$9\r\ns3cr3t-pw\r\n+OK\r\n+NOKEY\r\n"),
    ))
    assert secret not in yaml.safe_dump(got)
    default_pw, user_pw = hashed(secret.encode(), "redis default"), hashed(secret.encode(), "redis user")
    assert default_pw != user_pw and default_pw.startswith("<redacted:scrypt:")
    assert got[0][0] == ["AUTH", default_pw]  # login secrets: hashed, they take part in matching
    assert got[1][0] == ["AUTH", "user", user_pw]
    assert got[2][0] == ["HELLO", "3", "AUTH", "user", user_pw, "SETNAME", "app"]
    # the passwords a later login gives: hashed like it (and volatile, see below)
    assert got[3][0] == ["CONFIG", "SET", "requirepass", default_pw, "maxmemory", "1mb"]
    assert got[4][1] == [["requirepass", "<redacted>"]]
    bob_pw = hashed(secret.encode(), "redis bob")
    assert got[5][0] == ["ACL", "SETUSER", "bob", "on", ">" + bob_pw, "~*", "+@all"]
    assert got[6][0][-5:] == ["AUTH2", "user", "<redacted>", "KEYS", "a"]
    assert [lt for _, _, lt in got] == ["session", "session", "session", "data", "session", "data", "data"]


def test_passwords_the_run_sets_are_volatile_and_logins_are_not() -> None:
    """A password set by ``CONFIG SET requirepass`` or an ``ACL SETUSER`` rule is listed as
    volatile (mapped recorded -> live at replay); the login itself never is (it must match)."""
    from datetime import UTC, datetime
    now = datetime.now(UTC)
    pw, bob = hashed(b"x7Kq2", "redis default"), hashed(b"x7Kq2", "redis bob")
    assert DIALECT.volatile(["CONFIG", "SET", "requirepass", pw, "maxmemory", "1mb"], now) == [pw]
    assert DIALECT.volatile(["ACL", "SETUSER", "bob", "on", ">" + bob, "<" + bob, "#<redacted>"],
                            now) == [bob, bob]
    assert DIALECT.volatile(["CONFIG", "SET", "masterauth", "<redacted>"], now) == []
    assert DIALECT.volatile(["AUTH", pw], now) == []
    assert DIALECT.volatile(["HELLO", "3", "AUTH", "bob", bob], now) == []


@pytest.mark.parametrize(("left", "right"), [
    (["get", "k"], ["GET", "k"]),
    (["client", "setinfo", "lib-ver", "5.0.1"], ["CLIENT", "SETINFO", "LIB-VER", "8.1.0"]),
    (["HELLO", "3", "AUTH", "u", "<redacted:scrypt:1:2>", "SETNAME", "a"],
     ["hello", "3", "auth", "u", "<redacted:scrypt:1:2>"]),
    (["AUTH", "<redacted:scrypt:1:2>"], ["auth", "default", "<redacted:scrypt:1:2>"]),
    (["CLIENT", "SETNAME", "worker-1"], ["client", "setname", "worker-2"]),
    (["CLIENT", "TRACKING", "on", "REDIRECT", "7"], ["CLIENT", "TRACKING", "ON", "redirect", "12"]),
    (["config", "get", "maxmemory"], ["CONFIG", "GET", "maxmemory"]),
    # members in a set's iteration order, which differs between runs: a count either way
    (["SADD", "a", "2", "1", {"hex": "00"}], ["sadd", "a", {"hex": "00"}, "1", "2"]),
    (["PFADD", "a", "3", "1"], ["PFADD", "a", "1", "3"]), (["DEL", "b", "a"], ["DEL", "a", "b"]),
    (["PFMERGE", "d", "c", "a"], ["PFMERGE", "d", "a", "c"]),
    (["SMISMEMBER", "s", "b", "a"], ["smismember", "s", "a", "b"]),  # answer reordered: below
    # field/value pairs in a mapping's order: any order when no field repeats
    (["HSET", "h", "b", "2", "a", "1"], ["hset", "h", "a", "1", "b", "2"]),
    (["MSET", "k2", "v", "k1", "w"], ["MSET", "k1", "w", "k2", "v"]),
])
def test_match_keys_that_are_equal(left: list, right: list) -> None:
    assert match_key(left) == match_key(right)


@pytest.mark.parametrize(("left", "right"), [
    (["GET", "k"], ["GET", "K"]),
    (["HELLO", "3"], ["HELLO", "2"]),
    (["HELLO", "3", "AUTH", "u", "<redacted:scrypt:1:2>"], ["HELLO", "3"]),
    (["HELLO", "3", "AUTH", "u", "<redacted:scrypt:1:2>"], ["HELLO", "3", "AUTH", "v", "<redacted:scrypt:1:2>"]),
    (["AUTH", "<redacted:scrypt:1:2>"], ["AUTH", "<redacted:scrypt:1:3>"]),
    (["AUTH", "u", "<redacted:scrypt:1:2>"], ["AUTH", "<redacted:scrypt:1:2>"]),
    (["SELECT", "0"], ["SELECT", "1"]),
    (["CLIENT", "SETINFO", "LIB-NAME", "x"], ["CLIENT", "SETINFO", "LIB-VER", "x"]),
    (["SET", "k", {"hex": "00"}], ["SET", "k", {"hex": "01"}]),
    (["SADD", "a", "1"], ["SADD", "b", "1"]), (["PFMERGE", "d", "a"], ["PFMERGE", "a", "d"]),
    (["RPUSH", "l", "1", "2"], ["RPUSH", "l", "2", "1"]), (["DEL", "a", "a"], ["DEL", "a"]),
    (["HSET", "h", "a", "1", "b", "2"], ["HSET", "h", "a", "2", "b", "1"]),  # values stay with fields
    (["HSET", "h", "a", "1", "a", "2"], ["HSET", "h", "a", "2", "a", "1"]),  # the last a wins
    (["HSET", "h", "a", "1", "b", "2"], ["HSET", "g", "a", "1", "b", "2"]),
])
def test_match_keys_that_differ(left: list, right: list) -> None:
    assert match_key(left) != match_key(right)


# --- replay -----------------------------------------------------------------------------


def test_a_per_member_answer_follows_the_live_order() -> None:
    """``SMISMEMBER`` of a set sent in another order matches; its answer (one 0/1 per
    member, in the request's order) is reordered to the live request's order."""
    replayer = RedisReplayer()
    [lookup] = replayer.feed(b"*5\r\n$10\r\nSMISMEMBER\r\n$1\r\ns\r\n$1\r\nc\r\n$1\r\na\r\n$1\r\nb\r\n")
    assert isinstance(lookup, Lookup)
    lookup.context.recorded = ["SMISMEMBER", "s", "a", "b", "c"]  # answered 1, 0, 0
    assert replayer.respond(lookup, [[{"int": 1}, {"int": 0}, {"int": 0}]]) == b"*3\r\n:0\r\n:1\r\n:0\r\n"
    lookup.context.recorded = ["SMISMEMBER", "s", "a", "b", "d"]  # other members: as recorded
    assert replayer.respond(lookup, [[{"int": 1}, {"int": 0}, {"int": 0}]]) == b"*3\r\n:1\r\n:0\r\n:0\r\n"


def test_replay_reproduces_the_recorded_server_bytes() -> None:
    """Recorded as the proxy records (through ``Capture``: pushes as events), replayed by
    the engine: the same bytes, the pushes where they were (here the connection's own
    requests are the latest when they arrive, so they follow them)."""
    chunks = stream(
        ("client", b"SUBSCRIBE a\r\n"),
        ("server", b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"),
        ("server", b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nm1\r\n"),
        ("client", b"PING\r\n"),
        ("server", b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nm2\r\n"),  # before PING's reply
        ("server", b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
        ("client", b"UNSUBSCRIBE\r\n"),
        ("server", b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n"),
    )
    replayer = RedisReplayer()
    client, server = side_bytes(chunks, "client"), side_bytes(chunks, "server")
    assert Mocks("redis", capture(chunks)).replay_bytes(replayer, client) == server


def test_logins_are_served_only_to_the_recorded_credentials() -> None:
    """A recorded WRONGPASS goes to the same wrong password, the recorded +OK to the right
    one (however it is spelled: AUTH pw is AUTH default pw); anything else is refused."""
    wrongpass = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    rec = record(stream(("client", b"AUTH nope\r\n"), ("server", wrongpass),
                        ("client", b"AUTH default right\r\nHELLO 3 AUTH ann annpw\r\n"),
                        ("server", b"+OK\r\n%1\r\n$5\r\nproto\r\n:3\r\n")))
    assert rec.error is None and "right" not in yaml.safe_dump(rec.plain())
    mocks = Mocks("redis", rec.interactions)
    for live, answer in [(b"AUTH nope\r\n", wrongpass), (b"AUTH right\r\n", b"+OK\r\n"),
                         (b"AUTH default right\r\n", b"+OK\r\n"), (b"AUTH nope\r\n", wrongpass),
                         (b"HELLO 3 AUTH ann annpw\r\n", b"%1\r\n$5\r\nproto\r\n:3\r\n")]:
        assert mocks.replay_bytes(RedisReplayer(), live) == answer
    assert mocks.misses == []
    for live in [b"AUTH Right\r\n", b"AUTH ann right\r\n", b"HELLO 3 AUTH ann other\r\n"]:
        assert mocks.replay_bytes(RedisReplayer(), live).startswith(b"-WRONGPASS trproxy: no recording for ")
    assert len(mocks.misses) == 3


def test_secrets_in_replies_are_redacted() -> None:
    sha = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"

    def bulk(*items: str) -> bytes:
        return f"*{len(items)}\r\n".encode() + b"".join(f"${len(i)}\r\n{i}\r\n".encode() for i in items)

    got = plain(stream(
        ("client", b"ACL LIST\r\nSENTINEL CONFIG GET *\r\nACL GETUSER u\r\nCONFIG GET *\r\n"),
        ("server", bulk("user default on nopass ~* &* +@all", f"user u on #{sha} ~* resetchannels -@all")
         + bulk("sentinel-pass", "sp1", "loglevel", "notice")
         + b"%1\r\n$9\r\npasswords\r\n" + bulk(sha)
         + bulk("masterauth", "ma1", "maxclients", "10000")),
    ))
    assert sha not in yaml.safe_dump(got) and "sp1" not in str(got) and "ma1" not in str(got)
    assert got[0][1] == [["user default on nopass ~* &* +@all",
                          "user u on #<redacted> ~* resetchannels -@all"]]
    assert got[1][1] == [["sentinel-pass", "<redacted>", "loglevel", "notice"]]
    assert got[2][1] == [{"map": [["passwords", ["<redacted>"]]]}]
    assert got[3][1] == [["masterauth", "<redacted>", "maxclients", "10000"]]


def test_sentinel_settings_are_redacted() -> None:
    got = plain(stream(("client", b"SENTINEL SET m auth-pass s1 quorum 2\r\n"
                                  b"SENTINEL CONFIG SET sentinel-pass s2\r\n"),
                       ("server", b"+OK\r\n+OK\r\n")))
    assert got[0][0] == ["SENTINEL", "SET", "m", "auth-pass", "<redacted>", "quorum", "2"]
    assert got[1][0] == ["SENTINEL", "CONFIG", "SET", "sentinel-pass", "<redacted>"]


def test_replay_tracks_client_reply_and_hello() -> None:
    replayer = RedisReplayer()
    events = replayer.feed(b"CLIENT REPLY SKIP\r\nSET a 1\r\nGET a\r\n")
    assert [e.expects_reply for e in events] == [False, False, True]
    hello3 = Lookup(request=["HELLO", "3"], context=LookupContext(private={"name": b"HELLO", "proto": 3}))
    recorded_resp2 = [["server", "redis", "proto", {"int": 2}]]
    assert replayer.respond(hello3, recorded_resp2) == (
        b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n")
    assert replayer.resp == 3
    (get,) = replayer.feed(b"HGETALL h\r\n")
    resp3_map = [{"map": [["f", {"double": "1.5"}], ["g", {"null": True}]]}]
    assert replayer.respond(get, resp3_map) == b"%2\r\n$1\r\nf\r\n,1.5\r\n$1\r\ng\r\n_\r\n"
    (reset,) = replayer.feed(b"RESET\r\n")
    assert replayer.respond(reset, [{"simple": "RESET"}]) == b"+RESET\r\n"
    assert replayer.resp == 2  # a RESP2 client gets RESP3 recordings in RESP2 form
    assert replayer.respond(get, resp3_map) == b"*4\r\n$1\r\nf\r\n$3\r\n1.5\r\n$1\r\ng\r\n$-1\r\n"


def test_handshakes_are_synthesized_when_nothing_was_recorded() -> None:
    replayer = RedisReplayer()
    events = replayer.feed(b"HELLO 3\r\nCLIENT SETINFO LIB-VER 9\r\nSELECT 2\r\nPING\r\n"
                           b"PING hi\r\nGET k\r\n")
    answers = [replayer.miss(e, "nothing recorded") for e in events]
    assert answers[0].startswith(b"%7\r\n$6\r\nserver\r\n")
    assert b"$5\r\nproto\r\n:3\r\n" in answers[0]
    assert answers[1:5] == [b"+OK\r\n", b"+OK\r\n", b"+PONG\r\n", b"$2\r\nhi\r\n"]
    assert answers[5] == b"-ERR trproxy: no recording for GET k: nothing recorded\r\n"
    assert [e.context.handshake for e in events] == [True] * 5 + [False]
    hello2 = replayer.feed(b"HELLO 2\r\n")[0]
    assert replayer.miss(hello2, "x").startswith(b"*14\r\n")
    assert replayer.resp == 2


def test_unknown_credentials_are_refused_and_reported() -> None:
    """Credentials are matched: a login no recording answers is refused as the server
    would (WRONGPASS, which clients raise as an authentication error) and reported."""
    replayer = RedisReplayer()
    events = replayer.feed(b"AUTH pw\r\nAUTH u pw\r\nHELLO 3 AUTH u pw\r\n")
    assert [e.context.handshake for e in events] == [False] * 3
    answers = [replayer.miss(e, "no recorded request matches") for e in events]
    assert all(a.startswith(b"-WRONGPASS trproxy: no recording for ") for a in answers)
    assert answers[2] == (b"-WRONGPASS trproxy: no recording for HELLO with these credentials: "
                          b"no recorded request matches\r\n")
    assert replayer.resp == 2  # a refused HELLO switches nothing
    assert events[2].request == ["HELLO", "3", "AUTH", "u", hashed(b"pw", "redis u")]


def test_a_miss_reason_stays_on_one_line() -> None:
    (lookup,) = RedisReplayer().feed(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
    answer = RedisReplayer().miss(lookup, "nearest:\n  GET j\r\n")
    assert answer == b"-ERR trproxy: no recording for GET k: nearest: GET j\r\n"


# --- detection --------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "verdict"), [
    (b"*1\r\n$4\r\nPING\r\n", True),
    (b"*3\r\n$3\r\n", True),
    (b"*", None), (b"*1", None), (b"*1\r", None), (b"*1\r\n$", None), (b"*12\r\n$12\r", None),
    (b"*x", False), (b"*0\r\n", False), (b"*1\r\n:1", False),
    (b"PING\r\n", True), (b"ping\r\n", True), (b"SET k v\r\n", True), (b"PI", None),
    (b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n", False),
    (b"GET /index.html", None),
    (b"GET key\r\n", True),
    (b"POST / HTTP/1.1\r\n", False),
    (b"\x16\x03\x01\x02\x00", False),  # TLS
    (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", False),  # PostgreSQL SSLRequest
    (b"\r\n", None),
])
def test_detect(data: bytes, verdict: bool | None) -> None:
    assert DIALECT.detect(data, 6379) is verdict
    assert DIALECT.detect(data, 80) is verdict  # the port is only a hint: bytes decide


def test_quit_is_answered_then_the_connection_closes_as_the_server_did() -> None:
    """redis-server closes after answering QUIT, and clients wait for that close (ioredis'
    ``quit()`` resolves on it; a replay that kept the connection open hung the app). The
    recorded close answers QUIT: it is no event of its own."""
    exchanges = capture_run([("a", "client", b"SET k v\r\n"), ("a", "server", b"+OK\r\n"),
                             ("a", "client", b"QUIT\r\n"), ("a", "server", b"+OK\r\n"),
                             ("a", "server", b"")])
    assert [e.event for e in exchanges] == [None, None]
    mocks = Mocks("redis", exchanges)
    session = mocks.session(RedisReplayer())
    assert mocks.replay(session, b"SET k v\r\n") == (b"+OK\r\n", False)
    assert mocks.replay(session, b"QUIT\r\n") == (b"+OK\r\n", True)
    # nothing recorded: QUIT is still answered, and closes
    assert Mocks("redis").replay(Mocks("redis").session(RedisReplayer()), b"QUIT\r\n") == (b"+OK\r\n", True)

"""Backend identity and credentials at replay (no server): the pid and cancel key a
replayed connection reports, consistently; passwords asked again and matched by hash."""

from __future__ import annotations

import struct

import pytest

from tests.protocols.postgres.build import HANDSHAKE, STARTUP, Replay, client, record, server, wire
from tests.support.replay_server import Mocks
from trproxy.protocols.base import Interrupt
from trproxy.protocols.postgres import PostgresReplayer
from trproxy.protocols.postgres import backend as be
from trproxy.protocols.postgres import frontend as fe
from trproxy.protocols.postgres.backend import backend_key
from trproxy.protocols.postgres.identity import (
    SYNTHETIC,
    Backends,
    cancel_key,
    is_backend_pid_sql,
    terminated_pids,
)

PID = be.FieldDescription("pg_backend_pid", 0, 0, 23, 4, -1, 0)


def handshake(pid: int) -> list:
    return [m if not isinstance(m, be.BackendKeyData) else be.BackendKeyData(pid, b"\x09\x08\x07\x06")
            for m in HANDSHAKE]


def connection(pid: int, *exchanges) -> list:
    """What a recorder makes of one connection of backend ``pid``."""
    chunks = [client(STARTUP), server(*handshake(pid))]
    for request, answer in exchanges:
        chunks += [client(*request), server(*answer)]
    return record(*chunks)


def key_of(answer: list) -> be.BackendKeyData:
    return next(m for m in answer if isinstance(m, be.BackendKeyData))


def backend_pid(pid: int, binary: bool = False) -> tuple[list, list]:
    """``SELECT pg_backend_pid()`` as psql sends it, or as asyncpg does (binary)."""
    value = struct.pack("!i", pid) if binary else str(pid).encode()
    if binary:
        sql = "SELECT pg_backend_pid()"
        return ([fe.Parse("", sql), fe.Bind("", "", (), (), (1,)), fe.Describe("P"), fe.Execute(), fe.Sync()],
                [be.ParseComplete(), be.BindComplete(), be.RowDescription((PID,)), be.DataRow((value,)),
                 be.CommandComplete("SELECT 1"), be.ReadyForQuery("I")])
    return ([fe.Query("select pg_backend_pid();")],
            [be.RowDescription((PID,)), be.DataRow((value,)), be.CommandComplete("SELECT 1"),
             be.ReadyForQuery("I")])


def test_a_connection_reports_the_recorded_backend_it_follows():
    recorded = connection(4242, backend_pid(4242))
    replay = Replay(recorded)
    assert key_of(replay.send(STARTUP)) == be.BackendKeyData(4242, cancel_key(4242))
    assert replay.send(fe.Query("select pg_backend_pid();"))[1] == be.DataRow((b"4242",))
    assert replay.replayer.backend.pid == 4242 and replay.replayer.backend.key == cancel_key(4242)
    # the recorded secret key is nowhere: not in the recording, not at replay
    assert "09080706" not in str([i.responses for i in recorded])


@pytest.mark.parametrize("binary", [False, True])
def test_pg_backend_pid_answers_the_live_pid_whichever_connection_recorded_it(binary):
    """Two recorded connections; the live connections connect in the other order, so each
    takes the identity of the other recorded one: pg_backend_pid() agrees with BackendKeyData."""
    backends = Backends()
    first = connection(100, backend_pid(100, binary))
    second = connection(200)
    a, b = Replay(second, backends), Replay(first, backends)  # a plays 200, b plays 100
    assert key_of(a.send(STARTUP)).process_id == 200
    assert key_of(b.send(STARTUP)).process_id == 100
    a.mocks.add(first[1:])  # a's query was recorded on the connection of pid 100
    request, _ = backend_pid(0, binary)
    rows = [m for m in a.send(*request) if isinstance(m, be.DataRow)]
    assert rows == [be.DataRow((struct.pack("!i", 200) if binary else b"200",))]
    # the answer was recorded by backend 100: a now plays it (its notifications are a's)
    assert backends.live_pid(100) == 200 and backends.live_pid(200) == 200


def test_more_connections_than_recorded_get_distinct_pids_and_keys():
    backends = Backends()
    recorded = connection(4242)
    first, second = Replay(recorded, backends), Replay(recorded, backends)
    one, two = key_of(first.send(STARTUP)), key_of(second.send(STARTUP))  # the 2nd repeats the startup
    assert one.process_id == 4242 and two.process_id == SYNTHETIC
    assert one.secret_key != two.secret_key
    assert second.replayer.identity == backend_key(two.process_id, two.secret_key)
    assert backend_key(two.process_id, one.secret_key) not in (first.replayer.identity,
                                                               second.replayer.identity)
    first.send(fe.Terminate())
    # a connection that ends does not give its pid to the next one: a server never does
    # (psycopg's pool tests check that a reconnection has another pid)
    third = Replay(recorded, backends)
    assert key_of(third.send(STARTUP)).process_id == SYNTHETIC + 1


def test_notifications_name_the_live_connection_that_plays_the_notifier():
    backends = Backends()
    listener = connection(300, ([fe.Query("LISTEN jobs")], [be.CommandComplete("LISTEN"), be.ReadyForQuery("I")]),
                          ([fe.Query("SELECT 1")], [be.NotificationResponse(400, "jobs", "from 400"),
                                                    be.NotificationResponse(300, "jobs", "from me"),
                                                    be.NotificationResponse(999, "jobs", "not replayed"),
                                                    be.CommandComplete("SELECT 1"), be.ReadyForQuery("I")]))
    notifier = connection(400)
    b = Replay(notifier, backends)
    assert key_of(b.send(STARTUP)).process_id == 400
    b2 = Replay(notifier, backends)
    assert key_of(b2.send(STARTUP)).process_id == SYNTHETIC  # 400 is taken
    b.send(fe.Terminate())  # the live connection playing 400 is now b2 alone
    a = Replay(listener, backends)
    assert key_of(a.send(STARTUP)).process_id == 300
    a.send(fe.Query("LISTEN jobs"))
    notes = [m for m in a.send(fe.Query("SELECT 1")) if isinstance(m, be.NotificationResponse)]
    assert [(n.process_id, n.payload) for n in notes] == [
        (SYNTHETIC, "from 400"), (300, "from me"), (999, "not replayed")]


def test_a_notification_names_the_live_connection_that_was_served_the_notifier_s_work():
    """asyncpg's pool hands its connections out in another order than they connected: the
    live connection that sends the NOTIFY started as another recorded backend. Being
    served the NOTIFY that backend 400 recorded, it plays 400 now, and the listener's
    notification names it (``get_server_pid()`` of the notifier)."""
    def numbered(connection: int, interactions) -> list[dict]:
        return [{"request": i.request, "responses": i.responses, "lifetime": i.lifetime,
                 "summary": i.summary, "connection": connection, "seq": n}
                for n, i in enumerate(interactions, 1)]
    notify = ([fe.Query("NOTIFY jobs")], [be.CommandComplete("NOTIFY"), be.ReadyForQuery("I")])
    other = ([fe.Query("SELECT 2")], [be.CommandComplete("SELECT 1"), be.ReadyForQuery("I")])
    listen = ([fe.Query("LISTEN jobs")], [be.CommandComplete("LISTEN"), be.ReadyForQuery("I")])
    wait = ([fe.Query("SELECT 1")], [be.NotificationResponse(400, "jobs", "hi"), be.CommandComplete("SELECT 1"),
                                     be.ReadyForQuery("I")])
    mocks = Mocks("postgres", numbered(1, connection(400, notify)) + numbered(2, connection(500, other))
                  + numbered(3, connection(300, listen, wait)))
    first, second = Replay(mocks=mocks, backends=mocks.backends), Replay(mocks=mocks, backends=mocks.backends)
    assert key_of(first.send(STARTUP)).process_id == 400
    assert key_of(second.send(STARTUP)).process_id == 500
    second.send(fe.Query("NOTIFY jobs"))  # recorded by backend 400
    first.send(fe.Query("SELECT 2"))  # recorded by backend 500
    listener = Replay(mocks=mocks, backends=mocks.backends)
    assert key_of(listener.send(STARTUP)).process_id == 300
    listener.send(fe.Query("LISTEN jobs"))
    notes = [m for m in listener.send(fe.Query("SELECT 1")) if isinstance(m, be.NotificationResponse)]
    assert [(n.process_id, n.payload) for n in notes] == [(500, "hi")]


def test_cancel_request_names_the_backend_it_cancels():
    """The key a replayed startup hands out is the identity a CancelRequest then names:
    the engine routes the ``Interrupt`` to that connection."""
    started = Replay(connection(4242), Backends())
    key = key_of(started.send(STARTUP))
    assert started.replayer.identity == backend_key(key.process_id, key.secret_key)
    replayer = PostgresReplayer(backends=Backends())
    assert replayer.feed(wire(fe.CancelRequest(4242, cancel_key(4242)))) == [
        Interrupt(backend_key(4242, cancel_key(4242)))]
    assert replayer.close_after and replayer.backend is None


def test_a_recorded_key_of_an_older_recording_is_not_handed_out():
    recorded = connection(4242)
    for item in recorded[0].responses:  # recorded before keys were redacted
        if "BackendKeyData" in item:
            item["BackendKeyData"]["secret_key"] = "09080706"
    assert key_of(Replay(recorded).send(STARTUP)) == be.BackendKeyData(4242, cancel_key(4242))


def test_protocol_3_2_gets_a_long_key():
    live = fe.StartupMessage(STARTUP.parameters, (3 << 16) | 2)
    assert len(key_of(Replay(connection(1)).send(live)).secret_key) == 32
    negotiated = record(client(live), server(be.NegotiateProtocolVersion(0, ()), *handshake(7)))
    assert len(key_of(Replay(negotiated).send(live)).secret_key) == 4  # the server said 3.0


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT pg_backend_pid()", True), ("select  pg_backend_pid( ) ;", True),
    ("SELECT pg_catalog.pg_backend_pid() AS pid", True), ('SELECT pg_backend_pid() "me"', True),
    ("SELECT pg_backend_pid(), 1", False), ("SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()", False),
    (None, False),
])
def test_backend_pid_sql(sql, expected):
    assert is_backend_pid_sql(sql) is expected


# --- passwords asked again -------------------------------------------------------------


def password_login(ask: be.BackendMessage, answer: bytes, outcome: list) -> list:
    return record(client(STARTUP), server(ask), client(fe.PasswordMessage(answer)), server(*outcome))


MD5_SALT = b"\x93\x1f\xb5\x2a"
BAD = [be.ErrorResponse((("S", "FATAL"), ("C", "28P01"), ("M", 'password authentication failed for user "alice"')))]


def test_cleartext_password_is_asked_and_matched():
    recorded = password_login(be.AuthenticationCleartextPassword(), b"wrong", BAD) + password_login(
        be.AuthenticationCleartextPassword(), b"hunter2", HANDSHAKE)
    mocks = Mocks("postgres", recorded)  # one run: the store remembers what it served
    for password, outcome in [(b"wrong", be.ErrorResponse), (b"hunter2", be.ReadyForQuery),
                              (b"hunter2", be.ReadyForQuery), (b"wrong", be.ErrorResponse)]:
        replay = Replay(mocks=mocks)  # later logins repeat the recorded ones
        assert replay.send(STARTUP) == [be.AuthenticationCleartextPassword()]
        answer = replay.send(fe.PasswordMessage(password))
        assert isinstance(answer[-1], outcome) and not replay.missed
    replay = Replay(recorded)
    replay.send(STARTUP)
    (error,) = replay.send(fe.PasswordMessage(b"never-used"))
    assert (error.get("S"), error.get("C")) == ("FATAL", "28P01")
    assert error.get("M").startswith('password authentication failed for user "alice" (trproxy: no recording of '
                                    "password alice@shop with this password")
    assert replay.replayer.close_after and len(replay.missed) == 1


def test_md5_is_asked_with_the_recorded_salt():
    # what libpq sends for user alice, password hunter2 and this salt
    import hashlib
    inner = hashlib.md5(b"hunter2alice").hexdigest().encode()
    answer = b"md5" + hashlib.md5(inner + MD5_SALT).hexdigest().encode()
    recorded = password_login(be.AuthenticationMD5Password(MD5_SALT), answer, HANDSHAKE)
    assert "931fb52a" in str(recorded[0].responses) and answer.decode() not in str(recorded)
    replay = Replay(recorded)
    assert replay.send(STARTUP) == [be.AuthenticationMD5Password(MD5_SALT)]
    assert replay.send(fe.PasswordMessage(answer))[-1] == be.ReadyForQuery("I")
    other = Replay(recorded)
    other.send(STARTUP)
    assert other.send(fe.PasswordMessage(b"md5" + b"0" * 32))[0].get("C") == "28P01"


def test_a_password_sent_unasked_is_ignored():
    replay = Replay(connection(5))
    assert key_of(replay.send(STARTUP)).process_id == 5
    assert replay.send(fe.PasswordMessage(b"x")) == [] and replay.lookups[-1].context.private["kind"] == "startup"


def test_the_password_request_comes_after_what_preceded_it():
    """An SSLRequest answered N (a relay that forwards it) and NegotiateProtocolVersion are
    part of the first half of a split login; the second half gets the 3.0-sized key."""
    live = fe.StartupMessage(STARTUP.parameters, (3 << 16) | 2)
    recorded = record(client(fe.SSLRequest()), ("server", b"N"), client(live),
                      server(be.NegotiateProtocolVersion(0, ()), be.AuthenticationCleartextPassword()),
                      client(fe.PasswordMessage(b"pw")), server(*HANDSHAKE))
    replay = Replay(recorded)
    assert replay.send(live) == [be.NegotiateProtocolVersion(0, ()), be.AuthenticationCleartextPassword()]
    assert len(key_of(replay.send(fe.PasswordMessage(b"pw"))).secret_key) == 4


def test_a_login_replays_the_same_fed_byte_by_byte():
    recorded = password_login(be.AuthenticationMD5Password(MD5_SALT), b"md5" + b"b" * 32, HANDSHAKE)
    whole = Replay(recorded)
    expected = whole.send(STARTUP) + whole.send(fe.PasswordMessage(b"md5" + b"b" * 32))
    replay = Replay(recorded)
    got: list = []
    for byte in wire(STARTUP, fe.PasswordMessage(b"md5" + b"b" * 32)):
        got += replay.send(raw=bytes([byte]))
    assert got == expected and expected[-1] == be.ReadyForQuery("I")


def test_terminated_pids_are_read_from_literals_and_bound_parameters():
    """psql's literal, psycopg's binary int2 ``$1``, a text parameter; not a pid computed
    in SQL, nor a bad value of an untrusted recording."""
    assert terminated_pids([{"Query": "SELECT pg_terminate_backend(4242)"}]) == [4242]
    assert terminated_pids([{"Query": "SELECT PG_TERMINATE_BACKEND(7), pg_cancel_backend(8)"}]) == [7]
    bind = {"query": "select pg_terminate_backend($1)", "parameters": [{"binary": "int2", "value": 13764}]}
    assert terminated_pids([{"Parse": {"query": bind["query"]}}, {"Bind": bind}]) == [13764]
    assert terminated_pids([{"Bind": dict(bind, parameters=["512"])}]) == [512]
    assert terminated_pids([{"Query": "select pg_terminate_backend(pg_backend_pid())"}]) == []
    assert terminated_pids([{"Bind": dict(bind, parameters=[{"binary": "int2", "value": "x"}])}]) == []
    assert terminated_pids([{"Bind": dict(bind, parameters=[])}, {"Query": 7}, "junk"]) == []

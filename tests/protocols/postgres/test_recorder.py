"""Recorder grouping, readable form, redaction and lifetimes on constructed conversations."""

from __future__ import annotations

import pytest
import yaml

from tests.protocols.postgres.build import (
    HANDSHAKE,
    KEY,
    STARTUP,
    client,
    logged_in,
    record,
    server,
    wire,
)
from trproxy.protocols.base import Direction, Interrupt, ProtocolError, Pushed, UnexpectedMessage
from trproxy.protocols.credentials import hashed
from trproxy.protocols.postgres import PostgresRecorder
from trproxy.protocols.postgres import backend as be
from trproxy.protocols.postgres import frontend as fe
from trproxy.protocols.postgres.backend import backend_key

INT4 = be.FieldDescription("id", 0, 0, 23, 4, -1, 0)
TEXT = be.FieldDescription("name", 0, 0, 25, -1, -1, 0)


def names(items):
    return [next(iter(i)) for i in items]


def test_simple_query():
    out = record(*logged_in(), client(fe.Query("SELECT id, name FROM users")),
                 server(be.RowDescription((INT4, TEXT)), be.DataRow((b"1", b"ann")),
                        be.DataRow((b"2", None)), be.CommandComplete("SELECT 2"),
                        be.ReadyForQuery("I")))
    assert [i.summary for i in out] == ["startup alice@shop", "Query SELECT id, name FROM users"]
    q = out[1]
    assert q.request == [{"Query": "SELECT id, name FROM users"}]
    assert q.responses[1:] == [{"DataRow": ["1", "ann"]}, {"DataRow": ["2", None]},
                               {"CommandComplete": "SELECT 2"}, {"ReadyForQuery": "I"}]
    assert q.lifetime == "data"
    startup = out[0]
    assert startup.lifetime == "session"
    # the cancel key is a secret (it lets anyone cancel that backend's queries)
    assert {"BackendKeyData": {"process_id": 4242, "secret_key": "<redacted>"}} in startup.responses
    assert {"ParameterStatus": {"server_version": "15.4"}} in startup.responses


SCRAM_FIRST = b"n,,n=,r=rOprNGfwEbeRWgbNEkqO"
SCRAM_FINAL = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


@pytest.mark.parametrize("auth", ["scram", "md5", "cleartext"])
def test_secrets_never_reach_the_recording(auth):
    if auth == "scram":
        exchange = [server(be.AuthenticationSASL(("SCRAM-SHA-256",))),
                    client(fe.SASLInitialResponse("SCRAM-SHA-256", SCRAM_FIRST)),
                    server(be.AuthenticationSASLContinue(SERVER_FIRST)),
                    client(fe.SASLResponse(SCRAM_FINAL)),
                    server(be.AuthenticationSASLFinal(SERVER_FINAL))]
        secrets = [SCRAM_FIRST, SCRAM_FINAL, SERVER_FIRST, SERVER_FINAL, b"rOprNGfw", b"4096"]
    elif auth == "md5":
        exchange = [server(be.AuthenticationMD5Password(b"\x93\x1f\xb5\x2a")),
                    client(fe.PasswordMessage(b"md53175bce1d3201d16594cebf9d7eb3f9d"))]
        secrets = [b"md53175bce1d3201d16594cebf9d7eb3f9d", b"3175bce1"]
    else:
        exchange = [server(be.AuthenticationCleartextPassword()),
                    client(fe.PasswordMessage(b"hunter2"))]
        secrets = [b"hunter2"]
    out = record(client(fe.SSLRequest()), ("server", b"N"), client(STARTUP), *exchange,
                 server(*HANDSHAKE))
    text = yaml.safe_dump([[i.request, i.responses] for i in out])
    for s in secrets:
        assert s.decode() not in text
        assert s.hex() not in text
    assert names(out[0].request)[:2] == ["SSLRequest", "StartupMessage"]
    assert out[0].responses[0] == {"SSLResponse": "N"}
    assert all(i.lifetime == "session" for i in out)
    if auth == "scram":  # one interaction: replay skips SCRAM (its proofs cannot be checked)
        assert len(out) == 1 and "<redacted>" in text
        return
    # a password was asked: the request (with the MD5 salt replay will ask with again),
    # then the answer, hashed for the account (credentials.hashed), with the rest
    first, second = out
    assert [i.summary for i in out] == ["startup alice@shop", "password alice@shop"]
    assert names(first.responses)[1:] == [
        "AuthenticationMD5Password" if auth == "md5" else "AuthenticationCleartextPassword"]
    if auth == "md5":
        assert first.responses[1] == {"AuthenticationMD5Password": {"salt": "931fb52a"}}
    answer = b"md53175bce1d3201d16594cebf9d7eb3f9d" if auth == "md5" else b"hunter2"
    assert second.request == [first.request[1], {"PasswordMessage": hashed(answer, "postgres alice@shop")}]
    assert names(second.responses) == [type(m).__name__ for m in HANDSHAKE]


def test_pipelined_batches_are_separate_interactions():
    batch = lambda q, v: [fe.Parse("", q), fe.Bind("", "", (), (v,), ()), fe.Describe("P", ""),  # noqa: E731
                          fe.Execute("", 0), fe.Sync()]
    answer = lambda v: [be.ParseComplete(), be.BindComplete(), be.RowDescription((TEXT,)),  # noqa: E731
                        be.DataRow((v,)), be.CommandComplete("SELECT 1"), be.ReadyForQuery("I")]
    out = record(*logged_in(), client(*batch("SELECT $1", b"a"), *batch("SELECT $1 || 'x'", b"b")),
                 server(*answer(b"a")[:3]), server(*answer(b"a")[3:], *answer(b"bx")))
    assert [i.summary for i in out[1:]] == ["Execute SELECT $1", "Execute SELECT $1 || 'x'"]
    assert out[1].request[1]["Bind"]["parameters"] == ["a"]
    assert out[2].responses[3] == {"DataRow": ["bx"]}
    assert all(i.responses[-1] == {"ReadyForQuery": "I"} for i in out[1:])


def test_flush_ends_a_batch_when_every_message_is_answered():
    # psycopg's pipeline mode: ...Execute, Flush; later ...Sync
    out = record(*logged_in(),
                 client(fe.Parse("", "INSERT INTO t VALUES ($1)"), fe.Bind("", "", (), (b"1",), ()),
                        fe.Describe("P", ""), fe.Execute("", 0), fe.Flush()),
                 server(be.ParseComplete(), be.BindComplete(), be.NoData(), be.CommandComplete("INSERT 0 1")),
                 client(fe.Parse("", "SELECT 1"), fe.Bind("", "", (), (), ()), fe.Execute("", 0),
                        fe.Sync(), fe.Flush()),
                 server(be.ParseComplete(), be.BindComplete(), be.DataRow((b"1",)),
                        be.CommandComplete("SELECT 1"), be.ReadyForQuery("I")))
    assert [names(i.request) for i in out[1:]] == [
        ["Parse", "Bind", "Describe", "Execute", "Flush"], ["Parse", "Bind", "Execute", "Sync"]]
    assert names(out[1].responses) == ["ParseComplete", "BindComplete", "NoData", "CommandComplete"]


def test_error_in_a_flush_batch_skips_to_sync():
    out = record(*logged_in(),
                 client(fe.Parse("", "SELECT nope"), fe.Bind("", "", (), (), ()), fe.Execute("", 0),
                        fe.Flush(), fe.Parse("", "SELECT 2"), fe.Execute("", 0), fe.Sync()),
                 server(be.ErrorResponse((("S", "ERROR"), ("C", "42703"))), be.ReadyForQuery("I")),
                 client(fe.Query("SELECT 3")),
                 server(be.CommandComplete("SELECT 1"), be.ReadyForQuery("I")))
    # the batch the server skipped is not recorded: replay skips it the same way
    assert [names(i.request) for i in out[1:]] == [["Parse", "Bind", "Execute", "Flush"], ["Query"]]
    assert out[1].responses == [{"ErrorResponse": {"S": "ERROR", "C": "42703"}}]


def test_error_in_a_sync_batch():
    out = record(*logged_in(), client(fe.Parse("", "SELECT nope"), fe.Bind(), fe.Execute(), fe.Sync()),
                 server(be.ErrorResponse((("C", "42703"),)), be.ReadyForQuery("I")))
    assert names(out[1].responses) == ["ErrorResponse", "ReadyForQuery"]


def test_binary_rows_use_formats_and_types_from_an_earlier_describe():
    out = record(*logged_in(),
                 client(fe.Parse("s1", "SELECT id, name FROM t WHERE id = $1"), fe.Describe("S", "s1"),
                        fe.Flush()),
                 server(be.ParseComplete(), be.ParameterDescription((23,)),
                        be.RowDescription((INT4, TEXT))),
                 client(fe.Bind("", "s1", (1,), (b"\0\0\0\x07",), (1,)), fe.Execute("", 0), fe.Sync()),
                 server(be.BindComplete(), be.DataRow((b"\0\0\0\x07", b"ann")),
                        be.CommandComplete("SELECT 1"), be.ReadyForQuery("I")))
    prepare, execute = out[1:]
    assert prepare.lifetime == "session"  # executes nothing: metadata
    assert execute.request[0]["Bind"]["query"] == "SELECT id, name FROM t WHERE id = $1"
    assert execute.request[0]["Bind"]["parameters"] == [{"binary": "int4", "value": 7}]
    assert execute.responses[1] == {"DataRow": [{"binary": "int4", "value": 7},
                                                {"binary": "text", "value": "ann"}]}


def test_copy_in_with_data_sent_before_copy_in_response():
    # asyncpg streams the data right after the Query
    out = record(*logged_in(),
                 client(fe.Query("COPY t FROM STDIN"), fe.CopyData(b"1\tann\n"), fe.CopyDone()),
                 server(be.CopyInResponse(0, (0, 0)), be.CommandComplete("COPY 1"), be.ReadyForQuery("I")))
    assert out[1].request == [{"Query": "COPY t FROM STDIN"}, {"CopyData": "1\tann\n"}, {"CopyDone": {}}]
    assert names(out[1].responses) == ["CopyInResponse", "CommandComplete", "ReadyForQuery"]


def test_extended_copy_in_with_libpq_syncs():
    # libpq: P B D E S | CopyInResponse | d c S | C Z  (the first Sync is ignored in COPY mode)
    out = record(*logged_in(),
                 client(fe.Parse("", "COPY t FROM STDIN"), fe.Bind(), fe.Describe("P", ""),
                        fe.Execute(), fe.Sync()),
                 server(be.ParseComplete(), be.BindComplete(), be.NoData(), be.CopyInResponse(0, ())),
                 client(fe.CopyData(b"1\n"), fe.CopyDone(), fe.Sync()),
                 server(be.CommandComplete("COPY 1"), be.ReadyForQuery("I")),
                 client(fe.Query("SELECT 1")), server(be.CommandComplete("SELECT 1"), be.ReadyForQuery("I")))
    assert [i.summary for i in out[1:]] == ["Execute COPY t FROM STDIN", "Query SELECT 1"]
    assert names(out[1].request)[-3:] == ["CopyData", "CopyDone", "Sync"]


def test_copy_out():
    out = record(*logged_in(), client(fe.Query("COPY t TO STDOUT")),
                 server(be.CopyOutResponse(0, (0,)), fe.CopyData(b"1\n"), fe.CopyData(b"2\n"),
                        fe.CopyDone(), be.CommandComplete("COPY 2"), be.ReadyForQuery("I")))
    assert out[1].responses[1:3] == [{"CopyData": "1\n"}, {"CopyData": "2\n"}]


@pytest.mark.parametrize("sql, lifetime", [
    ("SET search_path TO app", "session"), ("SHOW TimeZone", "session"), ("RESET ALL", "session"),
    ("select pg_catalog.version()", "session"), ("DISCARD ALL", "session"),
    ("SELECT t.oid, typarray FROM pg_type t JOIN pg_namespace ns ON typnamespace = ns.oid", "session"),
    ("SELECT * FROM information_schema.tables", "session"),
    ("BEGIN", "data"), ("SELECT * FROM users", "data"), ("INSERT INTO t VALUES (1)", "data"),
    ("SET x = 1; SELECT * FROM users", "data"),
])
def test_lifetimes(sql, lifetime):
    out = record(*logged_in(), client(fe.Query(sql)),
                 server(be.CommandComplete("X"), be.ReadyForQuery("I")))
    assert out[1].lifetime == lifetime


def test_trivial_batches_and_cancel_are_not_recorded():
    out = record(*logged_in(), client(fe.Close("S", "s1"), fe.Sync()),
                 server(be.CloseComplete(), be.ReadyForQuery("I")), client(fe.Sync()),
                 server(be.ReadyForQuery("I")), client(fe.Terminate()))
    assert len(out) == 1
    assert record(client(fe.CancelRequest(4242, b"\x01\x02\x03\x04"))) == []


def test_notification_while_idle_is_pushed_when_it_arrives():
    """A NOTIFY from another connection reaches an idle listener: returned as ``Pushed``
    at once (the proxy records when), not folded into the next interaction."""
    recorder = PostgresRecorder()
    for side, data in logged_in():
        recorder.feed(Direction(side), data)
    [pushed] = recorder.feed(Direction.SERVER, wire(be.NotificationResponse(7, "jobs", "42")))
    assert isinstance(pushed, Pushed) and pushed.summary == "NotificationResponse"
    assert pushed.responses == [{"NotificationResponse": {"process_id": 7, "channel": "jobs",
                                                          "payload": "42"}}]
    recorder.feed(Direction.CLIENT, wire(fe.Query("SELECT 1")))
    [query] = recorder.feed(Direction.SERVER, wire(be.CommandComplete("SELECT 1"),
                                                   be.ReadyForQuery("I")))
    assert names(query.responses) == ["CommandComplete", "ReadyForQuery"]


def test_cancel_request_names_the_backend_it_interrupts():
    listener = PostgresRecorder()
    for side, data in logged_in():
        listener.feed(Direction(side), data)
    assert listener.identity == backend_key(4242, KEY)  # HANDSHAKE's key
    [interrupt] = PostgresRecorder().feed(Direction.CLIENT, wire(fe.CancelRequest(4242, KEY)))
    assert isinstance(interrupt, Interrupt) and interrupt.identity == listener.identity


def test_a_query_the_client_gave_up_on_is_recorded_unanswered():
    out = record(*logged_in(), client(fe.Query("SELECT pg_sleep(60)")))  # then both close
    assert out[-1].unanswered and out[-1].responses == []


def test_an_answer_that_came_after_the_client_left_is_recorded_unanswered():
    """asyncpg's terminate() mid pg_sleep: the server answers 10 s later, to no one. Replay
    must not answer at once (the test expects the connection to die mid-query)."""
    out = record(*logged_in(), client(fe.Query("SELECT pg_sleep(10)")), ("client", b""),
                 server(be.RowDescription((INT4,)), be.DataRow((b"",)),
                        be.CommandComplete("SELECT 1"), be.ReadyForQuery("I")),
                 ("server", b""), close=False)
    assert out[-1].unanswered and names(out[-1].responses)[-1] == "ReadyForQuery"


def test_fatal_error_mid_query_is_recorded_at_close():
    out = record(*logged_in(), client(fe.Query("SELECT pg_sleep(10)")),
                 server(be.ErrorResponse((("S", "FATAL"), ("C", "57P01")))))
    assert names(out[1].responses) == ["ErrorResponse"]


def test_failed_login_is_recorded_abandoned_one_is_not():
    failed = record(client(STARTUP), server(be.AuthenticationCleartextPassword()),
                    client(fe.PasswordMessage(b"x")),
                    server(be.ErrorResponse((("S", "FATAL"), ("C", "28P01")))))
    assert [i.summary for i in failed] == ["startup alice@shop", "password alice@shop"]
    assert failed[1].responses == [{"ErrorResponse": {"S": "FATAL", "C": "28P01"}}]
    assert record(client(STARTUP), server(be.AuthenticationSASL(("SCRAM-SHA-256",)))) == []


@pytest.mark.parametrize("answer, what", [(b"S", "TLS negotiated"), (b"G", "GSSAPI encryption")])
def test_encrypted_sessions_are_refused(answer, what):
    recorder = PostgresRecorder()
    recorder.feed(Direction.CLIENT, client(fe.SSLRequest() if answer == b"S" else fe.GSSENCRequest())[1])
    with pytest.raises(ProtocolError, match=what):
        recorder.feed(Direction.SERVER, answer + b"\x16\x03\x03")


def test_replies_that_answer_nothing_are_refused():
    recorder = PostgresRecorder()
    for side, data in logged_in():
        recorder.feed(Direction(side), data)
    with pytest.raises(UnexpectedMessage):
        recorder.feed(Direction.SERVER, server(be.DataRow((b"1",)))[1])
    recorder = PostgresRecorder()
    for side, data in [*logged_in(), client(fe.Parse("", "SELECT 1"), fe.Sync())]:
        recorder.feed(Direction(side), data)
    with pytest.raises(UnexpectedMessage, match="BindComplete does not answer Parse"):
        recorder.feed(Direction.SERVER, server(be.BindComplete())[1])


def test_query_after_an_unsynced_batch_ends_that_batch():
    out = record(*logged_in(),
                 client(fe.Parse("", "INSERT INTO t VALUES (1)"), fe.Bind(), fe.Execute(),
                        fe.Query("SELECT 1")),
                 server(be.ParseComplete(), be.BindComplete(), be.CommandComplete("INSERT 0 1"),
                        be.CommandComplete("SELECT 1"), be.ReadyForQuery("I")))
    assert [names(i.request) for i in out[1:]] == [["Parse", "Bind", "Execute"], ["Query"]]
    assert names(out[2].responses) == ["CommandComplete", "ReadyForQuery"]


def test_passwords_in_sql_are_redacted_and_still_match_at_replay():
    from tests.protocols.postgres.build import Replay

    alter = "ALTER ROLE bob PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a2V5:c2Vydg=='"  # psql's \password
    mapping = "CREATE USER MAPPING FOR bob SERVER s OPTIONS (user 'bob', password 'pw1')"
    done = lambda tag: [be.CommandComplete(tag), be.ReadyForQuery("I")]  # noqa: E731
    out = record(*logged_in(), client(fe.Query(alter)), server(*done("ALTER ROLE")),
                 client(fe.Parse("", mapping), fe.Bind(), fe.Execute(), fe.Sync()),
                 server(be.ParseComplete(), be.BindComplete(), *done("CREATE USER MAPPING")))
    text = yaml.safe_dump([i.request for i in out])
    assert "c2FsdA" not in text and "pw1" not in text
    assert out[1].request == [{"Query": "ALTER ROLE bob PASSWORD '<redacted>'"}]
    assert out[2].request[0]["Parse"]["query"].endswith("password '<redacted>')")
    assert out[2].request[1]["Bind"]["query"].endswith("password '<redacted>')")
    replay = Replay(out)
    replay.send(STARTUP)
    # psql picks a new salt every time: any password set matches (which one was set does not count)
    assert replay.send(fe.Query("ALTER ROLE bob PASSWORD 'SCRAM-SHA-256$4096:b3RoZXI=$x:y'")) == done("ALTER ROLE")
    assert replay.send(fe.Parse("", mapping.replace("pw1", "pw2")), fe.Bind(), fe.Execute(), fe.Sync())[-2:] == \
        done("CREATE USER MAPPING")
    assert replay.missed == []


def test_a_terminated_backend_says_fatal_and_closes_at_replay_too():
    """pg_terminate_backend from elsewhere: the idle backend sends FATAL and closes. The
    FATAL is a pushed event and the close an event of the connection; an idle replayed
    connection finds out as the client did, at its next request (which the server never
    answered): the FATAL, then the close, and nothing hangs."""
    from tests.support.playbook import Playbook, close, send
    from tests.support.playbook import client as sends
    from tests.support.recording import capture

    fatal = be.ErrorResponse((("S", "FATAL"), ("C", "57P01"),
                              ("M", "terminating connection due to administrator command")))
    recorded = capture([client(STARTUP), server(*HANDSHAKE), server(fatal), ("server", b""),
                        client(fe.Query("SELECT 1")), ("client", b"")], close=False)
    assert [e.event for e in recorded] == [None, "push", "close"]
    assert (Playbook("postgres", recorded)
            >> sends(wire(STARTUP)) << send(wire(be.AuthenticationOk(), *HANDSHAKE[1:]))
            >> sends(wire(fe.Query("SELECT 1"))) << send(wire(fatal)) << close())


def test_split_logins_and_terminations_do_not_depend_on_how_bytes_arrive():
    """The two halves of a password login, hashes and the FATAL of a terminated backend:
    the same interactions fed whole, byte by byte and cut at every offset."""
    from tests.support.chunking import bytewise, split_at, total

    fatal = be.ErrorResponse((("S", "FATAL"), ("C", "57P01")))
    chunks = [client(STARTUP), server(be.AuthenticationMD5Password(b"\x01\x02\x03\x04")),
              client(fe.PasswordMessage(b"md5" + b"a" * 32)), server(*HANDSHAKE),
              client(fe.Query("ALTER ROLE x PASSWORD 'y'")),
              server(be.CommandComplete("ALTER ROLE"), be.ReadyForQuery("I")),
              server(fatal), ("server", b""), client(fe.Query("SELECT 1")), ("client", b"")]
    expected = record(*chunks, close=False)
    assert [i.summary for i in expected] == ["startup alice@shop", "password alice@shop",
                                             "Query ALTER ROLE x PASSWORD '<redacted>'"]
    assert record(*bytewise(chunks), close=False) == expected
    for offset in range(1, total(chunks)):
        assert record(*split_at(chunks, offset), close=False) == expected


def test_a_backend_terminating_itself_mid_batch_hangs_up_at_replay():
    """psycopg's test_broken: the server answers the row, then FATAL, and closes; replay
    must not add a ReadyForQuery after it (the client would wait for more) and closes."""
    from tests.protocols.postgres.build import Replay

    kill = [fe.Parse("", "select pg_terminate_backend($1)", (21,)), fe.Bind("", "", (), (b"77",), ()),
            fe.Describe("P"), fe.Execute(), fe.Sync()]
    fatal = be.ErrorResponse((("S", "FATAL"), ("C", "57P01")))
    answer = [be.ParseComplete(), be.BindComplete(), be.RowDescription((INT4,)), be.DataRow((b"t",)), fatal]
    out = record(*logged_in(), client(*kill), server(*answer))
    replay = Replay(out)
    replay.send(STARTUP)
    assert replay.send(*kill) == answer and replay.replayer.close_after
    simple = record(*logged_in(), client(fe.Query("select pg_terminate_backend(pg_backend_pid())")),
                    server(be.RowDescription((INT4,)), fatal, be.ReadyForQuery("I")))
    replay = Replay(simple)
    replay.send(STARTUP)
    assert replay.send(fe.Query("select pg_terminate_backend(pg_backend_pid())"))[-1] == fatal
    assert replay.replayer.close_after


def test_sql_naming_a_bound_portal_reads_the_same_in_every_run():
    """asyncpg's cursor.forward(5) sends ``MOVE FORWARD 5 __asyncpg_portal_1e8__``: the
    portal's name is a per-process counter, so the readable request names its SQL."""
    def moved(portal):
        return record(*logged_in(),
                      client(fe.Parse("", "SELECT generate_series(0, 100)"),
                             fe.Bind(portal, "", (), (), ()), fe.Execute(portal, 1), fe.Sync()),
                      server(be.ParseComplete(), be.BindComplete(), be.DataRow((b"0",)),
                             be.PortalSuspended(), be.ReadyForQuery("T")),
                      client(fe.Query(f'MOVE FORWARD 5 {portal}; CLOSE "{portal}"')),
                      server(be.CommandComplete("MOVE 5"), be.CommandComplete("CLOSE CURSOR"),
                             be.ReadyForQuery("T")))[-1].request

    here, there = moved("__asyncpg_portal_1e8__"), moved("__asyncpg_portal_2b0__")
    assert here == there == [{"Query": "MOVE FORWARD 5 <portal: SELECT generate_series(0, 100)>; "
                                       "CLOSE <portal: SELECT generate_series(0, 100)>"}]

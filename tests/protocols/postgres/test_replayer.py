"""Replayer: synthesized handshakes, answers fitted to the live batch, misses that keep
the client usable, COPY, transaction status (no server anywhere)."""

from __future__ import annotations

from tests.protocols.postgres.build import (
    HANDSHAKE,
    KEY,
    STARTUP,
    Replay,
    client,
    record,
    server,
    wire,
)
from trproxy.protocols.base import Interaction, Interrupt, Lookup, Reply
from trproxy.protocols.postgres import PostgresReplayer
from trproxy.protocols.postgres import backend as be
from trproxy.protocols.postgres import frontend as fe
from trproxy.protocols.postgres.backend import backend_key
from trproxy.protocols.postgres.identity import cancel_key
from trproxy.protocols.postgres.render import error_response

INT4 = be.FieldDescription("n", 0, 0, 23, 4, -1, 0)


def recorded_session(*exchanges) -> list[Interaction]:
    chunks = [client(STARTUP), server(*HANDSHAKE)]
    for request, answer in exchanges:
        chunks += [client(*request), server(*answer)]
    return record(*chunks)


def login(replay: Replay) -> list:
    return replay.send(STARTUP)


def test_ssl_and_gssenc_requests_are_declined():
    replayer = PostgresReplayer()
    assert [e.data for e in replayer.feed(wire(fe.GSSENCRequest()))] == [b"N"]
    assert [e.data for e in replayer.feed(wire(fe.SSLRequest()))] == [b"N"]
    events = replayer.feed(wire(STARTUP))
    assert len(events) == 1 and isinstance(events[0], Lookup)
    assert events[0].lifetime == "session"


def test_startup_is_served_from_the_recorded_handshake():
    recorded = record(client(STARTUP), server(be.AuthenticationSASL(("SCRAM-SHA-256",))),
                      client(fe.SASLInitialResponse("SCRAM-SHA-256", b"n,,n=,r=x")),
                      server(be.AuthenticationSASLContinue(b"r=xy,s=c2FsdA==,i=4096")),
                      client(fe.SASLResponse(b"c=biws,r=xy,p=cHJvb2Y=")),
                      server(be.AuthenticationSASLFinal(b"v=c2ln"), *HANDSHAKE))
    replay = Replay(recorded)
    live = fe.StartupMessage((("user", "alice"), ("database", "shop"), ("application_name", "other")))
    # SCRAM cannot be replayed without the server's keys: the password is asked in
    # cleartext (the client still logs in with one), and any is taken
    assert replay.send(live) == [be.AuthenticationCleartextPassword()]
    answer = replay.send(fe.PasswordMessage(b"whatever"))
    assert answer[0] == be.AuthenticationOk()
    assert be.ParameterStatus("server_version", "15.4") in answer
    assert be.ParameterStatus("application_name", "other") in answer  # the live one
    # the recorded pid; the key is not the recorded secret but one derived from the pid
    assert be.BackendKeyData(4242, cancel_key(4242)) in answer
    assert answer[-1] == be.ReadyForQuery("I")
    assert not replay.missed


def test_startup_miss_synthesizes_a_working_handshake():
    replay = Replay([])
    answer = login(replay)
    assert replay.missed
    assert answer[0] == be.AuthenticationOk() and answer[-1] == be.ReadyForQuery("I")
    status = {m.name: m.value for m in answer if isinstance(m, be.ParameterStatus)}
    for name in ("server_version", "client_encoding", "DateStyle", "integer_datetimes",
                 "standard_conforming_strings"):
        assert status[name]
    assert status["client_encoding"] == "UTF8" and status["integer_datetimes"] == "on"
    assert any(isinstance(m, be.BackendKeyData) for m in answer)


def test_a_recorded_failed_login_fails_again():
    recorded = record(client(STARTUP), server(be.AuthenticationCleartextPassword()),
                      client(fe.PasswordMessage(b"x")),
                      server(be.ErrorResponse((("S", "FATAL"), ("C", "28P01"), ("M", "bad")))))
    replay = Replay(recorded)
    assert login(replay) == [be.AuthenticationCleartextPassword()]  # asked, as recorded
    answer = replay.send(fe.PasswordMessage(b"x"))
    assert [type(m) for m in answer] == [be.ErrorResponse] and answer[0].get("M") == "bad"
    assert replay.replayer.close_after


def test_query_answered_and_missed():
    recorded = recorded_session(([fe.Query("SELECT  1 ;")],
                                 [be.RowDescription((INT4,)), be.DataRow((b"1",)),
                                  be.CommandComplete("SELECT 1"), be.ReadyForQuery("I")]))
    replay = Replay(recorded)
    login(replay)
    answer = replay.send(fe.Query("SELECT 1"))  # whitespace and ; do not matter
    assert answer[1] == be.DataRow((b"1",))
    answer = replay.send(fe.Query("SELECT 2"))
    error, ready = answer
    assert error.get("C") == "XX000"
    assert error.get("M") == "trproxy: no recording for Query SELECT 2: no recorded request matches"
    assert ready == be.ReadyForQuery("I")


def test_miss_in_a_flush_batch_skips_to_sync_like_a_server():
    replay = Replay(recorded_session())
    login(replay)
    answer = replay.send(fe.Parse("", "SELECT 42"), fe.Bind(), fe.Execute(), fe.Flush())
    assert [type(m) for m in answer] == [be.ErrorResponse]
    # the server ignores everything up to Sync, then says it is ready
    assert replay.send(fe.Parse("", "SELECT 43"), fe.Bind(), fe.Execute()) == []
    assert replay.send(fe.Sync()) == [be.ReadyForQuery("I")]
    assert len(replay.missed) == 1  # the batch; nothing for the ones the server skips


def test_a_pipeline_without_sync_is_answered_when_the_recording_was():
    """psycopg's test_pipeline_communicate_uniqviol: inserts in pipeline mode and no Sync.
    The server runs each Execute at once and flushes at the unique violation's error, so
    the client gets its answers without a Sync; replay used to wait for one (a hang).
    The batch is served once it is all there, however the client's bytes were split; a
    prefix of it is no request (no answer, no miss), and the Sync after the error gets
    ReadyForQuery."""
    insert = "insert into t values ($1) returning id"
    field = be.FieldDescription("id", 0, 0, 20, 8, -1, 0)

    def row(n: bytes) -> list:
        return [fe.Bind("", "ins", (), (n,), ()), fe.Describe("P", ""), fe.Execute()]

    answer = [be.BindComplete(), be.RowDescription((field,)), be.DataRow((b"1",)),
              be.CommandComplete("INSERT 0 1"), be.BindComplete(), be.RowDescription((field,)),
              error_response("23505", "duplicate key value violates unique constraint")]
    recorded = recorded_session(([fe.Parse("ins", insert), fe.Sync()], [be.ParseComplete(), be.ReadyForQuery("I")]),
                                (row(b"1") + row(b"1") + row(b"2"), answer))
    replay = Replay(recorded)
    login(replay)
    assert replay.send(fe.Parse("ins", insert), fe.Sync()) == [be.ParseComplete(), be.ReadyForQuery("I")]
    assert replay.send(*row(b"1")) == []  # the server would still hold its answer
    assert replay.send(*row(b"1"), *row(b"2")) == answer
    assert replay.send(fe.Sync()) == [be.ReadyForQuery("I")]
    assert replay.missed == []
    other = Replay(recorded)  # a different pipeline: nothing recorded, so it waits for its Sync
    login(other)
    other.send(fe.Parse("ins", insert), fe.Sync())
    assert other.send(*row(b"5")) == []
    assert [type(m) for m in other.send(fe.Sync())] == [be.ErrorResponse, be.ReadyForQuery]
    assert len(other.missed) == 1


def test_recorded_batch_fits_a_live_batch_of_another_shape():
    """Recorded on a connection that had to Parse; replayed on one that had prepared the
    statement already (and the reverse): names and Parse do not take part in matching."""
    answer = [be.ParseComplete(), be.BindComplete(), be.DataRow((b"7",)),
              be.CommandComplete("SELECT 1"), be.ReadyForQuery("I")]
    recorded = recorded_session(([fe.Parse("stmt_a", "SELECT $1::int"), fe.Bind("", "stmt_a", (), (b"7",), ()),
                                  fe.Execute(), fe.Sync()], answer))
    replay = Replay(recorded * 2)
    login(replay)
    # live: prepared in an earlier batch under another name (psycopg prepares with Parse+Sync,
    # answered without a recording: a successful Parse has one answer)
    assert replay.send(fe.Parse("stmt_b", "SELECT $1::int"), fe.Sync()) == [
        be.ParseComplete(), be.ReadyForQuery("I")]
    got = replay.send(fe.Bind("", "stmt_b", (), (b"7",), ()), fe.Execute(), fe.Close("S", "stmt_b"),
                      fe.Sync())
    assert got == [be.BindComplete(), be.DataRow((b"7",)), be.CommandComplete("SELECT 1"),
                   be.CloseComplete(), be.ReadyForQuery("I")]
    assert replay.missed == []
    # and the reverse: recorded without Parse, live with it
    recorded = recorded_session(([fe.Parse("s", "SELECT $1::int"), fe.Sync()],
                                 [be.ParseComplete(), be.ReadyForQuery("I")]),
                                ([fe.Bind("", "s", (), (b"7",), ()), fe.Execute(), fe.Sync()],
                                 answer[1:]))
    replay = Replay(recorded)
    login(replay)
    assert replay.send(fe.Parse("", "SELECT $1::int"), fe.Bind("", "", (), (b"7",), ()),
                       fe.Execute(), fe.Sync()) == answer
    assert replay.missed == []


def test_describe_of_a_statement_prepared_earlier_carries_its_sql():
    replay = Replay([])
    login(replay)
    replay.send(fe.Parse("s9", "SELECT name FROM t WHERE id = $1"), fe.Sync())
    replay.send(fe.Describe("S", "s9"), fe.Sync())
    assert replay.lookups[-1].request[0] == {
        "Describe": {"statement": "s9", "query": "SELECT name FROM t WHERE id = $1"}}


def test_session_answers_carry_the_live_transaction_status():
    recorded = recorded_session(
        ([fe.Query("BEGIN")], [be.CommandComplete("BEGIN"), be.ReadyForQuery("T")]),
        ([fe.Query("SHOW TimeZone")], [be.RowDescription((INT4,)), be.DataRow((b"UTC",)),
                                       be.CommandComplete("SHOW"), be.ReadyForQuery("T")]),
        ([fe.Query("COMMIT")], [be.CommandComplete("COMMIT"), be.ReadyForQuery("I")]))
    replay = Replay(recorded)
    login(replay)
    assert replay.send(fe.Query("SHOW TimeZone"))[-1] == be.ReadyForQuery("I")  # not 'T'
    assert replay.send(fe.Query("BEGIN"))[-1] == be.ReadyForQuery("T")
    assert replay.send(fe.Query("SHOW TimeZone"))[-1] == be.ReadyForQuery("T")
    # trivial batches are answered locally, with the status the earlier answer left
    assert replay.send(fe.Close("S", "x"), fe.Sync()) == [be.CloseComplete(), be.ReadyForQuery("T")]
    assert replay.send(fe.Query("COMMIT"))[-1] == be.ReadyForQuery("I")
    assert replay.send(fe.Query("SELECT nope"))[-1] == be.ReadyForQuery("I")


def test_lazy_reply_sees_the_status_of_earlier_lookups_in_the_same_feed():
    recorded = recorded_session(([fe.Query("BEGIN")], [be.CommandComplete("BEGIN"), be.ReadyForQuery("T")]))
    replay = Replay(recorded)
    login(replay)
    answer = replay.send(fe.Query("BEGIN"), fe.Sync())  # one read, two events
    assert answer[-2:] == [be.ReadyForQuery("T"), be.ReadyForQuery("T")]


def test_copy_in_waits_for_the_clients_data():
    recorded = recorded_session(
        ([fe.Query("COPY t FROM STDIN"), fe.CopyData(b"1\n"), fe.CopyDone()],
         [be.CopyInResponse(0, (0,)), be.CommandComplete("COPY 1"), be.ReadyForQuery("I")]))
    replay = Replay(recorded * 3)
    login(replay)
    assert replay.send(fe.Query("COPY t FROM STDIN")) == [be.CopyInResponse(0, (0,))]
    assert replay.send(fe.CopyData(b"1\n")) == []
    assert replay.send(fe.CopyDone()) == [be.CommandComplete("COPY 1"), be.ReadyForQuery("I")]
    # data streamed right behind the query, before the CopyInResponse (asyncpg)
    assert replay.send(fe.Query("COPY t FROM STDIN"), fe.CopyData(b"1\n"), fe.CopyDone()) == [
        be.CopyInResponse(0, (0,)), be.CommandComplete("COPY 1"), be.ReadyForQuery("I")]
    replay.send(fe.Query("COPY t FROM STDIN"))
    error, ready = replay.send(fe.CopyFail("interrupted"))
    assert error.get("C") == "57014" and ready == be.ReadyForQuery("I")


def test_a_recorded_answer_that_does_not_fit_is_a_miss():
    replay = Replay([])
    login(replay)
    events = replay.replayer.feed(wire(fe.Bind(), fe.Execute(), fe.Sync()))
    (lookup,) = events
    data = replay.replayer.respond(lookup, [{"ParseComplete": {}}, {"ReadyForQuery": "I"}])
    error, ready = replay.decode(data)
    assert "does not fit" in error.get("M") and ready == be.ReadyForQuery("I")


def test_cancel_request_interrupts_the_backend_it_names_and_closes():
    replayer = PostgresReplayer()
    assert replayer.feed(wire(fe.CancelRequest(4242, KEY))) == [
        Interrupt(backend_key(4242, KEY))]
    assert replayer.close_after


def test_the_startup_answer_gives_the_connection_its_identity():
    replay = Replay(record(client(STARTUP), server(*HANDSHAKE)))
    assert replay.replayer.identity is None
    replay.send(STARTUP)
    assert replay.replayer.identity == backend_key(4242, KEY)


def test_replies_are_replies():
    replayer = PostgresReplayer()
    (reply,) = replayer.feed(wire(fe.SSLRequest()))
    assert isinstance(reply, Reply)


def test_function_call_is_recorded_and_replayed():
    call = fe.FunctionCall(952, (1,), (b"\x00\x00\x40\x00", b"\x00\x02\x00\x00"), 1)  # lo_open
    recorded = recorded_session(([call], [be.FunctionCallResponse(b"\x00\x00\x00\x00"),
                                          be.ReadyForQuery("T")]))
    assert recorded[1].request == [{"FunctionCall": {
        "function_oid": 952, "arguments": [{"binary": 0, "hex": "00004000"},
                                           {"binary": 0, "hex": "00020000"}],
        "result_format": 1}}]
    assert recorded[1].summary == "FunctionCall 952" and recorded[1].lifetime == "data"
    replay = Replay(recorded)
    login(replay)
    assert replay.send(call) == [be.FunctionCallResponse(b"\x00\x00\x00\x00"), be.ReadyForQuery("T")]
    error, ready = replay.send(fe.FunctionCall(953, (), (), 0))
    assert error.get("C") == "XX000" and ready == be.ReadyForQuery("E")  # in a failed transaction


def test_negotiate_protocol_version_comes_before_authentication():
    recorded = record(client(STARTUP), server(be.NegotiateProtocolVersion(0, ("_pq_.x",)), *HANDSHAKE))
    replay = Replay(recorded)
    answer = login(replay)
    assert answer[:2] == [be.NegotiateProtocolVersion(0, ("_pq_.x",)), be.AuthenticationOk()]


def test_query_after_an_unsynced_batch_is_answered_after_it():
    recorded = recorded_session(
        ([fe.Parse("", "INSERT INTO t VALUES (1)"), fe.Bind(), fe.Execute(), fe.Query("SELECT 1")],
         [be.ParseComplete(), be.BindComplete(), be.CommandComplete("INSERT 0 1"),
          be.CommandComplete("SELECT 1"), be.ReadyForQuery("I")]))
    assert [i.summary for i in recorded[1:]] == ["Execute INSERT INTO t VALUES (1)", "Query SELECT 1"]
    replay = Replay(recorded)
    login(replay)
    assert replay.send(fe.Parse("", "INSERT INTO t VALUES (1)"), fe.Bind(), fe.Execute(),
                       fe.Query("SELECT 1")) == [
        be.ParseComplete(), be.BindComplete(), be.CommandComplete("INSERT 0 1"),
        be.CommandComplete("SELECT 1"), be.ReadyForQuery("I")]
    assert replay.missed == []


def test_answers_carry_the_live_transaction_status_unless_they_change_it():
    """psycopg's suite: 'select 1' recorded outside a transaction, replayed inside one (or
    the reverse) reports the live status; BEGIN/COMMIT keep what they recorded."""
    rows = [be.RowDescription((INT4,)), be.DataRow((b"1",)), be.CommandComplete("SELECT 1")]
    recorded = recorded_session(([fe.Query("select 1")], [*rows, be.ReadyForQuery("I")]),
                                ([fe.Query("BEGIN")], [be.CommandComplete("BEGIN"), be.ReadyForQuery("T")]),
                                ([fe.Query("select 1")], [*rows, be.ReadyForQuery("T")]),
                                ([fe.Query("select 1/0")], [error_response("22012", "division by zero"),
                                                            be.ReadyForQuery("I")]))
    replay = Replay(recorded)
    login(replay)
    assert replay.send(fe.Query("BEGIN"))[-1] == be.ReadyForQuery("T")
    assert replay.send(fe.Query("select 1"))[-1] == be.ReadyForQuery("T")  # recorded 'I'
    assert replay.send(fe.Query("select 1/0"))[-1] == be.ReadyForQuery("E")  # recorded 'I'
    first = Replay(recorded)
    login(first)
    first.send(fe.Query("select 1"))  # another connection of the run is served the first one
    replay = Replay(mocks=first.mocks)
    login(replay)
    assert replay.send(fe.Query("select 1"))[-1] == be.ReadyForQuery("I")  # recorded 'T'

"""Connection-level events, recorded through the proxy's ``Capture`` and replayed by the
engine, as transcripts: a server that closes or resets, a request never answered, an
answer that took long, messages pushed because of another connection, a cancel."""

from __future__ import annotations

from tests.protocols.http import capture as http_capture
from tests.protocols.postgres.build import HANDSHAKE, STARTUP, wire
from tests.support.playbook import (
    Playbook,
    after,
    client,
    client_closes,
    close,
    miss,
    reset,
    send,
    sends,
)
from tests.support.recording import capture, capture_run
from trproxy.protocols.postgres import backend as be
from trproxy.protocols.postgres import frontend as fe
from trproxy.protocols.postgres.identity import cancel_key
from trproxy.proxy.context import Mode, RunContext
from trproxy.proxy.timeline import LONG_WAIT_MS

GET = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
OK = b"+OK\r\n"


def test_a_server_that_closed_after_its_answer_closes_at_replay():
    """HTTP/1.0, a body delimited by the close: the server closed first, recorded as an
    event, replayed as a FIN after the answer (a client reading to the end needs it)."""
    request = b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n"
    recorded = capture([("client", request),
                        ("server", b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall "),
                        ("server", b"of it"), ("server", b"")])
    assert [e.event for e in recorded] == [None, "close"]
    assert (Playbook("http", recorded)
            >> client(request) << send(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
            << close())


def test_a_client_that_closed_first_records_no_event():
    """The recorded HTTP/1.0 client half-closed after its request: the end is its own."""
    chunks = http_capture.load("h1")["until_close"]
    assert [e.event for e in capture(chunks, close=False)] == [None]


def test_the_close_that_answers_a_terminate_is_no_event():
    """asyncpg sends Terminate and the server hangs up before the client's own FIN: that
    close answers the client. Recorded as an event, replay would close whichever live
    connection follows this recording (a live connection still in use). The same close
    without a Terminate is the server's own."""
    select = wire(fe.Query("SELECT 1"))
    answer = wire(be.CommandComplete("SELECT 1"), be.ReadyForQuery("I"))
    talk = [("client", wire(STARTUP)), ("server", wire(*HANDSHAKE)),
            ("client", select), ("server", answer)]
    bye = capture([*talk, ("client", wire(fe.Terminate())), ("server", b"")])
    assert [e.event for e in bye] == [None, None]
    killed = capture([*talk, ("server", b"")])
    assert [e.event for e in killed] == [None, None, "close"]


def test_what_a_client_saw_before_it_hung_up_is_replayed_and_nothing_more():
    """psycopg's execute("copy t from stdin") fails at the CopyInResponse and the client
    hangs up: replay sends that CopyInResponse (held back, psycopg would wait forever),
    and not the error the server sent to no one after."""
    copy = wire(fe.Query("copy t from stdin"))
    copy_in = wire(be.CopyInResponse(0, (0,)))
    recorded = capture([("client", wire(STARTUP)), ("server", wire(*HANDSHAKE)),
                        ("client", copy), ("server", copy_in), ("client", wire(fe.Terminate())),
                        ("client", b""), ("server", wire(be.ErrorResponse((("S", "FATAL"),)))),
                        ("server", b"")], close=False)
    assert recorded[-1].unanswered
    book = Playbook("postgres", recorded)
    assert book >> client(wire(STARTUP)) << send(wire(be.AuthenticationOk(), *HANDSHAKE[1:]))
    assert book >> client(copy) << send(copy_in) >> after(60_000)


def test_a_server_reset_is_replayed_as_a_reset():
    recorded = capture_run([("a", "client", GET), ("a", "server", b"$1\r\nv\r\n"),
                            ("a", "reset", b"")])
    assert [e.event for e in recorded] == [None, "reset"]
    assert Playbook("redis", recorded) >> client(GET) << send(b"$1\r\nv\r\n") << reset()


def test_a_server_killed_by_another_connection_closes_when_that_request_is_replayed():
    """CLIENT KILL on connection a ends connection b: at replay b closes once a's CLIENT
    KILL was answered, not before (b was idle) and not never (the client would hang)."""
    kill = b"CLIENT KILL TYPE normal\r\n"
    recorded = capture_run([
        ("b", "client", GET), ("b", "server", b"$1\r\nv\r\n"),
        ("a", "client", kill), ("b", "server", b""), ("a", "server", b":1\r\n")])
    assert [e.event for e in recorded if e.event] == ["close"]
    b = Playbook("redis", recorded)
    a = b.connection()
    assert b >> client(GET) << send(b"$1\r\nv\r\n")
    assert a >> client(kill) << send(b":1\r\n")
    assert b << close()


def test_an_event_after_a_request_that_never_became_an_exchange_is_not_left_waiting():
    """psycopg's pool check: a terminates b's backend and closes (its Terminate takes a
    request order but is no exchange); the server's close of b is stamped after that
    order. At replay b closes once a's answer is served: no recorded request is left
    before it, so the replay got as far as the close."""
    kill = b"CLIENT KILL TYPE normal\r\n"
    recorded = capture_run([
        ("b", "client", GET), ("b", "server", b"$1\r\nv\r\n"),
        ("a", "client", kill), ("a", "server", b":1\r\n"),
        ("c", "client", b"*2\r\n$3\r\nGE"), ("c", "client", b""),  # never a whole request
        ("b", "server", b"")])
    close_b = next(e for e in recorded if e.event == "close")
    assert close_b.after > max(e.order for e in recorded if e.event is None)
    b = Playbook("redis", recorded)
    a = b.connection()
    assert b >> client(GET) << send(b"$1\r\nv\r\n") >> after(1000)  # not before a's kill
    assert a >> client(kill) << send(b":1\r\n")
    assert b << close()


def test_a_request_never_answered_holds_until_the_client_gives_up():
    """A BLPOP the client gave up on: nothing is sent, what follows waits behind it."""
    blpop = b"BLPOP q 0\r\n"
    recorded = capture_run([("a", "client", blpop), ("a", "client", b""), ("a", "server", b"")])
    assert recorded[0].unanswered and recorded[0].responses == []
    assert (Playbook("redis", recorded)
            >> client(blpop) >> after(60_000) >> client(b"PING\r\n")  # nothing, even later
            >> client_closes() << close())


def test_pushed_messages_arrive_after_the_publish_that_caused_them():
    """Recorded: b subscribes, a publishes, b receives. Replayed: b gets the message when
    a's PUBLISH is answered, not right after its SUBSCRIBE."""
    sub, pub = b"SUBSCRIBE news\r\n", b"PUBLISH news hi\r\n"
    confirmation = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    message = b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
    recorded = capture_run([("b", "client", sub), ("b", "server", confirmation),
                            ("a", "client", pub), ("b", "server", message),
                            ("a", "server", b":1\r\n")])
    push = next(e for e in recorded if e.event == "push")
    assert push.after == 2 and push.responses == [["message", "news", "hi"]]
    b = Playbook("redis", recorded)
    a = b.connection()
    assert b >> client(sub) << send(confirmation) >> after(1000)  # no message yet
    assert a >> client(pub) << send(b":1\r\n")
    assert b << send(message)


def test_postgres_notify_on_another_connection_reaches_the_listener():
    listen = wire(fe.Query("LISTEN ch"))
    notify = wire(fe.Query("NOTIFY ch, 'x'"))
    done = [be.CommandComplete("LISTEN"), be.ReadyForQuery("I")]
    notified = [be.CommandComplete("NOTIFY"), be.ReadyForQuery("I")]
    note = be.NotificationResponse(77, "ch", "x")
    other = [*HANDSHAKE[:-2], be.BackendKeyData(77, cancel_key(77)), HANDSHAKE[-1]]  # the notifier
    recorded = capture_run([
        ("l", "client", wire(STARTUP)), ("l", "server", wire(*HANDSHAKE)),
        ("n", "client", wire(STARTUP)), ("n", "server", wire(*other)),
        ("l", "client", listen), ("l", "server", wire(*done)),
        ("n", "client", notify), ("n", "server", wire(*notified)), ("l", "server", wire(note))])
    assert [e.event for e in recorded if e.event] == ["push"]
    listener = Playbook("postgres", recorded)
    notifier = listener.connection()
    assert (listener >> client(wire(STARTUP)) << send(wire(be.AuthenticationOk(), *HANDSHAKE[1:]))
            >> client(listen) << send(wire(*done)))
    assert notifier >> client(wire(STARTUP)) << send(wire(be.AuthenticationOk(), *other[1:]))
    assert notifier >> client(notify) << send(wire(*notified))
    assert listener << send(wire(note))


def _slow_query(cancelled: bool, sql: str = "SELECT pg_sleep(5)") -> list:
    """A query whose answer came after a long wait (a cancel, or a statement_timeout)."""
    query = wire(fe.Query(sql))
    error = [be.ErrorResponse((("S", "ERROR"), ("C", "57014"), ("M", "canceling statement"))),
             be.ReadyForQuery("I")]
    ctx = RunContext(Mode.RECORD)
    recorded = capture_run([("p", "client", wire(STARTUP)), ("p", "server", wire(*HANDSHAKE)),
                            ("p", "client", query)], ctx=ctx)
    # the answer came 1 s later (capture_run has no clock: the wait is set as measured)
    recorded = [e for e in recorded if e.event is None]
    slow = recorded[-1]
    slow.responses = [{"ErrorResponse": {"S": "ERROR", "C": "57014", "M": "canceling statement"}},
                      {"ReadyForQuery": "I"}]
    slow.wait_ms, slow.unanswered, slow.interrupted = 1000.0, False, cancelled
    recorded[0].wait_ms = 1.0  # the connection's usual
    return [recorded, query, wire(*error)]


def test_an_answer_recorded_after_a_long_wait_is_held_as_long():
    recorded, query, error = _slow_query(cancelled=False)
    assert 1000 > 10 * 1.0 and 1000 >= LONG_WAIT_MS
    book = Playbook("postgres", recorded)
    assert (book >> client(wire(STARTUP)) << send(wire(be.AuthenticationOk(), *HANDSHAKE[1:]))
            >> client(query) >> after(999) >> after(1) << send(error))


def test_a_long_wait_during_which_other_requests_started_is_not_held():
    """It may have waited for them (a Kafka Fetch for a Produce on another connection):
    they are replayed at their own pace, so holding it would only add the old delay."""
    recorded, query, error = _slow_query(cancelled=False, sql="SELECT * FROM jobs FOR UPDATE")
    recorded[-1].answered_after = recorded[-1].order + 1
    book = Playbook("postgres", recorded)
    assert (book >> client(wire(STARTUP)) << send(wire(be.AuthenticationOk(), *HANDSHAKE[1:]))
            >> client(query) << send(error))


def test_a_cancel_request_on_another_connection_releases_the_held_answer():
    """asyncpg's timeout=1: at 1 s it sends CancelRequest (a new connection, the backend
    key the startup sent) and the server answers the cancel (recorded ``interrupted``).
    At replay the answer waits for that cancel, even a little past the recorded wait (so
    the client's own timer fires first, as it did), and goes out when it comes."""
    recorded, query, error = _slow_query(cancelled=True)
    book = Playbook("postgres", recorded)
    assert book >> client(wire(STARTUP)) << send(wire(be.AuthenticationOk(), *HANDSHAKE[1:]))
    assert book >> client(query) >> after(1000) >> after(50)
    canceller = book.connection()
    key = HANDSHAKE[4]
    assert canceller >> client(wire(fe.CancelRequest(key.process_id, key.secret_key))) << close()
    assert book << send(error)


def test_a_short_interrupted_wait_is_held_for_its_cancel_too():
    """asyncpg's timeout=0.02: the cancel came 35 ms in, below the long-wait threshold.
    Sent at once, the client would see QueryCanceledError instead of its own timeout."""
    recorded, query, error = _slow_query(cancelled=True)
    recorded[-1].wait_ms = 35.0
    assert 35.0 < LONG_WAIT_MS
    book = Playbook("postgres", recorded)
    assert book >> client(wire(STARTUP)) << send(wire(be.AuthenticationOk(), *HANDSHAKE[1:]))
    assert book >> client(query) >> after(1000)  # nothing yet: no cancel came
    key = HANDSHAKE[4]
    canceller = book.connection()
    assert canceller >> client(wire(fe.CancelRequest(key.process_id, key.secret_key))) << close()
    assert book << send(error)


def test_a_sleep_is_held_as_long_as_recorded_however_short():
    """``SELECT pg_sleep(0.1)`` among answers as slow (a loaded recording): still held, so
    asyncpg's "another operation is in progress" meets it at replay as it did when
    recording. A query that did not sleep on purpose is not held below the threshold."""
    for sql, held in (("SELECT pg_sleep(0.1)", True), ("SELECT count(*) FROM big", False)):
        recorded, query, error = _slow_query(cancelled=False, sql=sql)
        recorded[-1].wait_ms = 35.0
        book = Playbook("postgres", recorded)
        assert book >> client(wire(STARTUP)) << send(wire(be.AuthenticationOk(), *HANDSHAKE[1:]))
        if held:
            assert book >> client(query) >> after(34) >> after(1) << send(error)
        else:
            assert book >> client(query) << send(error)


def test_an_interrupted_answer_without_its_interrupt_still_ends():
    recorded, query, error = _slow_query(cancelled=True)
    book = Playbook("postgres", recorded)
    assert book >> client(wire(STARTUP)) << send(wire(be.AuthenticationOk(), *HANDSHAKE[1:]))
    assert book >> client(query) >> after(2999) >> after(1) << send(error)  # wait + 2 s grace


def test_an_http_response_cut_by_a_reset_is_cut_and_reset_again():
    """Recorded as far as it came (``truncated``), the promised length kept; replayed the
    same way, then the reset: the client sees an incomplete body, not a short one."""
    request = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
    recorded = capture_run([("h", "client", request), ("h", "server", head + b"only thirty bytes of a hundred"),
                            ("h", "reset", b"")])
    assert [e.event for e in recorded] == [None, "reset"]
    assert recorded[0].responses[0]["truncated"] is True
    assert (Playbook("http", recorded)
            >> client(request) << send(head + b"only thirty bytes of a hundred") << reset())


def test_an_http_request_never_answered_is_held():
    request = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
    recorded = capture_run([("h", "client", request), ("h", "client", b""), ("h", "server", b"")])
    assert recorded[0].unanswered
    assert Playbook("http", recorded) >> client(request) >> after(10_000) >> client_closes() << close()


def test_a_miss_before_the_recording_ended_is_a_miss_not_the_end():
    """The recorded connection closed after GET k and GET j; the live one asks GET k, then
    something never recorded: a plain miss (the end comes only where the recording ended)."""
    get_j = b"*2\r\n$3\r\nGET\r\n$1\r\nj\r\n"
    recorded = capture_run([("a", "client", GET), ("a", "server", b"$1\r\nv\r\n"),
                            ("a", "client", get_j), ("a", "server", b"$1\r\nw\r\n"),
                            ("a", "server", b"")])
    book = (Playbook("redis", recorded) >> client(GET) << send(b"$1\r\nv\r\n")
            >> client(b"PING x\r\n") << send(b"$1\r\nx\r\n")  # handshake: answered, not the end
            >> client(b"DEL z\r\n") << miss("DEL", "no recorded request matches")
            << send(lambda b: b.startswith(b"-ERR")))
    assert book
    assert book >> client(get_j) << send(b"$1\r\nw\r\n") << close()  # there it ended


def test_a_pushed_message_carries_the_live_value_of_the_publish_that_caused_it():
    """Recorded: a publishes ``job <uuid>``, b receives it. Replayed with another uuid: the
    PUBLISH matches through it, and b's message carries the live uuid (issue 12)."""
    recorded_id, live_id = "0f4a6c3e-2b1d-4e8f-9a7c-5d3b1e2f4a6c", "5b2e9d10-7c4f-4a8e-b1d2-3e4f5a6b7c8d"

    def pub(uid: str) -> bytes:
        return f"*3\r\n$7\r\nPUBLISH\r\n$4\r\nnews\r\n${len(uid) + 4}\r\njob {uid}\r\n".encode()

    def message(uid: str) -> bytes:
        return f"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n${len(uid) + 4}\r\njob {uid}\r\n".encode()

    sub = b"SUBSCRIBE news\r\n"
    confirmation = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    recorded = capture_run([("b", "client", sub), ("b", "server", confirmation),
                            ("a", "client", pub(recorded_id)), ("b", "server", message(recorded_id)),
                            ("a", "server", b":1\r\n")])
    assert next(e for e in recorded if e.event is None and e.request[0] == "PUBLISH").extra == {
        "volatile": [recorded_id]}
    b = Playbook("redis", recorded)
    a = b.connection()
    assert b >> client(sub) << send(confirmation)
    assert a >> client(pub(live_id)) << send(b":1\r\n")
    assert b << send(message(live_id))


def test_a_postgres_notification_carries_the_live_value_of_the_notify():
    recorded_id, live_id = "0f4a6c3e-2b1d-4e8f-9a7c-5d3b1e2f4a6c", "5b2e9d10-7c4f-4a8e-b1d2-3e4f5a6b7c8d"
    listen = wire(fe.Query("LISTEN ch"))
    done = [be.CommandComplete("LISTEN"), be.ReadyForQuery("I")]
    notified = [be.CommandComplete("NOTIFY"), be.ReadyForQuery("I")]
    other = [*HANDSHAKE[:-2], be.BackendKeyData(77, cancel_key(77)), HANDSHAKE[-1]]
    recorded = capture_run([
        ("l", "client", wire(STARTUP)), ("l", "server", wire(*HANDSHAKE)),
        ("n", "client", wire(STARTUP)), ("n", "server", wire(*other)),
        ("l", "client", listen), ("l", "server", wire(*done)),
        ("n", "client", wire(fe.Query(f"NOTIFY ch, 'order {recorded_id}'"))),
        ("n", "server", wire(*notified)),
        ("l", "server", wire(be.NotificationResponse(77, "ch", f"order {recorded_id}")))])
    listener = Playbook("postgres", recorded)
    notifier = listener.connection()
    assert (listener >> client(wire(STARTUP)) << send(wire(be.AuthenticationOk(), *HANDSHAKE[1:]))
            >> client(listen) << send(wire(*done)))
    assert notifier >> client(wire(STARTUP)) << send(wire(be.AuthenticationOk(), *other[1:]))
    assert notifier >> client(wire(fe.Query(f"NOTIFY ch, 'order {live_id}'"))) << send(wire(*notified))
    assert listener << send(wire(be.NotificationResponse(77, "ch", f"order {live_id}")))


def _backend(pid: int) -> list:
    """The recorded handshake of backend ``pid``."""
    return [*HANDSHAKE[:-2], be.BackendKeyData(pid, cancel_key(pid)), HANDSHAKE[-1]]


TERMINATED = be.ErrorResponse((("S", "FATAL"), ("V", "FATAL"), ("C", "57P01"),
                               ("M", "terminating connection due to administrator command")))
ROW_T = [be.RowDescription((be.FieldDescription("pg_terminate_backend", 0, 0, 16, 1, -1, 0),)),
         be.DataRow((b"t",))]


def test_pg_terminate_backend_ends_the_live_connection_it_names():
    """psycopg's pool check: the pool hands out its connections in another order than
    recorded, so the live connection that asks is the recorded victim, and the one it
    names played the recorded asker. The FATAL and the close go to the live connection
    whose pid the live request names, not to the one that follows the recorded victim."""
    terminate = wire(fe.Query("select pg_terminate_backend(100)"))
    recorded = capture_run([
        ("x", "client", wire(STARTUP)), ("x", "server", wire(*_backend(100))),
        ("y", "client", wire(STARTUP)), ("y", "server", wire(*_backend(200))),
        ("y", "client", terminate),
        ("y", "server", wire(*ROW_T, be.CommandComplete("SELECT 1"), be.ReadyForQuery("I"))),
        ("x", "server", wire(TERMINATED)), ("x", "server", b"")])
    assert [e.event for e in recorded if e.event] == ["push", "close"]
    a = Playbook("postgres", recorded)
    b = a.connection()
    assert a >> client(wire(STARTUP)) << send(wire(be.AuthenticationOk(), *_backend(100)[1:]))
    assert b >> client(wire(STARTUP)) << send(wire(be.AuthenticationOk(), *_backend(200)[1:]))
    assert a >> client(wire(fe.Query("select pg_terminate_backend(200)"))) << send(
        wire(*ROW_T, be.CommandComplete("SELECT 1"), be.ReadyForQuery("I")))
    assert b << send(wire(TERMINATED)) << close()


def test_a_connection_that_terminates_itself_gets_the_fatal_and_the_close():
    """Answered from a recording where another backend was terminated (match keys leave
    pids out): terminating itself, the live connection gets the row, then the FATAL, and
    the server's close, as psycopg's ``test_broken`` expects."""
    recorded = capture_run([
        ("y", "client", wire(STARTUP)), ("y", "server", wire(*_backend(200))),
        ("y", "client", wire(fe.Query("select pg_terminate_backend(300)"))),
        ("y", "server", wire(*ROW_T, be.CommandComplete("SELECT 1"), be.ReadyForQuery("I")))])
    a = Playbook("postgres", recorded)
    assert a >> client(wire(STARTUP)) << send(wire(be.AuthenticationOk(), *_backend(200)[1:]))
    assert a >> client(wire(fe.Query("select pg_terminate_backend(200)"))) << send(
        wire(*ROW_T, TERMINATED)) << close()


def test_notifications_of_one_commit_reach_the_listener_in_one_delivery():
    """The server sends the NOTIFYs of one transaction together at its COMMIT; delivered
    one by one (a write each), psycopg's ``notifies(stop_after=1)`` got only the first."""
    notifies = [wire(fe.Query(f"NOTIFY ch, '{n}'")) for n in "12"]
    begin = wire(fe.Query("BEGIN"))
    commit = wire(fe.Query("COMMIT"))
    listen, done = wire(fe.Query("LISTEN ch")), [be.CommandComplete("LISTEN"), be.ReadyForQuery("I")]
    notes = [be.NotificationResponse(77, "ch", n) for n in "12"]
    other = [*HANDSHAKE[:-2], be.BackendKeyData(77, cancel_key(77)), HANDSHAKE[-1]]
    recorded = capture_run([
        ("l", "client", wire(STARTUP)), ("l", "server", wire(*HANDSHAKE)),
        ("n", "client", wire(STARTUP)), ("n", "server", wire(*other)),
        ("l", "client", listen), ("l", "server", wire(*done)),
        ("n", "client", begin), ("n", "server", wire(be.CommandComplete("BEGIN"), be.ReadyForQuery("T"))),
        *[step for q in notifies for step in (("n", "client", q), ("n", "server", wire(
            be.CommandComplete("NOTIFY"), be.ReadyForQuery("T"))))],
        ("n", "client", commit), ("n", "server", wire(be.CommandComplete("COMMIT"), be.ReadyForQuery("I"))),
        ("l", "server", wire(*notes))])
    assert [e.event for e in recorded if e.event] == ["push", "push"]
    listener = Playbook("postgres", recorded)
    notifier = listener.connection()
    assert (listener >> client(wire(STARTUP)) << send(wire(be.AuthenticationOk(), *HANDSHAKE[1:]))
            >> client(listen) << send(wire(*done)))
    assert notifier >> client(wire(STARTUP)) << send(wire(be.AuthenticationOk(), *other[1:]))
    assert notifier >> client(begin) << send(wire(be.CommandComplete("BEGIN"), be.ReadyForQuery("T")))
    for q in notifies:
        assert notifier >> client(q) << send(wire(be.CommandComplete("NOTIFY"), be.ReadyForQuery("T")))
    assert notifier >> client(commit) << send(wire(be.CommandComplete("COMMIT"), be.ReadyForQuery("I")))
    assert listener << sends(wire(*notes))
    assert sum("from another connection" in line for line in listener._log) == 1

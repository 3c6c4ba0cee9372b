"""The replay engine's rules, as transcripts (``tests.support.playbook``): what a replayed
connection answers, in which order, when, and how it ends. No sockets, no clock."""

from __future__ import annotations

from tests.protocols.postgres.build import HANDSHAKE, STARTUP, wire
from tests.protocols.postgres.build import client as pg_client
from tests.protocols.postgres.build import record as pg_record
from tests.protocols.postgres.build import server as pg_server
from tests.support.playbook import (
    Playbook,
    after,
    client,
    client_closes,
    close,
    forward,
    miss,
    out_of_order,
    problem,
    reset,
    send,
)
from trproxy.protocols.postgres import backend as be
from trproxy.protocols.postgres import frontend as fe
from trproxy.store import Exchange

GET_A, GET_B = b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n", b"*2\r\n$3\r\nGET\r\n$1\r\nb\r\n"
RECORDED = [{"request": ["GET", "a"], "responses": ["1"]},
            {"request": ["GET", "a"], "responses": ["2"]},
            {"request": ["SET", "a", "3"], "responses": [{"simple": "OK"}], "connection": 2}]


def test_answers_come_in_recorded_order_and_a_miss_is_a_native_error():
    assert (Playbook("redis", RECORDED)
            >> client(GET_A) << send(b"$1\r\n1\r\n")
            >> client(GET_A) << send(b"$1\r\n2\r\n")
            >> client(GET_A) << miss("GET", "all 2 recorded answers were already used")
            << send(b"-ERR trproxy: no recording for GET a: all 2 recorded answers were already used\r\n")
            >> client(GET_B) << miss("GET", "no recorded request matches")
            << send(b"-ERR trproxy: no recording for GET b: no recorded request matches\r\n")
            >> client_closes() << close())


def test_pipelined_requests_get_one_write_each_in_order():
    assert (Playbook("redis", RECORDED)
            >> client(GET_A + b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n3\r\n" + GET_A)
            << send(b"$1\r\n1\r\n") << send(b"+OK\r\n") << send(b"$1\r\n2\r\n"))


def test_an_answer_served_past_unused_recordings_of_its_connection_is_out_of_order():
    """The live connection follows recorded connection 1 (GET a), then asks GET c while
    GET b, recorded between them, is unused: the app skipped it. Reported, and served."""
    recorded = [{"request": ["GET", k], "responses": [k], "summary": f"GET {k}"} for k in "abc"]
    book = (Playbook("redis", recorded)
            >> client(GET_A) << send(b"$1\r\na\r\n")
            >> client(b"GET c\r\n") << out_of_order("GET", "GET b") << send(b"$1\r\nc\r\n")
            >> client(GET_B) << send(b"$1\r\nb\r\n"))  # going back is not reported again
    assert book
    assert [u.summary for u in book.mocks.ctx.ledger.unused()] == []


def test_recordings_of_one_client_request_may_come_in_any_order():
    """Exchanges recorded from one request (the same ``order``: Kafka's parts, a pipeline
    sent at once) are not out of order among themselves."""
    recorded = [{"request": ["GET", k], "responses": [k], "order": 7} for k in "abc"]
    assert (Playbook("redis", recorded)
            >> client(GET_A) << send(b"$1\r\na\r\n")
            >> client(b"GET c\r\n") << send(b"$1\r\nc\r\n"))


def test_unused_recordings_are_listed_and_fail_strict_runs():
    book = Playbook("redis", RECORDED) >> client(GET_A) << send(b"$1\r\n1\r\n")
    assert book
    ctx = book.mocks.ctx
    assert [(u["connection"], u["seq"]) for u in ctx.unused()] == [(1, 2), (2, 3)]
    assert ctx.strict_failures() == ["2 recordings never used"]
    assert "2 recordings never used:" in ctx.summary()


def test_a_handshake_miss_is_answered_by_the_dialect_and_not_reported():
    assert (Playbook("redis", RECORDED)
            >> client(b"PING\r\n") << send(b"+PONG\r\n")
            >> client(b"SELECT 2\r\n") << send(b"+OK\r\n"))


def test_no_native_error_resets_the_connection():
    """generic has no error channel: a miss hangs up (reported)."""
    assert (Playbook("generic", [{"request": {"data": "hello"}, "responses": [{"data": "world"}]}])
            >> client(b"hello") << send(b"world")
            >> client(b"bye") << miss("3 bytes", "no recorded request matches") << reset()
            >> client(b"more"))  # nothing after the end


def test_the_server_hanging_up_closes_after_the_answer():
    """Postgres Terminate: the replayer says the server would close (``close_after``)."""
    recorded = pg_record(pg_client(STARTUP), pg_server(*HANDSHAKE))
    assert (Playbook("postgres", recorded)
            >> client(wire(STARTUP)) << send(wire(be.AuthenticationOk(), *HANDSHAKE[1:]))
            >> client(wire(fe.Terminate())) << close())


def test_a_held_answer_holds_back_what_follows_it():
    """A replayer may ask for an answer to go out later (``hold_ms``, a Kafka Fetch with
    nothing new): later answers on the connection queue behind it."""
    book = Playbook("redis", RECORDED)
    replayer = book.session.replayer
    respond = replayer.respond

    def slow_get(lookup, responses):
        if lookup.request == ["GET", "a"]:
            lookup.context.hold_ms = 200
        return respond(lookup, responses)

    replayer._replayer.respond = slow_get
    assert (book
            >> client(GET_A)  # held
            >> after(100)
            >> client(b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n3\r\n")  # queued behind it
            >> after(100) << send(b"$1\r\n1\r\n") << send(b"+OK\r\n")
            >> client_closes() << close())


def test_a_client_that_closes_still_gets_held_answers_then_the_close():
    book = Playbook("redis", RECORDED)
    respond = book.session.replayer.respond

    def slow(lookup, responses):
        lookup.context.hold_ms = 50
        return respond(lookup, responses)

    book.session.replayer._replayer.respond = slow
    assert (book >> client(GET_A) >> client_closes()
            >> after(50) << send(b"$1\r\n1\r\n") << close())


def test_a_recorded_answer_that_cannot_be_rendered_is_a_reported_miss():
    """A recording is untrusted input: a wrong-typed field or absurd nesting gets the
    protocol's error and a report line, never a silent reset."""
    deep: object = "x"
    for _ in range(990):
        deep = [deep]
    book = Playbook("redis", [{"request": ["GET", "a"], "responses": [{"int": "not a number"}]}])
    # as loaded from a file (YAML and msgpack read such nesting; writing it is another matter)
    book.mocks.pool.add(Exchange("redis", book.mocks.destination, ["GET", "b"], [deep]))
    assert (book
            >> client(GET_A) << miss("GET", "the recorded answer cannot be replayed")
            << send(lambda b: b.startswith(b"-ERR trproxy: no recording for GET a: the recorded answer"))
            >> client(GET_B) << miss("GET", "the recorded answer cannot be replayed")
            << send(lambda b: b.startswith(b"-ERR trproxy: no recording for GET b")))


def test_a_postgres_answer_with_a_wrong_typed_field_is_an_error_response():
    recorded = pg_record(pg_client(STARTUP), pg_server(*HANDSHAKE))
    recorded.append(type(recorded[0])([{"Query": "SELECT 1"}], [{"DataRow": 7}], "data", "Query"))
    book = (Playbook("postgres", recorded)
            >> client(wire(STARTUP)) << send(wire(be.AuthenticationOk(), *HANDSHAKE[1:]))
            >> client(wire(fe.Query("SELECT 1"))) << miss("Query SELECT 1", "cannot be replayed")
            << send(lambda b: b"XX000" in b and b.endswith(wire(be.ReadyForQuery("I")))))
    assert book


def test_new_episodes_fetches_a_miss_and_keeps_its_place_in_the_output():
    recorded = [{"request": {"data": "known"}, "responses": [{"data": "old"}]}]
    book = Playbook("generic", recorded, forwarding=True)
    book.session.replayer.feed = _forwardable(book.session.replayer.feed)
    assert book >> client(b"new") << forward()
    fetch = book.forwards[0]
    assert (book >> client(b"known")  # answered, but after the fetched one
            >> book.answer(fetch, [{"data": "fresh"}]) << send(b"fresh") << send(b"old"))


def test_new_episodes_a_failed_fetch_is_a_miss_in_its_place():
    book = Playbook("redis", RECORDED, forwarding=True)
    book.session.replayer.feed = _forwardable(book.session.replayer.feed)
    assert book >> client(GET_B) << forward()
    assert (book >> book.answer(book.forwards[0], None, "connection refused")
            << miss("GET", "fetching it from the server failed: connection refused")
            << send(lambda b: b.startswith(b"-ERR trproxy: no recording for GET b")))


def _forwardable(feed):
    """Lookups that can be fetched upstream (in the product only HTTP's can)."""
    def wrapped(data):
        events = feed(data)
        for e in events:
            if hasattr(e, "context"):
                e.context.forward = lambda: None
        return events
    return wrapped


def test_a_replayer_that_cannot_follow_the_client_resets_and_reports():
    assert (Playbook("postgres", [])
            >> client(b"\x00\x00\x00\x08\x00\x00\x00\x00")  # a startup with protocol 0.0
            << problem("replay could not follow a postgres connection") << reset())

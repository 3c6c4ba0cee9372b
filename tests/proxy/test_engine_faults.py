"""Fault injection at replay (``proxy/faults.py``), as transcripts: a request a rule picks
fails in its protocol's own terms, is reported, and leaves its recording for the retry."""

from __future__ import annotations

import pytest

from tests.protocols.postgres.build import HANDSHAKE, STARTUP, record, server, wire
from tests.protocols.postgres.build import client as pg_client
from tests.support.playbook import (
    Playbook,
    after,
    client,
    client_closes,
    close,
    injected,
    reset,
    send,
)
from trproxy.protocols.base import Direction
from trproxy.protocols.postgres import backend as be
from trproxy.protocols.postgres import frontend as fe
from trproxy.proxy.faults import FaultPlan, parse_rule, plan_from

GET_A = b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n"
RECORDED = [{"request": ["GET", "a"], "responses": ["1"], "summary": "GET a"},
            {"request": ["GET", "a"], "responses": ["2"], "summary": "GET a"}]
LOADING = b"-LOADING Redis is loading the dataset in memory\r\n"


def faulty(protocol: str, recorded: list, *rules: str, **kw) -> Playbook:
    book = Playbook(protocol, recorded, **kw)
    book.mocks.ctx.faults = FaultPlan([parse_rule(r) for r in rules])
    return book


def test_the_first_request_fails_and_its_retry_gets_the_recorded_answer():
    book = (faulty("redis", RECORDED, "redis error=LOADING first=1")
            >> client(GET_A) << injected("GET", "error LOADING") << send(LOADING)
            >> client(GET_A) << send(b"$1\r\n1\r\n")
            >> client(GET_A) << send(b"$1\r\n2\r\n"))
    assert book
    ctx = book.mocks.ctx
    assert [(f["request"], f["fault"], f["occurrence"]) for f in ctx.injected] == [("GET", "error LOADING", 1)]
    assert ctx.misses == [] and ctx.unused() == []
    assert "1 faults injected:" in ctx.summary()
    assert ctx.report(None, 0)["faults"] == ctx.injected


@pytest.mark.parametrize(("which", "failing"), [("nth=2", [2]), ("every=2", [2, 4]),
                                                  ("first=2", [1, 2]), ("", [1, 2, 3, 4])])
def test_which_occurrences_fail(which, failing):
    recorded = RECORDED * 2
    book = faulty("redis", recorded, f"redis error=READONLY {which}")
    served = 0
    for n in range(1, 5):
        if n in failing:
            book = book >> client(GET_A) << injected("GET", "error READONLY") << send(
                b"-READONLY You can't write against a read only replica.\r\n")
        else:
            served += 1
            book = book >> client(GET_A) << send(b"$1\r\n%d\r\n" % (1 if served % 2 else 2))
    assert book


def test_reset_close_and_an_error_then_close():
    assert faulty("redis", RECORDED, "redis reset") >> client(GET_A) << injected("GET", "reset") << reset()
    assert faulty("redis", RECORDED, "redis close") >> client(GET_A) << injected("GET", "close") << close()
    assert (faulty("redis", RECORDED, "redis error=BUSY close")
            >> client(GET_A) << injected("GET", "error BUSY + close")
            << send(lambda b: b.startswith(b"-BUSY Redis is busy running a script")) << close())


def test_hang_never_answers_and_holds_what_follows_until_the_client_goes():
    assert (faulty("redis", RECORDED, "redis hang nth=1")
            >> client(GET_A) << injected("GET", "hang")
            >> client(GET_A) >> after(60_000)
            >> client_closes() << close())


def test_delay_holds_the_recorded_answer():
    assert (faulty("redis", RECORDED, "redis delay=250")
            >> client(GET_A) << injected("GET", "delay 250 ms")
            >> after(249) >> after(1) << send(b"$1\r\n1\r\n"))


def test_an_error_can_come_late():
    assert (faulty("redis", RECORDED, "redis error=LOADING delay=100")
            >> client(GET_A) << injected("GET", "error LOADING + delay 100 ms")
            >> after(99) >> after(1) << send(LOADING))


def test_rules_select_by_protocol_destination_and_pattern():
    for rule in ("postgres error=40001", "redis error=LOADING to=*:9999",
                 "redis error=LOADING match='^SET'"):
        assert faulty("redis", RECORDED, rule) >> client(GET_A) << send(b"$1\r\n1\r\n")
    assert (faulty("redis", RECORDED, "redis error=LOADING to=127.0.0.1:* match=GET")
            >> client(GET_A) << injected("GET", "error LOADING") << send(LOADING))


def test_handshakes_fail_only_when_a_pattern_names_them():
    assert faulty("redis", [], "redis error=LOADING") >> client(b"PING\r\n") << send(b"+PONG\r\n")
    assert (faulty("redis", [], "redis error=LOADING match=PING")
            >> client(b"PING\r\n") << injected("PING", "error LOADING") << send(LOADING))


def test_the_first_rule_that_fires_decides_and_every_rule_counts():
    book = (faulty("redis", RECORDED * 2, "redis error=LOADING nth=1", "redis reset nth=2")
            >> client(GET_A) << injected("GET", "error LOADING") << send(LOADING)
            >> client(GET_A) << injected("GET", "reset") << reset())
    assert book


# --- postgres -------------------------------------------------------------------------------

INT4 = be.FieldDescription("n", 0, 0, 23, 4, -1, 0)
ROWS = [be.RowDescription((INT4,)), be.DataRow((b"7",)), be.CommandComplete("SELECT 1"),
        be.ReadyForQuery("I")]
HELLO = wire(be.AuthenticationOk(), *HANDSHAKE[1:])


def _postgres(*rules: str) -> Playbook:
    recorded = record(pg_client(STARTUP), server(*HANDSHAKE), pg_client(fe.Query("SELECT 7")),
                      server(*ROWS))
    return faulty("postgres", recorded, *rules) >> client(wire(STARTUP)) << send(HELLO)


def test_postgres_serialization_failure_then_the_retry_is_answered():
    error = be.ErrorResponse((("S", "ERROR"), ("V", "ERROR"), ("C", "40001"),
                              ("M", "could not serialize access due to concurrent update")))
    assert (_postgres("postgres error=40001 match=SELECT first=1")
            >> client(wire(fe.Query("SELECT 7"))) << injected("Query SELECT 7", "error 40001")
            << send(wire(error, be.ReadyForQuery("I")))
            >> client(wire(fe.Query("SELECT 7"))) << send(wire(*ROWS)))


def test_postgres_connection_failure_is_fatal_and_hangs_up():
    assert (_postgres("postgres error=08006")
            >> client(wire(fe.Query("SELECT 7"))) << injected("Query SELECT 7", "error 08006")
            << send(lambda b: b"FATAL" in b and b"08006" in b) << close())


def test_postgres_error_in_an_extended_batch_ending_at_sync():
    batch = [fe.Parse("", "SELECT 7"), fe.Bind("", "", (), (), ()), fe.Execute(), fe.Sync()]
    assert (_postgres("postgres error=57014 message='canceling statement due to user request'")
            >> client(wire(*batch)) << injected("Execute SELECT 7", "error 57014")
            << send(lambda b: b"57014" in b and b"user request" in b
                    and b.endswith(wire(be.ReadyForQuery("I")))))


# --- kafka and http ---------------------------------------------------------------------------

def test_kafka_produce_answers_the_error_code_named():
    from tests.protocols.kafka.capture import DATA
    from tests.protocols.kafka.streams import capture_streams
    from tests.protocols.kafka.test_dialect import record as kafka_record
    from trproxy.protocols.kafka.codec import KafkaCodec

    chunks = capture_streams(DATA / "aiokafka-none.json")[1]
    book = faulty("kafka", kafka_record(chunks), "kafka error=NOT_LEADER_OR_FOLLOWER match=Produce nth=1")
    asked = [data for side, data in chunks if side == "client" and data]
    codec = KafkaCodec()
    codes = []
    for request in asked:
        answer = b"".join(c.data for c in book.play(client(request)) if hasattr(c, "data"))
        codec.feed(Direction.CLIENT, request)
        req = codec.next_message()
        codec.feed(Direction.SERVER, answer)
        resp = codec.next_message()
        if req.api == "Produce":
            codes.append(resp.body["responses"][0]["partition_responses"][0]["error_code"])
    assert codes[0] == 6 and set(codes[1:]) == {0}
    assert [f["fault"] for f in book.mocks.ctx.injected] == ["error NOT_LEADER_OR_FOLLOWER"]


def test_http_status_with_retry_after():
    from tests.protocols.http.streams import record as http_record

    request = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    recorded = http_record([("client", request), ("server", answer)])
    assert (faulty("http", recorded, "http error=503 retry_after=1 first=1")
            >> client(request) << injected("GET x/a", "error 503")
            << send(lambda b: b.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
                    and b"Retry-After: 1\r\n" in b)
            >> client(request) << send(answer))


# --- rules ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("rule", "says"), [
    ("redis error=LOADING frist=1", "unknown key 'frist'"),
    ("postgres error=4001", "SQLSTATE"),
    ("http error=99", "status from 200 to 599"),
    ("kafka error=NOT_A_LEADER", "unknown Kafka error"),
    ("error=40001", "needs a protocol"),
    ("redis error=LOADING nth=2 first=1", "cannot go together"),
    ("redis", "says nothing to do"),
    ("redis reset hang", "choose one"),
    ("mssql reset", "unknown protocol"),
    ("mysql error=DEADLOCK", "error number"),
    ("redis reset nth=0", "at least 1"),
    ("redis reset match=(", "regular expression"),
    ("generic error=X", "no protocol errors"),
])
def test_a_wrong_rule_is_one_clear_line(rule, says):
    with pytest.raises(ValueError, match=says.replace("(", r"\(")) as exc:
        parse_rule(rule)
    assert "\n" not in str(exc.value) and rule in str(exc.value)


def test_config_lists_and_profiles():
    config = {"faults": ["redis error=LOADING nth=1", {"protocol": "http", "error": 503,
                                                         "retry_after": 2}],
              "fault_profiles": {"flaky-db": ["postgres error=40001 every=3"]}}
    plan = plan_from(["redis reset"], config, "flaky-db")
    assert plan is not None
    assert [r.text for r in plan.rules] == ["redis error=LOADING nth=1",
                                            "protocol=http error=503 retry_after=2",
                                            "postgres error=40001 every=3", "redis reset"]
    assert plan.rules[1].failure is not None and plan.rules[1].failure.retry_after == 2
    assert plan_from([], {}) is None
    with pytest.raises(ValueError, match="no fault profile 'slow'.*flaky-db"):
        plan_from([], config, "slow")
    with pytest.raises(ValueError, match="must be a list"):
        plan_from([], {"faults": "redis reset"})


def test_the_run_reads_config_yaml_and_names_a_wrong_rule(tmp_path):
    from trproxy.apptest.noise import write_default_config
    from trproxy.proxy.runner import RunError, RunOptions, fault_plan

    write_default_config(tmp_path)  # the template's empty lists inject nothing
    assert fault_plan(RunOptions([], root=tmp_path)) is None
    plan = fault_plan(RunOptions([], root=tmp_path, faults=["http error=503 retry_after=2"]))
    assert plan is not None and plan.rules[0].failure is not None
    with pytest.raises(RunError, match="fault 'redis error=LOADING nht=2': unknown key 'nht'"):
        fault_plan(RunOptions([], root=tmp_path, faults=["redis error=LOADING nht=2"]))
    with pytest.raises(RunError, match="no fault profile 'x'"):
        fault_plan(RunOptions([], root=tmp_path, fault_profile="x"))


def test_http2_status_with_retry_after_on_its_stream():
    """The same fault over HTTP/2: the stream's HEADERS carry 503 and retry-after."""
    import h2.config
    import h2.connection
    import h2.events

    from tests.protocols.http.streams import record as http_record

    request = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    recorded = http_record([("client", request), ("server", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")])
    h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    h2c.initiate_connection()
    h2c.send_headers(1, [(":method", "GET"), (":path", "/a"), (":scheme", "http"),
                         (":authority", "x")], end_stream=True)
    book = faulty("http", recorded, "http error=503 retry_after=7")
    commands = book.play(client(h2c.data_to_send()))
    assert [c.entry["fault"] for c in commands if hasattr(c, "entry")] == ["error 503"]
    events = h2c.receive_data(b"".join(c.data for c in commands if hasattr(c, "data")))
    headers = next(dict(e.headers) for e in events if isinstance(e, h2.events.ResponseReceived))
    assert headers[":status"] == "503" and headers["retry-after"] == "7"


def test_the_cli_refuses_a_wrong_rule_in_one_line(tmp_path):
    from tests.support.proc import run_trproxy
    from trproxy.store import Exchange
    from trproxy.store.yamlio import dump

    mocks = tmp_path / "rec" / "test-set-0" / "mocks.yaml"
    mocks.parent.mkdir(parents=True)
    mocks.write_text("---\n" + dump(Exchange("redis", "127.0.0.1:6379", ["GET", "a"], ["1"]).to_doc()))
    done = run_trproxy("replay", "--dir", str(tmp_path / "rec"), "--no-redirect",
                       "--fault", "redis error=LOADING sometimes", "--", "true", timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "trproxy: fault 'redis error=LOADING sometimes': 'sometimes' is not KEY=VALUE")


def test_occurrences_are_counted_per_test():
    """nth=1 fails the first matching request of each test, not only the run's first: a
    test meets the same faults alone or in a suite. Outside tests, over the run."""
    from trproxy.protocols.base import Lookup

    plan = FaultPlan([parse_rule("redis error=LOADING nth=1")])
    get = Lookup(["GET", "a"], summary="GET a")
    picked = [plan.pick("redis", "127.0.0.1:6379", get, test) is not None
              for test in ("t1", "t1", "t2", "t2", None, None, "t1")]
    assert picked == [True, False, True, False, True, False, False]
    assert plan.rules[0].seen == {"t1": 3, "t2": 2, None: 2}


def test_a_test_window_counts_its_own_faults():
    book = faulty("redis", RECORDED * 2, "redis error=LOADING nth=1")
    book.mocks.ctx.current_test = "test-1"
    book = book >> client(GET_A) << injected("GET", "error LOADING") << send(LOADING)
    book = book >> client(GET_A) << send(b"$1\r\n1\r\n")
    assert book
    book.mocks.ctx.current_test = "test-2"  # the next test's first GET fails again
    assert book >> client(GET_A) << injected("GET", "error LOADING") << send(LOADING)

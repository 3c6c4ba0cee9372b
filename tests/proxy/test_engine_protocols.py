"""Replay transcripts for every protocol, on recordings the dialect tests build from real
captured streams (``tests/protocols/*``): the client's bytes in, the engine's answers
out, as a real replayed connection would see them."""

from __future__ import annotations

import h11
import pytest
from hpack import Decoder
from hyperframe.frame import Frame, HeadersFrame, SettingsFrame
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, CloseConnection, TextMessage

from tests.protocols.http import capture as http_capture
from tests.protocols.http.streams import record as http_record
from tests.protocols.http.test_websocket import CONFIG as WS_CONFIG
from tests.protocols.http.test_websocket import _conversation, new_client, received
from tests.protocols.kafka.streams import capture_streams
from tests.protocols.kafka.test_dialect import _fetches
from tests.protocols.kafka.test_dialect import record as kafka_record
from tests.protocols.postgres.build import HANDSHAKE, STARTUP, client, record, server, wire
from tests.protocols.redis.redis_support import record as redis_record
from tests.support.playbook import Playbook, after, client_closes, close, miss, send, sends
from tests.support.playbook import client as live
from tests.support.recording import capture
from trproxy.protocols.base import Direction
from trproxy.protocols.generic import GenericRecorder
from trproxy.protocols.http import HttpReplayer
from trproxy.protocols.kafka.codec import KafkaCodec
from trproxy.protocols.kafka.readable import readable_to_request
from trproxy.protocols.postgres import backend as be
from trproxy.protocols.postgres import frontend as fe

Chunks = list[tuple[str, bytes]]


def turns(chunks: Chunks) -> list[tuple[bytes, bytes]]:
    """A strict request/response stream as (client bytes, the server bytes that followed)."""
    out: list[tuple[bytes, bytes]] = []
    for side, data in chunks:
        if not data:
            continue
        if side == "client":
            if out and not out[-1][1]:
                out[-1] = (out[-1][0] + data, b"")
            else:
                out.append((data, b""))
        else:
            out[-1] = (out[-1][0], out[-1][1] + data)
    return out


def replays_as_recorded(book: Playbook, chunks: Chunks) -> Playbook:
    """Each client turn of ``chunks`` is answered with exactly the server bytes recorded."""
    for asked, answered in turns(chunks):
        book = book >> live(asked) << sends(answered)
    return book >> client_closes() << close()


# --- redis --------------------------------------------------------------------------------

REDIS = [
    ("client", b"HELLO 3\r\n"),
    ("server", b"%1\r\n$5\r\nproto\r\n:3\r\n"),
    ("client", b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\nPING\r\n"),
    ("server", b"$1\r\n1\r\n_\r\n+PONG\r\n"),
    ("client", b"CLIENT REPLY SKIP\r\nSET a 1\r\nGET a\r\n"),
    ("server", b"$1\r\n1\r\n"),
    ("client", b"HGETALL h\r\n"),
    ("server", b"%1\r\n$1\r\nf\r\n,1.5\r\n"),
]


def test_redis_pipelines_resp3_and_client_reply_replay_byte_for_byte():
    recording = redis_record(REDIS)
    assert recording.error is None
    assert replays_as_recorded(Playbook("redis", recording.interactions), REDIS)


def test_redis_miss():
    assert (Playbook("redis", redis_record(REDIS).interactions)
            >> live(b"GET zzz\r\n") << miss("GET", "no recorded request matches")
            << send(b"-ERR trproxy: no recording for GET zzz: no recorded request matches\r\n"))


# --- postgres -----------------------------------------------------------------------------

INT4 = be.FieldDescription("n", 0, 0, 23, 4, -1, 0)
ROWS = [be.RowDescription((INT4,)), be.DataRow((b"7",)), be.CommandComplete("SELECT 1"),
        be.ReadyForQuery("I")]


def test_postgres_startup_query_batch_and_terminate():
    batch = [fe.Parse("", "SELECT $1::int"), fe.Bind("", "", (), (b"7",), ()), fe.Execute(),
             fe.Sync()]
    batch_answer = [be.ParseComplete(), be.BindComplete(), be.DataRow((b"7",)),
                    be.CommandComplete("SELECT 1"), be.ReadyForQuery("I")]
    recorded = record(client(STARTUP), server(*HANDSHAKE), client(fe.Query("SELECT 7")),
                      server(*ROWS), client(*batch), server(*batch_answer))
    assert (Playbook("postgres", recorded)
            >> live(wire(fe.SSLRequest())) << send(b"N")
            >> live(wire(STARTUP)) << send(wire(be.AuthenticationOk(), *HANDSHAKE[1:]))
            >> live(wire(fe.Query("SELECT 7"))) << send(wire(*ROWS))
            >> live(wire(*batch)) << send(wire(*batch_answer))
            >> live(wire(fe.Query("SELECT 8"))) << miss("Query SELECT 8")
            << send(lambda b: b"XX000" in b and b.endswith(wire(be.ReadyForQuery("I"))))
            >> live(wire(fe.Terminate())) << close())


# --- kafka --------------------------------------------------------------------------------

def test_kafka_producer_connection_replays_as_recorded():
    from tests.protocols.kafka.capture import DATA

    chunks = capture_streams(DATA / "aiokafka-none.json")[1]  # ApiVersions, Metadata, 3 Produce
    assert replays_as_recorded(Playbook("kafka", kafka_record(chunks)), chunks)


def test_kafka_fetch_asked_again_with_nothing_new_is_held_max_wait_ms():
    _full, empty = _fetches()
    wait = empty.request["body"]["max_wait_ms"]
    request = KafkaCodec().encode(readable_to_request(empty.request))
    book = Playbook("kafka", [empty])
    assert book >> live(request) << send(lambda b: len(b) > 8)  # as recorded: at once
    assert (book >> live(request)  # a repeat with no records: a broker waits for new ones
            >> after(wait - 1)
            >> after(1) << send(lambda b: len(b) > 8))


# --- http/1, http/2, websocket ------------------------------------------------------------

H1 = http_capture.load("h1")
H2 = http_capture.load("h2")


def _h1_responses(data: bytes, methods: list[bytes]) -> list[tuple[int, bytes]]:
    conn = h11.Connection(h11.CLIENT)
    out: list[tuple[int, bytes]] = []
    for method in methods:
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    status, body = 0, b""
    while (event := conn.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
        if isinstance(event, h11.Response):
            status, body = event.status_code, b""
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            out.append((status, body))
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
    return out


def test_http1_keepalive_requests_get_their_recorded_responses():
    chunks = H1["keepalive"]
    recorded = http_record(chunks)
    book = Playbook("http", recorded, destination="127.0.0.1:36215")
    statuses = [int(i.responses[-1]["status"]) for i in recorded]
    for (asked, _), status in zip(turns(chunks), statuses, strict=False):
        method = asked.split(b" ", 1)[0]
        book = book >> live(asked) << send(
            lambda b, s=status, m=method: _h1_responses(b, [m])[0][0] == s)
    assert book >> client_closes() << close()


def test_http1_miss_is_a_502_saying_why():
    assert (Playbook("http", [], destination="127.0.0.1:36215")
            >> live(b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1:36215\r\n\r\n")
            << miss("GET 127.0.0.1:36215/nothing", "nothing recorded for http")
            << send(lambda b: _h1_responses(b, [b"GET"])[0][0] == 502))


def _h2_frames(data: bytes) -> list:
    out, pos = [], 0
    while pos < len(data):
        frame, length = Frame.parse_frame_header(memoryview(data[pos:pos + 9]))
        frame.parse_body(memoryview(data[pos + 9:pos + 9 + length]))
        out.append(frame)
        pos += 9 + length
    return out


def test_http2_multiplexed_streams_get_their_recorded_responses():
    """The recorded client's frames in; each stream gets the recorded status, ends, and
    the server's frames (SETTINGS and its ACK) answer the client's as h2 requires."""
    chunks = H2["h2_multiplexed"]
    recorded = capture(chunks)  # as the proxy records: numbered by request order
    book = Playbook("http", recorded)
    hpack = Decoder()
    statuses: dict[int, int] = {}
    ended: set[int] = set()
    frames = []
    for side, data in chunks:  # the recorded client bytes, as they were sent
        if side == "client" and data:
            frames += [f for c in book.play(live(data)) for f in _h2_frames(c.data)]  # type: ignore[union-attr]
    assert isinstance(frames[0], SettingsFrame) and "ACK" not in frames[0].flags
    for frame in frames:
        if isinstance(frame, HeadersFrame):
            headers = dict(hpack.decode(frame.data))  # trailers have no :status
            if int(headers.get(":status", 0)) >= 200:
                statuses[frame.stream_id] = int(headers[":status"])
        if "END_STREAM" in frame.flags:
            ended.add(frame.stream_id)
    recorded_statuses = sorted(int(r["status"]) for i in recorded for r in i.responses
                               if int(r["status"]) >= 200)
    assert sorted(statuses.values()) == recorded_statuses and set(statuses) == ended
    assert not book.mocks.misses and not book.mocks.ctx.out_of_order


def test_websocket_upgrade_greeting_messages_and_close():
    recorded, _ = _conversation(greeting=True)
    ws, upgrade = new_client()
    book = Playbook("http", recorded, destination="example.com:80",
                    replayer=HttpReplayer(WS_CONFIG, authority="example.com:80"))
    answers: list = []

    def events(data: bytes) -> bool:
        answers.extend(received(ws, data))
        return True

    assert book >> live(upgrade) << send(events) << send(events)  # 101, then the greeting
    assert isinstance(answers[0], AcceptConnection) and answers[1:] == [TextMessage("welcome")]
    assert book >> live(ws.send(TextMessage('{"n": 1}'))) << send(events)
    assert answers[-1] == TextMessage('{"count":1}')
    assert book >> live(ws.send(CloseConnection(1000))) << send(events) << close()
    assert answers[-1] == CloseConnection(1000, "")
    assert ConnectionType.CLIENT  # wsproto's client drove the conversation


# --- generic ------------------------------------------------------------------------------

def test_generic_turns():
    chunks = [("client", b"HELO x\r\n"), ("server", b"250 ok\r\n"), ("client", b"QUIT\r\n"),
              ("server", b"221 bye\r\n")]
    recorder = GenericRecorder()
    recorded = []
    for side, data in [*chunks, ("client", b""), ("server", b"")]:
        recorded += recorder.feed(Direction(side), data)
    assert replays_as_recorded(Playbook("generic", recorded), chunks)


@pytest.mark.parametrize("name", ["pipelined", "chunked_upload", "expect100"])
def test_http1_other_vectors_answer_every_request(name):
    chunks = H1[name]
    recorded = http_record(chunks)
    book = Playbook("http", recorded, destination="127.0.0.1:36215")
    client_bytes = b"".join(d for s, d in chunks if s == "client")
    sent = b"".join(c.data for c in book.play(live(client_bytes)))  # type: ignore[union-attr]
    finals = [r for i in recorded for r in i.responses if int(r["status"]) >= 200]
    assert sent.count(b"HTTP/1.1 ") >= len(finals) and not book.mocks.misses

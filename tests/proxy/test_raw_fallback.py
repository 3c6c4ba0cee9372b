"""Never a silent hole (``proxy/raw.py``): a reply the dialect cannot decode is recorded
as raw bytes with its request still readable, replayed byte for byte, and counted."""

from __future__ import annotations

from tests.support.playbook import Playbook, client, send
from tests.support.recording import capture
from trproxy.proxy.context import Mode, RunContext

GET = b"*2\r\n$3\r\nGET\r\n$1\r\n%s\r\n"
CHUNKS = [("client", GET % b"a"), ("server", b"$1\r\n1\r\n"),
          ("client", GET % b"b"), ("server", b"?not RESP\r\n"),  # the dialect fails here
          ("client", GET % b"c"), ("server", b"$1\r\n3\r\n")]


def test_the_reply_that_failed_and_the_rest_are_recorded_raw_and_replayed_byte_for_byte():
    ctx = RunContext(Mode.RECORD)
    recorded = capture(CHUNKS, destination="127.0.0.1:6379", ctx=ctx)
    assert [(e.request, e.responses, bool(e.extra.get("raw"))) for e in recorded] == [
        (["GET", "a"], ["1"], False),
        (["GET", "b"], [{"raw": "?not RESP\r\n"}], True),
        (["GET", "c"], [{"raw": "$1\r\n3\r\n"}], True),
    ]
    assert "could not decode the reply" in recorded[1].extra["raw"]
    assert ctx.raw == {"redis": 2}
    assert "recorded as raw bytes (a reply the dialect could not decode): 2 redis" in ctx.summary()
    assert not any("capture stopped" in p for p in ctx.problems)

    book = Playbook("redis", recorded)
    assert (book >> client(GET % b"a") << send(b"$1\r\n1\r\n")
            >> client(GET % b"b") << send(b"?not RESP\r\n")
            >> client(GET % b"c") << send(b"$1\r\n3\r\n"))
    assert book.mocks.ctx.raw == {"redis": 2} and book.mocks.ctx.misses == []
    assert book.mocks.ctx.report(None, 0)["raw"] == {"redis": 2}


def test_a_request_the_dialect_cannot_read_alone_is_still_reported_lost():
    """Postgres messages after the startup cannot be read without it: capture stops, as
    before, and says so."""
    from tests.protocols.postgres.build import HANDSHAKE, STARTUP, server
    from tests.protocols.postgres.build import client as pg
    from trproxy.protocols.postgres import frontend as fe

    ctx = RunContext(Mode.RECORD)
    side, data = pg(STARTUP)
    recorded = capture([(side, data), server(*HANDSHAKE), pg(fe.Query("SELECT 1")),
                        ("server", b"Z\x00\x00\x00\x05?")], destination="127.0.0.1:5432", ctx=ctx)
    assert [e.summary for e in recorded if e.lifetime == "session"]
    assert ctx.raw == {}
    assert [p for p in ctx.problems if "capture stopped" in p], ctx.problems

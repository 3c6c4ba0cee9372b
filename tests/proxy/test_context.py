"""RunContext's end-of-run questions (``unused``) asked by the summary, the report and
``--strict`` in turn."""

from __future__ import annotations

from tests.support.playbook import Playbook, client, send
from trproxy.proxy.context import Mode, RunContext

GET_A = b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n"
RECORDED = [{"request": ["GET", "a"], "responses": ["1"], "summary": "GET a"},
            {"request": ["GET", "a"], "responses": ["2"], "summary": "GET a"},
            {"request": ["GET", "b"], "responses": ["3"], "summary": "GET b"}]


def test_unused_is_one_pass_over_the_recordings_until_something_more_is_served(monkeypatch):
    book = Playbook("redis", RECORDED) >> client(GET_A) << send(b"$1\r\n1\r\n")
    assert book
    ctx = book.mocks.ctx
    passes = []
    unused = ctx.ledger.unused
    monkeypatch.setattr(ctx.ledger, "unused", lambda: passes.append(1) or unused())
    assert [u["request"] for u in ctx.unused()] == ["GET a", "GET b"]
    ctx.summary()
    ctx.report(None, 0)
    assert len(passes) == 1
    book >> client(GET_A) << send(b"$1\r\n2\r\n")
    assert book
    assert [u["request"] for u in ctx.unused()] == ["GET b"]
    assert len(passes) == 2


def test_the_summary_and_report_count_connects_to_closed_local_ports():
    ctx = RunContext(Mode.RECORD)
    ctx.closed.update({"127.0.0.1:5432": 3, "[::1]:5432": 1})
    lines = ctx.summary().splitlines()
    assert "trproxy: 3 connects to 127.0.0.1:5432 refused: nothing listened (as direct)" in lines
    assert "trproxy: 1 connect to [::1]:5432 refused: nothing listened (as direct)" in lines
    assert ctx.report(None, 0)["closed"] == {"127.0.0.1:5432": 3, "[::1]:5432": 1}

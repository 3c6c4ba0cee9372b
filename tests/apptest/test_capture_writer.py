"""``TestWriter``: which captured inbound calls become test cases. An HTTP/2 call reset or
cut short (a client that gave up, a server that reset the stream) has no answer to
compare with, so it makes no test; an answered one does."""

from __future__ import annotations

from pathlib import Path

from trproxy.apptest.capture import Captured, TestWriter
from trproxy.apptest.chain import ChainIndex
from trproxy.apptest.noise import Noise
from trproxy.protocols.base import Interaction
from trproxy.protocols.http import Redaction

REQUEST = {"method": "GET", "url": "http://127.0.0.1:8000/items", "http_version": "HTTP/2.0",
           "headers": [], "body": ""}
ANSWER = {"status": 200, "reason": "", "http_version": "HTTP/2.0",
          "headers": [["content-type", "text/plain"]], "body": "ok"}


def test_only_answered_calls_become_tests(tmp_path: Path) -> None:
    writer = TestWriter(tmp_path, Redaction(), Noise(), ChainIndex())
    for n, responses in enumerate([[], [{**ANSWER, "truncated": True}], [ANSWER, {"reset": 8}],
                                   [ANSWER]]):
        writer(Captured(f"test-{n}", Interaction(REQUEST, responses), "2026-12-03T08:00:00+00:00",
                        0.0, 8000))
    assert writer.written == 1
    assert [p.name for p in (tmp_path / "tests").iterdir()] == ["test-3.yaml"]

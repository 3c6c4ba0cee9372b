"""Which event loop the proxy runs on: uvloop by default, the stdlib's with
``TRPROXY_LOOP=asyncio``; a wrong value is one clear line before anything starts."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from tests.support.proc import run_trproxy
from trproxy.proxy.runner import RunError, loop_factory


def test_uvloop_unless_asyncio_is_asked_for(monkeypatch) -> None:
    monkeypatch.delenv("TRPROXY_LOOP", raising=False)
    assert loop_factory() is uvloop.new_event_loop
    monkeypatch.setenv("TRPROXY_LOOP", "uvloop")
    assert loop_factory() is uvloop.new_event_loop
    monkeypatch.setenv("TRPROXY_LOOP", "asyncio")
    assert loop_factory() is None
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        assert type(runner.get_loop()).__module__.startswith("asyncio")


@pytest.mark.slow
def test_an_unknown_loop_is_one_line_and_runs_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRPROXY_LOOP", "trio")
    with pytest.raises(RunError, match="TRPROXY_LOOP=trio"):
        loop_factory()
    marker = tmp_path / "ran"
    done = run_trproxy("run", "--no-redirect", "--dir", str(tmp_path / "rec"), "--",
                       "touch", str(marker), env={"TRPROXY_LOOP": "trio"})
    assert done.returncode != 0
    assert "TRPROXY_LOOP=trio: the event loop is one of uvloop, asyncio" in done.stderr
    assert "Traceback" not in done.stderr and not marker.exists()

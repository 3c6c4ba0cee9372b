"""``make soak`` in miniature: its code runs against a real redis-server and trproxy record.

Only what the soak counts is checked (every request answered correctly, every exchange
recorded, RSS sampled), never its timings: those are figures ``make soak`` prints.
"""

from __future__ import annotations

import pytest

from benchmarks import soak
from tests.support.services import RedisServer

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_server():
    server = RedisServer().start()
    yield server
    server.destroy()


def test_connections_through_record_are_all_answered_and_recorded(redis_server, tmp_path):
    runs = soak.connections(redis_server, tmp_path, n=30, requests=2, runs=2)["runs"]
    assert len(runs) == 2
    for result in runs:
        for run in ("direct", "record"):
            assert result[run].errors == []
            assert len(result[run].latencies) == 30 * 2 * 2
        assert result["exchanges"] == 30 * 2 * 2
        ran, waited = result["stall"]  # trproxy's schedstat samples cover the stall
        assert ran >= 0 and waited >= 0


def test_the_stall_is_the_longest_time_without_an_answer_and_a_cpu_wait_excuses_it():
    direct = soak.LoadResult(latencies=[0.01] * 4, replies=[0.0, 0.01, 0.02, 0.03])
    through = soak.LoadResult(latencies=[0.01] * 4, replies=[1.0, 1.01, 1.3, 1.31])
    assert through.longest_gap() == (1.01, 1.3)
    assert round(through.longest_gap_ms()) == 290
    assert soak.judge(direct, through)[0] == "FAILED"  # trproxy itself stopped 290 ms
    assert soak.judge(direct, through, waited=0.15)[0] == "FAILED"  # 140 ms of it trproxy's
    assert soak.judge(direct, through, waited=0.25)[0] == "INCONCLUSIVE"  # the machine's
    stalled = soak.LoadResult(latencies=[0.01] * 4, replies=[0.0, 0.2])
    assert soak.judge(stalled, through)[0] == "INCONCLUSIVE"  # the direct run stalled too
    steady = soak.LoadResult(latencies=[0.01] * 4, replies=[1.0, 1.05, 1.1])
    assert soak.judge(direct, steady)[0] == "ok"


def test_rss_is_sampled_while_redis_benchmark_records(redis_server, tmp_path):
    result = soak.rss(redis_server, tmp_path, seconds=2, sample=0.4)
    assert len(result["samples"]) >= 4
    assert all(kb > 10_000 for _, kb in result["samples"])  # a Python process: > 10 MB
    assert result["exchanges"] > 0


def test_a_recorder_that_does_not_listen_in_time_is_stopped_not_left_running(monkeypatch, tmp_path):
    """A starved machine once kept trproxy from listening within the wait: the soak's
    test failed and left it running, orphaned."""
    import subprocess

    started: list[subprocess.Popen] = []

    class Tracked(subprocess.Popen):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            started.append(self)

    def never(*_args, **_kwargs) -> None:  # type: ignore[no-untyped-def]
        raise TimeoutError("nothing listens")

    monkeypatch.setattr(soak.subprocess, "Popen", Tracked)
    monkeypatch.setattr(soak, "wait_port", never)
    with pytest.raises(TimeoutError):
        soak.Recorder(1, tmp_path)
    assert len(started) == 1 and started[0].poll() is not None

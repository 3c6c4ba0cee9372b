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


def test_rss_is_sampled_while_redis_benchmark_records(redis_server, tmp_path):
    result = soak.rss(redis_server, tmp_path, seconds=2, sample=0.4)
    assert len(result["samples"]) >= 4
    assert all(kb > 10_000 for _, kb in result["samples"])  # a Python process: > 10 MB
    assert result["exchanges"] > 0

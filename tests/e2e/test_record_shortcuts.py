"""Record's shortcuts on a recording like psycopg's own suite (``apps/types_suite.py``:
every test creates its types again and looks them up with the same queries).

The writer child remembers match keys per request and takes each document's bytes from
its pipe (``packed.Builder(memo=True)``), and the relay remembers volatile detections per
text: the cache it writes must be what the reference path makes of the YAML it wrote
(``recording.pack_cache``: every key computed, every document packed again), and replay
must serve each test its own type OIDs, in another order and in part. psycopg's suite
recorded with these shortcuts once replayed 160 tests fewer (docs/design.md,
"Performance"); this is the shape of those tests, checked end to end.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.support.proc import run_trproxy, suite_dir
from trproxy.store import recording
from trproxy.store.recording import load_documents

pytestmark = [pytest.mark.slow, pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="the eBPF redirect needs root")]
SUITE = Path(__file__).parent / "apps" / "types_suite.py"


def test_a_types_suite_records_the_reference_cache_and_replays_each_test_its_own_oids(
        tmp_path, postgres_server) -> None:
    suite = suite_dir(tmp_path, SUITE, "test_types.py")
    rec = tmp_path / "rec"

    def trproxy(mode: str, *pytest_args: str, **extra: str):  # type: ignore[no-untyped-def]
        return run_trproxy(mode, "--dir", str(rec), "--", sys.executable, "-m", "pytest",
                           "-p", "no:cacheprovider", "-p", "no:randomly", "-q", *pytest_args, cwd=suite,
                           env={"PG_DSN": postgres_server.dsn, **extra}, timeout=300)

    recorded = trproxy("record")
    postgres_server.stop()
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    assert "12 passed" in recorded.stdout, recorded.stdout

    # the child's cache (memos, the pipe's bytes) is the reference path's, byte for byte
    mocks = rec / "test-set-0" / "mocks.yaml"
    cache = (rec / "test-set-0" / "mocks.yaml.cache").read_bytes()
    head = len(recording._CACHE_MAGIC) + 2 * 32  # the magic, the YAML's digest, the MAC
    assert cache[head:] == recording.pack_cache(load_documents(mocks, rec))

    for name, args, extra in [("whole, reversed", (), {"SUITE_REVERSED": "1"}),
                              ("part", ("-k", "enum and 3 or range and 1"), {})]:
        run = trproxy("replay", *args, **extra)
        assert run.returncode == 0, f"{name}:\n{run.stdout}{run.stderr}"
        assert "trproxy: 0 misses" in run.stderr, f"{name}: {run.stderr}"
        assert ("12 passed" if not args else "2 passed") in run.stdout, f"{name}: {run.stdout}"

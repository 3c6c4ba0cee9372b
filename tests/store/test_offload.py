"""The recording writer in a child process writes what ``MockWriter`` writes, byte for
byte, publishes what it got when the proxy dies, and refuses what ``MockWriter`` refuses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from trproxy.store import Exchange, MockWriter, StoreError, load_mocks, recording
from trproxy.store.offload import MockWriterProcess
from trproxy.store.recording import MOCKS, load_documents

from .test_packed_pool import _recording


def _exchanges() -> list[Exchange]:
    """Shapes from every kind of recording: nested maps, literal blocks, bytes, unicode,
    floats, None, events."""
    return [
        Exchange("redis", "127.0.0.1:6379", ["SET", "k:1", "v\x00\xff"], [{"simple": "OK"}], seq=1,
                 connection=1, started="2026-11-25T02:06:38.928859+00:00", duration_ms=0.41, wait_ms=0.2,
                 extra={"volatile": ["k:1"]}),
        Exchange("postgres", "[::1]:5432", {"Query": "SELECT *\n  FROM t\n WHERE id = 'é'"},
                 [{"DataRow": [{"binary": "int4", "value": 7}, None]}, {"ReadyForQuery": "I"}],
                 lifetime="session", summary="SELECT", seq=2, tests=["test_a", "test b"]),
        Exchange("http", "127.0.0.1:8080",
                 {"method": "POST", "url": "http://x.test/a?b=1", "headers": [["A", "yes"], ["B", "1:20"]],
                  "body": {"json": {"n": 1.5, "ok": True, "list": [1, 2, 3]}}},
                 [{"status": 201, "body": {"base64": "AAE="}}], tls=True, alpn="h2", seq=3),
        Exchange("redis", "127.0.0.1:6379", None, [], lifetime="event", summary="server closed",
                 event="close", after=3, seq=4),
    ]


def test_the_child_writes_the_same_bytes_and_cache_as_mockwriter(tmp_path):
    direct = MockWriter(tmp_path / "a" / "test-set-0" / MOCKS, root=tmp_path / "a")
    child = MockWriterProcess(tmp_path / "b" / "test-set-0" / MOCKS, root=tmp_path / "b")
    for ex in _exchanges() * 3:
        direct.write(ex)
        child.write(ex)
    assert child.close() == tmp_path / "b" / "test-set-0" / MOCKS
    direct.close()
    assert child.count == 12
    for name in (MOCKS, MOCKS + ".cache"):
        assert (tmp_path / "b" / "test-set-0" / name).read_bytes() == \
            (tmp_path / "a" / "test-set-0" / name).read_bytes(), name
    loaded = load_mocks(tmp_path / "b" / "test-set-0")
    assert [e.to_doc() for e in loaded] == [e.to_doc() for e in _exchanges() * 3]


def test_the_childs_cache_is_what_the_reference_path_makes_of_its_yaml(tmp_path):
    """The child remembers keys per request and takes each document's bytes from the pipe
    (``MockWriter`` does the first too): its cache is what the plain way makes of the YAML
    it wrote (``pack_cache``: every key computed, every document packed again)."""
    child = MockWriterProcess(tmp_path / "test-set-0" / MOCKS, root=tmp_path)
    for ex in (_exchanges() + _recording(300)) * 2:
        child.write(ex)
    path = child.close()
    cache = path.with_name(MOCKS + ".cache").read_bytes()
    head = len(recording._CACHE_MAGIC) + 2 * 32  # the magic, the YAML's digest, the MAC
    assert cache[head:] == recording.pack_cache(load_documents(path, tmp_path))


def test_a_header_goes_first(tmp_path):
    first, *rest = _exchanges()
    w = MockWriterProcess(tmp_path / "test-set-0" / MOCKS, header=[first.to_doc()])
    for ex in rest:
        w.write(ex)
    w.close()
    assert [e.seq for e in load_mocks(tmp_path / "test-set-0")] == [1, 2, 3, 4]


def test_the_child_publishes_what_it_got_when_the_proxy_is_killed(tmp_path):
    """SIGKILL of the proxy closes the pipe: the child writes the rest and publishes."""
    test_set = tmp_path / "test-set-0"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from pathlib import Path
        from trproxy.store import Exchange
        from trproxy.store.offload import MockWriterProcess
        w = MockWriterProcess(Path({str(test_set / MOCKS)!r}))
        for i in range(5):
            w.write(Exchange(protocol="redis", destination="127.0.0.1:1", request=["GET", str(i)],
                             responses=[None]))
        print("written", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
    os.killpg(proc.pid, signal.SIGINT)  # a Ctrl-C reaches the whole group: the child stays
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while not (test_set / MOCKS).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [e.request[1] for e in load_mocks(test_set)] == ["0", "1", "2", "3", "4"]
    assert not [p for p in test_set.iterdir() if ".partial-" in p.name]


def test_a_directory_mockwriter_refuses_is_refused_at_once(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "test-set-0").symlink_to(outside)
    with pytest.raises(StoreError) as direct:
        MockWriter(tmp_path / "rec" / "test-set-0" / MOCKS)
    with pytest.raises(StoreError) as child:
        MockWriterProcess(tmp_path / "rec" / "test-set-0" / MOCKS)
    assert str(child.value) == str(direct.value)
    assert list(outside.iterdir()) == []


@pytest.mark.timeout(120)
def test_a_stalled_child_never_blocks_the_proxys_loop(tmp_path, monkeypatch):
    """The child stopped (SIGSTOP: busy elsewhere, swapped out): appends in the loop keep
    returning with the pipe full (a blocking write stopped every connection), the bytes
    wait beside it, over ``HIGH_WATER`` ``room`` gives a future that is done once the child
    caught up, and nothing is lost or reordered."""
    from trproxy.store import offload

    monkeypatch.setattr(offload, "HIGH_WATER", 256 * 1024)
    w = MockWriterProcess(tmp_path / "test-set-0" / MOCKS)
    value = "x" * 1000
    n = 3000  # ~3 MiB packed: three times the pipe

    async def main() -> None:
        os.kill(w._proc.pid, signal.SIGSTOP)
        try:
            for i in range(n):
                w.append(Exchange("redis", "127.0.0.1:1", ["SET", str(i), value], [{"simple": "OK"}],
                                  seq=i).to_doc())
                if i % 100 == 0:
                    await asyncio.sleep(0)  # the loop runs its flushes
            await asyncio.sleep(0)
            assert len(w.backlog) > offload.HIGH_WATER  # the pipe is full, the rest waits
            waiter = w.room()
            assert waiter is not None and not waiter.done()
        finally:
            os.kill(w._proc.pid, signal.SIGCONT)
        await asyncio.wait_for(waiter, 60)  # the child reads: the connections go on
        assert w.room() is None

    asyncio.run(main())
    w.close()
    assert [int(e.request[1]) for e in load_mocks(tmp_path / "test-set-0")] == list(range(n))

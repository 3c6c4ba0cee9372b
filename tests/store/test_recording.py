"""The recording format: safe YAML round-trips, crash-safe writing, the msgpack cache."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import yaml

from trproxy.store import Exchange, FormatError, MockWriter, load_mocks, recover
from trproxy.store.recording import MOCKS, load_documents
from trproxy.store.yamlio import dump, load_stream


def _exchange(i: int, **kw) -> Exchange:
    return Exchange(protocol="redis", destination="127.0.0.1:6379", request=["INCR", "c"],
                    responses=[{"int": i}], seq=i, **kw)


def test_round_trip_is_readable_safe_yaml(tmp_path):
    sql = "SELECT *\n  FROM orders\n WHERE id = $1"
    ex = Exchange(protocol="postgres", destination="[::1]:5432",
                  request={"query": sql, "params": ["7", {"hex": "00ff"}]}, responses=[{"rows": [["a"]]}],
                  lifetime="session", summary="Query")
    w = MockWriter(tmp_path / MOCKS)
    w.write(ex)
    w.close()
    text = (tmp_path / MOCKS).read_text()
    assert "!!" not in text  # no python/binary tags
    assert "query: |-\n" in text or "query: |\n" in text  # SQL as a literal block
    (back,) = load_mocks(tmp_path)
    assert back.request == ex.request and back.responses == ex.responses
    assert back.lifetime == "session" and back.destination == "[::1]:5432"
    assert yaml.safe_load(text)["spec"]["request"]["params"][1] == {"hex": "00ff"}


def test_unknown_version_is_a_format_error(tmp_path):
    (tmp_path / MOCKS).write_text("---\nversion: trproxy/v99\nkind: redis\nspec: {}\n")
    with pytest.raises(FormatError, match="v99"):
        load_mocks(tmp_path)


def test_torn_last_document_is_dropped_and_the_rest_kept():
    text = "".join(dump(_exchange(i).to_doc()) for i in range(3))
    docs, warning = load_stream(text[:-7])
    assert len(docs) == 2 and "torn" in warning
    docs, warning = load_stream(text)
    assert len(docs) == 3 and warning is None


def test_partial_file_is_published_only_on_close(tmp_path):
    w = MockWriter(tmp_path / MOCKS)
    w.write(_exchange(1))
    assert not (tmp_path / MOCKS).exists()
    assert w.partial.exists()
    w.close()
    assert (tmp_path / MOCKS).exists() and not w.partial.exists()


def test_sigkill_mid_recording_keeps_completed_exchanges(tmp_path):
    """A writer killed with SIGKILL leaves a partial file; recover() publishes it."""
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from trproxy.store import Exchange, MockWriter
        w = MockWriter(__import__("pathlib").Path({str(tmp_path / MOCKS)!r}))
        for i in range(5):
            w.write(Exchange(protocol="redis", destination="127.0.0.1:1", request=["GET", str(i)],
                             responses=[None]))
        print("written", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / MOCKS).exists()
    done = recover(tmp_path)
    assert any("recovered 5 documents" in line for line in done), done
    assert [e.request[1] for e in load_mocks(tmp_path)] == ["0", "1", "2", "3", "4"]


def test_msgpack_cache_is_used_and_rebuilt_when_yaml_changes(tmp_path):
    w = MockWriter(tmp_path / MOCKS)
    for i in range(3):
        w.write(_exchange(i))
    w.close()
    path = tmp_path / MOCKS
    assert len(load_documents(path)) == 3
    cache = path.with_name(MOCKS + ".cache")
    assert cache.exists()
    # the cache, not the YAML, answers while the stamp is current
    import msgpack
    packed = msgpack.unpackb(cache.read_bytes(), raw=False)
    packed["docs"] = packed["docs"][:1]
    cache.write_bytes(msgpack.packb(packed))
    assert len(load_documents(path)) == 1
    # editing the YAML (a user deleting a document by hand) invalidates it
    text = path.read_text()
    path.write_text(text[: text.rindex("---\n")])
    assert len(load_documents(path)) == 2


def test_closing_a_recording_writes_a_current_cache(tmp_path):
    """The first replay after a recording reads msgpack, not the YAML just written."""
    w = MockWriter(tmp_path / MOCKS)
    for i in range(3):
        w.write(_exchange(i))
    w.close()
    cache = tmp_path / (MOCKS + ".cache")
    assert cache.exists()
    import msgpack
    packed = msgpack.unpackb(cache.read_bytes(), raw=False)
    packed["docs"] = packed["docs"][:2]  # proves the loader takes the cache as it is
    cache.write_bytes(msgpack.packb(packed))
    assert len(load_documents(tmp_path / MOCKS)) == 2

"""The recording format: safe YAML round-trips, crash-safe writing, the msgpack cache."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from tests.support.recording import packed_and_parsed
from trproxy.protocols.volatile import mask
from trproxy.store import Exchange, FormatError, MockWriter, load_mocks, recording, recover
from trproxy.store.recording import MOCKS, alive, load_documents
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
    text = "".join(dump(_exchange(i).to_doc()) for i in range(3)).encode()
    stream = load_stream(text[:-7])
    assert len(stream.docs) == 2 and "torn" in stream.torn
    stream = load_stream(text)
    assert len(stream.docs) == 3 and stream.torn is None
    assert stream.lines == [1, 1 + text.count(b"\n") // 3, 1 + 2 * text.count(b"\n") // 3]


def test_partial_file_is_published_only_on_close(tmp_path):
    w = MockWriter(tmp_path / MOCKS)
    w.write(_exchange(1))
    assert not (tmp_path / MOCKS).exists()
    assert w.partial.exists()
    w.close()
    assert (tmp_path / MOCKS).exists() and not w.partial.exists()


def test_sigkill_mid_recording_keeps_completed_exchanges(tmp_path):
    """A writer killed with SIGKILL leaves a partial file; recover() publishes it."""
    test_set = tmp_path / "test-set-0"
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from trproxy.store import Exchange, MockWriter
        w = MockWriter(__import__("pathlib").Path({str(test_set / MOCKS)!r}))
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
    assert not (test_set / MOCKS).exists()
    done = recover(tmp_path)
    assert any("recovered 5 documents" in line for line in done), done
    assert [e.request[1] for e in load_mocks(test_set)] == ["0", "1", "2", "3", "4"]


def _recorded(test_set, n=3):
    w = MockWriter(test_set / MOCKS)
    for i in range(n):
        w.write(_exchange(i))
    w.close()
    return test_set / MOCKS


def test_closing_a_recording_writes_a_cache_the_next_load_uses(tmp_path, monkeypatch):
    """The first replay after a recording reads msgpack, not the YAML just written."""
    path = _recorded(tmp_path / "test-set-0")
    data = path.read_bytes()
    cached = recording._read_cache(path, tmp_path, hashlib.sha256(data).digest())
    assert cached is not None and cached.documents() == load_stream(data).docs

    def no_parsing(*args):
        raise AssertionError("the YAML was parsed: the cache was not used")

    monkeypatch.setattr(recording, "load_stream", no_parsing)
    assert [e.seq for e in load_mocks(tmp_path / "test-set-0")] == [0, 1, 2]


def test_a_long_recording_keeps_nothing_in_memory_and_is_cached_at_close(tmp_path, monkeypatch):
    """The writer's memory does not grow with every exchange (a soak run grew it 1.3 KB
    per exchange when the packed documents were kept for the cache); the cache is still
    written at close, from temporary files, so the first replay parses no YAML."""
    w = MockWriter(tmp_path / "test-set-0" / MOCKS)
    for i in range(200):  # warm: caches of the emitter, the packer's buffer
        w.write(_exchange(i))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(200, 5200):
            w.write(_exchange(i))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 100_000, f"{grown} bytes kept for 5000 exchanges"
    path = w.close()
    assert path.with_name(MOCKS + ".cache").exists()

    def no_parsing(*args):
        raise AssertionError("the YAML was parsed: the cache was not used")

    monkeypatch.setattr(recording, "load_stream", no_parsing)
    assert [e.seq for e in load_mocks(tmp_path / "test-set-0")] == list(range(5200))


def test_a_cache_of_other_yaml_bytes_is_ignored_and_rewritten(tmp_path, monkeypatch):
    """An edit that keeps the size and the modification time (what a tarball or a
    checkout can do) still invalidates the cache: it is keyed by the content's SHA-256."""
    test_set = tmp_path / "test-set-0"
    path = _recorded(test_set)
    cache = path.with_name(MOCKS + ".cache")
    before, stat = cache.read_bytes(), path.stat()
    path.write_text(path.read_text().replace("INCR", "DECR"))  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert {e.request[0] for e in load_mocks(test_set)} == {"DECR"}
    assert cache.read_bytes() != before  # rewritten for the new bytes...
    monkeypatch.setattr(recording, "load_stream", None)  # ...and used from now on
    assert {e.request[0] for e in load_mocks(test_set)} == {"DECR"}


def test_a_cache_made_elsewhere_is_not_trusted(tmp_path, monkeypatch):
    """A cache shipped with a recording names the right YAML digest (anyone can compute it)
    but carries other content: its MAC is not under this installation's key, so the
    reviewed YAML is what replays."""
    test_set = tmp_path / "test-set-0"
    path = _recorded(test_set)
    yaml_bytes = path.read_bytes()
    forged = [dict(d, spec=dict(d["spec"], responses=[{"int": 666}])) for d in load_documents(path)]
    monkeypatch.setenv("TRPROXY_HOME", str(tmp_path / "elsewhere"))  # another key
    recording.write_cache(path, tmp_path, hashlib.sha256(yaml_bytes).digest(),
                          recording.pack_cache(forged))
    shipped = path.with_name(MOCKS + ".cache").read_bytes()
    monkeypatch.setenv("TRPROXY_HOME", str(tmp_path / "here"))
    assert [e.responses for e in load_mocks(test_set)] == [[{"int": 0}], [{"int": 1}], [{"int": 2}]]
    assert path.with_name(MOCKS + ".cache").read_bytes() != shipped
    assert (tmp_path / "here" / "cache.key").stat().st_mode & 0o777 == 0o600


def test_without_a_cache_key_nothing_is_cached(tmp_path, monkeypatch):
    (tmp_path / "home").write_text("a file: no directory can be made here")
    monkeypatch.setenv("TRPROXY_HOME", str(tmp_path / "home"))
    test_set = tmp_path / "test-set-0"
    _recorded(test_set)
    assert not (test_set / (MOCKS + ".cache")).exists()
    assert len(load_mocks(test_set)) == 3


def test_the_strict_loader_parses_with_libyaml():
    """Events come from libyaml's parser; the pure-Python one made a cold load ~7x slower."""
    from trproxy.store import yamlio

    assert yaml.__with_libyaml__ and issubclass(yamlio._StrictLoader, yaml._yaml.CParser)


def test_a_zombie_writer_is_not_alive() -> None:
    """A SIGKILLed recording child whose parent died too stays a zombie until reaped:
    its partial file must be recoverable by the next run, not waited for."""
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(child.pid)
    assert Path(f"/proc/{child.pid}").exists()  # not reaped yet: a zombie, not gone
    child.wait()
    assert alive(os.getpid())


def _various() -> list[Exchange]:
    """Exchanges with every field away from its default, events and volatile values."""
    return [
        Exchange("redis", "127.0.0.1:6379", ["GET", "k"], [{"bulk": "v"}], lifetime="session", summary="GET",
                 connection=3, seq=1, started="2026-12-03T08:00:00+00:00", duration_ms=1.5, tests=["t1", "t2"],
                 tls=True, alpn="h2", order=7, wait_ms=0.0, unanswered=True, interrupted=True,
                 answered_after=9, name="a", extra={"note": 1}),
        Exchange("postgres", "[::1]:5432", [{"Query": "SELECT now(), 'tok-1'"}], [{"ReadyForQuery": "I"}],
                 seq=2, extra={"volatile": ["tok-1"]}),
        Exchange("redis", "127.0.0.1:6379", None, [{"push": ["message", "c", "x"]}], event="push", after=4,
                 seq=3, connection=3),
    ]


def test_a_cached_exchange_is_the_one_recorded_in_every_field(tmp_path, monkeypatch):
    packed, parsed = packed_and_parsed(tmp_path, monkeypatch, _various())
    assert {type(e).__name__ for e in packed} == {"PackedExchange"}
    assert packed == parsed and len(packed) == 3
    assert [e.to_doc() for e in packed] == [e.to_doc() for e in _various()]


def test_loading_and_matching_a_cached_recording_decode_no_document(tmp_path, monkeypatch):
    """A million exchanges load in seconds because none is decoded before it is served:
    the cache's index has what the pool and the timeline read, with the match keys."""
    from trproxy.protocols.registry import has_volatile_rules, match_key, volatile_rules
    from trproxy.proxy.timeline import Timeline
    from trproxy.store import MockPool, packed

    test_set = tmp_path / "test-set-0"
    packed_and_parsed(tmp_path, monkeypatch, _various() + [_exchange(i) for i in range(20)])
    decoded = []
    real = packed.Packed.document
    monkeypatch.setattr(packed.Packed, "document", lambda self, i: decoded.append(i) or real(self, i))
    pool = MockPool.build(load_mocks(test_set), match_key, volatile_rules, has_volatile_rules)
    Timeline(pool)
    assert decoded == [] and len(pool) == 22
    served = pool.find("redis", "127.0.0.1:6379", ["INCR", "c"]).exchange
    assert served.responses == [{"int": 0}] and decoded == []  # a small answer: in its row
    assert served.summary == "" and decoded == [3]  # the 4th document, when read
    # its volatile value was indexed too: the masked request finds the recording
    live = [{"Query": "SELECT now(), 'tok-2'"}]
    masked = pool.find("postgres", "[::1]:5432", live, masked=mask(live, ["tok-2"]),
                       accept=lambda ex, values: None)
    assert masked.exchange.seq == 2 and masked.masked


def test_user_volatile_rules_apply_to_a_cached_recording(tmp_path, monkeypatch):
    """The user's rules (config.yaml) are not in the cache: they are asked at load, for the
    protocols they name."""
    from trproxy.protocols.registry import match_key
    from trproxy.store import MockPool

    packed, parsed = packed_and_parsed(tmp_path, monkeypatch, _various())
    rules = {"redis": lambda request: [request[1]]}
    for exchanges in (packed, parsed):
        pool = MockPool.build(exchanges, match_key, lambda p, r: rules[p](r), lambda p: p in rules)
        served = pool.find("redis", "127.0.0.1:6379", ["GET", "other"], masked=mask(["GET", "other"], ["other"]),
                           accept=lambda ex, values: None)
        assert served.exchange.seq == 1 and served.masked


def test_a_dialect_the_users_config_rebuilt_matches_with_its_own_keys(tmp_path, monkeypatch):
    """The cache holds the shipped dialects' match keys (the recorder's child process reads
    no config.yaml); a protocol the user's config rebuilds (HTTP ``noise``) computes its
    keys again, with its own ``match_key``, at load."""
    import dataclasses

    from trproxy.protocols import registry
    from trproxy.store import MockPool

    packed, _parsed = packed_and_parsed(tmp_path, monkeypatch, [_exchange(0)])
    pool = MockPool.build(packed, registry.match_key)
    assert pool.find("redis", "127.0.0.1:6379", ["INCR", "c"]).exchange.seq == 0
    upper = dataclasses.replace(registry.by_name("redis"), match_key=lambda r: [w.lower() for w in r])
    monkeypatch.setitem(registry._overrides, "redis", upper)
    pool = MockPool.build(packed, registry.match_key)
    assert pool.find("redis", "127.0.0.1:6379", ["incr", "C"]).exchange.seq == 0


def test_secrets_named_after_their_exchange_was_written_are_scrubbed_from_file_and_cache(tmp_path):
    """Django stores a new session key in Postgres and Redis before its answer's
    ``Set-Cookie`` names it a secret: the finished recording is rewritten, cache too."""
    from trproxy.protocols.secrets import SecretVault, map_strings
    from trproxy.store.recording import rewrite_documents

    key = "bsf6yfdpsn4pi19llz0jklsfio83hwbj"
    test_set = tmp_path / "test-set-0"
    w = MockWriter(test_set / MOCKS)
    w.write(Exchange("postgres", "127.0.0.1:5432",
                     [{"Query": f"INSERT INTO django_session VALUES ('{key}', 'e30')"}],
                     [{"CommandComplete": "INSERT 0 1"}], extra={"volatile": [key]}))
    w.write(_exchange(2))
    w.close()
    vault = SecretVault()
    assert vault.secret(key, "cookie.sessionid") == "<secret:cookie.sessionid>"
    assert rewrite_documents(test_set / MOCKS, vault.values.values(),
                             lambda doc: map_strings(doc, vault.scrub)) == 1
    for path in test_set.iterdir():  # the YAML and its cache
        assert key.encode() not in path.read_bytes(), path
    first, second = load_mocks(test_set)
    assert first.request == [{"Query": "INSERT INTO django_session VALUES ('<secret:cookie.sessionid>', 'e30')"}]
    assert first.extra["volatile"] == ["<secret:cookie.sessionid>"] and second.responses == [{"int": 2}]
    before = (test_set / MOCKS).stat()
    assert rewrite_documents(test_set / MOCKS, ["not-in-it"], lambda doc: 1 / 0) == 0  # not parsed
    assert (test_set / MOCKS).stat().st_ino == before.st_ino


def test_an_integer_beyond_64_bits_is_recorded_and_loaded_without_a_cache(tmp_path):
    """A JSON body may hold any integer; msgpack cannot. Recording it writes the YAML
    (no cache), and loading it serves the parsed YAML: the fuzzer's store_loader crash
    was an OverflowError escaping the loader."""
    huge = 2**70
    test_set = tmp_path / "test-set-0"
    writer = MockWriter(test_set / MOCKS)
    writer.write(_exchange(0))
    writer.write(Exchange(protocol="http", destination="127.0.0.1:80", request={"method": "GET", "url": "/n"},
                          responses=[{"status": 200, "body": {"json": {"n": huge}}}], seq=1))
    path = writer.close()
    assert not path.with_name(path.name + ".cache").exists()
    loaded = load_mocks(test_set)
    assert [e.responses for e in loaded] == [[{"int": 0}], [{"status": 200, "body": {"json": {"n": huge}}}]]
    assert not path.with_name(path.name + ".cache").exists()  # nothing half-written either

"""The fast YAML emitter: what it writes reads back as the same data, in PyYAML's layout."""

from __future__ import annotations

import math
from datetime import UTC

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from trproxy.store.emit import Unsupported, emit
from trproxy.store.model import Exchange
from trproxy.store.yamlio import dump, load_one, load_stream, pyyaml_dump

_C = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=40),
                    st.floats(allow_nan=False),
                    st.sampled_from(["yes", "No", "null", "~", "1:20", "0x1F", "1e3", ".inf",
                                     "2026-11-25", "a: b", "- x", "#c", "'q'", '"d"', "<<", "=",
                                     "x\ny\n", "SELECT 1\nFROM t", "\n  lead", "trail \nx", "",
                                     "é", "a,b", "[x]", "{y}", "*a", "&b", "!t", "%p", "@r", "`b",
                                     "|", ">", "?", ":", "a:", "127.0.0.1:6379", "\t", "\r\n"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=10), st.dictionaries(st.text(max_size=20), inner, max_size=6)),
    max_leaves=40)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isinf(a) and a == b)
    return a == b


@given(values)
def test_what_emit_writes_reads_back_the_same(value) -> None:
    doc = {"spec": value}
    try:
        text = emit(doc)
    except Unsupported:
        return  # PyYAML writes it (see test_dump_falls_back_to_pyyaml)
    assert yaml.load(text, Loader=_C) == doc, text
    assert yaml.safe_load(text) == doc, text


@given(st.lists(st.dictionaries(st.text(max_size=10), values, max_size=4), max_size=5))
def test_streams_of_dumped_documents_split_back(docs) -> None:
    text = "".join(dump(d) for d in docs)
    stream = load_stream(text.encode())
    assert stream.torn is None
    assert stream.docs == [d for d in docs if d is not None]


def test_dump_falls_back_to_pyyaml() -> None:
    for value in ("\x85 next line", "bom\ufeff", b"bytes", (1, 2), {1: "int key"}):
        with pytest.raises(Unsupported):
            emit({"v": value})
    for value in ("\x85 next line", "bom\ufeff", {1: "int key"}):
        assert yaml.safe_load(dump({"v": value})) == {"v": value}


REAL = [
    Exchange("redis", "127.0.0.1:6379", ["SET", "k:1", "v"], ["OK"], summary="SET",
             connection=1, seq=1, started="2026-11-25T04:54:11.082042+00:00", duration_ms=0.682),
    Exchange("postgres", "[::1]:5432", {"query": "SELECT id, name\nFROM users\nWHERE id = $1\n",
                                        "params": ["7"], "types": [23]},
             [{"rows": [["7", "ann"]], "tag": "SELECT 1", "fields": [{"name": "id", "type": 23}]}],
             lifetime="data", summary="SELECT", tests=["test-2"], tls=True),
    Exchange("http", "api.test:443", {"method": "POST", "url": "https://api.test/v1/items?x=1",
                                      "headers": [["Content-Type", "application/json"],
                                                  ["Authorization", "<redacted>"]],
                                      "body": {"json": {"name": "widget", "tags": ["a", "b"],
                                                        "price": 9.5, "ok": True, "n": None}}},
             [{"status": 201, "reason": "Created", "headers": [["Set-Cookie", "sid=<redacted>; Path=/"]],
               "body": ""}], summary="POST api.test/v1/items -> 201"),
]


@pytest.mark.parametrize("exchange", REAL, ids=lambda e: e.protocol)
def test_recordings_look_as_pyyaml_writes_them(exchange) -> None:
    doc = exchange.to_doc()
    assert "---\n" + emit(doc) == pyyaml_dump(doc)  # the fast path, same text
    assert Exchange.from_doc(yaml.safe_load(dump(doc))) == exchange


@pytest.mark.parametrize("value", ["---", "...", "--- x", "...more"])
def test_a_string_that_reads_as_a_document_marker_is_quoted(value) -> None:
    """A text body ``---`` written plain at a document's top reads back as a second
    document (found by test_http_fuzz): quoted, as PyYAML's emitter does."""
    assert load_one(dump(value)) == value
    assert load_one(dump({"body": {"text": value}})) == {"body": {"text": value}}


# -- the fast path writes what the general path writes ----------------------------------

times = st.datetimes(timezones=st.just(UTC)).map(lambda t: t.isoformat(timespec="microseconds"))
exchanges = st.builds(
    Exchange, protocol=st.sampled_from(["redis", "postgres", "http"]),
    destination=st.sampled_from(["127.0.0.1:6379", "[::1]:5432", "api.test:443"]),
    request=values, responses=st.lists(values, max_size=4), summary=st.text(max_size=30),
    connection=st.integers(0, 10**6), seq=st.integers(0, 10**6), started=st.one_of(times, st.text(max_size=40)),
    duration_ms=st.floats(0, 1e6), tests=st.lists(st.text(max_size=10), max_size=3), tls=st.booleans(),
    order=st.integers(0, 10**9), wait_ms=st.one_of(st.none(), st.floats(0, 1e6)),
    answered_after=st.integers(0, 10**9), extra=st.dictionaries(st.text(max_size=10), values, max_size=3))


class _Name(str):
    pass


class _Number(int):
    def __str__(self) -> str:
        return "number"


def _both(doc) -> tuple[str | None, str | None]:
    texts: list[str | None] = []
    for fast in (True, False):
        try:
            texts.append(emit(doc, fast=fast))
        except Unsupported:
            texts.append(None)
    return texts[0], texts[1]


@given(exchanges)
def test_the_fast_path_writes_an_exchange_as_the_general_path_does(exchange) -> None:
    fast, general = _both(exchange.to_doc())
    assert fast == general


@given(values)
def test_the_fast_path_writes_any_value_as_the_general_path_does(value) -> None:
    fast, general = _both({"spec": value, "metadata": {"started": value}})
    assert fast == general


@pytest.mark.parametrize("value", [
    "2026-12-03T17:43:20.692051+00:00", "2026-12-03T17:43:20.692051+00:0a", "२०२६-12-03T17:43:20.692051+00:00",
    _Name("2026-12-03T17:43:20.692051+00:00"), _Name("plain"), _Number(7), True, False, None, 1.5,
    (1, 2), b"bytes", [], {}, [1, "a"], ["x\ny"] * 9, {"a": {"b": []}}, "a\nb\n",
])
def test_the_fast_path_on_odd_values(value) -> None:
    fast, general = _both({"spec": {"metadata": {"started": value}}, _Name("key"): value})
    assert fast == general
    assert _both({1: value}) == (None, None)


@pytest.mark.parametrize("exchange", REAL, ids=lambda e: e.protocol)
def test_the_fast_path_on_real_exchanges(exchange) -> None:
    doc = exchange.to_doc()
    assert emit(doc) == emit(doc, fast=False)

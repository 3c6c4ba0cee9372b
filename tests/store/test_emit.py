"""The fast YAML emitter: what it writes reads back as the same data, in PyYAML's layout."""

from __future__ import annotations

import math

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

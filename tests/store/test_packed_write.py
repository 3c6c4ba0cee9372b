"""Writing the cache (``packed.Builder``): what its shortcuts make is what the plain way makes."""

from __future__ import annotations

import msgpack
import pytest

from trproxy.protocols import registry
from trproxy.store import Exchange, packed
from trproxy.store.matcher import packed_keys
from trproxy.store.recording import DocumentWriter

from .test_packed_pool import _recording


@pytest.fixture(autouse=True)
def _shipped_dialects(monkeypatch):
    monkeypatch.setattr(registry, "_overrides", {})


def _odd() -> list[Exchange]:
    """Requests equal as values but of other types (a tuple, a bool, a float), which keys
    may tell apart, and one volatile value more or less."""
    base = {"protocol": "redis", "destination": "127.0.0.1:6379", "responses": [{"simple": "OK"}]}
    return [Exchange(request=["SET", "k", 1], **base), Exchange(request=["SET", "k", True], **base),
            Exchange(request=["SET", "k", 1.0], **base), Exchange(request=("SET", "k", 1), **base),
            Exchange(request=["SET", "k", 1], extra={"volatile": ["k"]}, **base),
            Exchange(request=["SET", "k", 1], connection=2, **base),
            Exchange(request=["SET", "k", 2 ** 70], **base),  # msgpack cannot hold it
            Exchange(request=["SET", "k", 1], **(base | {"destination": "[::1]:6379"}))]


def _payload(exchanges: list[Exchange], memo: bool, given_bytes: bool) -> bytes:
    builder = packed.Builder(packed_keys, memo=memo)
    try:
        for ex in exchanges:
            doc = ex.to_doc()
            try:
                data = msgpack.packb(doc, use_bin_type=True) if given_bytes else None
            except packed.UNPACKABLE:
                data = None
            try:
                builder.add(doc, packed=data)
            except packed.UNPACKABLE:
                continue  # MockWriter drops the cache then; the rest still compares
        return b"".join(builder.pieces())
    finally:
        builder.close()


@pytest.mark.parametrize("exchanges", [_recording(300) * 2, _odd() * 3], ids=["recording", "odd"])
def test_remembered_keys_and_given_bytes_make_the_same_cache(exchanges):
    plain = _payload(exchanges, memo=False, given_bytes=False)
    assert _payload(exchanges, memo=True, given_bytes=False) == plain
    assert _payload(exchanges, memo=True, given_bytes=True) == plain


def test_keys_are_made_once_per_request(monkeypatch):
    """A recording repeats its requests: their keys and hashes are made once each."""
    made: list[object] = []

    def keys(exchange):
        made.append(exchange.request)
        return packed_keys(exchange)

    builder = packed.Builder(keys, memo=True)
    exchanges = _odd()[:4] * 5
    for ex in exchanges:
        builder.add(ex.to_doc())
    builder.close()
    # the tuple is not remembered (its bytes would be a list's): its keys are made each time
    assert made == [["SET", "k", 1], ["SET", "k", True], ["SET", "k", 1.0]] + [("SET", "k", 1)] * 5


def test_documents_appended_later_are_written_together_on_flush(tmp_path):
    writer = DocumentWriter(tmp_path / "test-set-0" / "mocks.yaml")
    first = writer.append({"a": 1}, later=True)
    second = writer.append({"b": 2}, later=True)
    assert writer.partial.read_bytes() == b""
    writer.flush()
    assert writer.partial.read_bytes() == first + second
    third = writer.append({"c": 3}, later=True)
    assert writer.close().read_bytes() == first + second + third  # close writes what is kept

"""The cache's payload: a recording packed so that loading it decodes almost nothing.

Loading a million exchanges must take seconds, not minutes: unpacking every document and
checking it field by field (``Exchange.from_doc``) cost ~35 µs an exchange. So the cache
holds, beside each document in msgpack, an *index*: per exchange, the few fields the
matcher, the ledger and the timeline read before it is served (those that differ from
the defaults), and its match keys, computed when the cache is written. Loading unpacks
the index (msgpack builds its maps in C) and wraps each map in a ``PackedExchange``
without copying it; the rest of an exchange (request, responses, summary...) is decoded
from its document the first time it is read, i.e. when it is served.

Layout (``payload``)::

    head       <QQ: the index's length in bytes, the number of documents
    offsets    uint64 (native), one more than there are documents: where each starts
    index      msgpack: a list of maps, one per exchange (meta documents have none)
    documents  the documents in msgpack, one after the other

The payload is trusted as a whole (``recording.py``: a MAC under this installation's
key, made only after every exchange in it was checked), so a document decoded later
cannot fail its checks; they run again anyway (``from_doc``), one path for every load.
"""

from __future__ import annotations

import struct
import tempfile
from array import array
from collections.abc import Callable, Iterator
from dataclasses import MISSING, fields
from typing import Any, BinaryIO

import msgpack

from .model import Exchange

_HEAD = struct.Struct("<QQ")
#: what the index holds of an exchange: all its readers need before it is served
LIGHT = ("protocol", "destination", "lifetime", "connection", "seq", "tests", "tls", "alpn", "order",
         "wait_ms", "unanswered", "interrupted", "answered_after", "event", "after")
#: decoded from the document on first use
HEAVY = ("request", "responses", "summary", "name", "started", "duration_ms", "extra")
_DEFAULTS = {f.name: f.default for f in fields(Exchange) if f.default is not MISSING}
_NO_TESTS: list[str] = []  # shared by every PackedExchange without tests (never mutated)

# (exchange) -> what the index keeps of its matching: {"_key": ..., "_masked": ...}
Keys = Callable[[Exchange], dict[str, Any]]


def row(exchange: Exchange, number: int, keys: Keys) -> dict[str, Any]:
    """The index entry of ``exchange``, the ``number``-th document."""
    out: dict[str, Any] = {"_i": number, "protocol": exchange.protocol, "destination": exchange.destination}
    for name in LIGHT[2:]:
        value = getattr(exchange, name)
        if value != _DEFAULTS.get(name, _NO_TESTS):
            out[name] = value
    out.update(keys(exchange))
    return out


class Builder:
    """Collects documents (and their exchanges) into temporary files, not memory, and
    gives the payload back in pieces: a recording of a million exchanges must not grow
    the recorder's memory with each one."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.count = 0
        self._rows = 0
        self._size = 0
        self._packer = msgpack.Packer(use_bin_type=True)
        self._files: tuple[BinaryIO, BinaryIO, BinaryIO] | None = (
            tempfile.TemporaryFile(), tempfile.TemporaryFile(), tempfile.TemporaryFile())

    def add(self, doc: Any, exchange: Exchange | None = None) -> None:
        """One document; ``exchange``: its exchange, if it is one (``from_doc`` of it, else
        made here; a meta document has none)."""
        assert self._files is not None
        offsets, index, docs = self._files
        if exchange is None and not (isinstance(doc, dict) and doc.get("kind") == "meta"):
            exchange = Exchange.from_doc(doc)
        if exchange is not None:
            index.write(self._packer.pack(row(exchange, self.count, self.keys)))
            self._rows += 1
        packed = self._packer.pack(doc)
        offsets.write(struct.pack("=Q", self._size))
        docs.write(packed)
        self._size += len(packed)
        self.count += 1

    def pieces(self) -> Iterator[bytes]:
        """The payload (read from the files again at every call)."""
        assert self._files is not None
        offsets, index, docs = self._files
        for f in self._files:
            f.flush()
        header = self._packer.pack_array_header(self._rows)
        yield _HEAD.pack(len(header) + index.tell(), self.count)
        yield from _read(offsets)
        yield struct.pack("=Q", self._size)
        yield header
        yield from _read(index)
        yield from _read(docs)

    def close(self) -> None:
        for f in self._files or ():
            f.close()
        self._files = None


def _read(f: BinaryIO) -> Iterator[bytes]:
    end = f.tell()
    f.seek(0)
    while f.tell() < end and (piece := f.read(min(1 << 20, end - f.tell()))):
        yield piece
    f.seek(end)


def pack(docs: list[Any], exchanges: dict[int, Exchange], keys: Keys) -> bytes:
    """The payload of ``docs``; ``exchanges``: those already made, by document number."""
    builder = Builder(keys)
    try:
        for i, doc in enumerate(docs):
            builder.add(doc, exchanges.get(i))
        return b"".join(builder.pieces())
    finally:
        builder.close()


class Packed:
    """A payload, held in memory as it was read; documents are decoded when asked for."""

    def __init__(self, payload: bytes | memoryview) -> None:
        """ValueError (or a msgpack error) when the payload is not one ``Builder`` made."""
        index_size, count = _HEAD.unpack_from(payload)
        start = _HEAD.size + 8 * (count + 1)
        self._offsets = array("Q")
        self._offsets.frombytes(payload[_HEAD.size:start])
        self._view = memoryview(payload)[start + index_size:]
        self.rows: list[dict[str, Any]] = msgpack.unpackb(payload[start:start + index_size], raw=False,
                                                          strict_map_key=False)
        if (len(self._offsets) != count + 1 or self._offsets[-1] != len(self._view)
                or not isinstance(self.rows, list)):
            raise ValueError("not a packed recording")

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def document(self, i: int) -> Any:
        return msgpack.unpackb(self._view[self._offsets[i]:self._offsets[i + 1]], raw=False,
                               strict_map_key=False)

    def documents(self) -> list[Any]:
        return [self.document(i) for i in range(len(self))]

    def exchanges(self) -> list[Exchange]:
        """Every exchange, as a ``PackedExchange`` over its index map (no copy); once:
        the maps become the exchanges' (and the payload is not kept alive by a cycle)."""
        out: list[Exchange] = []
        new, cls, append = object.__new__, PackedExchange, out.append
        rows, self.rows = self.rows, []
        for fields_ in rows:
            fields_["_src"] = self
            x = new(cls)
            x.__dict__ = fields_
            append(x)
        return out


class _Decoded:
    """A field of a ``PackedExchange``: its document is decoded the first time one is read."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        d = obj.__dict__
        if self.name not in d:
            full = Exchange.from_doc(d["_src"].document(d["_i"]))
            for name in HEAVY:
                d.setdefault(name, getattr(full, name))
        return d[self.name]

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = value


class PackedExchange(Exchange):
    """An ``Exchange`` loaded from the cache (see the module doc); it compares, prints and
    converts (``to_doc``) like the exchange it stands for."""

    request = _Decoded()
    responses = _Decoded()
    summary = _Decoded()
    name = _Decoded()
    started = _Decoded()
    duration_ms = _Decoded()
    extra = _Decoded()
    tests = _NO_TESTS

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Exchange):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(Exchange))

    __hash__ = None  # type: ignore[assignment]

"""The cache's payload: a recording packed so that loading it does nothing per exchange.

Loading a million exchanges must take a second or two, not minutes: unpacking every
document and checking it field by field (``Exchange.from_doc``) cost ~35 µs an
exchange, and even one small Python object per exchange (the index maps of cache v3,
then one pool entry each) cost ~8 µs. So a load reads a few arrays and a small summary;
an exchange becomes a Python object only when a lookup needs it (``MockPool``: the
bucket of the key a live request has), from its *row* (the few fields the matcher, the
ledger and the timeline read, and its match keys, computed when the cache was written),
and its document (request, responses...) is read from the file and decoded only when
one of those fields is read, i.e. when it is served (a small answer is in its row too:
``SERVED``).

Layout (``payload``)::

    head          <Q: the index's length in bytes (the part that is read at load and MAC'd)
    index         <9Q: the lengths of the nine sections that follow, then them, each
                  padded to 8 bytes (the arrays are used in place, not copied):
      summary       msgpack: what the pool knows before any lookup (``Summary``)
      row ends      uint64 (native), the end of each row in the tail
      row digests   16 bytes per row: the start of its SHA-256
      4 tables      hashes (uint64, sorted) then rows (uint32): by match key, by masked
                    key, by recorded connection, by destination (``hashed``)
      doc digests   16 bytes per document
      doc ends      uint64 (native), the end of each document in the tail, after the rows
    tail          not read at load:
      rows          msgpack maps, one per exchange (meta documents have none)
      documents     the documents in msgpack, one after the other

Only the index is read at load (~100 bytes an exchange): the cache's MAC covers it
(``recording.py``: under this installation's key, made only after every exchange in it
was checked), and so each row and document through its digest, checked every time one
is read from the file.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import struct
import tempfile
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, BinaryIO, overload

import msgpack

from .errors import FormatError
from .model import Exchange, extra_of

_HEAD = struct.Struct("<Q")
_SECTIONS = struct.Struct("<9Q")
_DIGEST = 16
_RUN = 1 << 20  # bytes of adjacent rows read at once (``Packed.make``)
_ENTRY = struct.Struct("=QI")  # a table's entry while it is written: (hash, row)
#: what msgpack raises for a value it cannot hold (an integer beyond 64 bits, which YAML
#: and JSON bodies allow): such a recording is served without a cache
UNPACKABLE = (TypeError, ValueError, OverflowError)
_ORDER = struct.Struct("=I")  # an exchange's order while it is written
#: what a row holds of an exchange: all its readers need before it is served
LIGHT = ("protocol", "destination", "lifetime", "connection", "seq", "tests", "tls", "alpn", "order",
         "wait_ms", "unanswered", "interrupted", "answered_after", "event", "after")
#: decoded from the document on first use
HEAVY = ("request", "responses", "summary", "name", "started", "duration_ms", "extra")
#: the ``HEAVY`` fields that serving an exchange reads (its answer, the request the
#: replayer is shown, ``extra``: raw or not): in its row too when they pack in
#: ``SMALL_SERVED`` bytes (a Redis ``SET`` and its ``+OK``; a pgbench ``-M prepared``
#: Bind/Describe/Execute/Sync and its row, ~500), which saves reading, checking and
#: decoding the document per answer (~8-12 µs of a replayed request)
SERVED = ("request", "responses", "extra")
SMALL_SERVED = 640
_DEFAULTS = {f.name: f.default for f in fields(Exchange) if f.default is not MISSING}
_NO_TESTS: list[str] = []  # shared by every PackedExchange without tests (never mutated)
#: the tables, by their place in the index
BY_KEY, BY_MASKED, BY_CONNECTION, BY_PLACE = range(4)

# (exchange) -> what a row keeps of its matching: {"_dest": ..., "_key": ..., "_masked": ...}
Keys = Callable[[Exchange], dict[str, Any]]
# (offset, size) -> those bytes of the documents section
Reader = Callable[[int, int], bytes]


def hashed(*parts: object) -> int:
    """The 64-bit hash a table sorts by: of (protocol, destination key, match key), of
    (protocol, destination key, connection), of (protocol, destination key). A lookup
    checks the rows it finds, so a collision costs a row read, never a wrong answer."""
    text = "\0".join(map(str, parts)).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def row(exchange: Exchange, number: int, keys: Keys, computed: dict[str, Any] | None = None) -> dict[str, Any]:
    """The row of ``exchange``, the ``number``-th document (``computed``: its ``keys``); a
    small exchange's ``SERVED`` fields too, so that serving it never reads its document."""
    out: dict[str, Any] = {"_i": number, "protocol": exchange.protocol, "destination": exchange.destination}
    for name in LIGHT[2:]:
        value = getattr(exchange, name)
        if value != _DEFAULTS.get(name, _NO_TESTS):
            out[name] = value
    out.update(keys(exchange) if computed is None else computed)
    served = {name: getattr(exchange, name) for name in SERVED}
    if len(msgpack.packb(served, use_bin_type=True)) <= SMALL_SERVED:
        out.update(served)
    return out


_MEMO_SIZE = 8192  # requests whose keys a Builder remembers (oldest dropped first)
_MEMO_REQUEST = 4096  # packed bytes: larger requests are not remembered


class _Keys:
    """An exchange's keys and its tables' hashes (by key, by masked key, by destination),
    remembered per request when ``keys`` depends only on the protocol, the destination,
    the request and ``spec.volatile`` (``packed_keys``): a recording repeats its requests
    (the cache's index row was 44 % of the writer child's samples, redis-benchmark -c 50:
    the match key, its canonical JSON and three hashes per exchange)."""

    def __init__(self, keys: Keys, memo: bool) -> None:
        self.keys = keys
        self._memo: dict[bytes, tuple[dict[str, Any], int, int | None, int]] | None = {} if memo else None
        # strict: a tuple is no list, a bool no int (keys may tell them apart)
        self._packer = msgpack.Packer(use_bin_type=True, strict_types=True)

    def of(self, exchange: Exchange) -> tuple[dict[str, Any], int, int | None, int]:
        memo = self._memo
        if memo is None or exchange.event is not None:
            return self._compute(exchange)
        try:
            name = self._packer.pack([exchange.protocol, exchange.destination, exchange.request,
                                      exchange.extra.get("volatile")])
        except UNPACKABLE:
            return self._compute(exchange)
        known = memo.get(name)
        if known is None:
            known = self._compute(exchange)
            if len(name) <= _MEMO_REQUEST:
                if len(memo) >= _MEMO_SIZE:
                    del memo[next(iter(memo))]
                memo[name] = known
        return known

    def _compute(self, exchange: Exchange) -> tuple[dict[str, Any], int, int | None, int]:
        keys = self.keys(exchange)
        if exchange.event is not None:
            return keys, 0, None, 0
        protocol, dest, key = exchange.protocol, keys["_dest"], keys["_key"]
        masked = keys.get("_masked")
        return (keys, hashed(protocol, dest, key),
                hashed(protocol, dest, masked) if masked is not None and masked != key else None,
                hashed(protocol, dest))


@dataclass
class Summary:
    """What a pool holds before any lookup: per destination, not per exchange."""

    places: list[list[str]] = field(default_factory=list)  # [protocol, destination], first seen first
    tls: list[str] = field(default_factory=list)  # destination keys recorded over TLS
    alpn: dict[str, list[str]] = field(default_factory=dict)  # destination key -> ALPN protocols
    events: list[int] = field(default_factory=list)  # rows of event documents
    windows: dict[str, bytes] = field(default_factory=dict)  # test window -> its rows (uint32)
    exchanges: int = 0  # rows that are not events
    # the request orders of the exchanges (not events), sorted: an order no exchange has was
    # a request that never became one (a Terminate), which an event may be stamped after
    orders: Sequence[int] = field(default_factory=lambda: array("I"))

    def add(self, exchange: Exchange, number: int, dest: str, seen: set[tuple[str, str]],
            windows: dict[str, array]) -> None:
        if exchange.event is not None:
            self.events.append(number)
            return
        self.exchanges += 1
        place = (exchange.protocol, exchange.destination)
        if place not in seen:
            seen.add(place)
            self.places.append(list(place))
        if exchange.tls and dest not in self.tls:
            self.tls.append(dest)
        if exchange.alpn and exchange.alpn not in self.alpn.setdefault(dest, []):
            self.alpn[dest].append(exchange.alpn)
        for window in exchange.tests:
            windows.setdefault(window, array("I")).append(number)


class Builder:
    """Collects documents (their rows, their tables' entries) into temporary files, not
    memory, and gives the payload back in pieces: a recording of a million exchanges
    must not grow the recorder's memory with each one (the tables are sorted at the end)."""

    def __init__(self, keys: Keys, memo: bool = False) -> None:
        """``memo``: ``keys`` depends only on an exchange's protocol, destination, request
        and ``spec.volatile`` (remembered per request, see ``_Keys``)."""
        self.keys = keys
        self._keys = _Keys(keys, memo)
        self._connections: dict[tuple[str, str, int], int] = {}  # their hashes
        self.count = 0
        self._rows = 0
        self._packer = msgpack.Packer(use_bin_type=True)
        # rows, their digests, documents, their ends and digests; 4 tables; the orders
        self._files: tuple[BinaryIO, ...] | None = tuple(tempfile.TemporaryFile() for _ in range(11))
        self._summary = Summary()
        self._seen: set[tuple[str, str]] = set()
        self._windows: dict[str, array] = {}

    def add(self, doc: Any, exchange: Exchange | None = None, packed: bytes | None = None) -> None:
        """One document; ``exchange``: its exchange, if it is one (``from_doc`` of it, else
        made here; a meta document has none); ``packed``: the document in msgpack as this
        builder packs it, if the caller has it (the writer child: what came through its pipe)."""
        assert self._files is not None
        row_ends, row_digests, rows, digests, doc_ends, docs = self._files[:6]
        if exchange is None and not (isinstance(doc, dict) and doc.get("kind") == "meta"):
            exchange = Exchange.from_doc(doc)
        if exchange is not None:
            keys, by_key, by_masked, by_place = self._keys.of(exchange)
            r = row(exchange, self.count, self.keys, keys)
            packed_row = self._packer.pack(r)
            rows.write(packed_row)
            row_ends.write(struct.pack("=Q", rows.tell()))
            row_digests.write(hashlib.sha256(packed_row).digest()[:_DIGEST])
            self._index(exchange, r, self._rows, by_key, by_masked, by_place)
            self._rows += 1
        if packed is None:
            packed = self._packer.pack(doc)
        docs.write(packed)
        doc_ends.write(struct.pack("=Q", docs.tell()))
        digests.write(hashlib.sha256(packed).digest()[:_DIGEST])
        self.count += 1

    def _index(self, exchange: Exchange, r: dict[str, Any], number: int,
               by_key: int, by_masked: int | None, by_place: int) -> None:
        self._summary.add(exchange, number, r.get("_dest", ""), self._seen, self._windows)
        if exchange.event is not None:
            return
        assert self._files is not None
        tables = self._files[6:10]
        if exchange.order:
            self._files[10].write(_ORDER.pack(exchange.order))
        connection = (exchange.protocol, r["_dest"], exchange.connection)
        by_connection = self._connections.get(connection)
        if by_connection is None:
            if len(self._connections) >= _MEMO_SIZE:
                self._connections.clear()
            by_connection = self._connections[connection] = hashed(*connection)
        tables[BY_KEY].write(_ENTRY.pack(by_key, number))
        tables[BY_CONNECTION].write(_ENTRY.pack(by_connection, number))
        tables[BY_PLACE].write(_ENTRY.pack(by_place, number))
        if by_masked is not None:
            tables[BY_MASKED].write(_ENTRY.pack(by_masked, number))

    def _tables(self) -> list[bytes]:
        """Each table's hashes sorted, then its rows: in recorded order among equal hashes."""
        assert self._files is not None
        out = []
        for f in self._files[6:10]:
            pairs = sorted(_ENTRY.iter_unpack(b"".join(_read(f))))
            out.append(array("Q", [h for h, _n in pairs]).tobytes() + array("I", [n for _h, n in pairs]).tobytes())
        return out

    def pieces(self) -> Iterator[bytes]:
        """The payload (read from the files again at every call)."""
        assert self._files is not None
        row_ends, row_digests, rows, digests, doc_ends, docs = self._files[:6]
        for f in self._files:
            f.flush()
        summary = self._summary
        summary.windows = {w: numbers.tobytes() for w, numbers in self._windows.items()}
        orders = _uint(b"".join(_read(self._files[10])), "I")
        head = self._packer.pack([summary.places, summary.tls, summary.alpn, summary.events, summary.windows,
                                  summary.exchanges, array("I", sorted(orders)).tobytes()])
        tables = self._tables()
        sizes = [len(head), row_ends.tell(), row_digests.tell(), *map(len, tables), digests.tell(), doc_ends.tell()]
        yield _HEAD.pack(_SECTIONS.size + sum(size + _pad(size) for size in sizes))
        yield _SECTIONS.pack(*sizes)
        for size, section in zip(sizes, [[head], _read(row_ends), _read(row_digests), *([t] for t in tables),
                                         _read(digests), _read(doc_ends)], strict=True):
            yield from section
            yield bytes(_pad(size))
        yield from _read(rows)
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


def index_size(head: bytes | bytearray | memoryview) -> int:
    """How many bytes of a payload, from its start, are its head and index: what is read
    at load and covered by the MAC (the documents are covered through their digests)."""
    return _HEAD.size + _HEAD.unpack_from(head)[0]


def covered(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """The pieces of a payload cut after its index (``index_size``)."""
    left = None
    for piece in pieces:
        if left is None:
            left = index_size(piece)
        yield piece[:left]
        left -= min(left, len(piece))
        if not left:
            return


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Building a million small containers makes the cyclic GC run over and over for
    nothing (they hold no cycles): it was 80% of a cached load's time, half of
    building the mock pool of a packed recording, and a third of making a bucket's rows
    (``Packed.make``)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _check(data: bytes | memoryview, digests: memoryview, i: int) -> bytes | memoryview:
    """``data``, the ``i``-th row or document, if it has the digest the index holds."""
    if hashlib.sha256(data).digest()[:_DIGEST] != digests[_DIGEST * i:_DIGEST * (i + 1)]:
        raise FormatError("the cache changed since it was loaded: load the recording again")
    return data


def _pad(size: int) -> int:
    return -size % 8


def _uint(data: bytes | memoryview, code: str) -> array:
    out = array(code)
    out.frombytes(data)
    return out


class Packed:
    """A payload's index, held in memory; rows become exchanges, and documents are read
    (through ``read``) and decoded, when asked for."""

    def __init__(self, index: bytes | bytearray | memoryview, read: Reader, tail_size: int) -> None:
        """``index``: the payload's first ``index_size`` bytes (kept, not copied); ``read``:
        the rest of it, its tail, ``tail_size`` bytes. ValueError (or a msgpack error) when
        it is not one ``Builder`` made."""
        view = memoryview(index)
        if len(view) != index_size(view):
            raise ValueError("not a packed recording")
        sizes = _SECTIONS.unpack_from(view, _HEAD.size)
        parts, at = [], _HEAD.size + _SECTIONS.size
        for size in sizes:
            parts.append(view[at:at + size])
            at += size + _pad(size)
        head, row_ends, self._row_digests, *tables, self._digests, doc_ends = parts
        places, tls, alpn, events, windows, exchanges, orders = msgpack.unpackb(head, raw=False,
                                                                                strict_map_key=False)
        self.summary = Summary(places, tls, alpn, events, windows, exchanges, _uint(orders, "I"))
        self._row_ends, self._doc_ends = row_ends.cast("Q"), doc_ends.cast("Q")
        self._tables = [(t[:len(t) // 12 * 8].cast("Q"), t[len(t) // 12 * 8:].cast("I")) for t in tables]
        self._docs_at = self._row_ends[-1] if self._row_ends else 0  # the documents follow the rows
        self._read = read
        self._made: dict[int, PackedExchange] = {}
        if (at != len(view) or any(len(h) != len(r) for h, r in self._tables)
                or len(self._digests) != _DIGEST * len(self._doc_ends)
                or len(self._row_digests) != _DIGEST * len(self._row_ends)
                or self._docs_at + (self._doc_ends[-1] if self._doc_ends else 0) != tail_size):
            raise ValueError("not a packed recording")

    def __len__(self) -> int:
        """How many documents."""
        return len(self._doc_ends)

    def _checked(self, at: int, end: int, digests: memoryview, i: int) -> bytes | memoryview:
        """Bytes of the tail, checked against their digest in the index."""
        return _check(self._read(at, end - at), digests, i)

    def document(self, i: int) -> Any:
        start = self._docs_at + (self._doc_ends[i - 1] if i else 0)
        data = self._checked(start, self._docs_at + self._doc_ends[i], self._digests, i)
        return msgpack.unpackb(data, raw=False, strict_map_key=False)

    def documents(self) -> list[Any]:
        return [self.document(i) for i in range(len(self))]

    def exchange(self, n: int) -> PackedExchange:
        """The ``n``-th exchange (made from its row once; the same object every time)."""
        x = self._made.get(n)
        if x is None:
            data = self._checked(self._row_ends[n - 1] if n else 0, self._row_ends[n], self._row_digests, n)
            x = self._make(n, data)
        return x

    def make(self, rows: Sequence[int]) -> None:
        """Make the exchanges of ``rows`` (ascending), reading each run of adjacent rows
        not made yet in one read (a bucket's rows, 20,000 redis-benchmark ``SET`` rows:
        one read each cost as much as checking it); each row still checked on its own."""
        ends, todo = self._row_ends, [n for n in rows if n not in self._made]
        with no_gc():
            self._runs(todo, ends)

    def _runs(self, todo: list[int], ends: memoryview) -> None:
        """``make`` of the rows ``todo``, not made yet."""
        i = 0
        while i < len(todo):
            start = ends[todo[i] - 1] if todo[i] else 0
            j = i + 1
            while j < len(todo) and todo[j] == todo[j - 1] + 1 and ends[todo[j]] - start <= _RUN:
                j += 1
            run = memoryview(self._read(start, ends[todo[j - 1]] - start))
            for n in todo[i:j]:
                at = (ends[n - 1] if n else 0) - start
                self._make(n, _check(run[at:ends[n] - start], self._row_digests, n))
            i = j

    def _make(self, n: int, data: bytes | memoryview) -> PackedExchange:
        fields_ = msgpack.unpackb(data, raw=False, strict_map_key=False)
        fields_["_src"] = self
        x = object.__new__(PackedExchange)
        x.__dict__ = fields_
        return self._made.setdefault(n, x)  # a search thread may make it at the same time

    def exchanges(self) -> Exchanges:
        return Exchanges(self)

    def rows(self, table: int, *parts: object) -> Sequence[int]:
        """The rows a table holds under the hash of ``parts``, in recorded order (those of
        a colliding hash too: the caller checks what it finds)."""
        hashes, rows = self._tables[table]
        h = hashed(*parts)
        lo = bisect_left(hashes, h)
        return rows[lo:bisect_right(hashes, h, lo)].tolist()

    def window(self, name: str) -> array:
        """The rows of the exchanges recorded in a test window."""
        return _uint(self.summary.windows.get(name, b""), "I")


class Exchanges(Sequence[Exchange]):
    """The exchanges of a ``Packed``, each made when it is first asked for (a pool of
    shipped match keys asks for those its lookups need; ``MockPool.build``)."""

    def __init__(self, source: Packed) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source._row_ends)

    @overload
    def __getitem__(self, i: int) -> Exchange: ...
    @overload
    def __getitem__(self, i: slice) -> list[Exchange]: ...

    def __getitem__(self, i: int | slice) -> Exchange | list[Exchange]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.source.exchange(i % len(self))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


class _Decoded:
    """A field of a ``PackedExchange``: its document is decoded the first time one is read.
    No ``__set__``: the decoded fields land in the instance's dict, which Python reads
    before a non-data descriptor, so a field read again costs no call (six per request)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        d = obj.__dict__
        if self.name not in d:
            for name, value in _heavy(d["_src"].document(d["_i"])).items():
                d.setdefault(name, value)
        return d[self.name]


def _heavy(doc: Any) -> dict[str, Any]:
    """The ``HEAVY`` fields of a document, as ``Exchange.from_doc`` gives them (its
    defaults for what is absent, its ``extra_of``), without its field-by-field checks:
    every document of a cache was checked before the cache was written, and this one's
    digest was just checked (``Packed.document``). Served once per exchange, so the ~20 µs
    of those checks were a tenth of a replayed request."""
    spec = doc.get("spec") if isinstance(doc, dict) else None
    meta = spec.get("metadata") if isinstance(spec, dict) else None
    if not isinstance(spec, dict) or not isinstance(meta, dict):  # not as the writer makes
        full = Exchange.from_doc(doc)  # them: the full checks say why
        return {name: getattr(full, name) for name in HEAVY}
    found = {"responses": spec.get("responses"), "summary": spec.get("summary"), "name": doc.get("name"),
             "started": meta.get("started"), "duration_ms": meta.get("duration_ms")}
    out = {k: (([] if k == "responses" else _DEFAULTS[k]) if v is None else v) for k, v in found.items()}
    return {**out, "request": spec.get("request"), "extra": extra_of(spec)}


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


def file_reader(fd: int, at: int) -> Reader:
    """A ``Reader`` of the documents that start at ``at`` in the open file ``fd``."""
    def read(offset: int, size: int) -> bytes:
        data = os.pread(fd, size, at + offset)
        if len(data) != size:
            raise FormatError("the cache changed since it was loaded (cut short): load the recording again")
        return data
    return read

"""The recording directory on disk: test sets, their mocks, crash-safe writing, the cache.

Layout (default ``./trproxy/``)::

    trproxy/
      test-set-0/
        mocks.yaml          # outbound exchanges, one YAML document each, recording order
        mocks.yaml.cache    # packed copy of mocks.yaml for fast loading (packed.py; rebuildable)
        tests/test-1.yaml   # inbound test cases (trproxy record / trproxy test)
        bodies/<sha256>     # HTTP bodies over max_body, referenced from the YAML (blobs.py)
      reports/              # one report per run

A test set is always a direct child of the root (``test_set_dir`` refuses other names), so
a test set's files are opened from ``test_set.parent`` down through ``safeio``: nothing
in a recording directory is followed out of it.

Writing is crash-safe: exchanges are appended, one ``write`` per complete document, to
``mocks.yaml.partial-<pid>``; closing (normal exit, Ctrl-C, SIGTERM) renames it over
``mocks.yaml`` atomically. After a SIGKILL the partial file stays; ``recover`` (run at
every start) turns it into ``mocks.yaml`` keeping every complete document.

The cache is trusted only when it is this file's and ours: it holds the SHA-256 of the
YAML bytes it was made from and an HMAC under a key in trproxy's home directory (never in
the recording) over them, the payload and trproxy's own source, so a cache that came with
a recording, one left from an earlier version of the YAML, or one made by other code is
ignored and rewritten. It is written only after the YAML it copies
was parsed and every exchange in it checked.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import itertools
import logging
import os
import re
import secrets
import struct
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import msgpack

from ..home import trproxy_home
from . import packed, safeio, yamlio
from .blobs import remove_stale
from .errors import FormatError, UnsafeFile
from .matcher import packed_keys
from .model import FORMAT_VERSION, Exchange
from .packed import no_gc
from .yamlio import dump, load_stream

log = logging.getLogger("trproxy")

MOCKS = "mocks.yaml"
REPORTS = "reports"
_PARTIAL = re.compile(r"^(?P<name>.+)\.partial-(?P<pid>\d+)$")
_CACHE_MAGIC = b"trproxy-cache/5\n"  # a new version when the format, the checks or the match keys change
_CACHE_KEY_FILE = "cache.key"
_DIGEST = 32


def test_set_dir(root: Path, name: str | None = None) -> Path:
    """The named test set, or the newest one (highest N), or ``test-set-0`` if none."""
    if name:
        name = name.rstrip("/")
        if not name or "/" in name or name in (".", ".."):
            raise UnsafeFile(f"refused: a test set is a directory name (test-set-N), not {name!r}", root)
        return root / name
    sets = existing_test_sets(root)
    return sets[-1] if sets else root / "test-set-0"


def existing_test_sets(root: Path) -> list[Path]:
    """The ``test-set-*`` directories of ``root``, in numeric order; a link is refused."""
    def number(p: Path) -> int:
        tail = p.name.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else -1

    try:
        with safeio.open_dir(root, root) as d:
            entries = d.entries()
    except (FileNotFoundError, NotADirectoryError):
        return []
    sets = []
    for entry in entries:
        if not entry.name.startswith("test-set-"):
            continue
        if entry.is_symlink():
            raise UnsafeFile("refused: it is a symbolic link", root / entry.name)
        if entry.is_dir(follow_symlinks=False):
            sets.append(root / entry.name)
    return sorted(sets, key=number)


def next_test_set(root: Path) -> Path:
    sets = existing_test_sets(root)
    numbers = [int(p.name.rsplit("-", 1)[-1]) for p in sets if p.name.rsplit("-", 1)[-1].isdigit()]
    return root / f"test-set-{max(numbers) + 1 if numbers else 0}"


def has_mocks(test_set: Path) -> bool:
    """The test set has a ``mocks.yaml`` entry (one that is not a file is refused on load)."""
    return safeio.is_file(test_set / MOCKS, test_set.parent)


class DocumentWriter:
    """Appends YAML documents to ``<path>.partial-<pid>``; ``close`` publishes ``path``.

    ``path`` is ``<root>/<directory>/<name>`` (a test set's mocks, a report), and its
    directory is opened from ``root`` (default: its parent's parent) without following links.
    """

    def __init__(self, path: Path, header: list[Any] | None = None, root: Path | None = None) -> None:
        self.path = path
        self.root = path.parent.parent if root is None else root
        self.partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
        self._dir = safeio.open_dir(path.parent, self.root, create=True)
        try:
            with contextlib.suppress(FileNotFoundError):  # left by an earlier process with our pid
                self._dir.unlink(self.partial.name)
            self._fd: int | None = self._dir.create(self.partial.name)
        except BaseException:
            self._dir.close()
            raise
        self.count = 0
        self.written = 0  # bytes
        self._kept: list[bytes] = []  # documents appended ``later``, not written yet
        for doc in header or []:
            self.append(doc)

    def append(self, doc: Any, later: bool = False) -> bytes:
        """Write one document whole before the next starts; returns its bytes. ``later``:
        kept until ``flush`` writes it with the others kept (one write for a batch of whole
        documents: the writer child's per read of its pipe)."""
        if self._fd is None:
            raise ValueError("writer is closed")
        data = dump(doc).encode("utf-8")
        self._kept.append(data)
        if not later:
            self.flush()
        self.count += 1
        self.written += len(data)
        return data

    def flush(self) -> None:
        """Write the documents ``append`` kept."""
        if self._kept and self._fd is not None:
            view = memoryview(b"".join(self._kept))
            self._kept.clear()
            while view:
                view = view[os.write(self._fd, view):]

    def close(self) -> Path:
        if self._fd is not None:
            self.flush()
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            try:
                self._dir.replace(self.partial.name, self.path.name)
            finally:
                self._dir.close()
        return self.path


class MockWriter(DocumentWriter):
    """Writes exchanges in recording order; on close also the cache (``packed.py``), so
    the first replay after a recording does not parse the YAML it just wrote (the
    documents are ``to_doc``'s own: checked by construction). What goes into the cache
    goes to unnamed temporary files as it comes, not to memory: a long recording must
    not grow the recorder's memory with every exchange (a soak run grew it 1.3 KB per
    exchange when they were kept), and its first replay must not parse a YAML file of a
    million documents (minutes) either."""

    def __init__(self, path: Path, header: list[Any] | None = None, root: Path | None = None) -> None:
        self._cache: packed.Builder | None = packed.Builder(packed_keys, memo=True)
        self._digest = hashlib.sha256()
        super().__init__(path, header, root)

    def append(self, doc: Any, later: bool = False, packed_doc: bytes | None = None) -> bytes:
        """``packed_doc``: ``doc`` in msgpack, if the caller has it (``packed.Builder.add``)."""
        data = super().append(doc, later)
        self._digest.update(data)
        if self._cache is not None:
            try:
                self._cache.add(doc, packed=packed_doc)
            except (OSError, *packed.UNPACKABLE, FormatError) as exc:  # no room in /tmp: no cache
                log.debug("no cache for %s: %s", self.path, exc)
                self._drop_cache()
        return data

    def write(self, exchange: Exchange) -> None:
        self.append(exchange.to_doc())

    def _drop_cache(self) -> None:
        if self._cache is not None:
            self._cache.close()
        self._cache = None

    def close(self) -> Path:
        if self._fd is None:
            return self.path
        path = super().close()
        if self._cache is not None:
            try:
                write_cache(path, self.root, self._digest.digest(), self._cache.pieces)
            except OSError as exc:  # best effort, like every cache
                log.debug("no cache for %s: %s", path, exc)
        self._drop_cache()
        return path


def rewrite_documents(path: Path, values: Iterable[str], fn: Callable[[Any], Any],
                      root: Path | None = None) -> int:
    """Apply ``fn`` to every document of the mocks file ``path`` if any of ``values`` is
    in it (a scan of its bytes first: most recordings hold none, and are left alone); the
    file and its cache are replaced at once. Returns the documents changed."""
    root = path.parent.parent if root is None else root
    needles = [v.encode() for v in values if v]
    if not needles or not _holds_any(path, root, needles):
        return 0
    docs = load_documents(path, root)
    changed = [fn(doc) for doc in docs]
    count = sum(a != b for a, b in zip(docs, changed, strict=True))
    if count:
        MockWriter(path, header=changed, root=root).close()
    return count


def _holds_any(path: Path, root: Path, needles: list[bytes]) -> bool:
    overlap = max(map(len, needles))
    with safeio.open_file(path, root) as f:
        tail = b""
        while piece := f.read(1 << 22):
            window = tail + piece
            if any(n in window for n in needles):
                return True
            tail = window[-overlap:]
    return False


def recover(root: Path) -> list[str]:
    """Publish partial files left by dead writers (and remove their unfinished body
    files); return what was done, for the log. Only the test sets and ``reports/`` are
    looked at; a partial file that is a link or not a regular file is refused."""
    done: list[str] = []
    if not root.is_dir():
        return done
    sets = existing_test_sets(root)
    for folder in [*sets, root / REPORTS]:
        try:
            d = safeio.open_dir(folder, root)
        except FileNotFoundError:
            continue
        with d:
            if folder in sets:
                done += remove_stale(d)
            for entry in d.entries():
                m = _PARTIAL.match(entry.name)
                if m and not alive(int(m.group("pid"))):
                    done.append(_recover_one(d, entry.name, m.group("name")))
    return done


def _recover_one(d: safeio.Dir, partial: str, target: str) -> str:
    data = d.read(partial, yamlio.MAX_FILE_BYTES)  # refuses links, FIFOs, devices
    try:
        stream = load_stream(data, d.path / partial)
    except FormatError as exc:
        return f"kept {d.path / partial} aside: {exc}"
    d.write(target, "".join(dump(doc) for doc in stream.docs).encode("utf-8"))
    d.unlink(partial)
    return (f"recovered {len(stream.docs)} documents into {d.path / target}"
            + (f" ({stream.torn})" if stream.torn else ""))


def alive(pid: int) -> bool:
    """Whether the writer ``pid`` may still append; a zombie cannot (a SIGKILLed
    recording child whose parent died too is one until it is reaped)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


# -- loading, through the cache ---------------------------------------------------------


def load_mocks(test_set: Path) -> Sequence[Exchange]:
    """The exchanges of ``test_set/mocks.yaml`` ([] when there is none); from the cache,
    a sequence whose exchanges are made when asked for (``packed.Exchanges``)."""
    if not has_mocks(test_set):
        return []
    return _load(test_set / MOCKS, test_set.parent, documents=False)


def load_documents(path: Path, root: Path | None = None) -> list[Any]:
    """The documents of a mocks file ``<root>/<test set>/mocks.yaml``, each checked."""
    return _load(path, path.parent.parent if root is None else root, documents=True)


def _load(path: Path, root: Path, documents: bool) -> Any:
    with no_gc():
        cached = _read_cache(path, root, _sha256(path, root))
        if cached is not None:
            return cached.documents() if documents else cached.exchanges()
        data = safeio.read_bytes(path, root, yamlio.MAX_FILE_BYTES)
        docs, exchanges = _parse(data, path)
        with contextlib.suppress(*packed.UNPACKABLE, FormatError):  # only now: all checked
            write_cache(path, root, hashlib.sha256(data).digest(),
                        packed.pack(docs, exchanges, packed_keys))
        return docs if documents else list(exchanges.values())


def _sha256(path: Path, root: Path) -> bytes:
    """The digest of the YAML, read in pieces (it is not kept: the cache has it all)."""
    digest = hashlib.sha256()
    with safeio.open_file(path, root) as f:
        while piece := f.read(1 << 22):
            digest.update(piece)
            if f.tell() > yamlio.MAX_FILE_BYTES:  # the refusal names the size
                safeio.read_bytes(path, root, yamlio.MAX_FILE_BYTES)
    return digest.digest()


def _parse(data: bytes, path: Path) -> tuple[list[Any], dict[int, Exchange]]:
    """The documents of the YAML ``data`` and their exchanges by document number, every
    one checked: a FormatError names the document and its line."""
    stream = load_stream(data, path)
    if stream.torn:
        raise FormatError("the last document is cut short (no newline ends the file)", path,
                          len(stream.docs) + 1, stream.torn_line)
    exchanges = {}
    for i, doc in enumerate(stream.docs):
        if isinstance(doc, dict) and doc.get("kind") == "meta":
            continue
        try:
            exchanges[i] = Exchange.from_doc(doc)
        except FormatError as exc:
            raise exc.at(path, i + 1, stream.lines[i]) from None
    return stream.docs, exchanges


def _cache_path(path: Path) -> Path:
    return path.with_name(path.name + ".cache")


def _mac(key: bytes, digest: bytes, payload: bytes | bytearray | memoryview) -> bytes:
    mac = hmac.new(key, _CACHE_MAGIC + FORMAT_VERSION.encode() + _code() + digest, "sha256")
    mac.update(payload)  # not joined to the rest: that would copy hundreds of megabytes
    return mac.digest()


def pack_cache(docs: list[Any]) -> bytes:
    """The cache's payload for checked ``docs`` (``packed.py``)."""
    return packed.pack(docs, {}, packed_keys)


def write_cache(path: Path, root: Path, digest: bytes, payload: bytes | Callable[[], Iterable[bytes]]) -> None:
    """``pack_cache``'s copy of ``path``'s documents, for YAML bytes whose SHA-256 is
    ``digest`` (best effort: a cache is never required). ``payload`` may be a function
    giving it in pieces, read twice (the MAC, then the file), larger than memory."""
    key = _cache_key(trproxy_home())
    if key is None:
        return
    pieces = (lambda: [payload]) if isinstance(payload, bytes) else payload
    mac = hmac.new(key, _CACHE_MAGIC + FORMAT_VERSION.encode() + _code() + digest, "sha256")
    for piece in packed.covered(pieces()):  # the index; the documents through their digests
        mac.update(piece)
    with contextlib.suppress(OSError):
        safeio.write_bytes(_cache_path(path), root,
                           itertools.chain([_CACHE_MAGIC + digest + mac.digest()], pieces()))


def _read_cache(path: Path, root: Path, digest: bytes) -> packed.Packed | None:
    """The cached recording, if the cache is of these YAML bytes and ours. Only its index
    is read now (the MAC covers it); its documents are read from the open file when they
    are served, each checked against its digest in the index (``packed.py``)."""
    key = _cache_key(trproxy_home())
    if key is None:
        return None
    try:
        f = safeio.open_file(_cache_path(path), root)  # a link or a FIFO there is refused
    except FileNotFoundError:
        return None
    with f:
        size = os.fstat(f.fileno()).st_size
        head = len(_CACHE_MAGIC) + 2 * _DIGEST
        start = f.read(head + 8)
        if (size > 2 * yamlio.MAX_FILE_BYTES or len(start) < head + 8 or start[:len(_CACHE_MAGIC)] != _CACHE_MAGIC
                or start[len(_CACHE_MAGIC):len(_CACHE_MAGIC) + _DIGEST] != digest):
            return None  # none of ours, or over the size limit: rebuilt
        index_size = packed.index_size(start[head:])
        if index_size > size - head:
            return None
        index = bytearray(index_size)  # read into, not joined: it is hundreds of MB for 1M exchanges
        index[:8] = start[head:]
        view, at = memoryview(index)[8:], head + 8
        while view and (got := os.preadv(f.fileno(), [view], at)):
            view, at = view[got:], at + got
        if view:
            return None
        if not hmac.compare_digest(start[head - _DIGEST:head], _mac(key, digest, index)):
            return None
        fd = os.dup(f.fileno())
    try:
        cached = packed.Packed(index, packed.file_reader(fd, head + index_size), size - head - index_size)
    except (ValueError, struct.error, msgpack.UnpackException):
        os.close(fd)
        return None
    weakref.finalize(cached, os.close, fd)
    return cached


@functools.cache
def _code() -> bytes:
    """A digest of trproxy's own source. A cache holds documents this code checked and
    match keys it computed, and its exchanges are checked again only when they are
    served: another version (an upgrade, a checkout with stricter checks) makes its own."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0" + source.read_bytes())
    return digest.digest()


@functools.lru_cache(maxsize=4)
def _cache_key(home: Path) -> bytes | None:
    """This installation's secret for cache MACs (``<home>/cache.key``, made on first use);
    None when it cannot be had (read-only home): then nothing is cached."""
    path = home / _CACHE_KEY_FILE
    try:
        if not path.exists():
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = home / f".{_CACHE_KEY_FILE}.{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(_DIGEST))
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(tmp, path)
            os.unlink(tmp)
        key = path.read_bytes()
    except OSError as exc:
        log.debug("no cache key (%s): recordings are parsed every time", exc)
        return None
    return key if len(key) == _DIGEST else None



"""The recording directory on disk: test sets, their mocks, and crash-safe writing.

Layout (default ``./trproxy/``)::

    trproxy/
      test-set-0/
        mocks.yaml          # outbound exchanges, one YAML document each, recording order
        mocks.yaml.cache    # msgpack copy of mocks.yaml for fast loading (rebuildable)
        tests/test-1.yaml   # inbound test cases (trproxy record / trproxy test)
        bodies/<sha256>     # HTTP bodies over max_body, referenced from the YAML (blobs.py)
      reports/              # one report per run

Writing is crash-safe: exchanges are appended, one ``write`` per complete document, to
``mocks.yaml.partial-<pid>``; closing (normal exit, Ctrl-C, SIGTERM) renames it over
``mocks.yaml`` atomically. After a SIGKILL the partial file stays; ``recover`` (run at
every start) turns it into ``mocks.yaml`` keeping every complete document.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import msgpack

from .blobs import remove_stale
from .errors import FormatError
from .model import FORMAT_VERSION, Exchange
from .yamlio import dump, load_stream

MOCKS = "mocks.yaml"
_PARTIAL = re.compile(r"^(?P<name>.+)\.partial-(?P<pid>\d+)$")
_CACHE_FORMAT = 1


def test_set_dir(root: Path, name: str | None = None) -> Path:
    """The named test set, or the newest one (highest N), or ``test-set-0`` if none."""
    if name:
        return root / name
    sets = existing_test_sets(root)
    return sets[-1] if sets else root / "test-set-0"


def existing_test_sets(root: Path) -> list[Path]:
    def number(p: Path) -> int:
        tail = p.name.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else -1

    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith("test-set-")),
                  key=number)


def next_test_set(root: Path) -> Path:
    sets = existing_test_sets(root)
    numbers = [int(p.name.rsplit("-", 1)[-1]) for p in sets if p.name.rsplit("-", 1)[-1].isdigit()]
    return root / f"test-set-{max(numbers) + 1 if numbers else 0}"


class DocumentWriter:
    """Appends YAML documents to ``<path>.partial-<pid>``; ``close`` publishes ``path``."""

    def __init__(self, path: Path, header: list[Any] | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
        self._fd: int | None = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        self.count = 0
        for doc in header or []:
            self.append(doc)

    def append(self, doc: Any) -> None:
        if self._fd is None:
            raise ValueError("writer is closed")
        data = memoryview(dump(doc).encode("utf-8"))
        while data:  # one document, written whole before the next starts
            data = data[os.write(self._fd, data):]
        self.count += 1

    def close(self) -> Path:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            os.replace(self.partial, self.path)
        return self.path


class MockWriter(DocumentWriter):
    """Writes exchanges in recording order; on close also the msgpack cache, so the first
    replay after a recording does not parse the YAML it just wrote."""

    def __init__(self, path: Path, header: list[Any] | None = None) -> None:
        self._docs: list[Any] = []
        super().__init__(path, header)

    def append(self, doc: Any) -> None:
        super().append(doc)
        self._docs.append(doc)

    def write(self, exchange: Exchange) -> None:
        self.append(exchange.to_doc())

    def close(self) -> Path:
        if self._fd is None:
            return self.path
        path = super().close()
        write_cache(path, self._docs)
        self._docs = []
        return path


def recover(root: Path) -> list[str]:
    """Publish partial files left by dead writers (and remove their unfinished body
    files); return what was done, for the log."""
    done: list[str] = []
    if not root.is_dir():
        return done
    done += remove_stale(root)
    for partial in root.rglob("*.partial-*"):
        m = _PARTIAL.match(partial.name)
        if not m or alive(int(m.group("pid"))):
            continue
        target = partial.with_name(m.group("name"))
        text = partial.read_text("utf-8", errors="replace")
        try:
            docs, warning = load_stream(text)
        except FormatError as exc:
            done.append(f"kept {partial} aside: {exc}")
            continue
        with target.open("w", encoding="utf-8") as out:
            out.write("".join(dump(d) for d in docs))
        partial.unlink()
        done.append(f"recovered {len(docs)} documents into {target}" + (f" ({warning})" if warning else ""))
    return done


def alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stamp(path: Path) -> list[Any]:
    """What ties a cache to one state of its YAML file (edits change size or mtime)."""
    stat = path.stat()
    return [_CACHE_FORMAT, FORMAT_VERSION, stat.st_size, stat.st_mtime_ns]


def _cache_path(path: Path) -> Path:
    return path.with_name(path.name + ".cache")


def write_cache(path: Path, docs: list[Any]) -> None:
    """msgpack copy of ``path``'s documents (best effort: a cache is never required)."""
    cache = _cache_path(path)
    with contextlib.suppress(OSError, TypeError, ValueError):
        tmp = cache.with_name(cache.name + f".tmp-{os.getpid()}")
        tmp.write_bytes(msgpack.packb({"stamp": _stamp(path), "docs": docs}, use_bin_type=True))
        os.replace(tmp, cache)


def load_documents(path: Path) -> list[Any]:
    """All documents of a YAML stream, through the msgpack cache when it is current."""
    with contextlib.suppress(OSError, ValueError, msgpack.UnpackException):
        packed = msgpack.unpackb(_cache_path(path).read_bytes(), raw=False, strict_map_key=False)
        if packed.get("stamp") == _stamp(path):
            return packed["docs"]
    docs, warning = load_stream(path.read_text("utf-8"))
    if warning:
        raise FormatError(f"{path}: {warning}")
    write_cache(path, docs)
    return docs


def load_mocks(test_set: Path) -> list[Exchange]:
    path = test_set / MOCKS
    if not path.exists():
        return []
    return [Exchange.from_doc(d) for d in load_documents(path) if d.get("kind") != "meta"]

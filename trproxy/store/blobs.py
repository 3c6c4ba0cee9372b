"""Large payloads beside a test set: ``bodies/<sha256>``, named by their content.

A recording refers to one as ``{file: bodies/<sha256>, size, sha256}``; the YAML
stays readable and a 100 MB body is never held in memory (see ``DirBlobStore``).

Crash safety: a payload is written to ``bodies/.tmp-<pid>-<n>`` and renamed to its
digest on ``commit``, so a body file is either complete or absent. The temporary
files of dead processes are removed by ``remove_stale`` (called by ``recover``).
Write errors (disk full) never reach the app's traffic: the writer remembers the
error and ``commit`` returns None, so the recording keeps only the digest.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
from pathlib import Path

from ..protocols.base import BlobUnavailable

log = logging.getLogger("trproxy")

BODIES = "bodies"
_TMP = re.compile(r"^\.tmp-(?P<pid>\d+)-\d+$")
_numbers = itertools.count(1)


class FileWriter:
    """Appends to a temporary file; ``commit`` renames it to ``bodies/<sha256>``."""

    def __init__(self, store: DirBlobStore) -> None:
        self.store = store
        self.path = store.dir / f".tmp-{os.getpid()}-{next(_numbers)}"
        self.error: OSError | None = None
        self._fd: int | None = None
        try:
            store.dir.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            self.error = exc

    def write(self, data: bytes) -> None:
        if self._fd is None:
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            self.error = exc
            self.abort()

    def commit(self, sha256: str) -> str | None:
        if self._fd is None:
            if self.error is not None:
                log.warning("could not store a body of the recording: %s", self.error)
            return None
        os.close(self._fd)
        self._fd = None
        self.store.writers.discard(self)
        target = self.store.dir / sha256
        try:
            if target.exists():  # same content recorded before
                self.path.unlink()
            else:
                os.replace(self.path, target)
        except OSError as exc:
            log.warning("could not store a body of the recording: %s", exc)
            return None
        return f"{BODIES}/{sha256}"

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.store.writers.discard(self)
        with contextlib.suppress(OSError):
            self.path.unlink()


class FileReader:
    """A stored payload, opened for streaming; ``size`` is the file's actual size."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")
        self.size = os.fstat(self._file.fileno()).st_size

    def read(self, n: int) -> bytes:
        return self._file.read(n)

    def close(self) -> None:
        self._file.close()


class DirBlobStore:
    """The ``BlobStore`` of one test set directory."""

    def __init__(self, test_set: Path) -> None:
        self.root = test_set
        self.dir = test_set / BODIES
        self.writers: set[FileWriter] = set()

    def create(self) -> FileWriter:
        writer = FileWriter(self)
        self.writers.add(writer)
        return writer

    def open(self, ref: str) -> FileReader:
        """``ref`` is relative to the test set (a hand-edited recording may name any file
        in it, e.g. ``bodies/big.json``); nothing outside the test set is read."""
        root = self.root.resolve()
        path = (root / ref).resolve()
        if not path.is_relative_to(root):
            raise BlobUnavailable(f"body file {ref!r} is outside the test set {self.root}")
        try:
            return FileReader(path)
        except OSError as exc:
            raise BlobUnavailable(f"body file {ref} cannot be read: {exc.strerror or exc}") from exc

    def close(self) -> None:
        """Drop payloads whose message never completed (the connection died mid-body)."""
        for writer in list(self.writers):
            writer.abort()


def remove_stale(root: Path) -> list[str]:
    """Remove temporary body files of processes that are gone; what was removed, for the log."""
    from .recording import alive

    done = []
    for tmp in root.glob(f"*/{BODIES}/.tmp-*"):
        m = _TMP.match(tmp.name)
        if m and not alive(int(m.group("pid"))):
            with contextlib.suppress(OSError):
                tmp.unlink()
                done.append(f"removed the unfinished body {tmp}")
    return done

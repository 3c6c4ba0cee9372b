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
import stat
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ..protocols.base import BlobUnavailable
from . import safeio
from .errors import StoreError

log = logging.getLogger("trproxy")

BODIES = "bodies"
_TMP = re.compile(r"^\.tmp-(?P<pid>\d+)-\d+$")
_numbers = itertools.count(1)


class FileWriter:
    """Appends to a temporary file; ``commit`` renames it to ``bodies/<sha256>``."""

    def __init__(self, store: DirBlobStore) -> None:
        self.store = store
        self.name = f".tmp-{os.getpid()}-{next(_numbers)}"
        self.error: Exception | None = None
        self._fd: int | None = None
        try:
            self._fd = store.bodies().create(self.name)
        except (OSError, StoreError) as exc:
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
        bodies = self.store.bodies()
        try:
            st = bodies.lstat(sha256)
            if st is not None and stat.S_ISREG(st.st_mode):  # same content recorded before
                bodies.unlink(self.name)
            else:
                bodies.replace(self.name, sha256)
        except (OSError, StoreError) as exc:
            log.warning("could not store a body of the recording: %s", exc)
            with contextlib.suppress(OSError):
                bodies.unlink(self.name)
            return None
        return f"{BODIES}/{sha256}"

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.store.writers.discard(self)
        with contextlib.suppress(OSError, StoreError):
            self.store.bodies().unlink(self.name)


class FileReader:
    """A stored payload, opened for streaming; ``size`` is the file's actual size."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.size = os.fstat(file.fileno()).st_size

    def read(self, n: int) -> bytes:
        return self._file.read(n)

    def close(self) -> None:
        self._file.close()


class DirBlobStore:
    """The ``BlobStore`` of one test set directory (a direct child of the recording root)."""

    def __init__(self, test_set: Path) -> None:
        self.root = test_set
        self.dir = test_set / BODIES
        self.writers: set[FileWriter] = set()
        self._bodies: safeio.Dir | None = None

    def bodies(self) -> safeio.Dir:
        """``bodies/``, made and opened on first use without following links."""
        if self._bodies is None:
            self._bodies = safeio.open_dir(self.dir, self.root.parent, create=True)
        return self._bodies

    def create(self) -> FileWriter:
        writer = FileWriter(self)
        self.writers.add(writer)
        return writer

    def open(self, ref: str) -> FileReader:
        """``ref`` is relative to the test set (a hand-edited recording may name any file
        in it, e.g. ``bodies/big.json``); only a regular file inside the recording is read
        (a FIFO there would block the proxy: it is refused without being opened)."""
        parts = PurePosixPath(ref).parts
        if PurePosixPath(ref).is_absolute() or ".." in parts:
            raise BlobUnavailable(f"body file {ref!r} is outside the test set {self.root}")
        try:
            return FileReader(safeio.open_file(self.root / ref, self.root.parent))
        except StoreError as exc:
            raise BlobUnavailable(f"body file {ref!r}: {exc}") from exc
        except OSError as exc:
            raise BlobUnavailable(f"body file {ref} cannot be read: {exc.strerror or exc}") from exc

    def close(self) -> None:
        """Drop payloads whose message never completed (the connection died mid-body)."""
        for writer in list(self.writers):
            writer.abort()
        if self._bodies is not None:
            self._bodies.close()
            self._bodies = None


def remove_stale(test_set: safeio.Dir) -> list[str]:
    """Remove temporary body files of processes that are gone; what was removed, for the log."""
    from .recording import alive

    try:
        bodies = test_set.subdir(BODIES)
    except FileNotFoundError:
        return []
    done = []
    with bodies:
        for entry in bodies.entries():
            m = _TMP.match(entry.name)
            if m and not alive(int(m.group("pid"))):
                with contextlib.suppress(OSError):
                    bodies.unlink(entry.name)
                    done.append(f"removed the unfinished body {bodies.path / entry.name}")
    return done

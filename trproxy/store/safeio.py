"""Files inside a recording directory, which is untrusted input.

Recording directories are committed, shared and unpacked by other people, and trproxy
runs as root: a symbolic link ``mocks.yaml -> /etc/shadow`` must not be read (and copied
somewhere readable), a link to a file outside must not be written through, and a FIFO
must not block the proxy. Every file trproxy reads or writes inside one goes through here:

- the root is the directory the user named (``--dir``), taken as it is;
- below it, a path is walked one name at a time from an open directory (``openat``, via
  ``dir_fd``) with ``O_NOFOLLOW``: a symbolic link anywhere, the file itself or a
  directory on the way, is refused, so nothing outside the root is read or written; a
  path with ``..`` or one outside the root is refused before anything is opened;
- only regular files are read: the entry is checked with ``lstat`` before it is opened (a
  FIFO or a device is never opened), opened ``O_NONBLOCK`` and checked again with
  ``fstat`` (an entry swapped in between is refused, not waited on), and read up to a
  size limit;
- writes create a new file (``O_EXCL``) and rename it into place, over a regular file or
  nothing: no existing entry is ever written through.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .errors import FormatError, UnsafeFile

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_numbers = itertools.count(1)


def describe(mode: int) -> str:
    """What a non-regular entry is, for the error."""
    for test, what in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISREG, "a regular file"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "not a regular file"


class Dir:
    """A directory inside a recording root, open without having followed any link."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    def __enter__(self) -> Dir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def lstat(self, name: str) -> os.stat_result | None:
        """The entry itself (a link is not followed), or None when there is none."""
        try:
            return os.stat(_name(name, self.path), dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def entries(self) -> list[os.DirEntry]:
        """What the directory holds; ``is_dir``/``is_file`` need ``follow_symlinks=False``."""
        with os.scandir(self.fd) as it:
            return list(it)

    def subdir(self, name: str, create: bool = False) -> Dir:
        """The directory ``name`` in this one (made if ``create``); a link there is refused."""
        _name(name, self.path)
        try:
            fd = os.open(name, _DIR, dir_fd=self.fd)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=self.fd)
            return self.subdir(name)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            self._refuse(name, "a directory was expected")
        return Dir(fd, self.path / name)

    def open_regular(self, name: str) -> int:
        """A read-only descriptor of the regular file ``name``; anything else is refused."""
        st = self.lstat(name)
        if st is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", str(self.path / name))
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"refused: it is {describe(st.st_mode)}", self.path / name)
        try:
            fd = os.open(name, _READ, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            self._refuse(name, "a regular file was expected")
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # swapped since the lstat
            os.close(fd)
            raise UnsafeFile(f"refused: it is {describe(mode)}", self.path / name)
        return fd

    def read(self, name: str, limit: int) -> bytes:
        """The whole regular file ``name``, refused when it is over ``limit`` bytes."""
        fd = self.open_regular(name)
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(fd).st_size
            data = f.read(limit + 1) if size <= limit else b""
            if size > limit or len(data) > limit:
                raise FormatError(f"{max(size, len(data))} bytes, over the limit of {limit}",
                                  self.path / name)
            return data

    def create(self, name: str, mode: int = 0o644) -> int:
        """A new file ``name``, open for writing; an existing entry of that name is an error."""
        return os.open(_name(name, self.path), _CREATE, mode, dir_fd=self.fd)

    def replace(self, src: str, dst: str) -> None:
        """Rename ``src`` over ``dst``, which must be a regular file or absent."""
        st = self.lstat(dst)
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"refused to replace it: it is {describe(st.st_mode)}", self.path / dst)
        os.replace(_name(src, self.path), dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def unlink(self, name: str) -> None:
        """Remove the entry ``name`` (a link itself, never what it points to)."""
        os.unlink(_name(name, self.path), dir_fd=self.fd)

    def write(self, name: str, data: bytes | Iterable[bytes], mode: int = 0o644) -> None:
        """Replace ``name`` atomically: a temporary file, fsync'd, renamed over it; ``data``
        may come in pieces (a file larger than memory should hold)."""
        tmp = f".{name}.tmp-{os.getpid()}-{next(_numbers)}"
        fd = self.create(tmp, mode)
        try:
            with os.fdopen(fd, "wb") as out:
                for piece in [data] if isinstance(data, bytes) else data:
                    out.write(piece)
                out.flush()
                os.fsync(out.fileno())
            self.replace(tmp, name)
        except BaseException:
            with contextlib.suppress(OSError):
                self.unlink(tmp)
            raise

    def _refuse(self, name: str, expected: str) -> None:
        st = self.lstat(name)
        what = f"it is {describe(st.st_mode)}" if st is not None else "it changed while opened"
        raise UnsafeFile(f"refused: {what} ({expected})", self.path / name)


def _name(name: str, where: Path) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise UnsafeFile(f"refused: {name!r} is not a plain name", where)
    return name


def relative_parts(path: Path, root: Path) -> tuple[str, ...]:
    """The names leading from ``root`` to ``path``; refused when ``path`` is not below it."""
    try:
        parts = PurePosixPath(path).relative_to(PurePosixPath(root)).parts
    except ValueError:
        raise UnsafeFile(f"refused: not inside the recording directory {root}", path) from None
    if ".." in parts:
        raise UnsafeFile("refused: the path leaves its directory ('..')", path)
    return parts


def open_dir(path: Path, root: Path, create: bool = False) -> Dir:
    """``path`` (``root`` or a directory below it), walked from ``root`` without following
    links; directories are made on the way if ``create``. FileNotFoundError if missing."""
    parts = relative_parts(path, root)
    if create:
        root.mkdir(parents=True, exist_ok=True)
    d = Dir(os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), root)
    try:
        for part in parts:
            nxt = d.subdir(part, create)
            d.close()
            d = nxt
    except BaseException:
        d.close()
        raise
    return d


def read_bytes(path: Path, root: Path, limit: int) -> bytes:
    """The regular file ``path`` below ``root``, whole, up to ``limit`` bytes."""
    with open_dir(path.parent, root) as d:
        return d.read(path.name, limit)


def open_file(path: Path, root: Path) -> BinaryIO:
    """The regular file ``path`` below ``root``, open for streaming."""
    with open_dir(path.parent, root) as d:
        return os.fdopen(d.open_regular(path.name), "rb")


def write_bytes(path: Path, root: Path, data: bytes | Iterable[bytes]) -> None:
    """Replace ``path`` below ``root`` atomically, making its directories if needed."""
    with open_dir(path.parent, root, create=True) as d:
        d.write(path.name, data)


def lstat(path: Path, root: Path) -> os.stat_result | None:
    """The entry ``path`` below ``root`` (not followed), None if it or a parent is missing
    (or ``root`` is no directory); a parent that is a link is refused."""
    try:
        with open_dir(path.parent, root) as d:
            return d.lstat(path.name)
    except (FileNotFoundError, NotADirectoryError):
        return None


def is_file(path: Path, root: Path) -> bool:
    """There is an entry ``path`` that trproxy would read (non-regular ones are refused
    when they are read, so they count: the refusal says what is wrong)."""
    st = lstat(path, root)
    return st is not None and not stat.S_ISDIR(st.st_mode)

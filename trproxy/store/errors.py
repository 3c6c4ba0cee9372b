"""Errors of the store: ``StoreError`` > ``FormatError`` (> ``UnsafeFile``) / ``NoMatch``.

A recording directory comes from someone else as often as not, so every error about one
is a single line that names the file, the document and the line where known, and says
what to do: the command line prints it as it is, without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class StoreError(Exception):
    """Base of every store error."""


class FormatError(StoreError):
    """A recording file cannot be read: bad YAML, unknown version, wrong-typed fields.

    ``problem`` is what is wrong; ``path``, ``doc`` (1-based document number in a stream)
    and ``line`` (1-based) say where. A loader that knows more than the code that found the
    problem adds it with ``at`` (an exchange's checks know nothing of files).
    """

    hint = "edit or delete it; `trproxy record` makes a new one"

    def __init__(self, problem: str, path: Path | str | None = None, doc: int | None = None,
                 line: int | None = None) -> None:
        super().__init__(problem)
        self.problem = " ".join(str(problem).splitlines())
        self.path, self.doc, self.line = path, doc, line

    def at(self, path: Path | str | None = None, doc: int | None = None,
           line: int | None = None) -> FormatError:
        """Fill in where the problem is (what is already known stays)."""
        if self.path is None:
            self.path = path
        if self.doc is None:
            self.doc = doc
        if self.line is None:
            self.line = line
        return self

    def __str__(self) -> str:
        if self.path is None:
            return self.problem
        where = ", ".join([str(self.path)]
                          + ([f"document {self.doc}"] if self.doc is not None else [])
                          + ([f"line {self.line}"] if self.line is not None else []))
        return f"{where}: {self.problem} ({self.hint})"


class UnsafeFile(FormatError):
    """A recording holds something other than a regular file or a directory where trproxy
    reads or writes (a symbolic link, a FIFO, a device), or a path that leaves the
    directory: refused without being followed or opened."""

    hint = "a recording holds only regular files and directories; replace or delete it"


class NoMatch(StoreError):
    """No recording answers a live request; ``nearest`` says what came closest and why."""

    def __init__(self, summary: str, reason: str, nearest: list[str]) -> None:
        super().__init__(f"no recording for {summary}: {reason}")
        self.summary = summary
        self.reason = reason
        self.nearest = nearest

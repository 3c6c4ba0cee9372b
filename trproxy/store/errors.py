"""Errors of the store: ``StoreError`` > ``FormatError`` / ``NoMatch``."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every store error."""


class FormatError(StoreError):
    """A recording file cannot be read: bad YAML, unknown version, missing fields."""


class NoMatch(StoreError):
    """No recording answers a live request; ``nearest`` says what came closest and why."""

    def __init__(self, summary: str, reason: str, nearest: list[str]) -> None:
        super().__init__(f"no recording for {summary}: {reason}")
        self.summary = summary
        self.reason = reason
        self.nearest = nearest

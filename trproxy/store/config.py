"""``<recording dir>/config.yaml``, the user's settings: ``noise:`` for test comparison
(``apptest/noise.py``) and one section per protocol that has settings (``http:``), read
here once and handed to whoever owns each section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import FormatError
from .yamlio import load_one

CONFIG = "config.yaml"


def read_config(root: Path) -> dict[str, Any]:
    """The parsed file ({} when there is none); FormatError when it is not a mapping."""
    path = root / CONFIG
    if not path.exists():
        return {}
    doc = load_one(path.read_text("utf-8")) or {}
    if not isinstance(doc, dict):
        raise FormatError(f"{path}: must be a mapping of sections")
    return doc


def configure_protocols(root: Path) -> None:
    """Rebuild the dialects that have a section in ``root/config.yaml`` for this run."""
    from ..protocols.registry import configure

    try:
        configure(read_config(root))
    except ValueError as exc:
        raise FormatError(f"{root / CONFIG}: {exc}") from exc

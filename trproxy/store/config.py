"""``<recording dir>/config.yaml``, the user's settings: ``noise:`` for test comparison
(``apptest/noise.py``) and one section per protocol that has settings (``http:``), read
here once and handed to whoever owns each section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import safeio
from .errors import FormatError
from .yamlio import read_document

CONFIG = "config.yaml"


def read_config(root: Path) -> dict[str, Any]:
    """The parsed file ({} when there is none); FormatError when it is not a mapping."""
    path = root / CONFIG
    if not safeio.is_file(path, root):
        return {}
    doc = read_document(path, root) or {}
    if not isinstance(doc, dict):
        raise FormatError("must be a mapping of sections", path)
    return doc


def configure_protocols(root: Path) -> None:
    """Rebuild the dialects that have a section in ``root/config.yaml`` for this run."""
    from ..protocols.registry import configure

    try:
        configure(read_config(root))
    except ValueError as exc:
        raise FormatError(str(exc), root / CONFIG) from exc

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
        configure(with_files(read_config(root), root))
    except ValueError as exc:
        raise FormatError(str(exc), root / CONFIG) from exc


MAX_SETTING_FILE = 64 * 1024 * 1024


def with_files(doc: dict[str, Any], root: Path) -> dict[str, Any]:
    """``doc`` with ``files`` in each section: how a dialect reads a file one of its
    settings names (protocols read no files themselves). A relative path is inside
    ``root`` (read as safely as a recording); an absolute one is read as given. Both are
    bounded; ValueError says why a file cannot be read."""
    def read(name: str) -> bytes:
        path = Path(name)
        try:
            if not path.is_absolute():
                return safeio.read_bytes(root / path, root, MAX_SETTING_FILE)
            with open(path, "rb") as f:
                data = f.read(MAX_SETTING_FILE + 1)
        except (OSError, FormatError) as exc:
            raise ValueError(f"cannot read {name}: {exc}") from exc
        if len(data) > MAX_SETTING_FILE:
            raise ValueError(f"{name} is over {MAX_SETTING_FILE} bytes")
        return data

    return {k: {**v, "files": read} if isinstance(v, dict) else v for k, v in doc.items()}

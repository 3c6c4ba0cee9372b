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
        configure(with_descriptor_sets(read_config(root), root))
    except ValueError as exc:
        raise FormatError(str(exc), root / CONFIG) from exc


MAX_DESCRIPTOR_SET = 64 * 1024 * 1024


def with_descriptor_sets(doc: dict[str, Any], root: Path) -> dict[str, Any]:
    """``http.grpc_descriptors`` (FileDescriptorSet files, ``protoc --descriptor_set_out``;
    relative paths are inside ``root``) read here, since protocols read no files: their
    bytes go to the HTTP dialect as ``grpc_descriptor_sets``."""
    section = doc.get("http")
    if not isinstance(section, dict) or not section.get("grpc_descriptors"):
        return doc
    paths = section["grpc_descriptors"]
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ValueError("http.grpc_descriptors must be a list of file paths")
    sets = []
    for name in paths:
        path = Path(name)
        try:
            if path.is_absolute():
                data = path.read_bytes()[:MAX_DESCRIPTOR_SET + 1]
            else:
                data = safeio.read_bytes(root / path, root, MAX_DESCRIPTOR_SET)
        except (OSError, FormatError) as exc:
            raise ValueError(f"http.grpc_descriptors: cannot read {name}: {exc}") from exc
        if len(data) > MAX_DESCRIPTOR_SET:
            raise ValueError(f"http.grpc_descriptors: {name} is over {MAX_DESCRIPTOR_SET} bytes")
        sets.append(data)
    return {**doc, "http": {**section, "grpc_descriptor_sets": sets}}

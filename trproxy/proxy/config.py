"""The ``http:`` section of ``<recording dir>/config.yaml``: the user's secrets and
matching noise for outbound HTTP, applied to the HTTP dialect for the whole run.

(``noise:`` in the same file belongs to test comparison: ``store/noise.py``.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..store.errors import FormatError
from ..store.noise import CONFIG
from ..store.yamlio import load_one


def apply_http_config(root: Path) -> bool:
    """Configure the HTTP dialect from ``root/config.yaml``; False when there is nothing to apply."""
    path = root / CONFIG
    if not path.exists():
        return False
    doc = load_one(path.read_text("utf-8")) or {}
    section = doc.get("http") if isinstance(doc, dict) else None
    if not section:
        return False
    if not isinstance(section, dict):
        raise FormatError(f"{path}: `http` must be a mapping")
    from ..protocols.detect import override
    from ..protocols.http import HttpConfig, Noise, Redaction, dialect_with

    match: dict[str, Any] = section.get("match") or {}
    config = HttpConfig(
        redaction=Redaction.with_extra(headers=_names(section, "secret_headers", path),
                                       fields=_names(section, "secret_fields", path)),
        noise=Noise(query=frozenset(_names(match, "ignore_query", path)),
                    json_paths=tuple(_names(match, "ignore_json_paths", path)),
                    headers=frozenset(_names(match, "ignore_headers", path)),
                    match_headers=bool(match.get("match_headers", False))),
        max_body=int(float(section.get("max_body_mb", 8)) * 1024 * 1024),
    )
    override(dialect_with(config))
    return True


def _names(section: dict[str, Any], key: str, path: Path) -> list[str]:
    value = section.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FormatError(f"{path}: http.{key} must be a list of names")
    return value

"""JSON paths as config.yaml names them (``$.a.b[0].c``, ``items[*].id``): parsed, and
applied to readable data. Shared by HTTP matching noise (parts dropped) and the
volatile-value rules of HTTP and Kafka (parts whose values the app generates)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_PATH_TOKEN = re.compile(r"\[(\*|\d+)\]|\.?([^.\[\]]+)")


def parse_json_path(path: str) -> list[str | int]:
    """``$.a.b[0].c`` / ``a.*.c`` / ``items[*].id`` -> steps; ``"*"`` is a wildcard."""
    path = path.strip()
    if path.startswith("$"):
        path = path[1:]
    steps: list[str | int] = []
    for m in _PATH_TOKEN.finditer(path):
        index, key = m.group(1), m.group(2)
        if index is not None:
            steps.append("*" if index == "*" else int(index))
        else:
            steps.append(key)
    return steps


def drop_json_path(value: Any, steps: list[str | int]) -> Any:
    """A copy of ``value`` without what ``steps`` reaches (dict keys removed, list
    items replaced by None so indices stay stable)."""
    if not steps:
        return value
    step, rest = steps[0], steps[1:]
    if isinstance(value, dict):
        keys = list(value) if step == "*" else [str(step)]
        out = dict(value)
        for k in keys:
            if k in out:
                if rest:
                    out[k] = drop_json_path(out[k], rest)
                else:
                    del out[k]
        return out
    if isinstance(value, list):
        indices: Iterable[int]
        if step == "*":
            indices = range(len(value))
        elif isinstance(step, int) or (isinstance(step, str) and step.isdigit()):
            indices = [int(step)]
        else:
            return value
        out_list = list(value)
        for i in indices:
            if 0 <= i < len(out_list):
                out_list[i] = drop_json_path(out_list[i], rest) if rest else None
        return out_list
    return value


def path_matches(steps: list[str | int], path: tuple[str | int, ...]) -> bool:
    """Whether the place ``path`` (keys and indices from the root) is one ``steps`` names."""
    return len(steps) == len(path) and all(
        s == "*" or s == p or (isinstance(p, int) and str(s) == str(p)) for s, p in zip(steps, path, strict=True))

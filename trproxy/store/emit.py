"""A fast YAML emitter for recordings: the shapes trproxy writes, in the layout PyYAML gives.

Why: PyYAML's representer is pure Python and took over half of the proxy's CPU in
record mode (~100 µs an exchange on redis-benchmark); this writes the same documents
several times faster. It handles only ``dict`` (string keys), ``list``, ``str``,
``int``, ``float``, ``bool`` and ``None``; anything else raises ``Unsupported`` and the
caller uses PyYAML.

Layout, as ``yamlio.dump`` with PyYAML: block mappings in insertion order; lists of at
most 8 short single-line scalars in flow style (``[GET, key]``), others as block
sequences not indented under their key; multi-line text as ``|`` literal blocks.
Scalars are plain when the YAML 1.1 resolver reads them back as the same string and
no syntax character is in the way, else single-quoted, else double-quoted (JSON string
syntax, which YAML double quotes accept). Strings YAML cannot carry printably
(control or format characters) are left to PyYAML.

Invariant (tested on generated data and real recordings): ``yaml.safe_load(emit(x)) == x``.
"""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

import yaml
from yaml.resolver import Resolver


class Unsupported(ValueError):
    """A value this emitter does not write (the caller falls back to PyYAML)."""


_RESOLVER = Resolver()
_FIRST = frozenset("#,[]{}&*!|>'\"%@`")  # indicators a plain scalar cannot start with
_FLOW = frozenset(",?[]{}:")  # not in a plain scalar inside [ ... ]
_FLOW_ITEM = (str, int, float, bool, type(None))


def _plain(value: str, flow: bool) -> bool:
    """PyYAML's rules (``Emitter.analyze_scalar``) for a one-line plain scalar, and the
    resolver reading it back as a string (not ``yes``, ``1:20``, ``2026-11-25``...)."""
    if not value or not value.isprintable() or value[0] == " " or value[-1] == " ":
        return False
    if value[0] in _FIRST or (value[0] in "-?:" and (len(value) == 1 or value[1] == " ")):
        return False
    if value.startswith(("---", "...")):  # a document marker where a document starts
        return False
    if ": " in value or " #" in value or value.endswith(":"):
        return False
    if flow and not _FLOW.isdisjoint(value):
        return False
    return _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) == Resolver.DEFAULT_SCALAR_TAG


@functools.lru_cache(maxsize=8192)
def _scalar(value: str, flow: bool = False) -> str:
    """The YAML text of a one-line string: plain, single- or double-quoted."""
    if _plain(value, flow):
        return value
    if value.isprintable():
        return "'" + value.replace("'", "''") + "'"
    if all(c.isprintable() or c in "\n\t" for c in value):
        return json.dumps(value, ensure_ascii=False)
    raise Unsupported("a string with non-printable characters")


def _literal(value: str, indent: int) -> str | None:
    """A ``|`` block for multi-line text, or None when a block cannot hold it exactly."""
    body, newline, rest = value.rpartition("\n") if value.endswith("\n") else (value, "", "")
    if rest or body.endswith("\n") or not body.strip("\n"):
        return None
    lines = body.split("\n")
    if not all(line.isprintable() and not line.endswith(" ") for line in lines):
        return None
    if next(line for line in lines if line).startswith(" "):  # it would set the indentation
        return None
    pad = " " * indent
    head = "|" if newline else "|-"
    return head + "".join("\n" + (pad + line if line else "") for line in lines)


def _float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    if "." not in text and "e" in text:  # YAML 1.1 floats need a dot: 1e+20 -> 1.0e+20
        text = text.replace("e", ".0e", 1)
    return text


def _inline(value: Any, indent: int, flow: bool = False) -> str:
    """A scalar, an empty collection or a flow list, as it follows ``key: `` or ``- ``
    (``flow``: an item inside a flow list)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        if "\n" in value:
            block = _literal(value, indent)
            if block is not None:
                return block
        return _scalar(value, flow)
    if isinstance(value, (dict, list)) and not value:
        return "{}" if isinstance(value, dict) else "[]"
    if isinstance(value, list):  # a flow list (see _flow)
        # items are one-line scalars (see _flow); plain ones hold no flow indicator
        return "[" + ", ".join(_inline(v, indent, flow=True) for v in value) + "]"
    raise Unsupported(type(value).__name__)


def flow_list(value: list) -> bool:
    """Short lists of one-line scalars go on one line (``[GET, key]``), with PyYAML too."""
    if len(value) > 8:
        return False
    for v in value:
        if not isinstance(v, _FLOW_ITEM):
            return False
    texts = [str(v) for v in value]
    return sum(map(len, texts)) <= 100 and not any("\n" in t for t in texts)


def _block(value: Any) -> bool:
    return isinstance(value, (dict, list)) and bool(value) and not (
        isinstance(value, list) and flow_list(value))


def _mapping(value: dict, indent: int, out: list[str]) -> None:
    pad = " " * indent
    for key, item in value.items():
        if not isinstance(key, str):
            raise Unsupported("a mapping key that is not a string")
        if "\n" in key or len(key) > 1000:  # YAML limits implicit keys to 1024 characters
            raise Unsupported("a multi-line or very long mapping key")
        name = _scalar(key)
        if _block(item):
            out.append(f"{pad}{name}:\n")
            if isinstance(item, dict):
                _mapping(item, indent + 2, out)
            else:
                _sequence(item, indent, out)  # PyYAML: not indented under its key
        else:
            out.append(f"{pad}{name}: {_inline(item, indent + 2)}\n")


def _sequence(value: list, indent: int, out: list[str]) -> None:
    pad = " " * indent
    for item in value:
        if _block(item):
            # the first line goes after "- ", the rest is indented by two more
            inner: list[str] = []
            if isinstance(item, dict):
                _mapping(item, indent + 2, inner)
            else:
                _sequence(item, indent + 2, inner)
            first = inner[0][indent + 2:]
            out.append(f"{pad}- {first}")
            out.extend(inner[1:])
        else:
            out.append(f"{pad}- {_inline(item, indent + 2)}\n")


# -- the fast path: the same text for the mappings recordings are made of -------------
#
# An exchange's document is mostly a mapping of scalars (its envelope, its metadata):
# written with one ``type`` test per value instead of ``_inline``'s chain of
# ``isinstance`` calls, and the key's text and a ``started`` time without the resolver.
# Anything but an exact str, int, dict or list goes the general way above, so the text
# is the general path's (``emit(doc, fast=False)``; tested on generated and recorded
# documents).

# ``started`` (``datetime.isoformat``): the resolver reads it as a timestamp, so quoted
_ISO_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}\+00:00")


@functools.lru_cache(maxsize=1024)
def _key(key: str) -> str:
    """A mapping key's text (``_mapping``'s checks; the exception is not cached)."""
    if not isinstance(key, str):
        raise Unsupported("a mapping key that is not a string")
    if "\n" in key or len(key) > 1000:
        raise Unsupported("a multi-line or very long mapping key")
    return _scalar(key)


def _fast_mapping(value: dict, indent: int, out: list[str]) -> None:
    pad = " " * indent
    for key, item in value.items():
        name = _key(key) if type(key) is str else _key.__wrapped__(key)
        t = type(item)
        if t is str:
            if "\n" in item:
                text = _inline(item, indent + 2)
            elif len(item) == 32 and _ISO_TIME.fullmatch(item):
                text = "'" + item + "'"
            else:
                text = _scalar(item)
        elif t is int:
            text = str(item)
        elif t is dict:
            if item:
                out.append(f"{pad}{name}:\n")
                _fast_mapping(item, indent + 2, out)
                continue
            text = "{}"
        elif t is list:
            if item and not flow_list(item):
                out.append(f"{pad}{name}:\n")
                _sequence(item, indent, out)  # PyYAML: not indented under its key
                continue
            text = _inline(item, indent + 2)  # [] or a flow list
        elif _block(item):  # the general way, for any other type
            out.append(f"{pad}{name}:\n")
            if isinstance(item, dict):
                _mapping(item, indent + 2, out)
            else:
                _sequence(item, indent, out)
            continue
        else:
            text = _inline(item, indent + 2)
        out.append(f"{pad}{name}: {text}\n")


def emit(doc: Any, fast: bool = True) -> str:
    """One document's YAML (without the ``---`` line); raises ``Unsupported``.
    ``fast=False``: without the fast path (the reference it is tested against)."""
    out: list[str] = []
    if fast and type(doc) is dict and doc:
        _fast_mapping(doc, 0, out)
    elif isinstance(doc, dict) and doc:
        _mapping(doc, 0, out)
    elif isinstance(doc, list) and doc and not flow_list(doc):
        _sequence(doc, 0, out)
    else:
        out.append(_inline(doc, 2) + "\n")
    return "".join(out)

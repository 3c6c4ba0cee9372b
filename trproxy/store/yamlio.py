"""YAML reading and writing for recordings: safe, readable, and tolerant of a torn tail.

Documents are written by ``emit`` (a fast emitter for the shapes recordings have) or,
for anything else, with a safe dumper (no ``!!python``/``!!binary`` tags; multi-line
strings such as SQL as ``|`` blocks) and read with the safe loader only. A stream is
split on ``---`` lines, so a document cut short by a crash is detected and dropped
alone: every complete document before it survives.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml

from .emit import Unsupported, emit, flow_list
from .errors import FormatError

_Dumper: type = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _ReadableDumper(_Dumper):  # type: ignore[misc, valid-type]
    """Safe dumper that writes multi-line text as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    if "\n" in value:  # the emitter falls back to quoting where a block cannot hold it
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


def _list(dumper: yaml.SafeDumper, value: list) -> yaml.Node:
    # header pairs, Redis commands, short rows: one line each, as people write them
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow_list(value))


_ReadableDumper.add_representer(str, _str)
_ReadableDumper.add_representer(list, _list)

_SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)


def dump(doc: Any) -> str:
    """One document, starting with its ``---`` line (``emit``, else PyYAML)."""
    try:
        return "---\n" + emit(doc)
    except Unsupported:
        return pyyaml_dump(doc)


def pyyaml_dump(doc: Any) -> str:
    """``dump`` through PyYAML alone (the reference ``emit`` is tested against)."""
    return "---\n" + yaml.dump(doc, Dumper=_ReadableDumper, sort_keys=False,
                                allow_unicode=True, width=120)


def load_one(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise FormatError(f"invalid YAML: {exc}") from exc


def split_documents(text: str) -> Iterator[str]:
    """The text of each document in a ``---``-separated stream."""
    bounds = [m.start() for m in _SEPARATOR.finditer(text)]
    if not bounds or text[: bounds[0]].strip():
        bounds.insert(0, 0)
    bounds.append(len(text))
    for start, end in zip(bounds, bounds[1:], strict=False):
        chunk = text[start:end]
        if chunk.strip() and chunk.strip() != "---":
            yield chunk


def load_stream(text: str) -> tuple[list[Any], str | None]:
    """Every document in the stream, and a warning if a torn last document was dropped."""
    chunks = list(split_documents(text))
    docs: list[Any] = []
    for i, chunk in enumerate(chunks):
        try:
            doc = load_one(chunk)
        except FormatError:
            if i == len(chunks) - 1 and not text.endswith("\n"):
                return docs, f"dropped a torn last document ({len(chunk)} bytes)"
            raise
        if doc is not None:
            docs.append(doc)
    if chunks and not text.endswith("\n"):
        docs.pop()
        return docs, "dropped a torn last document"
    return docs, None

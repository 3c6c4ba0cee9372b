"""YAML reading and writing for recordings: safe, readable, bounded, tolerant of a torn tail.

Documents are written by ``emit`` (a fast emitter for the shapes recordings have) or,
for anything else, with a safe dumper (no ``!!python``/``!!binary`` tags; multi-line
strings such as SQL as ``|`` blocks). A stream is split on ``---`` lines, so a document
cut short by a crash is detected and dropped alone: every complete document before it
survives.

Reading is strict, because a recording may come from anyone: PyYAML's safe loader, with
its composer replaced by one that refuses aliases and anchors (a 1.3 KB "billion laughs"
file expands to gigabytes; our writers never emit them), explicit tags and nesting deeper
than ``MAX_DEPTH``, and with ``MAX_FILE_BYTES`` / ``MAX_DOCUMENT_BYTES`` checked before
parsing. Every error is a ``FormatError`` with the line (and, in a stream, the document).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from . import safeio
from .emit import Unsupported, emit, flow_list
from .errors import FormatError

#: the largest YAML file of a recording read (mocks.yaml, a test case, config.yaml)
MAX_FILE_BYTES = 1 << 30
#: the largest single document (an exchange with inline bodies up to ``max_body_mb``)
MAX_DOCUMENT_BYTES = 256 << 20
#: the deepest nesting of mappings and lists in a document (recordings use about 10)
MAX_DEPTH = 100

_Dumper: type = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _PyParser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
    """The pure-Python event source, when PyYAML was built without libyaml."""

    def __init__(self, stream: str | bytes) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)


try:
    from yaml._yaml import CParser as _Parser  # libyaml: ~10x faster than the Python parser
except ImportError:  # PyYAML built without libyaml
    _Parser = _PyParser  # type: ignore[misc, assignment]


class _StrictLoader(_Parser, SafeConstructor, Resolver):  # type: ignore[misc, valid-type]
    """The safe loader with a composer that builds nodes from the parser's events itself,
    refusing what recordings never hold before it can cost anything."""

    def __init__(self, stream: str | bytes) -> None:
        _Parser.__init__(self, stream)  # type: ignore[misc]
        SafeConstructor.__init__(self)
        Resolver.__init__(self)

    def get_single_node(self) -> Node | None:
        self.get_event()  # StreamStart
        node = None
        if not self.check_event(StreamEndEvent):
            self.get_event()  # DocumentStart
            node = self._node(1)
            self.get_event()  # DocumentEnd
            if not self.check_event(StreamEndEvent):
                raise _refusal("more than one document (a `---` line not at the start of a line?)",
                               self.peek_event())
        self.get_event()
        return node

    def _node(self, depth: int) -> Node:
        event: Any = self.get_event()
        if type(event) is AliasEvent:
            raise _refusal(f"YAML alias *{event.anchor} (recordings never use aliases)", event)
        if event.anchor is not None:
            raise _refusal(f"YAML anchor &{event.anchor} (recordings never use anchors)", event)
        if event.tag is not None:
            raise _refusal(f"YAML tag {event.tag} (recordings never use explicit tags)", event)
        if depth > MAX_DEPTH:
            raise _refusal(f"nested deeper than {MAX_DEPTH} levels", event)
        start: Any = event.start_mark  # C marks: the stubs know only the Python ones
        end: Any = event.end_mark
        if type(event) is ScalarEvent:
            tag = self.resolve(ScalarNode, event.value, event.implicit)
            return ScalarNode(tag, event.value, start, end, style=event.style)
        if type(event) is SequenceStartEvent:
            items: list[Node] = []
            node: Node = SequenceNode(self.DEFAULT_SEQUENCE_TAG, items, start, None,
                                      flow_style=event.flow_style)
            while not self.check_event(SequenceEndEvent):
                items.append(self._node(depth + 1))
        else:  # MappingStartEvent
            pairs: list[tuple[Node, Node]] = []
            node = MappingNode(self.DEFAULT_MAPPING_TAG, pairs, start, None,
                               flow_style=event.flow_style)
            while not self.check_event(MappingEndEvent):
                key = self._node(depth + 1)
                pairs.append((key, self._node(depth + 1)))
        end_event: Any = self.get_event()
        node.end_mark = end_event.end_mark
        return node


def _refusal(problem: str, event: Any) -> FormatError:
    return FormatError(problem, line=event.start_mark.line + 1)


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

_SEPARATOR = re.compile(rb"^---[ \t]*$", re.MULTILINE)


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


def load_one(text: str | bytes) -> Any:
    """One document (None when empty); FormatError with the line when it cannot be read."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise FormatError(f"document of {len(text)} bytes, over the limit of {MAX_DOCUMENT_BYTES}",
                          line=1)
    if isinstance(text, bytes):
        data = text
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(f"not UTF-8 text ({exc.reason})",
                              line=data.count(b"\n", 0, exc.start) + 1) from None
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = ": ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise FormatError(f"invalid YAML: {problem}",
                          line=mark.line + 1 if mark is not None else None) from None
    except yaml.YAMLError as exc:
        raise FormatError(f"invalid YAML: {str(exc).splitlines()[0]}") from None
    finally:
        loader.dispose()


def read_document(path: Path, root: Path) -> Any:
    """The single-document YAML file ``path`` inside the recording ``root`` (a test case,
    ``config.yaml``), read as ``safeio`` allows; errors name the file."""
    data = safeio.read_bytes(path, root, MAX_FILE_BYTES)
    try:
        return load_one(data)
    except FormatError as exc:
        raise exc.at(path) from None


@dataclass
class Stream:
    """The documents of a stream, the line each starts on, and what was dropped."""

    docs: list[Any] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # 1-based, the document's ``---`` line
    torn: str | None = None  # a torn last document was dropped (a crash mid-write)...
    torn_line: int | None = None  # ...starting on this line


def split_documents(data: bytes) -> Iterator[tuple[int, int]]:
    """Start and end offsets of each non-empty document of a ``---``-separated stream."""
    bounds = [m.start() for m in _SEPARATOR.finditer(data)]
    if not bounds or data[: bounds[0]].strip():
        bounds.insert(0, 0)
    bounds.append(len(data))
    for start, end in zip(bounds, bounds[1:], strict=False):
        chunk = data[start:end].strip()
        if chunk and chunk != b"---":
            yield start, end


def load_stream(data: bytes, path: Path | str | None = None) -> Stream:
    """Every document of a stream; a torn last document (no final newline: the writer died
    mid-write) is dropped and noted in ``torn``. Errors name ``path``, document and line."""
    if len(data) > MAX_FILE_BYTES:
        raise FormatError(f"{len(data)} bytes, over the limit of {MAX_FILE_BYTES}", path)
    out = Stream()
    whole = data.endswith(b"\n")
    bounds = list(split_documents(data))
    line, seen, doc = 1, 0, None
    for i, (start, end) in enumerate(bounds):
        line += data.count(b"\n", seen, start)
        seen = start
        try:
            doc = load_one(data[start:end])
        except FormatError as exc:
            if i == len(bounds) - 1 and not whole:
                out.torn, out.torn_line = f"dropped a torn last document ({end - start} bytes)", line
                return out
            exc.line = line + (exc.line or 1) - 1
            raise exc.at(path, len(out.docs) + 1) from None
        if doc is not None:
            out.docs.append(doc)
            out.lines.append(line)
    if not whole and doc is not None:  # the last one parsed, but may miss its last lines
        out.docs.pop()
        out.torn, out.torn_line = "dropped a torn last document", out.lines.pop()
    return out

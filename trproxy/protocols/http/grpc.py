"""gRPC over HTTP/2: the length-prefixed message framing and protobuf without a schema.

A gRPC call is one HTTP/2 stream (``POST /<package.Service>/<Method>``, ``content-type:
application/grpc[+proto]``); its body in each direction is a sequence of messages, each
``compressed flag (1 byte) | length (4 bytes, big-endian) | message`` (gRPC's
PROTOCOL-HTTP2.md, "Length-Prefixed-Message"); the status comes in the trailers
(``grpc-status``, ``grpc-message``), or alone in the headers ("Trailers-Only").

The readable body form is ``{"grpc": [message, ...]}``, each message one of:

* a list of fields ``[number, value]`` (``[number, value, name]`` when a descriptor set
  names it), in wire order, repeats kept, where ``value`` is
  ``int`` (varint; negative: a 64-bit two's complement varint, as int32/int64 send it),
  ``{"fixed32": n}`` / ``{"fixed64": n}``, ``{"float": x}`` / ``{"double": x}``,
  ``{"sint": n}`` (zigzag varint), ``str`` (length-delimited UTF-8 text), a list (a
  length-delimited nested message) or ``{"base64": ...}`` (length-delimited bytes);
* a string: a message that is not protobuf but UTF-8 text (``application/grpc+json``);
* ``{"base64": ...}``: bytes that are neither a protobuf message this decoder re-encodes
  exactly nor text;
* ``{"compressed": ...}`` (base64): a message sent with the compressed flag, kept as sent.

Invariant: ``body_bytes(body_readable(body))`` is the body, byte for byte. Only a
message whose tree re-encodes to its own bytes is shown as a tree (so non-minimal
varints, groups or trailing garbage leave it as ``base64``); replay then sends the same
bytes, and live values mapped into the tree (``volatile``) are re-encoded with their
lengths recomputed.

Without a schema a length-delimited field is ambiguous; the rule: printable UTF-8 text
is a string (``"hi"`` also parses as a message, ``{13: 105}``); else a nested message
when it parses; else text when it is UTF-8 (with newlines, tabs); else bytes.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..base import Readable

MAX_DEPTH = 32  # nested messages deeper than this stay bytes (bounds recursion)
GRPC_CONTENT_TYPE = "application/grpc"
UNAVAILABLE = 14  # grpc-status codes (gRPC's doc/statuscodes.md)

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


def is_grpc_type(content_type: str) -> bool:
    """``application/grpc``, ``application/grpc+proto``, ``application/grpc+json``..."""
    mt = content_type.split(";", 1)[0].strip().lower()
    return mt == GRPC_CONTENT_TYPE or mt.startswith(GRPC_CONTENT_TYPE + "+")


# -- the length-prefixed framing -------------------------------------------------------


def split_messages(body: bytes) -> list[tuple[bool, bytes]] | None:
    """``(compressed, message)`` pairs of a whole body; None when it is not exactly a
    sequence of length-prefixed messages (cut short, or a flag other than 0/1)."""
    out: list[tuple[bool, bytes]] = []
    pos, end = 0, len(body)
    while pos < end:
        if end - pos < 5 or body[pos] > 1:
            return None
        size = int.from_bytes(body[pos + 1:pos + 5], "big")
        if end - pos - 5 < size:
            return None
        out.append((body[pos] == 1, body[pos + 5:pos + 5 + size]))
        pos += 5 + size
    return out


def frame(message: bytes, compressed: bool = False) -> bytes:
    return bytes([1 if compressed else 0]) + len(message).to_bytes(4, "big") + message


# -- protobuf wire format without a schema ---------------------------------------------


class _NotExact(ValueError):
    """These bytes do not decode to a tree that encodes back to them."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    if pos < len(data) and data[pos] < 0x80:  # most keys, lengths and small numbers
        return data[pos], pos + 1
    value = shift = 0
    start = pos
    while True:
        if pos >= len(data) or pos - start >= 10:
            raise _NotExact("varint cut short or too long")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    if value >= 1 << 64 or (pos - start > 1 and data[pos - 1] == 0):
        raise _NotExact("varint not in its minimal form")  # would re-encode shorter
    return value, pos


def encode_varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    if not 0 <= value < 1 << 64:
        raise ValueError(f"varint {value} out of range")
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _printable(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


def _text(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.replace("\n", "").replace("\t", "").replace("\r", "").isprintable() else None


def _length_delimited(data: bytes, depth: int) -> Readable:
    if not data:
        return ""
    if (text := _printable(data)) is not None:
        return text
    if depth < MAX_DEPTH:
        try:
            return _fields(data, depth + 1)
        except _NotExact:
            pass
    if (text := _text(data)) is not None:
        return text
    return {"base64": base64.b64encode(data).decode("ascii")}


def _fields(data: bytes, depth: int) -> list[list[Readable]]:
    out: list[list[Readable]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0 or number >= 1 << 29:
            raise _NotExact(f"field number {number}")
        value: Readable
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire == _FIXED64:
            if pos + 8 > len(data):
                raise _NotExact("fixed64 cut short")
            value = {"fixed64": int.from_bytes(data[pos:pos + 8], "little")}
            pos += 8
        elif wire == _FIXED32:
            if pos + 4 > len(data):
                raise _NotExact("fixed32 cut short")
            value = {"fixed32": int.from_bytes(data[pos:pos + 4], "little")}
            pos += 4
        elif wire == _LEN:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise _NotExact("length-delimited field cut short")
            value = _length_delimited(data[pos:pos + size], depth)
            pos += size
        else:  # groups (3, 4) are deprecated; 6, 7 do not exist
            raise _NotExact(f"wire type {wire}")
        out.append([number, value])
    return out


def decode_message(data: bytes) -> Readable:
    """One protobuf message as a field tree, or ``{"base64": ...}`` when no tree gives
    back these exact bytes. Exact by construction, not by a second pass: every varint
    must be minimal and below 2**64, texts are strict UTF-8, so each part of the tree
    encodes to the bytes it came from (the tests and the fuzz target check it)."""
    try:
        return _fields(data, 0)
    except _NotExact:
        return {"base64": base64.b64encode(data).decode("ascii")}


def _wire_value(number: int, value: Readable, depth: int) -> bytes:
    if isinstance(value, bool):
        raise ValueError(f"field {number}: a boolean is sent as the varint 0 or 1")
    if isinstance(value, int):
        return encode_varint(number << 3 | _VARINT) + encode_varint(value)
    if isinstance(value, str):
        raw = value.encode("utf-8")
    elif isinstance(value, list):
        raw = encode_fields(value, depth + 1)
    elif isinstance(value, dict) and len(value) == 1:
        (kind, v), = value.items()
        if kind == "base64" and isinstance(v, str):
            raw = base64.b64decode(v, validate=True)
        elif kind == "sint" and isinstance(v, int):
            return encode_varint(number << 3 | _VARINT) + encode_varint(v << 1 if v >= 0 else (-v << 1) - 1)
        elif kind in ("fixed32", "float"):
            data = struct.pack("<f", v) if kind == "float" else int(v).to_bytes(4, "little")
            return encode_varint(number << 3 | _FIXED32) + data
        elif kind in ("fixed64", "double"):
            data = struct.pack("<d", v) if kind == "double" else int(v).to_bytes(8, "little")
            return encode_varint(number << 3 | _FIXED64) + data
        else:
            raise ValueError(f"field {number}: unknown value form {kind!r}")
    else:
        raise ValueError(f"field {number}: a value cannot be {type(value).__name__}")
    return encode_varint(number << 3 | _LEN) + encode_varint(len(raw)) + raw


def encode_fields(fields: list[Readable], depth: int = 0) -> bytes:
    """The wire bytes of a field tree (inverse of ``decode_message``'s tree); ValueError
    for anything a recording (untrusted) holds that is not such a tree."""
    if depth > MAX_DEPTH * 2:
        raise ValueError("field tree nested too deeply")
    out = bytearray()
    for entry in fields:
        if not isinstance(entry, list) or len(entry) not in (2, 3) or isinstance(entry[0], bool) \
                or not isinstance(entry[0], int) or not 0 < entry[0] < 1 << 29:
            raise ValueError(f"a field is [number, value] or [number, value, name], not {entry!r:.60}")
        try:
            out += _wire_value(entry[0], entry[1], depth)
        except (OverflowError, TypeError, struct.error) as e:  # a number out of its range
            raise ValueError(f"field {entry[0]}: {e}") from e
    return bytes(out)


# -- the body form ----------------------------------------------------------------------


def body_readable(data: bytes, names: Names | None = None, path: str = "",
                  response: bool = False) -> Readable | None:
    """``{"grpc": [...]}`` for a whole gRPC body, None when it is not one (a cut body)."""
    messages = split_messages(data)
    if messages is None:
        return None
    out: list[Readable] = []
    for compressed, message in messages:
        if compressed:
            out.append({"compressed": base64.b64encode(message).decode("ascii")})
            continue
        tree = decode_message(message)
        if names is not None and isinstance(tree, list):
            tree = names.annotate(tree, names.message_type(path, response))
        elif not isinstance(tree, list) and (text := _text(message)) is not None:
            tree = text
        out.append(tree)
    return {"grpc": out}


def body_bytes(form: Readable) -> bytes:
    """The wire body of a ``{"grpc": [...]}`` form; ValueError when it is not one."""
    messages = form.get("grpc") if isinstance(form, dict) else None
    if not isinstance(messages, list):
        raise ValueError("a gRPC body is {grpc: [message, ...]}")
    out = bytearray()
    for message in messages:
        if isinstance(message, list):
            out += frame(encode_fields(message))
        elif isinstance(message, str):
            out += frame(message.encode("utf-8"))
        elif isinstance(message, dict) and isinstance(message.get("compressed"), str):
            out += frame(base64.b64decode(message["compressed"], validate=True), compressed=True)
        elif isinstance(message, dict) and isinstance(message.get("base64"), str):
            out += frame(base64.b64decode(message["base64"], validate=True))
        else:
            raise ValueError(f"a gRPC message is a field list, a text, {{base64}} or {{compressed}}, "
                             f"not {message!r:.60}")
    return bytes(out)


def strings_of(form: Readable) -> Iterator[Readable]:
    """The decoded values of a gRPC body that the app may have generated (texts and
    numbers), leaving raw bytes out: a base64 payload is not a value to map."""
    stack = [form]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            if "base64" not in item and "compressed" not in item:
                stack.extend(reversed(list(item.values())))
        else:
            yield item


def drop_field_path(message: Readable, steps: list[str | int]) -> Readable:
    """A message without the fields a path reaches (``match.ignore_json_paths`` applied
    to gRPC): each step is a field's name or number, or ``*``; repeated fields all go."""
    if not steps or not isinstance(message, list):
        return message
    step, rest = str(steps[0]), steps[1:]
    out = []
    for entry in message:
        hit = isinstance(entry, list) and len(entry) >= 2 and (
            step == "*" or step == str(entry[0]) or (len(entry) == 3 and entry[2] == step))
        if not hit:
            out.append(entry)
        elif rest:
            out.append([entry[0], drop_field_path(entry[1], rest), *entry[2:]])
    return out


def call_name(path: str) -> str | None:
    """``package.Service/Method`` of a gRPC ``:path`` ``/package.Service/Method``."""
    parts = path.split("?", 1)[0].split("/")
    if len(parts) == 3 and not parts[0] and parts[1] and parts[2]:
        return f"{parts[1]}/{parts[2]}"
    return None


def unavailable_trailers(reason: str) -> list[list[str]]:
    """Headers of a Trailers-Only answer with status UNAVAILABLE (a replay miss); the
    message percent-encoded as PROTOCOL-HTTP2.md asks (printable ASCII but ``%``)."""
    text = "".join(c if " " <= c <= "~" and c != "%" else "".join(f"%{b:02X}" for b in c.encode())
                   for c in reason[:1024])
    return [["content-type", GRPC_CONTENT_TYPE], ["grpc-status", str(UNAVAILABLE)],
            ["grpc-message", text]]


# -- field names from a descriptor set (FileDescriptorSet, itself protobuf) -------------

# descriptor.proto field numbers
_FDS_FILE = 1
_FILE_PACKAGE, _FILE_MESSAGE, _FILE_SERVICE = 2, 4, 6
_MSG_NAME, _MSG_FIELD, _MSG_NESTED = 1, 2, 3
_FIELD_NAME, _FIELD_NUMBER, _FIELD_TYPE, _FIELD_TYPE_NAME = 1, 3, 5, 6
_SVC_NAME, _SVC_METHOD = 1, 2
_METHOD_NAME, _METHOD_INPUT, _METHOD_OUTPUT = 1, 2, 3
_TYPE_MESSAGE = 11
_SIGNED = {17, 18}  # sint32, sint64: zigzag
_FLOAT, _DOUBLE = 2, 1
_INT_TYPES = {3, 5}  # int64, int32: negative values are 10-byte varints


@dataclass
class _Field:
    name: str
    type: int
    type_name: str = ""


@dataclass
class Names:
    """Message and method types from a FileDescriptorSet (``protoc --descriptor_set_out``),
    read with this module's own decoder: no protobuf runtime needed."""

    messages: dict[str, dict[int, _Field]] = field(default_factory=dict)
    methods: dict[str, tuple[str, str]] = field(default_factory=dict)  # "pkg.Svc/M" -> in, out

    @classmethod
    def from_descriptor_set(cls, data: bytes) -> Names:
        tree = decode_message(data)
        if not isinstance(tree, list):
            raise ValueError("not a FileDescriptorSet (protoc --descriptor_set_out)")
        names = cls()
        for number, file in _entries(tree):
            if number != _FDS_FILE or not isinstance(file, list):
                continue
            package = next((v for n, v in _entries(file) if n == _FILE_PACKAGE and isinstance(v, str)), "")
            prefix = f"{package}." if package else ""
            for n, v in _entries(file):
                if n == _FILE_MESSAGE and isinstance(v, list):
                    names._message(prefix, v)
                elif n == _FILE_SERVICE and isinstance(v, list):
                    names._service(prefix, v)
        return names

    def _message(self, prefix: str, tree: list) -> None:
        name = _text_field(tree, _MSG_NAME)
        fields: dict[int, _Field] = {}
        for n, v in _entries(tree):
            if n == _MSG_FIELD and isinstance(v, list):
                number = next((x for k, x in _entries(v) if k == _FIELD_NUMBER and isinstance(x, int)), 0)
                ftype = next((x for k, x in _entries(v) if k == _FIELD_TYPE and isinstance(x, int)), 0)
                fields[number] = _Field(_text_field(v, _FIELD_NAME), ftype,
                                        _text_field(v, _FIELD_TYPE_NAME).lstrip("."))
            elif n == _MSG_NESTED and isinstance(v, list):
                self._message(f"{prefix}{name}.", v)
        self.messages[prefix + name] = fields

    def _service(self, prefix: str, tree: list) -> None:
        service = prefix + _text_field(tree, _SVC_NAME)
        for n, v in _entries(tree):
            if n == _SVC_METHOD and isinstance(v, list):
                self.methods[f"{service}/{_text_field(v, _METHOD_NAME)}"] = (
                    _text_field(v, _METHOD_INPUT).lstrip("."), _text_field(v, _METHOD_OUTPUT).lstrip("."))

    def message_type(self, path: str, response: bool) -> str | None:
        call = call_name(path)
        types = self.methods.get(call) if call else None
        return types[1 if response else 0] if types else None

    def annotate(self, tree: list, type_name: str | None, depth: int = 0) -> list:
        """The tree with field names added and values typed where the schema says how
        (signed, floating point); what the schema does not know stays as decoded."""
        known = self.messages.get(type_name or "")
        if known is None or depth > MAX_DEPTH:
            return tree
        out = []
        for entry in tree:
            number, value = entry[0], entry[1]
            f = known.get(number)
            if f is None:
                out.append(entry)
                continue
            value = _typed(value, f)
            if f.type == _TYPE_MESSAGE and isinstance(value, list):
                value = self.annotate(value, f.type_name, depth + 1)
            elif f.type == _TYPE_MESSAGE and value == "":
                value = []  # an empty message, not an empty string
            out.append([number, value, f.name])
        return out


def _entries(tree: list) -> Iterator[tuple[int, Readable]]:
    for entry in tree:
        yield entry[0], entry[1]


def _text_field(tree: list, number: int) -> str:
    return next((v for n, v in _entries(tree) if n == number and isinstance(v, str)), "")


def _typed(value: Readable, f: _Field) -> Readable:
    """A decoded value in the form its declared type reads best, if that form encodes to
    the same bytes (else as decoded)."""
    if isinstance(value, int) and f.type in _SIGNED:
        return {"sint": (value >> 1) ^ -(value & 1)}
    if isinstance(value, int) and f.type in _INT_TYPES and value >= 1 << 63:
        return value - (1 << 64)
    if isinstance(value, dict) and f.type in (_FLOAT, _DOUBLE):
        kind, size, fmt = ("float", 4, "<f") if f.type == _FLOAT else ("double", 8, "<d")
        raw = value.get("fixed32" if size == 4 else "fixed64")
        if isinstance(raw, int):
            x = struct.unpack(fmt, raw.to_bytes(size, "little"))[0]
            if math.isfinite(x) and struct.pack(fmt, x) == raw.to_bytes(size, "little"):  # NaN: bits
                return {kind: x}
    return value

"""Kafka message schemas as data, and the one generic interpreter that reads and writes them.

A schema is a tuple of ``Field`` built with ``f(...)`` in the notation of Kafka's own
JSON message definitions (``clients/src/main/resources/common/message/*.json``): a
field has a name, a type (``int32``, ``string``, ``[]int32``, ``[]`` for an array of
structs, ``{}`` for a struct, ``records``...), the versions it exists in (``"3+"``,
``"0-2"``), the versions in which it is nullable, and, for tagged fields, a tag and the
versions in which it is tagged. ``compile_struct(fields, version, flexible)`` turns a
schema into a decoder and an encoder for one version, cached.

Readable values (the recording's vocabulary): integers and bools as such, strings as
``str``, UUIDs as their canonical text, ``bytes`` via ``blob`` (text or ``{"hex"}``),
``records`` as the list that ``records.decode_record_set`` gives, structs as dicts keyed
by snake_case field names. Fields absent from a version are absent from the dict;
tagged fields are present only when they were on the wire, so ``decode`` then
``encode`` gives back the same bytes. Tagged fields the schema does not know are kept
under ``_tagged`` as ``[{tag, data}]``.

Invariants: decoding consumes exactly the bytes of the struct, tags strictly ascending;
every failure is a ``DecodeError``/``EncodeError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..base import DecodeError, EncodeError, blob, unblob
from .primitives import Reader, Writer

VersionRange = tuple[int, int]  # inclusive; (1, 0) means "none"
NONE: VersionRange = (1, 0)
MAX_VERSION = 0x7FFF


def versions(spec: str | None) -> VersionRange:
    """``"3+"`` -> (3, max); ``"0-2"`` -> (0, 2); ``"5"`` -> (5, 5); ``"none"``/None -> empty."""
    if spec is None or spec == "none":
        return NONE
    if spec.endswith("+"):
        return (int(spec[:-1]), MAX_VERSION)
    if "-" in spec:
        lo, hi = spec.split("-")
        return (int(lo), int(hi))
    return (int(spec), int(spec))


def within(v: int, r: VersionRange) -> bool:
    return r[0] <= v <= r[1]


def snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


PRIMITIVES = ("int8", "int16", "uint16", "int32", "int64", "float64", "bool", "uuid",
              "string", "bytes", "records")


@dataclass(frozen=True)
class Field:
    name: str  # snake_case, as it appears in the readable form
    type: str  # a primitive, "[]<primitive>", "[]" (array of struct) or "{}" (struct)
    versions: VersionRange
    nullable: VersionRange
    tag: int | None
    tagged: VersionRange
    fields: tuple[Field, ...]
    default: Any
    embedded: str | None  # bytes that hold another schema (the consumer protocol)

    @property
    def item(self) -> str:
        return self.type[2:]


def f(name: str, type_: str, versions_: str = "0+", *, nullable: str | None = None,
      tag: int | None = None, tagged: str | None = None, fields: list[Field] | None = None,
      default: Any = None, embedded: str | None = None) -> Field:
    """One field, spelled as in Kafka's JSON schemas (CamelCase name, version strings)."""
    if tag is not None and tagged is None:
        tagged = versions_
    kind = type_
    if kind.startswith("[]") and kind[2:] and kind[2:] not in PRIMITIVES:
        raise ValueError(f"unknown array item type {kind}")
    if not kind.startswith("[]") and kind != "{}" and kind not in PRIMITIVES:
        raise ValueError(f"unknown type {kind}")
    return Field(snake(name), kind, versions(versions_), versions(nullable), tag,
                 versions(tagged), tuple(fields or ()), default, embedded)


Decoder = Callable[[Reader, Any], Any]
Encoder = Callable[[Writer, Any, Any], None]


class Context:
    """What decoding ``records`` needs beyond the bytes: limits. One per codec."""

    def __init__(self, max_decompressed: int = 64 << 20) -> None:
        self.max_decompressed = max_decompressed


# embedded schemas (``bytes`` fields that carry another message), registered by name
EMBEDDED: dict[str, tuple[tuple[Field, ...], VersionRange]] = {}


def default_of(fld: Field, v: int) -> Any:
    if fld.default is not None:
        return fld.default
    t = fld.type
    if t == "bool":
        return False
    if t in ("string",):
        return None if within(v, fld.nullable) else ""
    if t == "bytes":
        return None if within(v, fld.nullable) else ""
    if t == "records":
        return None
    if t == "uuid":
        return "00000000-0000-0000-0000-000000000000"
    if t == "float64":
        return 0.0
    if t.startswith("[]"):
        return []
    if t == "{}":
        return {}
    return 0


_cache: dict[tuple[int, int, bool], tuple[Decoder, Encoder]] = {}


def compile_struct(fields: tuple[Field, ...], v: int, flex: bool) -> tuple[Decoder, Encoder]:
    key = (id(fields), v, flex)
    hit = _cache.get(key)
    if hit is None:
        hit = _cache[key] = _compile_struct(fields, v, flex)
    return hit


Step = tuple[str, Decoder, Encoder, Field]


def _steps(fields: tuple[Field, ...], v: int, flex: bool) -> tuple[list[Step], dict[int, tuple[str, Decoder, Encoder]]]:
    """A version's fields in wire order, and its tagged fields by tag."""
    steps: list[Step] = []
    tagged: dict[int, tuple[str, Decoder, Encoder]] = {}
    for fld in fields:
        if not within(v, fld.versions):
            continue
        dec, enc = _compile_value(fld, v, flex)
        if flex and fld.tag is not None and within(v, fld.tagged):
            tagged[fld.tag] = (fld.name, dec, enc)
        else:
            steps.append((fld.name, dec, enc, fld))
    return steps, tagged


def decode_cut_short(fields: tuple[Field, ...], v: int, flex: bool, r: Reader, ctx: Any) -> dict | None:
    """A body that ends early, exactly between two of its top-level fields (or before its
    tagged fields): the fields it has, with ``_cut_short: true``; else None.

    Why: some peers answer a version with an older version's shorter body (the librdkafka
    mock broker answers kafkajs' LeaveGroup v3 without its ``members``); the client copes,
    and the recording keeps what was sent, readable, byte for byte."""
    steps, _tagged = _steps(fields, v, flex)
    out: dict = {}
    try:
        for name, dec, _, _ in steps:
            if not r.remaining():
                break
            out[name] = dec(r, ctx)
        else:
            if r.remaining() or not flex:
                return None
    except DecodeError:
        return None
    out["_cut_short"] = True
    return out


def encode_cut_short(fields: tuple[Field, ...], v: int, flex: bool, w: Writer, body: dict, ctx: Any) -> None:
    """``decode_cut_short``'s inverse: the fields present, in order, up to the first absent."""
    for name, _, enc, _ in _steps(fields, v, flex)[0]:
        if name not in body:
            break
        enc(w, body[name], ctx)


def _compile_struct(fields: tuple[Field, ...], v: int, flex: bool) -> tuple[Decoder, Encoder]:
    steps, tagged = _steps(fields, v, flex)
    by_name = {name: tag for tag, (name, _, _) in tagged.items()}

    def decode(r: Reader, ctx: Any) -> dict:
        out = {}
        for name, dec, _, _ in steps:
            out[name] = dec(r, ctx)
        if flex:
            read_tags(r, ctx, tagged, out)
        return out

    def encode(w: Writer, value: Any, ctx: Any) -> None:
        if not isinstance(value, dict):
            raise EncodeError(f"a struct needs a mapping, got {value!r}")
        for name, _, enc, fld in steps:
            item = value.get(name, _MISSING)
            enc(w, default_of(fld, v) if item is _MISSING else item, ctx)
        if flex:
            write_tags(w, value, ctx, tagged, by_name)

    return decode, encode


_MISSING = object()


def read_tags(r: Reader, ctx: Any, tagged: dict, out: dict) -> None:
    count = r.uvarint()
    last = -1
    unknown = []
    for _ in range(count):
        tag = r.uvarint()
        if tag <= last:
            raise DecodeError(f"tagged field {tag} after {last}: tags must ascend")
        last = tag
        size = r.uvarint()
        data = r.take(size)
        known = tagged.get(tag)
        if known is None:
            unknown.append({"tag": tag, "data": blob(data)})
            continue
        name, dec, _ = known
        sub = Reader(data)
        out[name] = dec(sub, ctx)
        if sub.remaining():
            raise DecodeError(f"tagged field {name} has {sub.remaining()} bytes left over")
    if unknown:
        out["_tagged"] = unknown


def write_tags(w: Writer, value: dict, ctx: Any, tagged: dict, by_name: dict) -> None:
    items: list[tuple[int, bytes]] = []
    for name, tag in by_name.items():
        if name in value:
            sub = Writer()
            tagged[tag][2](sub, value[name], ctx)
            items.append((tag, sub.getvalue()))
    for extra in value.get("_tagged", ()):
        try:
            items.append((int(extra["tag"]), unblob(extra["data"])))
        except (KeyError, TypeError, ValueError) as e:
            raise EncodeError(f"bad unknown tagged field {extra!r}") from e
    items.sort(key=lambda t: t[0])
    if len({t for t, _ in items}) != len(items):
        raise EncodeError("two tagged fields with one tag")
    w.uvarint(len(items))
    for tag, data in items:
        w.uvarint(tag)
        w.uvarint(len(data))
        w.raw(data)


def _primitive(t: str, flex: bool, nullable: bool) -> tuple[Decoder, Encoder]:  # noqa: C901
    if t == "int8":
        return (lambda r, c: r.int8()), (lambda w, x, c: w.int8(x))
    if t == "int16":
        return (lambda r, c: r.int16()), (lambda w, x, c: w.int16(x))
    if t == "uint16":
        return (lambda r, c: r.uint16()), (lambda w, x, c: w.uint16(x))
    if t == "int32":
        return (lambda r, c: r.int32()), (lambda w, x, c: w.int32(x))
    if t == "int64":
        return (lambda r, c: r.int64()), (lambda w, x, c: w.int64(x))
    if t == "float64":
        return (lambda r, c: r.float64()), (lambda w, x, c: w.float64(x))
    if t == "bool":
        return (lambda r, c: r.boolean()), (lambda w, x, c: w.boolean(x))
    if t == "uuid":
        return (lambda r, c: r.uuid()), (lambda w, x, c: w.uuid(x))
    if t == "string":
        return ((lambda r, c: r.string(flex, nullable)),
                (lambda w, x, c: w.string(x, flex, nullable)))
    if t == "bytes":
        def dec_bytes(r: Reader, c: Any) -> Any:
            raw = r.bytes_(flex, nullable)
            return None if raw is None else blob(raw)

        def enc_bytes(w: Writer, x: Any, c: Any) -> None:
            w.bytes_(None if x is None else unblob(x), flex, nullable)

        return dec_bytes, enc_bytes
    if t == "records":
        from .records import decode_record_set, encode_record_set

        def dec_records(r: Reader, c: Any) -> Any:
            raw = r.bytes_(flex, nullable)
            return None if raw is None else decode_record_set(raw, c)

        def enc_records(w: Writer, x: Any, c: Any) -> None:
            w.bytes_(None if x is None else encode_record_set(x), flex, nullable)

        return dec_records, enc_records
    raise ValueError(t)


def _compile_value(fld: Field, v: int, flex: bool) -> tuple[Decoder, Encoder]:
    nullable = within(v, fld.nullable)
    t = fld.type
    if t == "{}":
        return compile_struct(fld.fields, v, flex)
    if t.startswith("[]"):
        if t == "[]":
            item_dec, item_enc = compile_struct(fld.fields, v, flex)
        else:
            item_dec, item_enc = _primitive(t[2:], flex, False)

        def dec_array(r: Reader, c: Any) -> Any:
            n = r.array_length(flex, nullable)
            if n == -1:
                return None
            return [item_dec(r, c) for _ in range(n)]

        def enc_array(w: Writer, x: Any, c: Any) -> None:
            if x is not None and not isinstance(x, list):
                raise EncodeError(f"array field {fld.name} needs a list, got {x!r}")
            w.array_length(None if x is None else len(x), flex, nullable)
            for item in x or ():
                item_enc(w, item, c)

        return dec_array, enc_array
    if t == "bytes" and fld.embedded:
        return _embedded(fld.embedded, flex, nullable)
    return _primitive(t, flex, nullable)


def _embedded(name: str, flex: bool, nullable: bool) -> tuple[Decoder, Encoder]:
    """``bytes`` that usually hold another schema: shown decoded when that is exact.

    The embedded message starts with its int16 version (e.g. the consumer protocol's
    subscription). It is shown as ``{name: {...}}`` only when re-encoding gives back the
    very same bytes; anything else stays a blob, so the wire form never changes.
    """
    plain_dec, plain_enc = _primitive("bytes", flex, nullable)

    def dec(r: Reader, c: Any) -> Any:
        raw = r.bytes_(flex, nullable)
        if raw is None:
            return None
        parsed = decode_embedded(name, raw, c)
        return {name: parsed} if parsed is not None else blob(raw)

    def enc(w: Writer, x: Any, c: Any) -> None:
        if isinstance(x, dict) and name in x:
            w.bytes_(encode_embedded(name, x[name], c), flex, nullable)
        else:
            plain_enc(w, x, c)

    return dec, enc


def decode_embedded(name: str, raw: bytes, ctx: Any) -> dict | None:
    fields, vrange = EMBEDDED[name]
    if len(raw) < 2:
        return None
    r = Reader(raw)
    version = r.int16()
    if not within(version, vrange):
        return None
    try:
        body = compile_struct(fields, version, False)[0](r, ctx)
        if r.remaining():
            return None
        parsed = {"version": version, **body}
        if encode_embedded(name, parsed, ctx) != raw:
            return None
    except (DecodeError, EncodeError):
        return None
    return parsed


def encode_embedded(name: str, value: dict, ctx: Any) -> bytes:
    fields, vrange = EMBEDDED[name]
    version = value.get("version")
    if not isinstance(version, int) or not within(version, vrange):
        raise EncodeError(f"{name} version {version!r} not in {vrange}")
    w = Writer()
    w.int16(version)
    body = {k: x for k, x in value.items() if k != "version"}
    compile_struct(fields, version, False)[1](w, body, ctx)
    return w.getvalue()

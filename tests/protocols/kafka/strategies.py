"""Hypothesis strategies generated from the codec's own schema tables.

``body(fields, version, flexible)`` draws a readable dict exactly as the decoder
would produce it for that version: every present non-tagged field, tagged fields
sometimes, unknown tagged fields sometimes; record sets with batches (all codecs,
xerial snappy too), legacy and truncated entries.
"""

from __future__ import annotations

import uuid

from hypothesis import strategies as st

from trproxy.protocols.base import blob
from trproxy.protocols.kafka.records import COMPRESSION
from trproxy.protocols.kafka.schema import EMBEDDED, Field, within

INT_RANGES = {"int8": 7, "int16": 15, "int32": 31, "int64": 63}

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
raw = st.binary(max_size=24)
readable_bytes = raw.map(blob)


def ints(kind: str) -> st.SearchStrategy[int]:
    if kind == "uint16":
        return st.integers(0, 0xFFFF)
    bits = INT_RANGES[kind]
    return st.integers(-(1 << bits), (1 << bits) - 1)


def primitive(kind: str, nullable: bool, embedded: str | None = None) -> st.SearchStrategy:
    if kind in INT_RANGES or kind == "uint16":
        s = ints(kind)
    elif kind == "bool":
        s = st.booleans()
    elif kind == "float64":
        s = st.floats(allow_nan=False)
    elif kind == "uuid":
        s = st.uuids().map(str)
    elif kind == "string":
        s = text
    elif kind == "bytes":
        s = readable_bytes
    elif kind == "records":
        s = record_set()
    else:
        raise ValueError(kind)
    return st.one_of(st.none(), s) if nullable else s


def field_value(fld: Field, v: int, flex: bool) -> st.SearchStrategy:
    nullable = within(v, fld.nullable)
    if fld.type == "{}":
        return body(fld.fields, v, flex)
    if fld.type == "[]":
        s = st.lists(body(fld.fields, v, flex), max_size=2)
    elif fld.type.startswith("[]"):
        s = st.lists(primitive(fld.item, False), max_size=3)
    else:
        return primitive(fld.type, nullable)
    return st.one_of(st.none(), s) if nullable else s


def body(fields: tuple[Field, ...], v: int, flex: bool) -> st.SearchStrategy[dict]:
    required, optional = {}, {}
    for fld in fields:
        if not within(v, fld.versions):
            continue
        if flex and fld.tag is not None and within(v, fld.tagged):
            optional[fld.name] = field_value(fld, v, flex)
        else:
            required[fld.name] = field_value(fld, v, flex)
    if flex:
        known = {f.tag for f in fields if f.tag is not None}
        optional["_tagged"] = st.lists(
            st.fixed_dictionaries({"tag": st.integers(0, 40).filter(lambda t: t not in known),
                                   "data": readable_bytes}),
            min_size=1, max_size=2, unique_by=lambda d: d["tag"],
        ).map(lambda tags: sorted(tags, key=lambda d: d["tag"]))  # decoded in wire order
    return st.fixed_dictionaries(required, optional=optional)


def embedded(name: str) -> st.SearchStrategy[dict]:
    fields, (lo, hi) = EMBEDDED[name]
    return st.integers(lo, hi).flatmap(
        lambda v: body(fields, v, False).map(lambda b: {"version": v, **b}))


def record() -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({
        "timestamp_delta": st.integers(-(1 << 40), 1 << 40),
        "offset_delta": st.integers(0, 1000),
        "key": st.one_of(st.none(), readable_bytes),
        "value": st.one_of(st.none(), readable_bytes),
        "headers": st.lists(st.fixed_dictionaries(
            {"key": readable_bytes, "value": st.one_of(st.none(), readable_bytes)}), max_size=2),
    }, optional={"attributes": st.integers(1, 127)})


@st.composite
def batch(draw) -> dict:
    compression = draw(st.sampled_from(COMPRESSION))
    b = {
        "base_offset": draw(st.integers(0, 1 << 40)),
        "partition_leader_epoch": draw(ints("int32")),
        "compression": compression,
        "timestamp_type": draw(st.sampled_from(["create", "log_append"])),
        "transactional": draw(st.booleans()),
        "control": draw(st.booleans()),
        "last_offset_delta": draw(ints("int32")),
        "base_timestamp": draw(ints("int64")),
        "max_timestamp": draw(ints("int64")),
        "producer_id": draw(ints("int64")),
        "producer_epoch": draw(ints("int16")),
        "base_sequence": draw(ints("int32")),
    }
    if draw(st.booleans()):
        b["attributes_rest"] = draw(st.integers(1, 0x1FF)) << 6
    if compression == "snappy" and draw(st.booleans()):
        b["snappy_framing"] = "xerial"
    b["records"] = draw(st.lists(record(), max_size=3))
    return b


def record_set() -> st.SearchStrategy[list]:
    legacy = st.binary(min_size=5, max_size=20).map(
        lambda p: {"legacy": {"hex": ((0).to_bytes(8, "big") + (len(p) + 5).to_bytes(4, "big")
                                      + b"\x00\x00\x00\x00\x01" + p).hex()}, "magic": 1})
    entries = st.lists(st.one_of(batch(), legacy), max_size=2)
    truncated = st.binary(min_size=1, max_size=11).map(lambda p: [{"truncated": {"hex": p.hex()}}])
    return st.one_of(entries, st.tuples(entries, truncated).map(lambda t: t[0] + t[1]))


_ = uuid  # uuids come from st.uuids

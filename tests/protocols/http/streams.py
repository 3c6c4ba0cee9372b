"""Helpers to drive recorders/replayers with captured streams in different chunkings."""

from __future__ import annotations

from collections.abc import Iterable

import yaml

from trproxy.protocols.base import Direction, Interaction
from trproxy.protocols.http import HttpConfig, HttpRecorder
from trproxy.store.yamlio import dump, load_one

Chunks = list[tuple[str, bytes]]
SIDE = {"client": Direction.CLIENT, "server": Direction.SERVER}


def record(chunks: Iterable[tuple[str, bytes]], config: HttpConfig | None = None,
           **kw) -> list[Interaction]:
    recorder = HttpRecorder(config, **kw)
    out: list[Interaction] = []
    for side, data in chunks:
        out.extend(recorder.feed(SIDE[side], data))
    return out


def as_data(interactions: list[Interaction]) -> list[dict]:
    return [{"request": i.request, "responses": i.responses, "lifetime": i.lifetime,
             "summary": i.summary} for i in interactions]


def bytewise(chunks: Chunks) -> Chunks:
    out: Chunks = []
    for side, data in chunks:
        if not data:
            out.append((side, data))
        out.extend((side, data[i:i + 1]) for i in range(len(data)))
    return out


def split_at(chunks: Chunks, offsets: Iterable[int]) -> Chunks:
    """Cut the wire sequence at the given byte offsets (counted over all chunks)."""
    cuts = sorted(set(offsets))
    out: Chunks = []
    pos = 0
    ci = 0
    for side, data in chunks:
        if not data:
            out.append((side, data))
            continue
        start = 0
        while ci < len(cuts) and cuts[ci] < pos + len(data):
            cut = cuts[ci] - pos
            if cut > start:
                out.append((side, data[start:cut]))
                start = cut
            ci += 1
        out.append((side, data[start:]))
        pos += len(data)
    return out


def total(chunks: Chunks) -> int:
    return sum(len(d) for _, d in chunks)


def client_bytes(chunks: Chunks) -> bytes:
    return b"".join(d for s, d in chunks if s == "client")


def yaml_roundtrip(value):
    """Through PyYAML's safe dumper and through the store's own writer; both must agree."""
    plain = yaml.safe_load(yaml.safe_dump(value, allow_unicode=True, sort_keys=False))
    store = load_one(dump(value))
    assert plain == store
    return store


def headers(message: dict, name: str) -> list:
    return [v for n, v in message["headers"] if n.lower() == name.lower()]

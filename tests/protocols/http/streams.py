"""Helpers to drive the recorder with captured streams (cut them with ``tests.support.chunking``)."""

from __future__ import annotations

from collections.abc import Iterable

import yaml

from trproxy.protocols.base import Direction, Interaction
from trproxy.protocols.http import HttpConfig, HttpRecorder
from trproxy.store.yamlio import dump, load_one

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


def yaml_roundtrip(value):
    """Through PyYAML's safe dumper and through the store's own writer; both must agree."""
    plain = yaml.safe_load(yaml.safe_dump(value, allow_unicode=True, sort_keys=False))
    store = load_one(dump(value))
    assert plain == store
    return store


def headers(message: dict, name: str) -> list:
    return [v for n, v in message["headers"] if n.lower() == name.lower()]

"""Fetch and Produce, one partition at a time: split recorded requests, reassemble replies.

Which partitions a client puts in one Fetch or Produce depends on timing: librdkafka
adds each partition to a Fetch as soon as its start offset is known and rotates their
order; producers send whichever partitions' batches are ready (``linger.ms``). The same
run of an app is therefore grouped differently from one run to the next. So these
requests are recorded as one interaction per (topic, partition) — each still a Fetch or
Produce in the readable form, with that one partition in its request and in its
response — and a live request becomes one lookup per partition, whose answers are put
back together into one response (``Assembly``). A request that names no partition (an
incremental Fetch with nothing changed, KIP-227) stays whole.

Top-level fields of a response (throttle, error code, session id) are taken from the
first part. Partitions a response carries that its request did not name (an incremental
fetch session may return any partition of the session) go with the first part, so
nothing recorded is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .codec import KafkaResponse


@dataclass(frozen=True)
class Layout:
    """Where an API keeps its topics and partitions (field names of its schema)."""

    request_topics: str
    request_partitions: str
    request_partition: str
    response_topics: str
    response_partitions: str
    response_partition: str
    forgotten: str | None = None  # said once, with the first part


LAYOUTS = {
    "Fetch": Layout("topics", "partitions", "partition", "responses", "partitions",
                    "partition_index", forgotten="forgotten_topics_data"),
    "Produce": Layout("topic_data", "partition_data", "index", "responses",
                      "partition_responses", "index"),
}


def _topic_key(t: dict) -> Any:
    for name in ("topic", "name", "topic_id"):
        if name in t:
            return (name, t[name])
    return None


def split_request(layout: Layout, body: dict) -> list[dict]:
    """One request body per partition (same top-level fields); ``[body]`` when none."""
    parts = []
    for t in body.get(layout.request_topics) or []:
        topic = {k: v for k, v in t.items() if k != layout.request_partitions}
        for p in t.get(layout.request_partitions) or []:
            parts.append({**body, layout.request_topics: [
                {**topic, layout.request_partitions: [p]}]})
    if layout.forgotten and layout.forgotten in body:
        for part in parts[1:]:
            part[layout.forgotten] = []
    return parts or [body]


def _partition_of(layout: Layout, part: dict) -> tuple[Any, Any] | None:
    topics = part.get(layout.request_topics) or []
    if not topics:
        return None
    t = topics[0]
    partitions = t.get(layout.request_partitions) or []
    if not partitions:  # topics that name no partition: the request stays whole
        return None
    return _topic_key(t), partitions[0].get(layout.request_partition)


def split_response(layout: Layout, request_parts: list[dict], body: dict) -> list[dict]:
    """The response body for each request part, in the same order."""
    wanted = [_partition_of(layout, p) for p in request_parts]
    if wanted == [None]:
        return [body]
    top = {k: v for k, v in body.items() if k != layout.response_topics}
    found: dict[Any, tuple[dict, dict]] = {}
    extra: list[dict] = []
    for t in body.get(layout.response_topics) or []:
        topic = {k: v for k, v in t.items() if k != layout.response_partitions}
        for p in t.get(layout.response_partitions) or []:
            here = (_topic_key(t), p.get(layout.response_partition))
            if here in wanted and here not in found:
                found[here] = (topic, p)
            else:
                extra.append({**topic, layout.response_partitions: [p]})
    out = []
    for i, key in enumerate(wanted):
        topics = []
        if key in found:
            topic, p = found[key]
            topics.append({**topic, layout.response_partitions: [p]})
        if i == 0:
            topics += extra
        out.append({**top, layout.response_topics: topics})
    return out


class Assembly:
    """Collects the answers to one live request's per-partition lookups, in order."""

    def __init__(self, layout: Layout, correlation_id: int, api_key: int, version: int,
                 parts: int) -> None:
        self.layout = layout
        self.correlation_id = correlation_id
        self.api_key = api_key
        self.version = version
        self.parts: list[dict | None] = [None] * parts
        self.answered = [False] * parts
        self.repeats = 0  # parts answered with a repeated recording (see KafkaReplayer)

    def add(self, index: int, body: dict | None) -> KafkaResponse | None:
        """Record one part's response body (None: recorded without response); returns
        the whole response once every part is in, None before (or if none answered)."""
        self.parts[index] = body
        self.answered[index] = True
        if not all(self.answered):
            return None
        bodies = [b for b in self.parts if b is not None]
        if not bodies:
            return None  # the recording had no answer either (acks=0, a cut long poll)
        lay = self.layout
        merged = {k: v for k, v in bodies[0].items() if k != lay.response_topics}
        topics: dict[Any, dict] = {}
        for b in bodies:
            for t in b.get(lay.response_topics) or []:
                entry = topics.setdefault(_topic_key(t), {**t, lay.response_partitions: []})
                entry[lay.response_partitions] = \
                    entry[lay.response_partitions] + list(t.get(lay.response_partitions) or [])
        merged[lay.response_topics] = list(topics.values())
        return KafkaResponse(self.api_key, self.version, self.correlation_id, merged)

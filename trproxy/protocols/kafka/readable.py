"""The readable (recorded) form of Kafka requests and responses, and the replay match key.

Request:  ``{api: Produce, version: 9, correlation_id: 47, client_id: ..., body: {...}}``
Response: ``{api: Produce, version: 9, correlation_id: 47, body: {...}}``

``body`` is the schema-decoded dict (snake_case fields, see ``schema``), or
``{hex: ...}`` for APIs/versions the codec does not know. ``header_tagged`` appears only
when a header carried tagged fields. Secrets never reach this form: SaslAuthenticate
auth bytes become ``"<redacted>"`` (DESIGN.md: secrets are redacted at record time).

``match_key`` is what replay compares: api, version and a normalized body. Run-specific
values are dropped or folded: correlation ids, client ids (they may carry pids),
Produce batch metadata (timestamps, CRCs, producer ids/epochs, sequences — only topic,
partition, key, value and headers of each record count), Fetch wait/size/session
fields (only topics, partitions and offsets count), and consumer-group member ids and
generation ids (a live client sends back whatever member id replay handed it).
"""

from __future__ import annotations

from typing import Any

from ..base import EncodeError, Readable
from .codec import KafkaRequest, KafkaResponse, api_key_of, is_opaque_body, schema_for
from .volatile import json_value

REDACTED = "<redacted>"
MEMBER = "<member-id>"
GENERATION = "<generation>"
GROUP_APIS = {"JoinGroup", "SyncGroup", "Heartbeat", "LeaveGroup", "OffsetCommit", "OffsetFetch"}


def request_to_readable(m: KafkaRequest) -> dict:
    out: dict[str, Any] = {"api": m.api, "version": m.api_version,
                           "correlation_id": m.correlation_id, "client_id": m.client_id,
                           "body": _redact(m.api, m.body, request=True)}
    if m.header_tagged:
        out["header_tagged"] = m.header_tagged
    return out


def response_to_readable(m: KafkaResponse) -> dict:
    out: dict[str, Any] = {"api": m.api, "version": m.api_version,
                           "correlation_id": m.correlation_id,
                           "body": _redact(m.api, m.body, request=False)}
    if m.header_tagged:
        out["header_tagged"] = m.header_tagged
    return out


def readable_to_request(d: Readable) -> KafkaRequest:
    key, version = _key_version(d)
    return KafkaRequest(key, version, int(d.get("correlation_id", 0)), d.get("client_id"),
                        d.get("body"), d.get("header_tagged"),
                        opaque=schema_for(key, version) is None or is_opaque_body(d.get("body")))


def readable_to_response(d: Readable, correlation_id: int | None = None) -> KafkaResponse:
    key, version = _key_version(d)
    cid = int(d.get("correlation_id", 0)) if correlation_id is None else correlation_id
    return KafkaResponse(key, version, cid, d.get("body"), d.get("header_tagged"),
                         opaque=schema_for(key, version) is None or is_opaque_body(d.get("body")))


def _key_version(d: Readable) -> tuple[int, int]:
    if not isinstance(d, dict) or "api" not in d or "version" not in d:
        raise EncodeError(f"not a readable Kafka message: {d!r}")
    return api_key_of(d["api"]), int(d["version"])


def _redact(api: str, body: Any, request: bool) -> Any:
    if api == "SaslAuthenticate" and isinstance(body, dict) and body.get("auth_bytes"):
        return {**body, "auth_bytes": REDACTED}
    return body


# -- match keys ---------------------------------------------------------------------------

def match_key(request: Readable) -> Readable:
    """The normalized form of a readable request that replay compares for equality.

    A recording is untrusted input: a recorded body whose parts have not the shape of a
    decoded one (a list where a topic goes, a number for a partition list) makes its
    normalizer fail, and is then compared as it is; no live request, decoded by the
    schema, has such a body."""
    if not isinstance(request, dict):
        return request
    api = request.get("api")
    body = request.get("body")
    normalize = _NORMALIZERS.get(api) if isinstance(api, str) else None
    if normalize is not None and isinstance(body, dict) and not is_opaque_body(body):
        try:
            body = normalize(body)
        except (AttributeError, TypeError, ValueError):
            pass
    elif isinstance(api, str) and api in GROUP_APIS and isinstance(body, dict):
        body = _fold_group_ids(body)
    return {"api": api, "version": request.get("version"), "body": body}


def _records_key(entries: Any) -> Any:
    """Only what the producer chose: key, value, headers — across batch boundaries; JSON
    keys and values as data (their object keys in any order)."""
    if not isinstance(entries, list):
        return entries
    out: list = []
    for entry in entries:
        if isinstance(entry, dict) and "records" in entry:
            out += [{"key": json_value(r.get("key")), "value": json_value(r.get("value")),
                     "headers": r.get("headers", [])} for r in entry["records"]]
        else:
            out.append(entry)  # legacy / truncated entries compare as bytes
    return out


def _by(key: str) -> Any:
    """Sort key for lists of topics/partitions: clients build them from hash-ordered sets
    (aiokafka's ListOffsets, librdkafka's rotating Fetch), so their order means nothing."""
    return lambda item: str(item.get(key)).zfill(12) if isinstance(item, dict) else str(item)


def _produce(body: dict) -> dict:
    return {
        "transactional_id": body.get("transactional_id"),
        "acks": body.get("acks"),
        "topics": sorted(({"name": t.get("name"), "partitions": sorted((
            {"index": p.get("index"), "records": _records_key(p.get("records"))}
            for p in t.get("partition_data", [])), key=_by("index"))}
            for t in body.get("topic_data", [])), key=_by("name")),
    }


def _topic_ref(t: dict) -> Any:
    return t.get("topic") if "topic" in t else t.get("topic_id")


def _fetch(body: dict) -> dict:
    # a Fetch asks for a set of (topic, partition, offset): librdkafka rotates the order
    # of partitions from one request to the next for fairness, so the key is sorted
    topics = [{"topic": _topic_ref(t), "partitions": sorted(
        ({"partition": p.get("partition"), "fetch_offset": p.get("fetch_offset")}
         for p in t.get("partitions", [])), key=_by("partition"))}
        for t in body.get("topics", [])]
    forgotten = [{"topic": _topic_ref(t), "partitions": sorted(t.get("partitions") or [])}
                 for t in body.get("forgotten_topics_data", [])]
    return {
        "isolation_level": body.get("isolation_level", 0),
        "topics": sorted(topics, key=lambda t: str(t["topic"])),
        "forgotten": sorted(forgotten, key=lambda t: str(t["topic"])),
    }


def _list_offsets(body: dict) -> dict:
    return {
        "isolation_level": body.get("isolation_level", 0),
        "topics": sorted(({"name": t.get("name"), "partitions": sorted((
            {"partition_index": p.get("partition_index"), "timestamp": p.get("timestamp")}
            for p in t.get("partitions", [])), key=_by("partition_index"))}
            for t in body.get("topics", [])), key=_by("name")),
    }


def _metadata(body: dict) -> dict:
    """Which topics are asked about, nothing else: the same client asks for the same
    topics with ``allow_auto_topic_creation`` on (as producer) or off (as consumer), and
    whether it asks again at all depends on its cache timing, so any recorded answer
    about these topics will do (Metadata is a session exchange)."""
    topics = body.get("topics")
    if isinstance(topics, list):  # clients list topics in hash order: order is not meaning
        topics = sorted(({k: v for k, v in t.items() if k != "_tagged"} for t in topics),
                        key=lambda t: (str(t.get("name")), str(t.get("topic_id"))))
    return {"topics": topics}


def _api_versions(body: dict) -> dict:
    return {}  # client software name/version: the same client asks the same thing


def _offset_commit(body: dict) -> dict:
    body = {k: v for k, v in body.items() if k != "retention_time_ms"}
    body["topics"] = sorted(({"name": t.get("name"), "partitions": sorted((
        {k: v for k, v in p.items() if k not in ("commit_timestamp", "committed_leader_epoch")}
        for p in t.get("partitions", [])), key=_by("partition_index"))}
        for t in body.get("topics", [])), key=_by("name"))
    return _fold_group_ids(body)


def _sorted_topics(topics: Any) -> Any:
    if not isinstance(topics, list):
        return topics
    return sorted(({**t, "partition_indexes": sorted(t.get("partition_indexes") or [])}
                   for t in topics), key=_by("name"))


def _offset_fetch(body: dict) -> dict:
    body = dict(body)
    if "topics" in body:
        body["topics"] = _sorted_topics(body["topics"])
    if "groups" in body:
        body["groups"] = [{**g, "topics": _sorted_topics(g.get("topics"))}
                          for g in body["groups"]]
    return _fold_group_ids(body)


def _push_telemetry(body: dict) -> dict:
    return {"terminating": body.get("terminating")}  # metrics are measurements


_NORMALIZERS = {
    "PushTelemetry": _push_telemetry,
    "Produce": _produce, "Fetch": _fetch, "ListOffsets": _list_offsets, "Metadata": _metadata,
    "ApiVersions": _api_versions, "OffsetCommit": _offset_commit, "OffsetFetch": _offset_fetch,
}


def _fold_group_ids(value: Any) -> Any:
    """Member ids and generations -> placeholders; ``reason`` (free text) dropped."""
    if isinstance(value, list):
        return [_fold_group_ids(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for k, v in value.items():
        if k == "reason":
            continue
        if k == "member_id" and isinstance(v, str) and v:
            out[k] = MEMBER
        elif k in ("generation_id", "generation_id_or_member_epoch", "member_epoch") \
                and isinstance(v, int) and v >= 0:
            out[k] = GENERATION
        else:
            out[k] = _fold_group_ids(v)
    return out

"""Protocol-native answers for replay misses: the response of the same API and version,
carrying ``UNKNOWN_SERVER_ERROR`` (-1) where the request named topics, partitions,
groups or coordinator keys, so the client's normal error handling (retry, back off,
log) runs. Fields not set here take their schema defaults when encoded.

Exceptions, on purpose:

* ApiVersions is a handshake (DESIGN.md: synthesized on replay): a miss answers with
  success and the version ranges this codec knows, so the client can go on.
* APIs/versions the codec does not know get no answer at all (``None``): there is no
  schema to build an error response with; the proxy sends nothing.
"""

from __future__ import annotations

from typing import Any

from .apis import APIS
from .codec import KafkaRequest, KafkaResponse

UNKNOWN_SERVER_ERROR = -1


def miss_response(req: KafkaRequest, reason: str) -> KafkaResponse | None:
    if req.opaque or not isinstance(req.body, dict):
        return None
    build = _BUILDERS.get(req.api)
    if build is None:
        return None
    body = build(req.body, req.api_version, reason[:500])
    return KafkaResponse(req.api_key, req.api_version, req.correlation_id, body)


E = UNKNOWN_SERVER_ERROR


def _produce(b: dict, v: int, why: str) -> dict:
    return {"responses": [{"name": t.get("name", ""), "partition_responses": [
        {"index": p.get("index", 0), "error_code": E, "base_offset": -1, "error_message": why}
        for p in t.get("partition_data", [])]} for t in b.get("topic_data", [])]}


def _fetch(b: dict, v: int, why: str) -> dict:
    topics = []
    for t in b.get("topics", []):
        name = {"topic": t["topic"]} if "topic" in t else {"topic_id": t.get("topic_id")}
        topics.append({**name, "partitions": [
            {"partition_index": p.get("partition", 0), "error_code": E, "high_watermark": -1,
             "records": []} for p in t.get("partitions", [])]})  # empty, not null: librdkafka refuses null
    # an incremental fetch may list no partitions: then only the top-level code can say it
    return {"error_code": 0 if topics else E, "responses": topics}


def _list_offsets(b: dict, v: int, why: str) -> dict:
    return {"topics": [{"name": t.get("name", ""), "partitions": [
        {"partition_index": p.get("partition_index", 0), "error_code": E}
        for p in t.get("partitions", [])]} for t in b.get("topics", [])]}


def _metadata(b: dict, v: int, why: str) -> dict:
    # no brokers: the client cannot connect anywhere and asks again; v13+ has a top code
    return {"error_code": E, "brokers": [], "topics": [
        {"error_code": E, "name": t.get("name"), "partitions": []}
        for t in (b.get("topics") or [])]}


def _offset_commit(b: dict, v: int, why: str) -> dict:
    return {"topics": [{"name": t.get("name", ""), "partitions": [
        {"partition_index": p.get("partition_index", 0), "error_code": E}
        for p in t.get("partitions", [])]} for t in b.get("topics", [])]}


def _offset_fetch_topics(topics: Any) -> list:
    return [{"name": t.get("name", ""), "partitions": [
        {"partition_index": i, "committed_offset": -1, "metadata": None, "error_code": E}
        for i in t.get("partition_indexes", [])]} for t in (topics or [])]


def _offset_fetch(b: dict, v: int, why: str) -> dict:
    if v >= 8:
        return {"groups": [{"group_id": g.get("group_id", ""), "error_code": E,
                            "topics": _offset_fetch_topics(g.get("topics"))}
                           for g in b.get("groups", [])]}
    return {"topics": _offset_fetch_topics(b.get("topics")), "error_code": E}


def _find_coordinator(b: dict, v: int, why: str) -> dict:
    if v >= 4:
        return {"coordinators": [{"key": k, "node_id": -1, "host": "", "port": -1,
                                  "error_code": E, "error_message": why}
                                 for k in b.get("coordinator_keys", [])]}
    return {"error_code": E, "error_message": why, "node_id": -1, "host": "", "port": -1}


def _join_group(b: dict, v: int, why: str) -> dict:
    return {"error_code": E, "generation_id": -1, "protocol_name": None if v >= 7 else "",
            "leader": "", "member_id": b.get("member_id", ""), "members": []}


def _error_only(b: dict, v: int, why: str) -> dict:
    return {"error_code": E}


def _leave_group(b: dict, v: int, why: str) -> dict:
    return {"error_code": E, "members": [
        {"member_id": m.get("member_id", ""), "group_instance_id": m.get("group_instance_id"),
         "error_code": E} for m in b.get("members", [])]}


def _sync_group(b: dict, v: int, why: str) -> dict:
    return {"error_code": E, "assignment": ""}


def _api_versions(b: dict, v: int, why: str) -> dict:
    return {"error_code": 0, "api_keys": [
        {"api_key": a.key, "min_version": a.versions[0], "max_version": a.versions[1]}
        for a in sorted(APIS.values(), key=lambda a: a.key)]}


def _create_topics(b: dict, v: int, why: str) -> dict:
    return {"topics": [{"name": t.get("name", ""), "error_code": E, "error_message": why}
                       for t in b.get("topics", [])]}


def _init_producer_id(b: dict, v: int, why: str) -> dict:
    return {"error_code": E, "producer_id": -1, "producer_epoch": -1}


def _sasl_authenticate(b: dict, v: int, why: str) -> dict:
    return {"error_code": E, "error_message": why, "auth_bytes": ""}


def _sasl_handshake(b: dict, v: int, why: str) -> dict:
    return {"error_code": E, "mechanisms": []}


def _telemetry(b: dict, v: int, why: str) -> dict:
    return {"error_code": E, "client_instance_id": b.get("client_instance_id")}


_BUILDERS = {
    "GetTelemetrySubscriptions": _telemetry, "PushTelemetry": _error_only,
    "Produce": _produce, "Fetch": _fetch, "ListOffsets": _list_offsets, "Metadata": _metadata,
    "OffsetCommit": _offset_commit, "OffsetFetch": _offset_fetch,
    "FindCoordinator": _find_coordinator, "JoinGroup": _join_group, "Heartbeat": _error_only,
    "LeaveGroup": _leave_group, "SyncGroup": _sync_group, "ApiVersions": _api_versions,
    "CreateTopics": _create_topics, "InitProducerId": _init_producer_id,
    "SaslAuthenticate": _sasl_authenticate, "SaslHandshake": _sasl_handshake,
}

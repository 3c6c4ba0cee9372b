"""Protocol-native answers for replay misses (and injected faults, with their own code): the response of the same API and version,
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


# error names of the Kafka protocol (``Errors`` in the spec) that fault injection takes
ERROR_CODES = {
    "UNKNOWN_SERVER_ERROR": -1, "OFFSET_OUT_OF_RANGE": 1, "UNKNOWN_TOPIC_OR_PARTITION": 3,
    "LEADER_NOT_AVAILABLE": 5, "NOT_LEADER_OR_FOLLOWER": 6, "REQUEST_TIMED_OUT": 7,
    "BROKER_NOT_AVAILABLE": 8, "REPLICA_NOT_AVAILABLE": 9, "MESSAGE_TOO_LARGE": 10,
    "NETWORK_EXCEPTION": 13, "COORDINATOR_LOAD_IN_PROGRESS": 14,
    "COORDINATOR_NOT_AVAILABLE": 15, "NOT_COORDINATOR": 16, "NOT_ENOUGH_REPLICAS": 19,
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND": 20, "ILLEGAL_GENERATION": 22, "UNKNOWN_MEMBER_ID": 25,
    "REBALANCE_IN_PROGRESS": 27, "TOPIC_AUTHORIZATION_FAILED": 29,
    "GROUP_AUTHORIZATION_FAILED": 30, "KAFKA_STORAGE_ERROR": 56,
}


def error_code(error: str) -> int:
    """A Kafka error code from its name (``NOT_LEADER_OR_FOLLOWER``) or number (``6``)."""
    name = error.strip().upper()
    if name in ERROR_CODES:
        return ERROR_CODES[name]
    try:
        code = int(name)
    except ValueError:
        raise ValueError(f"unknown Kafka error {error!r} (a number, or one of "
                         f"{', '.join(sorted(ERROR_CODES))})") from None
    if not -1 <= code <= 32767 or code == 0:
        raise ValueError(f"a Kafka error code is -1 or 1..32767, not {code}")
    return code


def miss_response(req: KafkaRequest, reason: str,
                  code: int = UNKNOWN_SERVER_ERROR) -> KafkaResponse | None:
    """The API's response carrying ``code`` wherever it has an error code."""
    if req.opaque or not isinstance(req.body, dict):
        return None
    build = _BUILDERS.get(req.api)
    if build is None:
        return None
    body = build(req.body, req.api_version, reason[:500], code)
    return KafkaResponse(req.api_key, req.api_version, req.correlation_id, body)


def _produce(b: dict, v: int, why: str, code: int) -> dict:
    return {"responses": [{"name": t.get("name", ""), "partition_responses": [
        {"index": p.get("index", 0), "error_code": code, "base_offset": -1, "error_message": why}
        for p in t.get("partition_data", [])]} for t in b.get("topic_data", [])]}


def _fetch(b: dict, v: int, why: str, code: int) -> dict:
    topics = []
    for t in b.get("topics", []):
        name = {"topic": t["topic"]} if "topic" in t else {"topic_id": t.get("topic_id")}
        topics.append({**name, "partitions": [
            {"partition_index": p.get("partition", 0), "error_code": code, "high_watermark": -1,
             "records": []} for p in t.get("partitions", [])]})  # empty, not null: librdkafka refuses null
    # an incremental fetch may list no partitions: then only the top-level code can say it
    return {"error_code": 0 if topics else code, "responses": topics}


def _list_offsets(b: dict, v: int, why: str, code: int) -> dict:
    return {"topics": [{"name": t.get("name", ""), "partitions": [
        {"partition_index": p.get("partition_index", 0), "error_code": code}
        for p in t.get("partitions", [])]} for t in b.get("topics", [])]}


def _metadata(b: dict, v: int, why: str, code: int) -> dict:
    # no brokers: the client cannot connect anywhere and asks again; v13+ has a top code
    return {"error_code": code, "brokers": [], "topics": [
        {"error_code": code, "name": t.get("name"), "partitions": []}
        for t in (b.get("topics") or [])]}


def _offset_commit(b: dict, v: int, why: str, code: int) -> dict:
    return {"topics": [{"name": t.get("name", ""), "partitions": [
        {"partition_index": p.get("partition_index", 0), "error_code": code}
        for p in t.get("partitions", [])]} for t in b.get("topics", [])]}


def _offset_fetch_topics(topics: Any, code: int) -> list:
    return [{"name": t.get("name", ""), "partitions": [
        {"partition_index": i, "committed_offset": -1, "metadata": None, "error_code": code}
        for i in t.get("partition_indexes", [])]} for t in (topics or [])]


def _offset_fetch(b: dict, v: int, why: str, code: int) -> dict:
    if v >= 8:
        return {"groups": [{"group_id": g.get("group_id", ""), "error_code": code,
                            "topics": _offset_fetch_topics(g.get("topics"), code)}
                           for g in b.get("groups", [])]}
    return {"topics": _offset_fetch_topics(b.get("topics"), code), "error_code": code}


def _find_coordinator(b: dict, v: int, why: str, code: int) -> dict:
    if v >= 4:
        return {"coordinators": [{"key": k, "node_id": -1, "host": "", "port": -1,
                                  "error_code": code, "error_message": why}
                                 for k in b.get("coordinator_keys", [])]}
    return {"error_code": code, "error_message": why, "node_id": -1, "host": "", "port": -1}


def _join_group(b: dict, v: int, why: str, code: int) -> dict:
    return {"error_code": code, "generation_id": -1, "protocol_name": None if v >= 7 else "",
            "leader": "", "member_id": b.get("member_id", ""), "members": []}


def _error_only(b: dict, v: int, why: str, code: int) -> dict:
    return {"error_code": code}


def _leave_group(b: dict, v: int, why: str, code: int) -> dict:
    return {"error_code": code, "members": [
        {"member_id": m.get("member_id", ""), "group_instance_id": m.get("group_instance_id"),
         "error_code": code} for m in b.get("members", [])]}


def _sync_group(b: dict, v: int, why: str, code: int) -> dict:
    return {"error_code": code, "assignment": ""}


def _api_versions(b: dict, v: int, why: str, code: int) -> dict:
    return {"error_code": 0, "api_keys": [
        {"api_key": a.key, "min_version": a.versions[0], "max_version": a.versions[1]}
        for a in sorted(APIS.values(), key=lambda a: a.key)]}


def _create_topics(b: dict, v: int, why: str, code: int) -> dict:
    return {"topics": [{"name": t.get("name", ""), "error_code": code, "error_message": why}
                       for t in b.get("topics", [])]}


def _init_producer_id(b: dict, v: int, why: str, code: int) -> dict:
    return {"error_code": code, "producer_id": -1, "producer_epoch": -1}


def _sasl_authenticate(b: dict, v: int, why: str, code: int) -> dict:
    return {"error_code": code, "error_message": why, "auth_bytes": ""}


def _sasl_handshake(b: dict, v: int, why: str, code: int) -> dict:
    return {"error_code": code, "mechanisms": []}


def _telemetry(b: dict, v: int, why: str, code: int) -> dict:
    return {"error_code": code, "client_instance_id": b.get("client_instance_id")}


_BUILDERS = {
    "GetTelemetrySubscriptions": _telemetry, "PushTelemetry": _error_only,
    "Produce": _produce, "Fetch": _fetch, "ListOffsets": _list_offsets, "Metadata": _metadata,
    "OffsetCommit": _offset_commit, "OffsetFetch": _offset_fetch,
    "FindCoordinator": _find_coordinator, "JoinGroup": _join_group, "Heartbeat": _error_only,
    "LeaveGroup": _leave_group, "SyncGroup": _sync_group, "ApiVersions": _api_versions,
    "CreateTopics": _create_topics, "InitProducerId": _init_producer_id,
    "SaslAuthenticate": _sasl_authenticate, "SaslHandshake": _sasl_handshake,
}

"""The Kafka APIs this codec decodes, as schema tables after Kafka's JSON definitions.

Each ``Api`` names its key, the request/response versions we know and from which
version on it is "flexible" (compact strings/arrays and tagged fields, KIP-482). The
field lists follow ``clients/src/main/resources/common/message/<Name>Request.json`` and
``<Name>Response.json`` of apache/kafka (names in CamelCase as there; readable form uses
snake_case). Versions beyond ``versions`` are treated as opaque bytes by the codec, which
is safe: such a request is recorded and replayed as hex.

Covered: the APIs aiokafka and librdkafka (confluent-kafka) use for producing, consuming
with consumer groups and creating topics, plus the SASL handshake and the consumer
protocol's subscription/assignment (``bytes`` inside JoinGroup/SyncGroup).
"""

from __future__ import annotations

from dataclasses import dataclass

from .schema import EMBEDDED, Field, VersionRange, f, versions

# Kafka's api keys, for readable names even of APIs whose bodies we keep as hex
# (https://kafka.apache.org/protocol#protocol_api_keys).
API_NAMES = {
    0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 4: "LeaderAndIsr",
    5: "StopReplica", 6: "UpdateMetadata", 7: "ControlledShutdown", 8: "OffsetCommit",
    9: "OffsetFetch", 10: "FindCoordinator", 11: "JoinGroup", 12: "Heartbeat",
    13: "LeaveGroup", 14: "SyncGroup", 15: "DescribeGroups", 16: "ListGroups",
    17: "SaslHandshake", 18: "ApiVersions", 19: "CreateTopics", 20: "DeleteTopics",
    21: "DeleteRecords", 22: "InitProducerId", 23: "OffsetForLeaderEpoch",
    24: "AddPartitionsToTxn", 25: "AddOffsetsToTxn", 26: "EndTxn", 27: "WriteTxnMarkers",
    28: "TxnOffsetCommit", 29: "DescribeAcls", 30: "CreateAcls", 31: "DeleteAcls",
    32: "DescribeConfigs", 33: "AlterConfigs", 34: "AlterReplicaLogDirs",
    35: "DescribeLogDirs", 36: "SaslAuthenticate", 37: "CreatePartitions",
    38: "CreateDelegationToken", 39: "RenewDelegationToken", 40: "ExpireDelegationToken",
    41: "DescribeDelegationToken", 42: "DeleteGroups", 43: "ElectLeaders",
    44: "IncrementalAlterConfigs", 45: "AlterPartitionReassignments",
    46: "ListPartitionReassignments", 47: "OffsetDelete", 48: "DescribeClientQuotas",
    49: "AlterClientQuotas", 50: "DescribeUserScramCredentials",
    51: "AlterUserScramCredentials", 55: "DescribeQuorum", 57: "UpdateFeatures",
    60: "DescribeCluster", 61: "DescribeProducers", 64: "UnregisterBroker",
    65: "DescribeTransactions", 66: "ListTransactions", 68: "ConsumerGroupHeartbeat",
    69: "ConsumerGroupDescribe", 71: "GetTelemetrySubscriptions", 72: "PushTelemetry",
    74: "ListClientMetricsResources", 75: "DescribeTopicPartitions",
}
API_KEYS = {name: key for key, name in API_NAMES.items()}


@dataclass(frozen=True)
class Api:
    key: int
    name: str
    versions: VersionRange
    flexible: VersionRange
    request: tuple[Field, ...]
    response: tuple[Field, ...]
    lifetime: str = "data"  # "session": may be served any number of times at replay


def api(key: int, valid: str, flexible: str, request: list[Field], response: list[Field],
        lifetime: str = "data") -> Api:
    return Api(key, API_NAMES[key], versions(valid), versions(flexible), tuple(request),
               tuple(response), lifetime)


def _leader_id_and_epoch(v: str, tag: int) -> Field:
    return f("CurrentLeader", "{}", v, tag=tag, fields=[
        f("LeaderId", "int32", v, default=-1), f("LeaderEpoch", "int32", v, default=-1)])


def _node_endpoints(v: str) -> Field:
    return f("NodeEndpoints", "[]", v, tag=0, fields=[
        f("NodeId", "int32", v), f("Host", "string", v), f("Port", "int32", v),
        f("Rack", "string", v, nullable=v)])


PRODUCE = api(0, "0-12", "9+", [
    f("TransactionalId", "string", "3+", nullable="3+"),
    f("Acks", "int16"),
    f("TimeoutMs", "int32"),
    f("TopicData", "[]", fields=[
        f("Name", "string"),
        f("PartitionData", "[]", fields=[
            f("Index", "int32"),
            f("Records", "records", nullable="0+")])]),
], [
    f("Responses", "[]", fields=[
        f("Name", "string"),
        f("PartitionResponses", "[]", fields=[
            f("Index", "int32"),
            f("ErrorCode", "int16"),
            f("BaseOffset", "int64"),
            f("LogAppendTimeMs", "int64", "2+", default=-1),
            f("LogStartOffset", "int64", "5+", default=-1),
            f("RecordErrors", "[]", "8+", fields=[
                f("BatchIndex", "int32", "8+"),
                f("BatchIndexErrorMessage", "string", "8+", nullable="8+")]),
            f("ErrorMessage", "string", "8+", nullable="8+"),
            _leader_id_and_epoch("10+", tag=0)])]),
    f("ThrottleTimeMs", "int32", "1+"),
    _node_endpoints("10+"),
])

FETCH = api(1, "0-17", "12+", [
    f("ClusterId", "string", "12+", nullable="12+", tag=0),
    f("ReplicaId", "int32", "0-14", default=-1),
    f("ReplicaState", "{}", "15+", tag=1, fields=[
        f("ReplicaId", "int32", "15+", default=-1),
        f("ReplicaEpoch", "int64", "15+", default=-1)]),
    f("MaxWaitMs", "int32"),
    f("MinBytes", "int32"),
    f("MaxBytes", "int32", "3+", default=0x7FFFFFFF),
    f("IsolationLevel", "int8", "4+"),
    f("SessionId", "int32", "7+"),
    f("SessionEpoch", "int32", "7+", default=-1),
    f("Topics", "[]", fields=[
        f("Topic", "string", "0-12"),
        f("TopicId", "uuid", "13+"),
        f("Partitions", "[]", fields=[
            f("Partition", "int32"),
            f("CurrentLeaderEpoch", "int32", "9+", default=-1),
            f("FetchOffset", "int64"),
            f("LastFetchedEpoch", "int32", "12+", default=-1),
            f("LogStartOffset", "int64", "5+", default=-1),
            f("PartitionMaxBytes", "int32")])]),
    f("ForgottenTopicsData", "[]", "7+", fields=[
        f("Topic", "string", "7-12"),
        f("TopicId", "uuid", "13+"),
        f("Partitions", "[]int32", "7+")]),
    f("RackId", "string", "11+"),
], [
    f("ThrottleTimeMs", "int32", "1+"),
    f("ErrorCode", "int16", "7+"),
    f("SessionId", "int32", "7+"),
    f("Responses", "[]", fields=[
        f("Topic", "string", "0-12"),
        f("TopicId", "uuid", "13+"),
        f("Partitions", "[]", fields=[
            f("PartitionIndex", "int32"),
            f("ErrorCode", "int16"),
            f("HighWatermark", "int64"),
            f("LastStableOffset", "int64", "4+", default=-1),
            f("LogStartOffset", "int64", "5+", default=-1),
            f("DivergingEpoch", "{}", "12+", tag=0, fields=[
                f("Epoch", "int32", "12+", default=-1),
                f("EndOffset", "int64", "12+", default=-1)]),
            _leader_id_and_epoch("12+", tag=1),
            f("SnapshotId", "{}", "12+", tag=2, fields=[
                f("EndOffset", "int64", default=-1), f("Epoch", "int32", default=-1)]),
            f("AbortedTransactions", "[]", "4+", nullable="4+", fields=[
                f("ProducerId", "int64", "4+"), f("FirstOffset", "int64", "4+")]),
            f("PreferredReadReplica", "int32", "11+", default=-1),
            f("Records", "records", nullable="0+")])]),
    _node_endpoints("16+"),
])

LIST_OFFSETS = api(2, "0-9", "6+", [
    f("ReplicaId", "int32"),
    f("IsolationLevel", "int8", "2+"),
    f("Topics", "[]", fields=[
        f("Name", "string"),
        f("Partitions", "[]", fields=[
            f("PartitionIndex", "int32"),
            f("CurrentLeaderEpoch", "int32", "4+", default=-1),
            f("Timestamp", "int64"),
            f("MaxNumOffsets", "int32", "0", default=1)])]),
], [
    f("ThrottleTimeMs", "int32", "2+"),
    f("Topics", "[]", fields=[
        f("Name", "string"),
        f("Partitions", "[]", fields=[
            f("PartitionIndex", "int32"),
            f("ErrorCode", "int16"),
            f("OldStyleOffsets", "[]int64", "0"),
            f("Timestamp", "int64", "1+", default=-1),
            f("Offset", "int64", "1+", default=-1),
            f("LeaderEpoch", "int32", "4+", default=-1)])]),
])

METADATA = api(3, "0-13", "9+", [
    f("Topics", "[]", nullable="1+", fields=[
        f("TopicId", "uuid", "10+"),
        f("Name", "string", nullable="10+")]),
    f("AllowAutoTopicCreation", "bool", "4+", default=True),
    f("IncludeClusterAuthorizedOperations", "bool", "8-10"),
    f("IncludeTopicAuthorizedOperations", "bool", "8+"),
], [
    f("ThrottleTimeMs", "int32", "3+"),
    f("Brokers", "[]", fields=[
        f("NodeId", "int32"),
        f("Host", "string"),
        f("Port", "int32"),
        f("Rack", "string", "1+", nullable="1+")]),
    f("ClusterId", "string", "2+", nullable="2+"),
    f("ControllerId", "int32", "1+", default=-1),
    f("Topics", "[]", fields=[
        f("ErrorCode", "int16"),
        f("Name", "string", nullable="12+"),
        f("TopicId", "uuid", "10+"),
        f("IsInternal", "bool", "1+"),
        f("Partitions", "[]", fields=[
            f("ErrorCode", "int16"),
            f("PartitionIndex", "int32"),
            f("LeaderId", "int32"),
            f("LeaderEpoch", "int32", "7+", default=-1),
            f("ReplicaNodes", "[]int32"),
            f("IsrNodes", "[]int32"),
            f("OfflineReplicas", "[]int32", "5+")]),
        f("TopicAuthorizedOperations", "int32", "8+", default=-(1 << 31))]),
    f("ClusterAuthorizedOperations", "int32", "8-10", default=-(1 << 31)),
    f("ErrorCode", "int16", "13+"),
], lifetime="session")

OFFSET_COMMIT = api(8, "0-9", "8+", [
    f("GroupId", "string"),
    f("GenerationIdOrMemberEpoch", "int32", "1+", default=-1),
    f("MemberId", "string", "1+"),
    f("GroupInstanceId", "string", "7+", nullable="7+"),
    f("RetentionTimeMs", "int64", "2-4", default=-1),
    f("Topics", "[]", fields=[
        f("Name", "string"),
        f("Partitions", "[]", fields=[
            f("PartitionIndex", "int32"),
            f("CommittedOffset", "int64"),
            f("CommittedLeaderEpoch", "int32", "6+", default=-1),
            f("CommitTimestamp", "int64", "1", default=-1),
            f("CommittedMetadata", "string", nullable="0+")])]),
], [
    f("ThrottleTimeMs", "int32", "3+"),
    f("Topics", "[]", fields=[
        f("Name", "string"),
        f("Partitions", "[]", fields=[
            f("PartitionIndex", "int32"),
            f("ErrorCode", "int16")])]),
])

_OFFSET_FETCH_PARTITION = [
    f("PartitionIndex", "int32"),
    f("CommittedOffset", "int64"),
    f("CommittedLeaderEpoch", "int32", "5+", default=-1),
    f("Metadata", "string", nullable="0+"),
    f("ErrorCode", "int16"),
]

OFFSET_FETCH = api(9, "0-9", "6+", [
    f("GroupId", "string", "0-7"),
    f("Topics", "[]", "0-7", nullable="2-7", fields=[
        f("Name", "string"), f("PartitionIndexes", "[]int32")]),
    f("Groups", "[]", "8+", fields=[
        f("GroupId", "string", "8+"),
        f("MemberId", "string", "9+", nullable="9+"),
        f("MemberEpoch", "int32", "9+", default=-1),
        f("Topics", "[]", "8+", nullable="8+", fields=[
            f("Name", "string", "8+"), f("PartitionIndexes", "[]int32", "8+")])]),
    f("RequireStable", "bool", "7+"),
], [
    f("ThrottleTimeMs", "int32", "3+"),
    f("Topics", "[]", "0-7", fields=[
        f("Name", "string"), f("Partitions", "[]", fields=_OFFSET_FETCH_PARTITION)]),
    f("ErrorCode", "int16", "2-7"),
    f("Groups", "[]", "8+", fields=[
        f("GroupId", "string", "8+"),
        f("Topics", "[]", "8+", fields=[
            f("Name", "string", "8+"),
            f("Partitions", "[]", "8+", fields=_OFFSET_FETCH_PARTITION)]),
        f("ErrorCode", "int16", "8+")]),
])

FIND_COORDINATOR = api(10, "0-6", "3+", [
    f("Key", "string", "0-3"),
    f("KeyType", "int8", "1+"),
    f("CoordinatorKeys", "[]string", "4+"),
], [
    f("ThrottleTimeMs", "int32", "1+"),
    f("ErrorCode", "int16", "0-3"),
    f("ErrorMessage", "string", "1-3", nullable="1-3"),
    f("NodeId", "int32", "0-3"),
    f("Host", "string", "0-3"),
    f("Port", "int32", "0-3"),
    f("Coordinators", "[]", "4+", fields=[
        f("Key", "string", "4+"),
        f("NodeId", "int32", "4+"),
        f("Host", "string", "4+"),
        f("Port", "int32", "4+"),
        f("ErrorCode", "int16", "4+"),
        f("ErrorMessage", "string", "4+", nullable="4+")]),
], lifetime="session")

JOIN_GROUP = api(11, "0-9", "6+", [
    f("GroupId", "string"),
    f("SessionTimeoutMs", "int32"),
    f("RebalanceTimeoutMs", "int32", "1+", default=-1),
    f("MemberId", "string"),
    f("GroupInstanceId", "string", "5+", nullable="5+"),
    f("ProtocolType", "string"),
    f("Protocols", "[]", fields=[
        f("Name", "string"),
        f("Metadata", "bytes", embedded="consumer_protocol_subscription")]),
    f("Reason", "string", "8+", nullable="8+"),
], [
    f("ThrottleTimeMs", "int32", "2+"),
    f("ErrorCode", "int16"),
    f("GenerationId", "int32", default=-1),
    f("ProtocolType", "string", "7+", nullable="7+"),
    f("ProtocolName", "string", nullable="7+"),
    f("Leader", "string"),
    f("SkipAssignment", "bool", "9+"),
    f("MemberId", "string"),
    f("Members", "[]", fields=[
        f("MemberId", "string"),
        f("GroupInstanceId", "string", "5+", nullable="5+"),
        f("Metadata", "bytes", embedded="consumer_protocol_subscription")]),
])

# Heartbeat is a keep-alive sent on a timer: how many a run sends depends on timing, not
# on what the app does, so it is served like a session exchange (the last answer repeats).
HEARTBEAT = api(12, "0-4", "4+", [
    f("GroupId", "string"),
    f("GenerationId", "int32"),
    f("MemberId", "string"),
    f("GroupInstanceId", "string", "3+", nullable="3+"),
], [
    f("ThrottleTimeMs", "int32", "1+"),
    f("ErrorCode", "int16"),
], lifetime="session")

LEAVE_GROUP = api(13, "0-5", "4+", [
    f("GroupId", "string"),
    f("MemberId", "string", "0-2"),
    f("Members", "[]", "3+", fields=[
        f("MemberId", "string", "3+"),
        f("GroupInstanceId", "string", "3+", nullable="3+"),
        f("Reason", "string", "5+", nullable="5+")]),
], [
    f("ThrottleTimeMs", "int32", "1+"),
    f("ErrorCode", "int16"),
    f("Members", "[]", "3+", fields=[
        f("MemberId", "string", "3+"),
        f("GroupInstanceId", "string", "3+", nullable="3+"),
        f("ErrorCode", "int16", "3+")]),
])

SYNC_GROUP = api(14, "0-5", "4+", [
    f("GroupId", "string"),
    f("GenerationId", "int32"),
    f("MemberId", "string"),
    f("GroupInstanceId", "string", "3+", nullable="3+"),
    f("ProtocolType", "string", "5+", nullable="5+"),
    f("ProtocolName", "string", "5+", nullable="5+"),
    f("Assignments", "[]", fields=[
        f("MemberId", "string"),
        f("Assignment", "bytes", embedded="consumer_protocol_assignment")]),
], [
    f("ThrottleTimeMs", "int32", "1+"),
    f("ErrorCode", "int16"),
    f("ProtocolType", "string", "5+", nullable="5+"),
    f("ProtocolName", "string", "5+", nullable="5+"),
    f("Assignment", "bytes", embedded="consumer_protocol_assignment"),
])

SASL_HANDSHAKE = api(17, "0-1", "none", [
    f("Mechanism", "string"),
], [
    f("ErrorCode", "int16"),
    f("Mechanisms", "[]string"),
], lifetime="session")

API_VERSIONS = api(18, "0-4", "3+", [
    f("ClientSoftwareName", "string", "3+"),
    f("ClientSoftwareVersion", "string", "3+"),
], [
    f("ErrorCode", "int16"),
    f("ApiKeys", "[]", fields=[
        f("ApiKey", "int16"), f("MinVersion", "int16"), f("MaxVersion", "int16")]),
    f("ThrottleTimeMs", "int32", "1+"),
    f("SupportedFeatures", "[]", "3+", tag=0, fields=[
        f("Name", "string", "3+"), f("MinVersion", "int16", "3+"),
        f("MaxVersion", "int16", "3+")]),
    f("FinalizedFeaturesEpoch", "int64", "3+", tag=1, default=-1),
    f("FinalizedFeatures", "[]", "3+", tag=2, fields=[
        f("Name", "string", "3+"), f("MaxVersionLevel", "int16", "3+"),
        f("MinVersionLevel", "int16", "3+")]),
    f("ZkMigrationReady", "bool", "3+", tag=3),
], lifetime="session")

CREATE_TOPICS = api(19, "0-7", "5+", [
    f("Topics", "[]", fields=[
        f("Name", "string"),
        f("NumPartitions", "int32"),
        f("ReplicationFactor", "int16"),
        f("Assignments", "[]", fields=[
            f("PartitionIndex", "int32"), f("BrokerIds", "[]int32")]),
        f("Configs", "[]", fields=[
            f("Name", "string"), f("Value", "string", nullable="0+")])]),
    f("TimeoutMs", "int32"),
    f("ValidateOnly", "bool", "1+"),
], [
    f("ThrottleTimeMs", "int32", "2+"),
    f("Topics", "[]", fields=[
        f("Name", "string"),
        f("TopicId", "uuid", "7+"),
        f("ErrorCode", "int16"),
        f("ErrorMessage", "string", "1+", nullable="0+"),
        f("TopicConfigErrorCode", "int16", "5+", tag=0),
        f("NumPartitions", "int32", "5+", default=-1),
        f("ReplicationFactor", "int16", "5+", default=-1),
        f("Configs", "[]", "5+", nullable="5+", fields=[
            f("Name", "string", "5+"),
            f("Value", "string", "5+", nullable="5+"),
            f("ReadOnly", "bool", "5+"),
            f("ConfigSource", "int8", "5+", default=-1),
            f("IsSensitive", "bool", "5+")])]),
])

INIT_PRODUCER_ID = api(22, "0-5", "2+", [
    f("TransactionalId", "string", nullable="0+"),
    f("TransactionTimeoutMs", "int32"),
    f("ProducerId", "int64", "3+", default=-1),
    f("ProducerEpoch", "int16", "3+", default=-1),
], [
    f("ThrottleTimeMs", "int32"),
    f("ErrorCode", "int16"),
    f("ProducerId", "int64", default=-1),
    f("ProducerEpoch", "int16"),
])

# SaslAuthenticate: the auth bytes are secrets; the dialect redacts them (DESIGN.md).
SASL_AUTHENTICATE = api(36, "0-2", "2+", [
    f("AuthBytes", "bytes"),
], [
    f("ErrorCode", "int16"),
    f("ErrorMessage", "string", nullable="0+"),
    f("AuthBytes", "bytes"),
    f("SessionLifetimeMs", "int64", "1+"),
], lifetime="session")

# Client telemetry (KIP-714): librdkafka asks for a subscription and may push metrics.
# Session lifetime: the subscription is configuration, and pushes are timing-dependent.
GET_TELEMETRY_SUBSCRIPTIONS = api(71, "0", "0+", [
    f("ClientInstanceId", "uuid"),
], [
    f("ThrottleTimeMs", "int32"),
    f("ErrorCode", "int16"),
    f("ClientInstanceId", "uuid"),
    f("SubscriptionId", "int32"),
    f("AcceptedCompressionTypes", "[]int8"),
    f("PushIntervalMs", "int32"),
    f("TelemetryMaxBytes", "int32"),
    f("DeltaTemporality", "bool"),
    f("RequestedMetrics", "[]string"),
], lifetime="session")

PUSH_TELEMETRY = api(72, "0", "0+", [
    f("ClientInstanceId", "uuid"),
    f("SubscriptionId", "int32"),
    f("Terminating", "bool"),
    f("CompressionType", "int8"),
    f("Metrics", "bytes"),
], [
    f("ThrottleTimeMs", "int32"),
    f("ErrorCode", "int16"),
], lifetime="session")

APIS: dict[int, Api] = {a.key: a for a in (
    PRODUCE, FETCH, LIST_OFFSETS, METADATA, OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR,
    JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP, SASL_HANDSHAKE, API_VERSIONS,
    CREATE_TOPICS, INIT_PRODUCER_ID, SASL_AUTHENTICATE, GET_TELEMETRY_SUBSCRIPTIONS,
    PUSH_TELEMETRY)}


# The consumer protocol (ConsumerProtocolSubscription.json / ConsumerProtocolAssignment.json):
# what "consumer" groups put in JoinGroup metadata and SyncGroup assignments. Never flexible.
_TOPIC_PARTITIONS = [f("Topic", "string"), f("Partitions", "[]int32")]
EMBEDDED["consumer_protocol_subscription"] = ((
    f("Topics", "[]string"),
    f("UserData", "bytes", nullable="0+"),
    f("OwnedPartitions", "[]", "1+", fields=_TOPIC_PARTITIONS),
    f("GenerationId", "int32", "2+", default=-1),
    f("RackId", "string", "3+", nullable="3+"),
), versions("0-3"))
EMBEDDED["consumer_protocol_assignment"] = ((
    f("AssignedPartitions", "[]", fields=_TOPIC_PARTITIONS),
    f("UserData", "bytes", nullable="0+"),
), versions("0-3"))

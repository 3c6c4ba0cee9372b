"""Kafka: record and replay producers, consumers and consumer groups.

Modules: ``primitives`` (wire types), ``schema`` (schemas as data + the generic
interpreter), ``apis`` (the schema tables), ``records`` (record batches and compression),
``codec`` (framing, headers, correlation), ``readable`` (recorded form, match keys),
``errors`` (miss responses), ``split`` (Fetch/Produce split per partition and reassembled),
``dialect`` (recorder, replayer), ``volatile`` (values the app generates in records). This module exports
``DIALECT`` and the detection rule.
"""

from __future__ import annotations

import dataclasses
import functools

from ..base import Dialect
from ..volatile import FieldRules, field_rules
from .apis import API_NAMES
from .codec import KafkaCodec, KafkaRequest, KafkaResponse
from .dialect import KafkaRecorder, KafkaReplayer, check_fault
from .readable import match_key
from .volatile import rule_values, volatile

MAX_DETECT_FRAME = 128 << 20


def detect(first_bytes: bytes, port: int) -> bool | None:
    """A Kafka request header: sane size, a known api key, small version, client id.

    The client always speaks first. ``int32 size, int16 api_key, int16 api_version,
    int32 correlation_id, int16 client_id length`` — 14 bytes decide; fewer may only
    rule it out. The port (9092) is not needed: these bytes are distinctive enough.
    """
    b = first_bytes
    if len(b) >= 4:
        size = int.from_bytes(b[:4], "big", signed=True)
        if not 10 <= size <= MAX_DETECT_FRAME:
            return False
    if len(b) >= 6 and int.from_bytes(b[4:6], "big", signed=True) not in API_NAMES:
        return False
    if len(b) >= 8 and not 0 <= int.from_bytes(b[6:8], "big", signed=True) <= 40:
        return False
    if len(b) < 14:
        return None
    size = int.from_bytes(b[:4], "big")
    client_id_len = int.from_bytes(b[12:14], "big", signed=True)
    if client_id_len < -1 or 10 + max(client_id_len, 0) > size:
        return False
    return True


def _configure(section: dict) -> Dialect:
    """The dialect with the user's ``kafka:`` rules for produced records (``volatile_keys``:
    topics, ``volatile_headers``, ``volatile_json_paths``, ``volatile_identifiers``); the
    shipped one when there are none (``registry.configure``)."""
    rules = field_rules(section, "kafka", ("volatile_headers",), topics="volatile_keys")
    if rules == FieldRules():
        return DIALECT
    return dataclasses.replace(DIALECT, volatile=functools.partial(volatile, rules=rules),
                               volatile_rules=functools.partial(rule_values, rules))


DIALECT = Dialect(
    name="kafka",
    default_ports=(9092,),
    detect=detect,
    recorder=KafkaRecorder,
    replayer=KafkaReplayer,
    match_key=match_key,
    check_fault=check_fault,
    configure=_configure,
    volatile=volatile,
    pairing=match_key,
)

__all__ = ["DIALECT", "KafkaCodec", "KafkaRecorder", "KafkaReplayer", "KafkaRequest",
           "KafkaResponse", "detect", "match_key"]

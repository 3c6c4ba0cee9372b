"""Values the app generates in the records it produces (``protocols/volatile.py``).

A producer puts fresh values in its records: an event id (uuid4) as the key, a
correlation id in a header, ids and times in a JSON value. They are found here, record
by record in the order ``volatile.mask`` meets them in a readable ``Produce`` request
(key, value, then headers), so that a recording's values pair up with a live request's.
A JSON value (an object or an array) is searched value by value, so the user's JSON
paths apply to it; other values as text; binary ones (``{hex: …}``) never. The user's
rules (``kafka:`` in config.yaml, ``FieldRules``): the topics whose record keys, the
header names and the JSON paths whose whole values are volatile, and identifiers
(regular expressions) to map wherever they appear. Only ``Produce`` carries values the
app chose: other requests (fetches, offsets, group membership) are compared as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from ..base import Readable
from ..volatile import FieldRules, in_data, in_text, loads_masked

_NO_RULES = FieldRules()


def volatile(request: Readable, now: datetime, rules: FieldRules = _NO_RULES) -> list[str]:
    """The values the app generated in a produced record set, in order."""
    return _volatile(request, rules, now)


def rule_values(rules: FieldRules, request: Readable) -> list[str]:
    """What the user's ``rules`` alone call volatile (for recordings made before them)."""
    return _volatile(request, rules, None)


def json_value(value: Any) -> Any:
    """A record key or value that is a JSON object or array, as data (``{json: …}``: its
    keys in any order compare equal, also once masked); any other value as it is."""
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            return {"json": loads_masked(value)}
        except (ValueError, RecursionError):
            pass
    return value


def _volatile(request: Readable, rules: FieldRules, now: datetime | None) -> list[str]:
    found: list[str] = []
    for topic, record in _produced(request):
        pinned_key = "*" in rules.topics or topic in rules.topics
        for part in ("key", "value"):
            found += _in_field(record.get(part), part == "key" and pinned_key, rules, now)
        for header in record.get("headers") or []:
            if isinstance(header, dict):
                name = header.get("key")
                pinned = isinstance(name, str) and name.lower() in rules.names
                found += _in_field(header.get("value"), pinned, rules, now)
    return found


def _in_field(value: Any, pinned: bool, rules: FieldRules, now: datetime | None) -> list[str]:
    if not isinstance(value, str) or not value:
        return []  # null, or binary ({hex: …})
    if pinned:
        return [value]
    data = json_value(value)
    return in_data(data["json"], now, rules) if isinstance(data, dict) else in_text(value, now, rules)


def _produced(request: Readable) -> Iterator[tuple[Any, dict]]:
    """(topic, record) of each record of a readable ``Produce`` request (untrusted shape)."""
    if not isinstance(request, dict) or request.get("api") != "Produce":
        return
    body = request.get("body")
    for topic in body.get("topic_data") or [] if isinstance(body, dict) else []:
        if not isinstance(topic, dict):
            continue
        for partition in topic.get("partition_data") or []:
            for batch in partition.get("records") or [] if isinstance(partition, dict) else []:
                for record in batch.get("records") or [] if isinstance(batch, dict) else []:
                    if isinstance(record, dict):
                        yield topic.get("name"), record

"""Values the app generates in an outbound HTTP request (``protocols/volatile.py``).

An app calling another service puts fresh values in its requests: a uuid4 in the path
(``PUT /orders/<uuid>``), a nonce or timestamp in the query, an ``Idempotency-Key``
header, ids and times in a JSON or form body. They are found here, in the order
``volatile.mask`` meets them in the readable request (url, headers, body, trailers),
so that a recording's values pair up with a live request's.

The URL and form bodies are searched piece by piece (path segments, query and form
values: never the scheme or host), since a whole path such as ``/api/v1/items`` must
never count as one random-looking word. Binary bodies, bodies kept as files or digests
and JSON bodies of more than ``MAX_LEAVES`` values are not searched (a payload, not
values the app chose). The user's rules (``http:`` in config.yaml, ``FieldRules``): JSON
paths of the request body, header names and query keys whose whole values are volatile,
and identifiers (regular expressions) to map wherever they appear.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from ..base import Readable
from ..volatile import FieldRules, in_data, in_text, loads_masked
from .body import is_form_type, is_json_type
from .grpc import strings_of
from .readable import header_value, lenient_urlsplit

MAX_LEAVES = 4096
_PIECES = re.compile(r"[^/?&=#;]+|[?&;]([^&=#;]*)=([^&#;]*)")  # path segments, query pairs
_NO_RULES = FieldRules()


def volatile(request: Readable, now: datetime, rules: FieldRules = _NO_RULES) -> list[str]:
    """The values the app generated in ``request``, in order (detectors and ``rules``)."""
    return _volatile(request, rules, now)


def rule_values(rules: FieldRules, request: Readable) -> list[str]:
    """What the user's ``rules`` alone call volatile (for recordings made before them)."""
    return _volatile(request, rules, None)


def _volatile(request: Readable, rules: FieldRules, now: datetime | None) -> list[str]:
    if not isinstance(request, dict) or "message" in request:  # WebSocket frames: not requests
        return []
    found: list[str] = []
    for part, value in request.items():
        if part == "url" and isinstance(value, str):
            found += _in_url(value, rules, now)
        elif part in ("headers", "trailers") and isinstance(value, list):
            for field in value:
                if isinstance(field, list) and len(field) == 2 and isinstance(field[1], str):
                    name, text = field
                    pinned = isinstance(name, str) and name.lower() in rules.names
                    found += [text] if pinned and text else in_text(text, now, rules)
        elif part == "body":
            found += _in_body(value, request, rules, now)
    return found


def _in_url(url: str, rules: FieldRules, now: datetime | None) -> list[str]:
    parts = lenient_urlsplit(url)
    start = url.find("//") + 2 + len(parts.netloc) if parts.netloc else 0
    return _in_pieces(url[start:], rules, now)


def _in_pieces(text: str, rules: FieldRules, now: datetime | None) -> list[str]:
    """Path segments and query (or form) values, each searched on its own; the whole
    value of a key the user's rules name."""
    found: list[str] = []
    for m in _PIECES.finditer(text if text.startswith(("/", "?")) else "?" + text):
        if m.group(1) is None:
            found += in_text(m.group(), now, rules)
        elif m.group(1).lower() in rules.names and m.group(2):
            found.append(m.group(2))
        else:
            found += in_text(m.group(2), now, rules)
    return found


def _in_body(body: Any, request: dict, rules: FieldRules, now: datetime | None) -> list[str]:
    if isinstance(body, dict) and "json" in body:
        return in_data(body["json"], now, rules) if _small(body["json"]) else []
    if isinstance(body, dict) and "grpc" in body:  # decoded fields (numbers are [number, value])
        values = list(strings_of(body["grpc"]))
        return in_data(values, now, rules) if len(values) <= MAX_LEAVES else []
    if not isinstance(body, str) or not body:
        return []  # binary ({base64}), kept as a file or a digest
    ctype = header_value(request.get("headers", []), "content-type") or ""
    if is_form_type(ctype):
        return _in_pieces(body, rules, now)
    if is_json_type(ctype) and rules.json_paths:  # JSON kept as text (unusual layout)
        try:
            return in_data(loads_masked(body), now, rules)
        except (ValueError, RecursionError):
            pass
    return in_text(body, now, rules)


def _small(value: Any) -> bool:
    """Whether JSON data has at most ``MAX_LEAVES`` values (a bulk upload is data)."""
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack += item.values()
        elif isinstance(item, list):
            stack += item
        count += 1
        if count > MAX_LEAVES:
            return False
    return True

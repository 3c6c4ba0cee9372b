"""Match keys: the normalized form of a readable request compared at replay.

``match_key(request)`` is ``match_key_with(request, Noise())``::

    {method: GET, host: api.example.com:8443, path: /v1/items,
     query: [[id, "3"], [page, "2"]],        # sorted: order-insensitive
     body: <see below>,
     headers: [[accept, "*/*"]],             # only with Noise.match_headers
     message: text}                          # only for WebSocket messages (websocket.py)

* ``host`` is lower case without the scheme's default port; the scheme and the HTTP
  version are not part of the key, so a request recorded over HTTP/1.1 matches the
  same request sent over HTTP/2 and vice versa.
* ``query`` is the multiset of decoded pairs (RFC 3986 §3.4 leaves order to the
  application; the usual form decoding is assumed), minus ``Noise.query`` keys.
* secrets compare as present, not by value: every placeholder ``<secret:NAME>`` is
  ``<redacted>`` in the key (``secrets.blank_names``), in the path, query, body and headers;
* ``body``: JSON as data (so key order and whitespace do not matter, minus
  ``Noise.json_paths``; also JSON stored as text), gRPC messages as their field trees
  (``Noise.json_paths`` name fields there: ``meta.sent_at``, ``3``), form bodies as sorted pairs
  (``Noise.query`` keys dropped from them too), text as text, binary as base64,
  bodies over ``max_body`` (kept in a file, or only digested) by size and digest.
  Bodies are compared decoded, so a gzip-ed and a plain upload of the same JSON match.

Pure functions of their arguments; the result is readable data (lists, not tuples).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from ..base import EncodeError, Readable, digest_form, unblob
from ..jsonpath import drop_json_path, parse_json_path
from ..secrets import blank_names, map_strings
from ..volatile import MASK, loads_masked
from .body import is_form_type, is_json_type, parse_json
from .config import DEFAULT_NOISE_HEADERS, Noise
from .grpc import drop_field_path
from .readable import DEFAULT_PORTS, header_value, lenient_urlsplit


def _host(netloc: str, scheme: str) -> str:
    host = netloc.lower()
    base, colon, port = host.rpartition(":")
    if colon and "]" not in port and port.isdigit() and int(port) == DEFAULT_PORTS.get(scheme):
        host = base
    return host


def _pairs(query: str, ignore: frozenset[str]) -> list[list[str]]:
    return sorted([k, blank_names(v)] for k, v in parse_qsl(query, keep_blank_values=True)
                  if k not in ignore)


def _json_key(value: Any, noise: Noise) -> Readable:
    for path in noise.json_paths:
        value = drop_json_path(value, parse_json_path(path))
    if "<secret:" in json.dumps(value, ensure_ascii=False):  # C-speed check before a walk
        value = map_strings(value, blank_names)
    return {"json": value}


def _body_key(request: dict[str, Any], noise: Noise) -> Readable:
    body = request.get("body", "")
    if body is None:
        return ""
    if isinstance(body, dict):
        if "json" in body:
            return _json_key(body["json"], noise)
        if "grpc" in body and isinstance(body["grpc"], list):
            messages = body["grpc"]
            for path in noise.json_paths:
                steps = parse_json_path(path)
                messages = [drop_field_path(m, steps) for m in messages]
            if "<secret:" in repr(messages):  # C-speed check before a walk
                messages = map_strings(messages, blank_names)
            return {"grpc": messages}
        if (digest := digest_form(body)) is not None:
            return digest
        return body
    ctype = header_value(request.get("headers", []), "content-type") or ""
    if isinstance(body, str) and is_form_type(ctype):
        return {"form": _pairs(body, noise.query)}
    if isinstance(body, str) and is_json_type(ctype):
        # JSON kept as text (its layout was unusual) still compares as data
        try:
            return _json_key(parse_json(body) if MASK not in body else loads_masked(body), noise)
        except (ValueError, RecursionError):
            pass
    return blank_names(body) if isinstance(body, str) else body


def _headers_key(request: dict[str, Any], noise: Noise) -> list[list[Readable]]:
    skip = DEFAULT_NOISE_HEADERS | noise.headers
    out = []
    for name, value in request.get("headers", []):
        lname = name.lower() if isinstance(name, str) else name
        if isinstance(lname, str) and (lname in skip or lname.startswith(":")):
            continue
        out.append([lname, blank_names(value) if isinstance(value, str) else value])
    return sorted(out, key=repr)


def _is_request(request: Readable) -> bool:
    """Whether ``request`` has a readable HTTP request's shape: a mapping, its url a
    string, its headers ``[name, value]`` pairs whose values are text or a readable byte
    string. A recording is untrusted input and may hold anything there."""
    if not isinstance(request, dict) or not isinstance(request.get("url", ""), str):
        return False
    headers = request.get("headers", [])
    return isinstance(headers, list) and all(
        isinstance(h, list | tuple) and len(h) == 2 and (isinstance(h[1], str) or _is_blob(h[1]))
        for h in headers)


def _is_blob(value: Readable) -> bool:
    try:
        unblob(value)
    except (EncodeError, TypeError, ValueError):
        return False
    return True


def match_key_with(request: Readable, noise: Noise) -> Readable:
    """The key of a readable request, ignoring ``noise``; a recorded request without an
    HTTP request's shape is its own key (no live request has that key)."""
    if not _is_request(request):
        return request
    parts = lenient_urlsplit(request.get("url", ""))
    key: dict[str, Any] = {
        "method": str(request.get("method", "")).upper(),
        "host": _host(parts.netloc, parts.scheme),
        "path": blank_names(parts.path or "/"),
        "query": _pairs(parts.query, noise.query),
        "body": _body_key(request, noise),
    }
    if "message" in request:  # a WebSocket message: open / text / binary / close
        key["message"] = request["message"]
    if noise.match_headers:
        key["headers"] = _headers_key(request, noise)
    return key


_DEFAULT_NOISE = Noise()


def match_key(request: Readable) -> Readable:
    """``match_key_with(request, Noise())``: method, host, path, query, body."""
    return match_key_with(request, _DEFAULT_NOISE)

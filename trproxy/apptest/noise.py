"""Noise in recorded HTTP responses: detect it, confirm it, configure it, compare around it.

A *noise path* names a part of a response that may change from run to run:

* ``status``; ``header.<name>`` (lower case, every value of that field);
* ``body`` (the whole body); ``body.json.created_at``, ``body.json.items[*].id``,
  ``body.json["odd.key"]`` (``[*]`` matches every index, a ``*`` key every key);
* ``body.tokens``: in a text or HTML body, the tokens that look volatile (timestamps,
  UUIDs, JWTs, random tokens, epoch numbers near the test's time) are masked and the
  rest is compared exactly, so a CSRF token in a form is ignored but a changed
  template line is not.

A path also covers everything below it (``body.json.meta`` ignores the whole object).

Where noise comes from:

1. ``detect_noise`` at record time, from the *values* of one response: timestamps and
   dates (ISO 8601, RFC 1123, asctime, common log format, epoch seconds/millis near the
   recording time), UUIDs/ULIDs, JWTs and random-looking tokens, un-redacted
   ``Set-Cookie`` values. Text bodies holding such a value get ``body.tokens``.
2. ``noise_between`` when two replays of the same test disagree: every differing part.
3. By hand: ``<recording dir>/config.yaml`` (``noise.global`` for every test,
   ``noise.volatile_headers``) and each test file's ``spec.noise``.

Headers never compared: framing/hop-by-hop fields (their meaning is covered by the body
comparison) and ``DEFAULT_VOLATILE_HEADERS`` (replaceable in config.yaml). ``ETag`` is
compared, except when the test has body noise (a changed body changes its tag).

``compare`` reports every difference outside the noise as a ``Difference`` (path,
expected, actual): status, headers (as multisets of values per name; the comma-separated
items of ``SET_HEADERS`` such as ``Allow`` and ``Vary`` as sets) and the body — JSON
structurally (key order ignored, lists by index), everything else exactly (a text body's
first differing line is named). Secret placeholders compare equal whatever their name
(``<secret:a>`` = ``<secret:b>`` = ``<redacted>``): a secret is compared as present.
``render_diff`` shows both responses with noise masked as one unified diff, a text or
HTML body line by line.

Invariant: pure functions on readable data (the HTTP dialect's form: headers
``[[name, value], ...]``, bodies ``str`` / ``{"json": v}`` / ``{"base64": s}``); shape
variants (header mappings, ``status_code``, JSON given as text) are tolerated.
"""

from __future__ import annotations

import base64
import difflib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..protocols.base import digest_form
from ..protocols.secrets import blank_names, is_placeholder, map_strings
from ..protocols.volatile import _JWT, _TIMESTAMPS, _UUID, volatile_value
from ..store import safeio
from ..store.config import CONFIG, read_config
from ..store.errors import FormatError
from ..store.yamlio import dump

#: Response headers never compared unless config.yaml says otherwise.
DEFAULT_VOLATILE_HEADERS: frozenset[str] = frozenset({
    "date", "age", "expires", "last-modified", "server-timing", "x-request-id",
    "x-correlation-id", "x-trace-id", "traceparent", "tracestate", "x-runtime",
    "x-response-time", "x-amzn-trace-id", "x-amzn-requestid", "cf-ray", "report-to", "nel",
})
#: Framing and hop-by-hop fields: a body difference shows itself in the body.
FRAMING_HEADERS: frozenset[str] = frozenset({
    "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection",
})

#: Headers whose comma-separated items form a set: their order carries no meaning (and
#: varies between processes in some frameworks, e.g. Django REST framework's ``Allow``).
SET_HEADERS: frozenset[str] = frozenset({
    "allow", "vary", "access-control-allow-methods", "access-control-allow-headers",
    "access-control-expose-headers", "access-control-request-headers", "cache-control",
    "content-language", "accept-patch", "accept-post", "accept-ranges",
})

_ANY = "*"  # a path segment matching any key or index


# -- paths ------------------------------------------------------------------------------

Segment = str | int  # a key, an index, or _ANY
_KEY = re.compile(r"[^.\[\]\"]+")
_TOKEN = re.compile(r'\.?([^.\[\]"]+)|\[(\*|\d+|"(?:[^"\\]|\\.)*")\]')


def parse_path(path: str) -> tuple[Segment, ...]:
    """``body.json.items[*].id`` -> ``("body", "json", "items", "*", "id")``."""
    segments: list[Segment] = []
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if m is None or (pos > 0 and m.group(1) and path[pos] != "."):
            raise ValueError(f"bad noise path {path!r} at {pos}")
        if m.group(1) is not None:
            segments.append(m.group(1))
        elif m.group(2) == "*":
            segments.append(_ANY)
        elif m.group(2).startswith('"'):
            segments.append(json.loads(m.group(2)))
        else:
            segments.append(int(m.group(2)))
        pos = m.end()
    return tuple(segments)


def format_path(segments: Iterable[Segment]) -> str:
    out = ""
    for seg in segments:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif seg == _ANY and out:
            out += "[*]"
        elif _KEY.fullmatch(seg):
            out += f".{seg}" if out else seg
        else:
            out += f"[{json.dumps(seg, ensure_ascii=False)}]"
    return out


def _covers(pattern: tuple[Segment, ...], path: tuple[Segment, ...]) -> bool:
    if len(pattern) > len(path):
        return False
    return all(p == _ANY or p == s for p, s in zip(pattern, path, strict=False))


@dataclass(frozen=True)
class Noise:
    """The noise rules for one test: its paths plus the global ones and header defaults."""

    paths: tuple[str, ...] = ()
    volatile_headers: frozenset[str] = DEFAULT_VOLATILE_HEADERS
    moment: datetime | None = field(default=None, compare=False)  # when the test was recorded
    _parsed: tuple[tuple[Segment, ...], ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        parsed = []
        for p in self.paths:
            try:
                parsed.append(parse_path(p.strip()))
            except ValueError as exc:
                raise FormatError(str(exc)) from exc
        object.__setattr__(self, "_parsed", tuple(parsed))

    def ignores(self, path: str | tuple[Segment, ...]) -> bool:
        segs = parse_path(path) if isinstance(path, str) else path
        if len(segs) >= 2 and segs[0] == "header":
            name = str(segs[1]).lower()
            if name in self.volatile_headers or name in FRAMING_HEADERS:
                return True
            if name == "etag" and self.body_noisy:
                return True
        return any(_covers(p, segs) for p in self._parsed)

    @property
    def body_noisy(self) -> bool:
        return any(p[:1] == ("body",) for p in self._parsed)

    def with_paths(self, extra: Iterable[str], moment: datetime | None = None) -> Noise:
        merged = list(dict.fromkeys([*self.paths, *extra]))
        return Noise(tuple(merged), self.volatile_headers, moment or self.moment)


# -- config.yaml ------------------------------------------------------------------------

_CONFIG_TEMPLATE = """\
# trproxy settings for this recording directory. Edit freely; `trproxy test` reads it.
version: trproxy/v1
noise:
  # Parts of every response that are never compared, in every test of every test set.
  # header.NAME | body | body.json.a.b | body.json.items[*].id | body.json["odd.key"]
  # (each test file also has its own `noise:` list, filled at record time).
  global: []
  # Response headers never compared (case-insensitive). This list replaces the defaults.
  volatile_headers: {headers}
http:
  # Extra header names / JSON, form and query fields whose values are redacted at record
  # time (Authorization, Cookie, password, token, *_secret, *_api_key... always are);
  # a field "*x" is any name ending in x, "x*" any name starting with it.
  secret_headers: []
  secret_fields: []
  # What matching a live outbound request to a recording ignores.
  match:
    ignore_query: []        # query keys, e.g. [ts, nonce]
    ignore_json_paths: []   # request body paths, e.g. [meta.sent_at, items[*].trace_id]
    match_headers: false    # also compare request headers (except framing/tracing ones)
    ignore_headers: []      # ... but not these
  max_body_mb: 8            # larger bodies go to bodies/<sha256>, streamed, not inline
  # Values the app generates in its outbound requests that trproxy's detectors miss
  # (UUIDs, random tokens, timestamps and epochs are found by themselves): replay matches
  # any value there and maps it recorded -> live like a detected one, in later requests
  # and in replies (docs/format.md, "Volatile values"); recordings made before included.
  volatile_headers: []      # request header names, e.g. [x-nonce]
  volatile_query: []        # query keys and form fields, e.g. [n]
  volatile_json_paths: []   # request body paths, e.g. [order.ref, items[*].code]
  volatile_identifiers: []  # regular expressions: ids to map wherever they appear, e.g. ['ord-[0-9]+']
  # gRPC field names: FileDescriptorSet files (protoc --include_imports
  # --descriptor_set_out=api.pb api.proto), relative to this directory, e.g. [api.pb]
  grpc_descriptors: []
redis:
  # Arguments the app generates that trproxy's detectors miss (UUIDs, random tokens and
  # epochs are found by themselves), by command and position, 1 being the first argument
  # after the command's name, e.g. {{SET: [2]}}: replay matches any value there and maps
  # it like a detected one (docs/format.md, "Volatile values"); recordings made before
  # the rule was written included.
  volatile_arguments: {{}}
postgres:
  # The same for SQL: Bind parameters by statement (a regular expression searched in the
  # SQL) and number ($1 is 1), e.g. {{"INSERT INTO orders": [3]}}, and regular expressions
  # whose matches in SQL text are volatile, e.g. ["ord-[0-9]+"].
  volatile_parameters: {{}}
  volatile_literals: []
# Failures injected at replay (docs/format.md, "Fault injection"), to test the app's
# retries and fallbacks: each rule selects requests (protocol, to=HOST:PORT pattern,
# match=REGEX on the request's summary, nth=N | every=N | first=N) and says how they fail
# (error=CODE [close] | reset | close | hang | delay=MS), e.g.
#   - postgres error=40001 match=UPDATE first=1
#   - redis error=LOADING nth=2
#   - kafka error=NOT_LEADER_OR_FOLLOWER match=Produce first=1
#   - http error=503 retry_after=1 every=3
# `faults` apply to every replay; a profile only with `--fault-profile NAME`.
faults: []
fault_profiles: {{}}
kafka:
  # The same for produced records: the topics whose record keys the app generates
  # (["*"]: every topic), record header names, JSON paths into record values, and
  # identifiers to map (regular expressions).
  volatile_keys: []
  volatile_headers: []
  volatile_json_paths: []
  volatile_identifiers: []
"""


def default_config_text() -> str:
    return _CONFIG_TEMPLATE.format(headers=json.dumps(sorted(DEFAULT_VOLATILE_HEADERS)))


def write_default_config(root: Path) -> Path:
    """Create ``<root>/config.yaml`` with the defaults and comments, unless it exists."""
    path = root / CONFIG
    if safeio.lstat(path, root) is None:
        safeio.write_bytes(path, root, default_config_text().encode("utf-8"))
    return path


def load_config(root: Path) -> Noise:
    """Global noise from ``<root>/config.yaml`` (defaults when the file is missing)."""
    path = root / CONFIG
    section = read_config(root).get("noise") or {}
    if not isinstance(section, dict):
        raise FormatError("`noise` must be a mapping", path)
    paths = section.get("global") or []
    headers = section.get("volatile_headers")
    if not isinstance(paths, list) or not (headers is None or isinstance(headers, list)):
        raise FormatError("noise.global and noise.volatile_headers must be lists", path)
    if not all(isinstance(h, str) for h in headers or []):
        raise FormatError("noise.volatile_headers must be header names (text)", path)
    volatile = DEFAULT_VOLATILE_HEADERS if headers is None else frozenset(h.lower() for h in headers)
    try:
        return Noise(tuple(str(p) for p in paths), volatile)
    except FormatError as exc:
        raise exc.at(path) from None


# -- reading responses tolerantly -------------------------------------------------------


def status_of(response: dict[str, Any]) -> Any:
    return response.get("status", response.get("status_code"))


def headers_of(response: dict[str, Any]) -> dict[str, list[Any]]:
    """Lower-case name -> values in order, from a list of pairs or a mapping."""
    raw = response.get("headers") or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    out: dict[str, list[Any]] = {}
    for name, value in pairs:
        values = value if isinstance(value, list) and isinstance(raw, dict) else [value]
        out.setdefault(str(name).lower(), []).extend(values)
    return out


def normalize_body(body: Any) -> Any:
    """One comparable form: ``""`` for no body, ``{"json": v}``, ``{"base64": s}``, text,
    or ``{size, sha256}`` for a body over ``max_body`` (a file, or a digest only)."""
    if body is None:
        return ""
    if isinstance(body, bytes):
        return {"base64": base64.b64encode(body).decode()}
    if isinstance(body, dict) and len(body) == 1 and "hex" in body:
        try:
            return {"base64": base64.b64encode(bytes.fromhex(body["hex"])).decode()}
        except (TypeError, ValueError):
            return body
    if isinstance(body, dict) and set(body) == {"text"}:
        return body["text"]
    return digest_form(body) or body  # over max_body: compared by size and digest


def json_of(body: Any) -> Any:
    """The JSON value of a body given as ``{"json": v}`` or as JSON text, else a sentinel."""
    if isinstance(body, dict) and "json" in body:
        return body["json"]
    if isinstance(body, str) and body.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(body)
        except ValueError:
            pass
    return NOT_JSON


NOT_JSON = object()


# -- detection ---------------------------------------------------------------------------


def _walk(value: Any, path: tuple[Segment, ...]) -> Iterator[tuple[tuple[Segment, ...], Any]]:
    """Leaves of a JSON value; list indices generalized to ``[*]``."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, (*path, str(k)))
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v, (*path, _ANY))
    else:
        yield path, value


def detect_noise(response: dict[str, Any], now: datetime | None = None,
                 volatile_headers: frozenset[str] = DEFAULT_VOLATILE_HEADERS) -> list[str]:
    """Noise paths found in one recorded response, in a stable order.

    ``now`` is when the response was recorded (epoch numbers and bare dates count as
    noise only near it). Headers that are ignored anyway are not listed.
    """
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    found: list[str] = []
    for name, values in headers_of(response).items():
        if name in volatile_headers or name in FRAMING_HEADERS:
            continue
        if name == "set-cookie":  # a value not redacted, or an Expires=<date> attribute
            if any(isinstance(v, str) and "=" in v and _volatile_cookie(v) for v in values):
                found.append("header.set-cookie")
        elif any(volatile_value(v, now) for v in values):
            found.append(format_path(("header", name)))
    body = normalize_body(response.get("body"))
    data = json_of(body)
    if data is not NOT_JSON:
        for path, leaf in _walk(data, ("body", "json")):
            if volatile_value(leaf, now):
                found.append(format_path(path))
    elif isinstance(body, str) and body and mask_tokens(body, (now,)) != body:
        found.append("body.tokens")
    return list(dict.fromkeys(found))


def _volatile_cookie(header: str) -> bool:
    first, _, attributes = header.partition(";")
    return not is_placeholder(first.partition("=")[2]) or bool(_TIMESTAMPS.search(attributes))


_MASK_TOKEN = "<noise>"
_WORD = re.compile(r"[A-Za-z0-9+/_\-.=~%]{8,}")
_SLASH = re.compile(r"(/)")


def _volatile_near(value: str, moments: Iterable[datetime]) -> bool:
    return any(volatile_value(value, m) for m in moments)


def _mask_word(word: str, moments: tuple[datetime, ...]) -> str:
    """A word masked whole when volatile; else each ``/`` segment (``/static/app.<hash>.js``)
    masked when it, or one of its ``.`` parts (a signed token's), is volatile."""
    if _volatile_near(word, moments):
        return _MASK_TOKEN
    segments = _SLASH.split(word)
    for i, segment in enumerate(segments):
        if len(segment) >= 8 and (_volatile_near(segment, moments) or any(
                len(part) >= 8 and _volatile_near(part, moments) for part in segment.split("."))):
            segments[i] = _MASK_TOKEN
    return "".join(segments)


def mask_tokens(text: str, moments: tuple[datetime, ...]) -> str:
    """``text`` with each volatile-looking token replaced by ``<noise>`` (times, UUIDs,
    JWTs, random tokens; epoch numbers and dates near one of ``moments``)."""
    for pattern in (_TIMESTAMPS, _UUID, _JWT):
        text = pattern.sub(_MASK_TOKEN, text)
    return _WORD.sub(lambda m: _mask_word(m.group(0), moments), text)


# -- comparison ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """One part of a response that differs from the recording (outside the noise)."""

    path: str
    expected: Any
    actual: Any

    def __str__(self) -> str:
        return f"{self.path}: expected {_short(self.expected)}, got {_short(self.actual)}"


_MISSING = "<missing>"


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def compare(expected: dict[str, Any], actual: dict[str, Any], noise: Noise | None = None) -> list[Difference]:
    """Every difference between a recorded and a live response that the noise allows."""
    noise = noise or Noise()
    diffs: list[Difference] = []
    if status_of(expected) != status_of(actual) and not noise.ignores(("status",)):
        diffs.append(Difference("status", status_of(expected), status_of(actual)))
    exp_h, act_h = headers_of(expected), headers_of(actual)
    for name in sorted(set(exp_h) | set(act_h)):
        path = ("header", name)
        if noise.ignores(path):
            continue
        e, a = exp_h.get(name), act_h.get(name)
        if e is None or a is None or _header_key(name, e) != _header_key(name, a):
            diffs.append(Difference(format_path(path), _one(e), _one(a)))
    if not noise.ignores(("body",)):
        diffs += _compare_body(_blank(normalize_body(expected.get("body"))),
                               _blank(normalize_body(actual.get("body"))), noise)
    return diffs


def _header_key(name: str, values: list[Any]) -> Counter:
    """What is compared of a header's values: a multiset, or the set of items of a
    list-valued header in ``SET_HEADERS``; secret placeholders without their names."""
    texts = [blank_names(_hashable(v)) for v in values]
    if name in SET_HEADERS:
        return Counter({item.strip().lower() for t in texts for item in t.split(",") if item.strip()})
    return Counter(texts)


def _blank(body: Any) -> Any:
    """A body with its secret placeholders' names blanked (they compare as present)."""
    if isinstance(body, str):
        return blank_names(body)
    if isinstance(body, dict) and "json" in body and "<secret:" in json.dumps(body["json"], ensure_ascii=False):
        return dict(body, json=map_strings(body["json"], blank_names))
    return body


def _hashable(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _one(values: list[Any] | None) -> Any:
    if values is None:
        return _MISSING
    return values[0] if len(values) == 1 else values


def _compare_body(expected: Any, actual: Any, noise: Noise) -> list[Difference]:
    e_json, a_json = json_of(expected), json_of(actual)
    if e_json is not NOT_JSON and a_json is not NOT_JSON:
        out: list[Difference] = []
        _compare_tree(e_json, a_json, ("body", "json"), noise, out)
        return out
    if expected == actual:
        return []
    if isinstance(expected, str) and isinstance(actual, str):
        if noise.ignores(("body", "tokens")):
            moments = _moments(noise)
            expected, actual = mask_tokens(expected, moments), mask_tokens(actual, moments)
            if expected == actual:
                return []
        return [_first_line_difference(expected, actual)]
    return [Difference("body", expected, actual)]


def _moments(noise: Noise) -> tuple[datetime, ...]:
    now = datetime.now(UTC)
    return (noise.moment, now) if noise.moment is not None else (now,)


def _first_line_difference(expected: str, actual: str) -> Difference:
    e_lines, a_lines = expected.splitlines(), actual.splitlines()
    if len(e_lines) <= 1 and len(a_lines) <= 1:
        return Difference("body", expected, actual)
    for i in range(max(len(e_lines), len(a_lines))):
        e = e_lines[i] if i < len(e_lines) else _MISSING
        a = a_lines[i] if i < len(a_lines) else _MISSING
        if e != a:
            return Difference("body", f"line {i + 1}: {e.strip()}", f"line {i + 1}: {a.strip()}")
    return Difference("body", expected, actual)  # differ only in line endings


def _compare_tree(e: Any, a: Any, path: tuple[Segment, ...], noise: Noise,
                  out: list[Difference]) -> None:
    if noise.ignores(path):
        return
    if isinstance(e, dict) and isinstance(a, dict):
        for key in list(e) + [k for k in a if k not in e]:
            sub = (*path, str(key))
            if key not in a or key not in e:
                if not noise.ignores(sub):
                    out.append(Difference(format_path(sub), e.get(key, _MISSING), a.get(key, _MISSING)))
            else:
                _compare_tree(e[key], a[key], sub, noise, out)
    elif isinstance(e, list) and isinstance(a, list):
        for i in range(max(len(e), len(a))):
            sub = (*path, i)
            if i >= len(e) or i >= len(a):
                if not noise.ignores(sub):
                    out.append(Difference(format_path(sub), e[i] if i < len(e) else _MISSING,
                                          a[i] if i < len(a) else _MISSING))
            else:
                _compare_tree(e[i], a[i], sub, noise, out)
    elif e != a or type(e) is not type(a) and not (_number(e) and _number(a)):
        out.append(Difference(format_path(path), e, a))


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def noise_between(first: dict[str, Any], second: dict[str, Any]) -> list[str]:
    """Paths where two live responses to the same request differ: noise confirmed by runs.

    Indices are generalized (``items[3].id`` -> ``items[*].id``); a status difference is
    never noise (it is reported, not hidden).
    """
    found = []
    for d in compare(first, second, Noise(volatile_headers=frozenset())):
        if d.path == "status":
            continue
        if d.path == "body" and not compare(first, second, Noise(("body.tokens",), frozenset())):
            found.append("body.tokens")  # only volatile tokens of a text differ
            continue
        segs = tuple(_ANY if isinstance(s, int) else s for s in parse_path(d.path))
        found.append(format_path(segs))
    return list(dict.fromkeys(found))


# -- rendering ------------------------------------------------------------------------------

_MASK = "<noise: ignored>"


def _masked(value: Any, path: tuple[Segment, ...], noise: Noise) -> Any:
    if noise.ignores(path):
        return _MASK
    if isinstance(value, dict):
        return {k: _masked(value[k], (*path, str(k)), noise) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [_masked(v, (*path, i), noise) for i, v in enumerate(value)]
    return value


def comparable_view(response: dict[str, Any], noise: Noise) -> dict[str, Any]:
    """What ``compare`` looks at, with noise masked: status, headers, body."""
    headers = {name: _one(values) for name, values in sorted(headers_of(response).items())
               if not noise.ignores(("header", name))}
    body = normalize_body(response.get("body"))
    data = json_of(body)
    if noise.ignores(("body",)):
        shown: Any = _MASK
    elif data is not NOT_JSON:
        shown = {"json": _masked(data, ("body", "json"), noise)}
    elif isinstance(body, str) and noise.ignores(("body", "tokens")):
        shown = mask_tokens(body, _moments(noise))
    else:
        shown = body
    return {"status": status_of(response), "headers": headers, "body": shown}


def _view_lines(response: dict[str, Any], noise: Noise) -> list[str]:
    """The view as lines: status and headers as YAML, then the body: JSON as YAML, a
    text body as its own lines (so a changed template line is one line of the diff)."""
    view = comparable_view(response, noise)
    body = view.pop("body")
    lines = dump(view).splitlines(keepends=True)[1:]
    if isinstance(body, str) and body != _MASK:
        lines.append("body: |\n")
        lines += [f"  {line}\n" for line in body.splitlines()]
    else:
        lines += dump({"body": body}).splitlines(keepends=True)[1:]
    return lines


def render_diff(expected: dict[str, Any], actual: dict[str, Any], noise: Noise | None = None,
                context: int = 3) -> str:
    """A unified diff (recorded -> live) of the two responses, noise masked."""
    noise = noise or Noise()
    left, right = _view_lines(expected, noise), _view_lines(actual, noise)
    return "".join(difflib.unified_diff(left, right, "recorded", "live", n=context))


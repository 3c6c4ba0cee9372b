"""Chaining: values a request took from an earlier response, noted at record time and
taken from the live response at test time.

A client sends back what the app gave it: a cookie (``Set-Cookie`` -> ``Cookie``), a
token from a login's JSON (-> ``Authorization: Token ...``), a CSRF token from an HTML
form or a JSON body (-> a form field or a header), a created id (-> a URL path). At
test time the app hands out new ones, so the recorded values are stale.

Record time (``ChainIndex``): the raw (unredacted, in memory only) responses of the
last ``WINDOW`` tests are kept; for each new request, every value it carries (URL path
segments and query values, cookie values, credentials, other non-standard header values,
JSON leaves, form values) is looked up in the responses completed before the request
started, the earliest first (where the value first appeared: the login that issued a
token, the POST that created an id). A hit becomes a ``Link`` in the test file::

    chain:
    - {value: "<secret:login.token>", from: test-2, at: body.json.user.token}
    - {value: "17", from: test-3, at: body.json.id}
    - {value: "IjA3Yz...", from: test-4, at: body.text, before: 'name="csrf_token" value="', after: '"'}
    - {value: "<secret:cookie.session-2>", from: test-4, at: header.set-cookie.session}

``value`` is what the recorded request holds (a secret's placeholder, never its value);
``at`` where the source response held it: ``body.json.<path>``, ``body.text``,
``header.<name>``, or ``header.set-cookie.<cookie name>``; ``before``/``after`` locate a
value inside a longer string (the text around it when recorded). Long token-like values
(``TOKEN_MIN`` characters, letters and digits) are found anywhere, inside text too;
short ones (ids) only as whole values, from id-like JSON keys, ``Location`` path
segments or cookies, and are used only as whole values (a path segment, a JSON leaf...).

Test time (``LiveChains``): after each test the links that name it as their source are
read from its live response; before each test its links' values are replaced by the
live ones (``substitute``). Cookies the live responses set also fill a jar (cookie name
-> latest value), used for a ``Cookie`` whose source gave nothing.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlencode

from ..protocols.http.readable import header_value, lenient_urlsplit
from ..protocols.secrets import PLACEHOLDER, SecretVault, placeholder
from .noise import NOT_JSON, format_path, json_of, parse_path

WINDOW = 200  # responses kept for lookups at record time
TOKEN_MIN = 8
_CONTEXT = 40  # characters of text kept before a value found inside text
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_\-.~+]")  # a value next to one of these is part of a longer one
_ID_KEY = re.compile(r"(?i)^(id|uuid|guid|slug|key|pk|.*[_-]id|.*[a-z]Id|.*_?uuid)$")
_PLAIN_HEADERS = frozenset({
    "host", "user-agent", "accept", "accept-encoding", "accept-language", "content-type",
    "content-length", "transfer-encoding", "connection", "keep-alive", "origin", "referer",
    "cache-control", "pragma", "te", "upgrade", "upgrade-insecure-requests", "dnt", "expect",
    "x-requested-with", "date", "server", "vary", "etag", "last-modified", "expires", "age",
    "content-encoding", "content-language", "allow", "access-control-allow-origin",
    "access-control-allow-credentials", "access-control-allow-methods",
    "access-control-allow-headers", "strict-transport-security", "x-frame-options",
    "x-content-type-options", "referrer-policy", "content-security-policy", "if-none-match",
    "if-modified-since",
})
_KEEP = "<>:"  # re-encoded forms and queries keep other placeholders findable
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*) +(\S+)\Z")


@dataclass(frozen=True)
class Link:
    value: str  # as the recorded request holds it: a literal, or a secret's placeholder
    source: str  # the test whose response held it
    at: str
    before: str = ""
    after: str = ""

    def to_doc(self) -> dict[str, str]:
        doc = {"value": self.value, "from": self.source, "at": self.at}
        if self.before or self.after:
            doc.update(before=self.before, after=self.after)
        return doc

    @classmethod
    def from_doc(cls, doc: Any) -> Link:
        if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) for k in ("value", "from", "at")):
            raise ValueError("a chain entry needs value, from and at (strings)")
        return cls(doc["value"], doc["from"], doc["at"], str(doc.get("before") or ""),
                   str(doc.get("after") or ""))


def token_like(value: str) -> bool:
    """Long enough, and made like an identifier or a token (letters and digits), to be
    looked for inside text and replaced wherever it occurs."""
    if len(value) < TOKEN_MIN or any(c.isspace() for c in value):
        return False
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


# -- where values sit in a response -----------------------------------------------------------


@dataclass
class _Seen:
    """One recorded response, as lookups need it."""

    test: str
    completed: float
    leaves: dict[str, str]  # JSON leaf value -> its path (the first one)
    id_leaves: set[str]  # values of id-like JSON keys
    cookies: dict[str, str]  # Set-Cookie value -> cookie name
    headers: list[tuple[str, str]]  # (name, value), plain ones left out
    strings: list[tuple[str, str]] = field(default_factory=list)  # (at, text) searched for tokens


def _json_leaves(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _json_leaves(v, (*path, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _json_leaves(v, (*path, i))
    elif isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        yield path, value


def _json_body(message: dict[str, Any]) -> Any:
    data = json_of(message.get("body"))
    return None if data is NOT_JSON else data


def _seen(test: str, response: dict[str, Any], completed: float) -> _Seen:
    seen = _Seen(test, completed, {}, set(), {}, [])
    data = _json_body(response)
    if data is not None:
        for path, leaf in _json_leaves(data):
            text = str(leaf)
            at = format_path(("body", "json", *path))
            seen.leaves.setdefault(text, at)
            if path and isinstance(path[-1], str) and _ID_KEY.match(path[-1]):
                seen.id_leaves.add(text)
            if isinstance(leaf, str) and len(leaf) > TOKEN_MIN:
                seen.strings.append((at, leaf))
    elif isinstance(response.get("body"), str):
        seen.strings.append(("body.text", response["body"]))
    for name, value in response.get("headers") or []:
        if not isinstance(name, str) or not isinstance(value, str):
            continue
        lname = name.lower()
        if lname == "set-cookie":
            cookie, eq, rest = value.partition(";")[0].partition("=")
            if eq and rest:
                seen.cookies.setdefault(rest, cookie.strip())
        elif lname not in _PLAIN_HEADERS:
            seen.headers.append((lname, value))
            seen.strings.append((f"header.{lname}", value))
    return seen


def _find_in(text: str, value: str) -> int:
    """Where ``value`` occurs in ``text`` as a whole token (not inside a longer one), or -1."""
    start = 0
    while (pos := text.find(value, start)) != -1:
        end = pos + len(value)
        if (pos == 0 or not _TOKEN_CHARS.match(text[pos - 1])) and \
                (end == len(text) or not _TOKEN_CHARS.match(text[end])):
            return pos
        start = pos + 1
    return -1


def _locate(seen: _Seen, value: str, vault: SecretVault | None) -> tuple[str, str, str] | None:
    """(at, before, after) of ``value`` in one recorded response, or None."""
    if value in seen.cookies:
        return f"header.set-cookie.{seen.cookies[value]}", "", ""
    token = token_like(value)
    if value in seen.leaves and (token or value in seen.id_leaves):
        return seen.leaves[value], "", ""
    for name, header in seen.headers:
        if header == value and token:
            return f"header.{name}", "", ""
    if _in_location(seen, value):
        return "header.location", *_context(dict(seen.headers)["location"], value, vault)
    if not token:
        return None
    for at, text in seen.strings:
        if _find_in(text, value) != -1:
            return at, *_context(text, value, vault)
    return None


def _in_location(seen: _Seen, value: str) -> bool:
    """An id (digits, a token) that is a path segment of the response's ``Location``."""
    location = dict(seen.headers).get("location")
    if location is None or not (value.isdigit() or token_like(value)):
        return False
    return value in [unquote(s) for s in lenient_urlsplit(location).path.split("/")]


def _context(text: str, value: str, vault: SecretVault | None) -> tuple[str, str]:
    pos = max(_find_in(text, value), 0)
    before = text[max(0, pos - _CONTEXT):pos].rsplit("\n", 1)[-1]
    if vault is not None:  # the text around a value must not carry a secret to disk
        scrubbed = vault.scrub(before)
        if scrubbed != before:
            before = scrubbed[scrubbed.rfind(">") + 1:] if ">" in scrubbed else ""
    end = pos + len(value)
    return before, text[end:end + 1]


# -- the values a request carries ------------------------------------------------------------


def request_values(request: dict[str, Any]) -> Iterator[str]:
    """Every value a client may have taken from an earlier response."""
    parts = lenient_urlsplit(str(request.get("url", "")))
    for segment in parts.path.split("/"):
        if segment:
            yield unquote(segment)
    for _k, v in parse_qsl(parts.query, keep_blank_values=False):
        yield v
    for name, value in request.get("headers") or []:
        if not isinstance(name, str) or not isinstance(value, str):
            continue
        lname = name.lower()
        if lname == "cookie":
            for pair in value.split(";"):
                _n, eq, v = pair.partition("=")
                if eq and v:
                    yield v.strip()
        elif lname in ("authorization", "proxy-authorization"):
            m = _SCHEME.match(value)
            yield m.group(2) if m else value
        elif lname not in _PLAIN_HEADERS:
            yield value
    data = _json_body(request)
    if data is not None:
        for _path, leaf in _json_leaves(data):
            yield str(leaf)
    elif isinstance(request.get("body"), str):
        ctype = header_value(request.get("headers") or [], "content-type") or ""
        if "x-www-form-urlencoded" in ctype:
            for _k, v in parse_qsl(request["body"], keep_blank_values=False):
                yield v


class ChainIndex:
    """Record time: the responses seen so far, and the links of each new request."""

    def __init__(self, vault: SecretVault | None = None, window: int = WINDOW) -> None:
        self.vault = vault
        self._seen: deque[_Seen] = deque(maxlen=window)

    def add_response(self, test: str, response: dict[str, Any], completed: float) -> None:
        """A raw (unredacted) response, complete at ``completed`` (a monotonic time)."""
        self._seen.append(_seen(test, response, completed))

    def links(self, request: dict[str, Any], started: float) -> list[Link]:
        """The links of a raw request that started at ``started`` (same clock)."""
        out: dict[str, Link] = {}
        earlier = [s for s in self._seen if s.completed <= started]
        for value in dict.fromkeys(request_values(request)):
            if not value or value in ("true", "false", "null"):
                continue
            for seen in earlier:
                found = _locate(seen, value, self.vault)
                if found is not None:
                    key = self._recorded_form(value)
                    out.setdefault(key, Link(key, seen.test, *found))
                    break
        return list(out.values())

    def _recorded_form(self, value: str) -> str:
        if self.vault is not None:
            names = self.vault.names_of([value])
            if names:
                return placeholder(names[0])
        return value


# -- test time ----------------------------------------------------------------------------


def extract(response: dict[str, Any], link: Link) -> str | None:
    """The value ``link`` points at in a live (raw) response, or None."""
    at = link.at
    if at.startswith("header.set-cookie."):
        wanted = at[len("header.set-cookie."):]
        for name, value in response.get("headers") or []:
            if isinstance(name, str) and name.lower() == "set-cookie" and isinstance(value, str):
                cookie, eq, rest = value.partition(";")[0].partition("=")
                if eq and cookie.strip() == wanted:
                    return rest
        return None
    text: str | None
    if at.startswith("header."):
        text = header_value(response.get("headers") or [], at[len("header."):])
    elif at == "body.text":
        body = response.get("body")
        text = body if isinstance(body, str) else None
    elif at.startswith("body.json"):
        text = _json_at(_json_body(response), parse_path(at)[2:])
    else:
        return None
    if text is None:
        return None
    if not link.before and not link.after:
        return text
    return _between(text, link.before, link.after)


def _json_at(data: Any, path: tuple[Any, ...]) -> str | None:
    for step in path:
        if isinstance(data, dict) and isinstance(step, str) and step in data:
            data = data[step]
        elif isinstance(data, list) and isinstance(step, int) and 0 <= step < len(data):
            data = data[step]
        else:
            return None
    if isinstance(data, bool) or not isinstance(data, str | int):
        return None
    return str(data)


def _between(text: str, before: str, after: str) -> str | None:
    start = text.find(before) if before else 0
    if start == -1:
        return None
    start += len(before)
    if after:
        end = text.find(after, start)
        return text[start:end] if end > start else None
    end = start
    while end < len(text) and _TOKEN_CHARS.match(text[end]):
        end += 1
    return text[start:end] or None


def substitute(request: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """``request`` with the value ``old`` (a literal, or a placeholder) replaced by ``new``
    wherever a client could have put it: whole values always; long tokens and
    placeholders also inside strings."""
    inside = token_like(old) or bool(PLACEHOLDER.fullmatch(old))
    out = dict(request)
    out["url"] = _substitute_url(str(request.get("url", "")), old, new, inside)
    out["headers"] = [[n, _substitute_header(n, v, old, new, inside) if isinstance(v, str) else v]
                      for n, v in request.get("headers") or []]
    body = request.get("body")
    if isinstance(body, dict) and "json" in body:
        out["body"] = dict(body, json=_substitute_json(body["json"], old, new, inside))
    elif isinstance(body, str) and body:
        ctype = header_value(request.get("headers") or [], "content-type") or ""
        if "x-www-form-urlencoded" in ctype:
            out["body"] = _substitute_form(body, old, new, inside)
        elif inside:
            out["body"] = body.replace(old, new)
    return out


def _substitute_url(url: str, old: str, new: str, inside: bool) -> str:
    parts = lenient_urlsplit(url)
    path = "/".join(quote(new, safe="") if unquote(s) == old else s for s in parts.path.split("/"))
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(v == old for _k, v in pairs):
            query = urlencode([(k, new if v == old else v) for k, v in pairs], safe=_KEEP)
    if inside:
        path, query = path.replace(old, quote(new, safe="")), query.replace(old, quote_plus(new))
    head = f"{parts.scheme}://{parts.netloc}" if parts.scheme else ""
    return head + path + (f"?{query}" if query or url.endswith("?") else "")


def _substitute_header(name: str, value: str, old: str, new: str, inside: bool) -> str:
    if value == old:
        return new
    if name.lower() == "cookie":
        pairs = []
        for pair in value.split(";"):
            cookie, eq, v = pair.partition("=")
            pairs.append(f"{cookie}={new}" if eq and v.strip() == old else pair)
        value = ";".join(pairs)
    m = _SCHEME.match(value)
    if m and m.group(2) == old:
        return f"{m.group(1)} {new}"
    return value.replace(old, new) if inside else value


def _substitute_json(data: Any, old: str, new: str, inside: bool) -> Any:
    def leaf(v: Any) -> Any:
        if isinstance(v, bool):
            return v
        if isinstance(v, int) and str(v) == old:
            return int(new) if new.lstrip("-").isdigit() else new
        if isinstance(v, str):
            if v == old:
                return new
            if inside and old in v:
                return v.replace(old, new)
        return v

    if isinstance(data, dict):
        return {k: _substitute_json(v, old, new, inside) for k, v in data.items()}
    if isinstance(data, list):
        return [_substitute_json(v, old, new, inside) for v in data]
    return leaf(data)


def _substitute_form(body: str, old: str, new: str, inside: bool) -> str:
    pairs = parse_qsl(body, keep_blank_values=True)
    if any(v == old or (inside and old in v) for _k, v in pairs):
        return urlencode([(k, new if v == old else v.replace(old, new) if inside else v) for k, v in pairs],
                         safe=_KEEP)
    return body


class LiveChains:
    """Test time: live values read from earlier tests' responses, and what they replace."""

    def __init__(self, links: dict[str, list[Link]], vault: SecretVault | None = None) -> None:
        self.by_source: dict[str, list[Link]] = {}
        for test_links in links.values():
            for link in test_links:
                self.by_source.setdefault(link.source, []).append(link)
        self.vault = vault
        self.live: dict[str, str] = {}  # recorded value (or placeholder) -> live value
        self.jar: dict[str, str] = {}  # cookie name -> latest live value

    def learn(self, test: str, response: dict[str, Any]) -> None:
        """Read the values later tests need from ``test``'s live (raw) response."""
        for link in self.by_source.get(test, []):
            value = extract(response, link)
            if value is None:
                continue
            self.live[link.value] = value
            m = PLACEHOLDER.fullmatch(link.value)
            if m and self.vault is not None:  # the live value redacts to the recorded name
                self.vault.alias(m.group(1), value)
        for name, value in response.get("headers") or []:
            if isinstance(name, str) and name.lower() == "set-cookie" and isinstance(value, str):
                cookie, eq, rest = value.partition(";")[0].partition("=")
                if eq:
                    self.jar[cookie.strip()] = rest

    def apply(self, request: dict[str, Any], links: list[Link]) -> dict[str, Any]:
        for link in links:
            if link.value in self.live:
                request = substitute(request, link.value, self.live[link.value])
        return request

    def fill_cookies(self, request: dict[str, Any]) -> dict[str, Any]:
        """``Cookie`` values still placeholders get the jar's value for their cookie name."""
        headers = []
        changed = False
        for name, value in request.get("headers") or []:
            if isinstance(name, str) and name.lower() == "cookie" and isinstance(value, str) and "<secret:" in value:
                pairs = []
                for pair in value.split(";"):
                    cookie, eq, v = pair.partition("=")
                    if eq and PLACEHOLDER.fullmatch(v.strip()) and cookie.strip() in self.jar:
                        pair = f"{cookie}={self.jar[cookie.strip()]}"
                        changed = True
                    pairs.append(pair)
                value = ";".join(pairs)
            headers.append([name, value])
        return dict(request, headers=headers) if changed else request


def fill_placeholders(request: dict[str, Any],
                      lookup: Callable[[str], str | None]) -> tuple[dict[str, Any], list[str]]:
    """Each ``<secret:NAME>`` left in ``request`` replaced by ``lookup(NAME)``; returns the
    request and the names no value was found for."""
    missing: list[str] = []
    for name in dict.fromkeys(m.group(1) for m in PLACEHOLDER.finditer(json.dumps(request, ensure_ascii=False))):
        value = lookup(name)
        if value is None:
            missing.append(name)
        else:
            request = substitute(request, placeholder(name), value)
    return request, missing

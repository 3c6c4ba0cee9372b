"""Named secrets: what redaction writes instead of a credential, and how replay gets it back.

A recorded secret becomes a *placeholder* ``<secret:NAME>``. The ``SecretVault`` of a
run names values: the same value always gets the same name (a token a login returned
and the ``Authorization`` header that later carries it share one), a new value gets a
name from where it was found (``login.password``, ``cookie.session``, ``authorization``;
``-2``, ``-3`` when that name holds another value). The vault also scrubs known values
wherever else they occur in a message (a token echoed in a page). Values never reach a
recording: the app-test layer keeps them in the recording directory's git-ignored
secrets file (``apptest/secretfile.py``), from which ``trproxy test`` sends real values.

Replaying a recorded response that holds a placeholder (a downstream service's
``Set-Cookie``, a token it issued), the app gets a *stand-in*: ``trpx.<hex of NAME>.trpx``,
deterministic, valid in cookies, headers, URLs and JSON. When the app sends it back, the
live request's redaction turns it into the same placeholder, so it matches the recording.
Stand-ins are decoded without the vault: replay needs no secrets file.

Matching and test comparison treat every placeholder (and the older ``<redacted>``) as
one value (``blank_names``): a secret is compared as present, not by its value or name.

Invariant: no I/O here; the vault calls ``on_new(name, value)`` when it names a new
value, and the caller decides where that goes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import Any

PLACEHOLDER = re.compile(r"<secret:([A-Za-z0-9_.\-]{1,128})>")
STANDIN = re.compile(r"trpx\.((?:[0-9a-f]{2}){1,128})\.trpx")
_WHOLE = re.compile(rf"(?:{PLACEHOLDER.pattern}|<redacted>)\Z")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-]+")
_MIN_SCRUB = 4  # shorter known values are not searched for elsewhere (too common)
# no secret: nothing, or a cookie deleted as Django deletes one (``sessionid=""; Max-Age=0``)
_EMPTY = frozenset({"", '""'})


def placeholder(name: str) -> str:
    return f"<secret:{name}>"


def standin(name: str) -> str:
    """The value the app gets in place of the secret ``name`` at replay."""
    return f"trpx.{name.encode().hex()}.trpx"


def is_placeholder(value: str) -> bool:
    return bool(_WHOLE.match(value))


def _decode(match: re.Match[str]) -> str:
    try:
        return placeholder(bytes.fromhex(match.group(1)).decode())
    except (ValueError, UnicodeDecodeError):
        return match.group(0)


def standins_to_placeholders(text: str) -> str:
    return STANDIN.sub(_decode, text) if "trpx." in text else text


def placeholders_to_standins(text: str) -> str:
    return PLACEHOLDER.sub(lambda m: standin(m.group(1)), text) if "<secret:" in text else text


def blank_names(text: str) -> str:
    """Every placeholder as ``<redacted>``: what comparisons see."""
    return PLACEHOLDER.sub("<redacted>", text) if "<secret:" in text else text


def map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """``value`` (readable data) with ``fn`` applied to every string in it."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [map_strings(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: map_strings(v, fn) for k, v in value.items()}
    return value


def with_standins(message: dict[str, Any]) -> dict[str, Any]:
    """A recorded response as replay sends it: placeholders in its headers and body
    become stand-ins (the rest of the message is shared, not copied)."""
    out = message
    headers = message.get("headers")
    if headers and any(isinstance(v, str) and "<secret:" in v for _n, v in headers):
        out = dict(message, headers=[[n, placeholders_to_standins(v) if isinstance(v, str) else v]
                                     for n, v in headers])
    body = message.get("body")
    if isinstance(body, str) and "<secret:" in body:
        out = dict(out, body=placeholders_to_standins(body))
    elif isinstance(body, dict) and "json" in body and _holds_placeholder(body["json"]):
        out = dict(out, body=dict(body, json=map_strings(body["json"], placeholders_to_standins)))
    return out


def _holds_placeholder(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if "<secret:" in v:
                return True
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
    return False


@functools.lru_cache(maxsize=1024)  # computed per message; paths repeat
def hint_of(url_path: str) -> str:
    """The last word-like segment of a URL path (``/api/v1/login`` -> ``login``): the
    context a field's secret is named after."""
    for segment in reversed(url_path.split("?", 1)[0].split("/")):
        word = segment.rsplit(".", 1)[0].lower()
        if word and re.fullmatch(r"[a-z][a-z_\-]{1,31}", word) and word not in ("api",):
            return word
    return ""


class SecretVault:
    """Names secret values for one run; ``known`` (name -> value) comes from the secrets
    file, ``on_new(name, value)`` is told of each value named here."""

    def __init__(self, known: dict[str, str] | None = None,
                 on_new: Callable[[str, str], None] | None = None) -> None:
        self.values: dict[str, str] = {}  # name -> value (the first one given)
        self._names: dict[str, str] = {}  # value -> name
        self.on_new = on_new
        self._pattern: re.Pattern[str] | None = None
        for name, value in (known or {}).items():
            self.alias(name, value)

    def __len__(self) -> int:
        return len(self.values)

    def alias(self, name: str, value: str) -> None:
        """``value`` is (also) the secret ``name`` (known from the file, or learned live)."""
        if value in _EMPTY or is_placeholder(value):
            return
        self.values.setdefault(name, value)
        if self._names.get(value) != name:
            self._names[value] = name
            self._pattern = None

    def name(self, value: str, hint: str) -> str:
        """The name of ``value``; a new value is named after ``hint``."""
        known = self._names.get(value)
        if known is not None:
            return known
        base = _NAME_CHARS.sub("_", hint).strip("._-")[:100] or "secret"
        name, n = base, 1
        while name in self.values:
            n += 1
            name = f"{base}-{n}"
        self.values[name] = value
        self._names[value] = name
        self._pattern = None
        if self.on_new is not None:
            self.on_new(name, value)
        return name

    def secret(self, value: str, hint: str) -> str:
        """What a secret position holds: its placeholder (empty values stay empty)."""
        if value in _EMPTY or is_placeholder(value):
            return value
        decoded = standins_to_placeholders(value)
        if decoded != value:
            return decoded
        return placeholder(self.name(value, hint))

    def scrub(self, text: str) -> str:
        """``text`` with known secret values (and stand-ins) replaced by placeholders."""
        text = standins_to_placeholders(text)
        pattern = self._compiled()
        if pattern is None or not text:
            return text
        return pattern.sub(lambda m: placeholder(self._names[m.group(0)]), text)

    def _compiled(self) -> re.Pattern[str] | None:
        if self._pattern is None:
            values = sorted((v for v in self._names if len(v) >= _MIN_SCRUB), key=len, reverse=True)
            self._pattern = re.compile("|".join(map(re.escape, values))) if values else _NOTHING
        return None if self._pattern is _NOTHING else self._pattern

    def names_of(self, values: Iterable[str]) -> list[str]:
        return [self._names[v] for v in values if v in self._names]


_NOTHING = re.compile(r"(?!)")

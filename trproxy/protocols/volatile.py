"""Values the app generates (ids, tokens, times): found, masked, and mapped (sans-I/O).

An app that puts a fresh random value in a request (``SET lock <token> NX``, a session
key ``session:<uuid4>``, an ``INSERT`` of a uuid4 primary key) sends another one at
replay. Such values are found at record time by the detectors below (the same ones that
find noise in HTTP responses: ``apptest.noise`` imports them) and listed with the
exchange (``spec.volatile``, readable and editable). At replay:

* a request that matches no recording exactly is compared with every part listed as
  volatile replaced by ``<volatile>`` (``mask``); the live request's volatile parts are
  found by the same detectors, so a different command, key prefix or ordinary value still
  misses;
* the pairs recorded -> live of such a match are kept (``ValueMap``) for the rest of the
  run's test, and for the rest of the run where a test has no pair of its own for a
  value (an id made in one test, sent again in a later one): later requests are
  rewritten back to the recorded values before they are looked up (the ``GET`` of the session key, the lock's release script), and recorded
  replies are rewritten to the live values (the token the app compares with).

Detectors: UUIDs, JWTs and salted password hashes (bcrypt, argon2, pbkdf2, scrypt)
anywhere in a text, secrets' placeholders, timestamps and dates near the recording time
(also the base62 seconds of Django's signed values, with their signature), and words of
9+ characters that look like random hex/base64 tokens or epoch numbers near now
(``volatile_value``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .jsonpath import parse_json_path, path_matches
from .secrets import PLACEHOLDER

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_TIMESTAMPS = re.compile("|".join([
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?",  # ISO 8601
    r"\d{8}T\d{6}(?:\.\d+)?Z?",  # ISO 8601 basic
    rf"{_DAY}[a-z]*, \d{{1,2}}[ -]{_MONTH}[ -]\d{{2,4}} \d{{2}}:\d{{2}}:\d{{2}}",  # RFC 1123/850
    rf"{_DAY} {_MONTH} [ \d]\d \d{{2}}:\d{{2}}:\d{{2}} \d{{4}}",  # asctime
    rf"\d{{2}}/{_MONTH}/\d{{4}}:\d{{2}}:\d{{2}}:\d{{2}}",  # common log format
    r"\d{1,2}/\d{1,2}/\d{4},? \d{1,2}:\d{2}(?::\d{2})?",  # 1/2/2024 10:00
]))
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# a UUID without hyphens (``uuid.uuid1().hex``, redis-py's lock tokens): its version and
# variant digits say so, whatever its entropy (a uuid1's node part may be mostly zeros)
_UUID_HEX = re.compile(r"[0-9a-fA-F]{12}[1-8][0-9a-fA-F]{3}[89abAB][0-9a-fA-F]{15}")
_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
_JWT = re.compile(r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]*")
_HEX = re.compile(r"[0-9a-fA-F]{16,}")
_B64 = re.compile(r"[A-Za-z0-9+/_-]{20,}={0,2}")
_PREFIXED = re.compile(r"[A-Za-z]{1,12}[_-]([A-Za-z0-9]{12,})")  # ord_3fK9x2..., sk-...
_EPOCH_WINDOW = timedelta(days=7)


def _entropy(text: str) -> float:
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _char_class(c: str) -> str:
    return "d" if c.isdigit() else "u" if c.isupper() else "l" if c.islower() else "o"


def _looks_random(text: str) -> bool:
    """Random ids alternate digits and letters, and (base62/64) upper and lower case, far
    more often than words do (``release2024``, ``getUserProfileById``)."""
    pairs = list(zip(text, text[1:], strict=False))
    digit_switches = sum(a.isdigit() != b.isdigit() for a, b in pairs)
    mixed_case = any(c.islower() for c in text) and any(c.isupper() for c in text)
    class_switches = sum(_char_class(a) != _char_class(b) for a, b in pairs)
    return digit_switches >= 4 or (mixed_case and class_switches >= 0.55 * len(pairs))


def _random_token(text: str) -> bool:
    """Hex or base64 ids that look random (not words, not small numbers)."""
    if _HEX.fullmatch(text):
        return any(c.isdigit() for c in text) and any(c.isalpha() for c in text) and _entropy(text) > 3.0
    if _B64.fullmatch(text):
        return _entropy(text) > 3.5 and _looks_random(text)
    m = _PREFIXED.fullmatch(text)  # ord_3fK9x2LmQp7Zt
    return m is not None and _looks_random(m.group(1))


# a detection compared a value with ``now`` (``_near``); per thread and task (the report's
# nearest-recording search runs detections in threads)
_clock_read: contextvars.ContextVar[bool] = contextvars.ContextVar("clock_read", default=False)


def _near(moment: datetime, now: datetime, window: timedelta) -> bool:
    _clock_read.set(True)  # every use of ``now`` comes here: the answer depends on the time
    return abs(moment - now) <= window


def _epoch_near(value: float, now: datetime) -> bool:
    """Seconds, millis, micros or nanos since the epoch within a week of ``now``."""
    for scale in (1, 1e3, 1e6, 1e9):
        try:
            moment = datetime.fromtimestamp(value / scale, UTC)
        except (OverflowError, OSError, ValueError):
            continue
        if _near(moment, now, _EPOCH_WINDOW):
            return True
    return False


def volatile_value(value: Any, now: datetime) -> bool:
    """Whether one value looks like it changes from run to run (time, id, token)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return value > 1e8 and _epoch_near(float(value), now)
    if not isinstance(value, str):
        return False
    text = value.strip().strip('"')
    if text.startswith("W/"):
        text = text[2:].strip('"')
    if not text:
        return False
    if _TIMESTAMPS.search(text) or _UUID.search(text) or _JWT.search(text):
        return True
    if re.fullmatch(r"\d{9,19}(?:\.\d+)?", text):
        return _epoch_near(float(text), now)
    date = _DATE.fullmatch(text)
    if date:
        try:
            day = datetime(int(date[1]), int(date[2]), int(date[3]), tzinfo=UTC)
        except ValueError:
            return False
        return _near(day, now, timedelta(days=2))
    return bool(_ULID.fullmatch(text) or _UUID_HEX.fullmatch(text)) or _random_token(text)



# -- volatile parts of a text, and masking -----------------------------------------------

MASK = "<volatile>"
MAX_SCANNED = 16384  # longer texts (bulk payloads) are not searched: every request pays for it
_MAX_WORD = 512  # longer words are data (base64 images...), not ids or tokens
# password hashes, each with its random salt: bcrypt, argon2, Django's pbkdf2, Werkzeug's
# scrypt/pbkdf2 (a registration stores a new one every run; the login reads it back)
_HASHES = re.compile("|".join([
    r"\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}",
    r"\$argon2(?:id|i|d)\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+",
    r"pbkdf2_sha\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+",
    r"(?:scrypt:\d+:\d+:\d+|pbkdf2:sha\d+:\d+)\$[A-Za-z0-9+/=]+\$[0-9a-f]+",
]))
# a secret's placeholder: the recording holds it for a value the app made (a session key
# Django stores in django_session, then names in its cookie), which a live request holds
# once the value is mapped back (``ValueMap.to_recorded``)
_PLACEHOLDER = PLACEHOLDER.pattern
_STRONG = re.compile(f"{_HASHES.pattern}|{_UUID.pattern}|{_JWT.pattern}|{_TIMESTAMPS.pattern}|{_PLACEHOLDER}")
_WORD = re.compile(r"[A-Za-z0-9+/=_-]{9,}")


_MEMO: dict[tuple[str, str], tuple[str, ...]] = {}  # (text, also) -> its volatile parts
_MEMO_SIZE = 4096  # entries, oldest dropped first
_MEMO_TEXT = 1024  # longer texts are not kept (bounded memory: ~4 MiB of keys at most)


def find_volatile(text: str, now: datetime, also: str = "") -> list[str]:
    """The volatile parts of ``text``, in order (repeats included): UUIDs, JWTs and
    timestamps wherever they are (``session:<uuid>`` keeps its prefix), and what the
    regular expression ``also`` matches (a dialect's counters inside identifiers), then
    the words between them that ``volatile_value`` calls volatile.

    Remembered per text when the answer did not depend on ``now`` (no value was compared
    with the time): an app sends the same keys and statements again and again, and the
    detectors cost 10-30 µs a request (a third of record's capture with redis-benchmark)."""
    if len(text) < 9 or len(text) > MAX_SCANNED:
        return []  # too short to hold one, or a bulk payload
    key = (text, also)
    known = _MEMO.get(key)
    if known is not None:
        return list(known)
    started = _clock_read.set(False)
    found = _find(text, now, also)
    timeless = not _clock_read.get()
    _clock_read.reset(started)
    if timeless and len(text) <= _MEMO_TEXT:
        if len(_MEMO) >= _MEMO_SIZE:
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):  # another thread's
                del _MEMO[next(iter(_MEMO))]
        _MEMO[key] = tuple(found)
    return found


def _find(text: str, now: datetime, also: str) -> list[str]:
    found: list[str] = []
    pos = 0
    hint = also or any(c in text for c in ("-", ":", "eyJ", "T", "$"))  # in every _STRONG match
    strong = _strong(also) if hint else None  # (_STRONG is slow to run: 0.4 ms per KiB)
    for m in strong.finditer(text) if strong else ():
        found += _words(text[pos:m.start()], now)
        found.append(m.group())
        pos = m.end()
    found += _words(text[pos:], now)
    return found + _b62_times(text, now) if ":" in text else found


# Django's signed values (``signing.dumps``, the session data of ``cached_db``/``signed_cookies``):
# ``payload:<seconds in base62>:signature``; the seconds are six digits until 2026-2030
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_B62_TIME = re.compile(r"(?<=:)([0-9A-Za-z]{6}):([A-Za-z0-9_-]{20,})")


def _b62_seconds(word: str) -> int | None:
    if len(word) != 6 or not word.isascii() or not word.isalnum():
        return None
    seconds = 0
    for c in word:
        seconds = seconds * 62 + _B62.index(c)
    return seconds


def _clock_reading(value: str) -> bool:
    """A time, not an id: two readings equal when recorded (the same second, Django's
    signing time of a session's INSERT and UPDATE) may differ at replay, where the app
    runs slower; such a pair is no contradiction of the one before."""
    seconds = _b62_seconds(value)
    return bool(_TIMESTAMPS.match(value)) or (seconds is not None and 1e9 <= seconds < 4.2e9)


def _b62_times(text: str, now: datetime) -> list[str]:
    """The time and the signature of each signed value: the signature whole (base64url:
    a random ``_`` or ``-`` in it must not make a readable "prefix" of its start)."""
    found = []
    for m in _B62_TIME.finditer(text):
        seconds = _b62_seconds(m.group(1))
        if seconds is not None and _epoch_near(seconds, now):
            found += [m.group(1), m.group(2)]
    return found


@functools.lru_cache(maxsize=16)
def _strong(also: str) -> re.Pattern[str]:
    return re.compile(f"{also}|{_STRONG.pattern}") if also else _STRONG


def _words(text: str, now: datetime) -> list[str]:
    return [v for w in _WORD.findall(text) if len(w) <= _MAX_WORD and (v := _unprefixed(w, now))]


def _unprefixed(word: str, now: datetime) -> str | None:
    """The volatile part of a word, without its readable prefix (``SESSION_<hex>`` ->
    ``<hex>``: the prefix is compared, so another kind of key still misses); None."""
    best = word if volatile_value(word, now) else None
    for m in re.finditer(r"[_-]+", word):
        if not _READABLE.fullmatch(word[:m.start()]):
            break
        rest = word[m.end():]
        if len(rest) >= 9 and volatile_value(rest, now):
            best = rest
    return best


_READABLE = re.compile(r"[A-Za-z]+(?:[_-]+[A-Za-z]+)*")


def _pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    """Whole occurrences of any of ``values`` (longest first; not inside a longer word)."""
    ordered = sorted({v for v in values if v}, key=len, reverse=True)
    if not ordered:
        return None
    return re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(map(re.escape, ordered)) + r")(?![A-Za-z0-9])")


def _map_leaves(value: Any, text: Callable[[str], Any], number: Callable[[Any], Any]) -> Any:
    """``value`` (readable data) with ``text`` applied to its strings and ``number`` to its
    numbers (an epoch in a binary ``int8`` parameter, ``time.time()`` in a JSON body)."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return number(value)
    if isinstance(value, list):
        return [_map_leaves(v, text, number) for v in value]
    if isinstance(value, dict):
        return {k: _map_leaves(v, text, number) for k, v in value.items()}
    return value


def mask(request: Any, values: Iterable[str]) -> Any:
    """``request`` (readable data) with every occurrence of ``values`` as ``<volatile>``."""
    values = set(values)
    pattern = _pattern(values)
    if pattern is None:
        return request
    return _map_leaves(request, lambda s: pattern.sub(MASK, s),
                       lambda n: MASK if str(n) in values else n)


def occurrences(request: Any, values: Iterable[str]) -> list[str]:
    """The occurrences of ``values`` in ``request``, in order (as ``mask`` meets them)."""
    values = set(values)
    pattern = _pattern(values)
    found: list[str] = []
    if pattern is not None:
        def text(s: str) -> str:
            found.extend(pattern.findall(s))
            return s

        def number(n: Any) -> Any:
            if str(n) in values:
                found.append(str(n))
            return n

        _map_leaves(request, text, number)
    return found


def recorded_values(extra: dict[str, Any]) -> list[str]:
    """The ``spec.volatile`` list of a recording (untrusted: anything else is ignored)."""
    values = extra.get("volatile")
    if not isinstance(values, list):
        return []
    return [v for v in values if isinstance(v, str) and v]


class ValueMap:
    """Recorded value -> the live value that took its place, for one run's test.

    ``earlier``: the run's map of every pair kept so far, in any test (the latest pair
    of a value wins). A request that matches nothing takes from there the pairs of its
    volatile values this test has not paired (``adopt``), and is looked up again: the app
    made the value in an earlier test (a uuid4 primary key) and still sends it (a
    background task that runs after the answer, during the next test; a later ``GET`` by
    that id). Taken on a miss only, not searched in every request: the run's values are
    many, and a pattern over them costs (256 UUIDs: ~36 ms to compile here)."""

    def __init__(self, earlier: ValueMap | None = None) -> None:
        self.live: dict[str, str] = {}
        self.recorded: dict[str, str] = {}
        self.earlier = earlier
        self._patterns: dict[str, re.Pattern[str] | None] = {}  # built once per change

    def bind(self, recorded: list[str], live: list[str]) -> str | None:
        """Keep the pairs of a match through masked values; why not, when they contradict
        the pairs already kept (a recorded value that already stands for another live one)."""
        if len(recorded) != len(live):
            return f"{len(recorded)} volatile values recorded, {len(live)} in the request"
        pairs = [(r, v) for r, v in zip(recorded, live, strict=True) if r != v]
        for r, v in pairs:
            if (self.live.get(r, v) != v or self.recorded.get(v, r) != r) and not _clock_reading(r):
                return f"recorded {r} already stands for {self.live.get(r) or self.recorded.get(v)}"
        self.remember(pairs)  # a clock reading takes its latest pair
        if self.earlier is not None:
            self.earlier.remember(pairs)
        return None

    def remember(self, pairs: list[tuple[str, str]]) -> None:
        """Keep ``pairs``, replacing any older pair of either value (the run's map)."""
        for r, v in pairs:
            if (old := self.live.pop(r, None)) is not None:
                self.recorded.pop(old, None)
            if (old := self.recorded.pop(v, None)) is not None:
                self.live.pop(old, None)
        self._keep(pairs)

    def _keep(self, pairs: list[tuple[str, str]]) -> None:
        for r, v in pairs:
            self.live[r], self.recorded[v] = v, r
        if pairs:
            self._patterns.clear()

    def adopt(self, live: Iterable[str]) -> bool:
        """Take the run's pairs (``earlier``) of the ``live`` values this test has not
        paired (found in a request that matched nothing); whether there were any."""
        if self.earlier is None:
            return False
        pairs = [(r, v) for v in live
                 if v not in self.recorded and (r := self.earlier.recorded.get(v)) is not None
                 and r not in self.live]
        self.remember(pairs)
        return bool(pairs)

    def to_recorded(self, request: Any) -> Any:
        """A live request with the live values known as the recorded ones they replace."""
        return _replace(request, self.recorded, self._pattern("recorded"))

    def to_live(self, responses: Any) -> Any:
        """Recorded responses with the recorded values known as the live ones."""
        return _replace(responses, self.live, self._pattern("live"))

    def _pattern(self, which: str) -> re.Pattern[str] | None:
        if which not in self._patterns:
            self._patterns[which] = _pattern(getattr(self, which))
        return self._patterns[which]


def _replace(value: Any, table: dict[str, str], pattern: re.Pattern[str] | None) -> Any:
    if pattern is None:
        return value

    def number(n: Any) -> Any:
        other = table.get(str(n))
        if other is None:
            return n
        try:
            return int(other) if isinstance(n, int) else float(other)
        except ValueError:
            return n

    return _map_leaves(value, lambda s: pattern.sub(lambda m: table[m.group()], s), number)


# -- structured messages: JSON values, named fields, user rules ------------------------

_BARE_MASK = re.compile(r"(?<=[:\[,])(\s*)" + re.escape(MASK) + r"(?=\s*[,}\]])")


def loads_masked(text: str) -> Any:
    """JSON text as data, also once masked (a number replaced by a bare ``<volatile>``
    becomes the string ``"<volatile>"``), so masked JSON still compares as data, in any
    key order; ValueError when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        if MASK not in text:
            raise
    return json.loads(_BARE_MASK.sub(r'\1"' + MASK + '"', text))


@dataclass(frozen=True)
class FieldRules:
    """The user's rules for values inside structured messages (HTTP requests, Kafka
    records; config.yaml): JSON paths, field names (headers, query keys) and Kafka topics
    whose whole values are volatile, and regular expressions (identifiers to map: ids the
    detectors cannot tell from data, such as ``ord-[0-9]+``) whose matches anywhere are."""

    json_paths: tuple[tuple[str | int, ...], ...] = ()
    names: frozenset[str] = frozenset()  # lower case
    topics: frozenset[str] = frozenset()  # Kafka: record keys of these topics ("*": all)
    identifiers: str = ""  # one regular expression (the alternation of the user's)

    def pinned(self, path: tuple[str | int, ...]) -> bool:
        return any(path_matches(list(steps), path) for steps in self.json_paths)


def field_rules(section: dict, where: str, names: tuple[str, ...], topics: str = "") -> FieldRules:
    """``volatile_json_paths``, the name lists ``names`` (``volatile_headers``...),
    ``topics`` and ``volatile_identifiers`` of a config.yaml section named ``where``;
    ValueError naming what is wrong."""
    def strings(key: str) -> list[str]:
        value = section.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"{where}.{key} must be a list of names")
        return value

    identifiers = strings("volatile_identifiers")
    for pattern in identifiers:
        try:
            if re.compile(pattern).match(""):
                raise ValueError(f"{where}.volatile_identifiers: {pattern!r} matches nothing at all")
        except re.error as exc:
            raise ValueError(f"{where}.volatile_identifiers: {pattern!r} is not a regular "
                             f"expression: {exc}") from None
    return FieldRules(
        json_paths=tuple(tuple(parse_json_path(p)) for p in strings("volatile_json_paths")),
        names=frozenset(n.lower() for key in names for n in strings(key)),
        topics=frozenset(strings(topics)) if topics else frozenset(),
        identifiers="|".join(f"(?:{p})" for p in identifiers))


def in_text(text: str, now: datetime | None, rules: FieldRules) -> list[str]:
    """The volatile parts of one text: the detectors' (``now``: None for the rules
    alone) and the matches of the user's identifiers."""
    if now is not None and len(text) >= 9:
        return find_volatile(text, now, rules.identifiers)
    return [m.group() for m in re.finditer(rules.identifiers, text) if m.group()] if rules.identifiers else []


def in_data(value: Any, now: datetime | None, rules: FieldRules,
            path: tuple[str | int, ...] = ()) -> list[str]:
    """The volatile parts of JSON data, in the order ``mask`` meets them: the whole value
    at a path the user names, else what ``in_text`` finds in texts and epoch numbers."""
    if isinstance(value, dict):
        return [v for k, item in value.items() for v in in_data(item, now, rules, (*path, k))]
    if isinstance(value, list):
        return [v for i, item in enumerate(value) for v in in_data(item, now, rules, (*path, i))]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return []
    if rules.json_paths and rules.pinned(path):
        return [str(value)] if str(value) else []
    if isinstance(value, str):
        return in_text(value, now, rules)
    return [str(value)] if now is not None and volatile_value(value, now) else []

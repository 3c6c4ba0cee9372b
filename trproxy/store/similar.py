"""The bounded similarity fallback: what rules and detectors miss (sans-I/O, pure).

A request the app made with a value no detector calls generated (a short random number,
a hex nonce of unlucky entropy) matches no recording, exactly or with its volatile parts
masked. Replay may then serve the most similar *unused* recording of the same skeleton,
under bounds that keep a real difference a miss:

* the skeleton is the match key (volatile parts masked) with every *value-like* token
  (a run of letters and digits of ``MIN_LENGTH``+ characters holding a digit) replaced
  by ``#``: the command, the statement with its literals, the method and path template,
  every word and every short number (a quantity, a page, a limit) must be equal;
* at most ``MAX_DIFFERENT`` distinct value-like tokens may differ, each with one of the
  same shape (same length; both decimal, both hexadecimal, or both alphanumeric), and
  the same recorded token always in place of the same live one.

Only unused ``data`` exchanges are candidates: a login (a password's salted hash is
hex of a fixed shape) or a setting (``session`` exchanges) is always compared exactly,
and so is any request holding a redacted secret (a Redis ``AUTH`` is a ``data`` command).
The differing tokens pair up recorded -> live like masked values (``ValueMap``), so
replies carry the live ones. The run's report lists every such answer with the recording
and a diff; ``--strict`` turns the fallback off (a miss).
"""

from __future__ import annotations

import re
import string

MAX_DIFFERENT = 2
MIN_LENGTH = 6
MAX_KEY = 16384  # longer keys (bulk payloads) are never compared token by token
_TOKEN = re.compile(r"([A-Za-z0-9]+)")
_HEX = frozenset(string.hexdigits)


def _value_like(token: str) -> bool:
    return len(token) >= MIN_LENGTH and any(c.isdigit() for c in token)


def skeleton(key: str) -> str | None:
    """``key`` (a canonical match key) with its value-like tokens as ``#``; None when too long."""
    if len(key) > MAX_KEY or "<redacted" in key:  # credentials are never near enough
        return None
    return _TOKEN.sub(lambda m: "#" if _value_like(m.group()) else m.group(), key)


def _shape(token: str) -> tuple[int, str]:
    kind = "decimal" if token.isdigit() else "hex" if set(token) <= _HEX else "alphanumeric"
    return len(token), kind


def differences(recorded: str, live: str) -> list[tuple[str, str]] | None:
    """The (recorded, live) value-like tokens that differ between two keys of the same
    skeleton, in order and once each; None when the bounds above are not met."""
    ours, theirs = _TOKEN.split(recorded), _TOKEN.split(live)
    if len(ours) != len(theirs):
        return None
    pairs: dict[str, str] = {}
    back: dict[str, str] = {}
    for i in range(1, len(ours), 2):  # odd places hold tokens, even ones what separates them
        r, v = ours[i], theirs[i]
        if r == v:
            continue
        if not (_value_like(r) and _value_like(v) and _shape(r) == _shape(v)):
            return None
        if pairs.setdefault(r, v) != v or back.setdefault(v, r) != r:
            return None  # one recorded value in place of two live ones, or the reverse
    if any(ours[i] != theirs[i] for i in range(0, len(ours), 2)) or len(pairs) > MAX_DIFFERENT:
        return None
    return list(pairs.items())

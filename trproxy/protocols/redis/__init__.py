"""The Redis dialect: RESP2 and RESP3, recorded as readable commands and typed replies.

Modules: ``resp`` (messages, encoding), ``parser`` (incremental decoders), ``codec``
(both directions), ``readable`` (recording format), ``commands`` (Redis semantics:
CLIENT REPLY, pub/sub, lifetimes, secrets, match keys), ``recorder`` and ``replayer``.

Recording format (``spec`` of a ``kind: redis`` document)::

    request: [SET, k, v]                     # arguments; non-text ones as {hex: ...}
    responses: [{simple: OK}]                # what the server sent, in order

Replies are readable typed values that convert back to the same RESP bytes:

* bulk string: the text itself, or ``{hex: ...}``; RESP2 null bulk string (``$-1``): ``null``
* ``{simple: OK}``, ``{error: ERR ...}``, ``{int: 1}``
* array: a YAML list; RESP2 null array (``*-1``): ``{array: null}``
* RESP3: ``{null: true}``, ``{bool: true}``, ``{double: "1.5"}``, ``{bignum: "123"}``,
  ``{bulk_error: ...}``, ``{verbatim: {format: txt, text: ...}}``,
  ``{map: [[key, value], ...]}``, ``{set: [...]}``, ``{push: [...]}``,
  ``{attribute: [[key, value], ...], value: <the value it annotates>}``

An inline request redis-server rejects (unbalanced quotes) is ``{inline: <line>}``.
Requests that get no reply (``CLIENT REPLY OFF``/``SKIP``) have ``responses: []``.
Out-of-band messages (pub/sub messages, RESP3 pushes, MONITOR lines) are extra
responses of the interaction they follow, so ``SUBSCRIBE`` replays its confirmation and
then its messages; such interactions are ``data``. Secrets never reach a recording: login
passwords (``AUTH``, ``HELLO ... AUTH``) become a salted scrypt hash that replay matches
(``credentials``), other secrets (``CONFIG SET requirepass``, ``ACL`` rules and hashes...)
``<redacted>`` (``commands``).

Lifetimes: ``session`` for ``HELLO``, ``AUTH``, ``SELECT``, ``PING``, ``ECHO``, ``CLIENT
SETINFO|SETNAME|ID|...``, ``COMMAND``, ``CONFIG GET``, ``INFO``, ``ROLE``, ``CLUSTER
SLOTS|...``, ``SCRIPT LOAD``; ``data`` for everything else.
"""

from __future__ import annotations

import dataclasses
import functools
import re

from ..base import Dialect
from .codec import RedisCodec
from .commands import COMMANDS, match_key, rule_values, rules_from_section, volatile
from .parser import Limits, ParserState
from .readable import from_readable, to_readable
from .recorder import RedisRecorder
from .replayer import RedisReplayer, check_fault
from .resp import (
    Array,
    Attribute,
    BigNumber,
    Boolean,
    BulkError,
    BulkString,
    Command,
    Double,
    Integer,
    InvalidInline,
    Map,
    Null,
    Push,
    RespValue,
    Set,
    SimpleError,
    SimpleString,
    VerbatimString,
)

_MULTIBULK = re.compile(rb"\*[1-9][0-9]{0,9}\r\n\$[0-9]{1,10}\r\n")
_MULTIBULK_PREFIX = re.compile(rb"\*(?:[1-9][0-9]{0,9}(?:\r(?:\n(?:\$(?:[0-9]{1,10}\r?)?)?)?)?)?")
_PREFIXES = frozenset(name[:i] for name in COMMANDS for i in range(1, len(name) + 1))
_HTTP_LINE = re.compile(rb" HTTP/[0-9]")


def detect(first_bytes: bytes, port: int) -> bool | None:
    """True for a multi-bulk header (``*N\\r\\n$M\\r\\n``) or an inline Redis command.

    Inline commands are recognised by their name (``PING``, ``GET``...); a ``GET`` line
    ending in ``HTTP/x`` is HTTP. The port is not consulted: bytes decide.
    """
    data = first_bytes.lstrip(b"\r\n")
    if not data:
        return None
    if data[:1] == b"*":
        if _MULTIBULK.match(data):
            return True
        return None if _MULTIBULK_PREFIX.fullmatch(data) else False
    match = re.match(rb"[^ \t\r\n]*", data)
    token = match.group(0).upper() if match else b""
    if len(token) == len(data):  # the name is not complete yet
        return None if token in _PREFIXES else False
    if token not in COMMANDS:
        return False
    end = data.find(b"\n")
    if end < 0:
        return None if len(data) < 8192 else True
    return _HTTP_LINE.search(data[:end]) is None


def _configure(section: dict) -> Dialect:
    """The dialect with the user's ``redis:`` rules (``volatile_arguments``); the shipped
    one when there are none (``registry.configure``)."""
    rules = rules_from_section(section)
    if not rules:
        return DIALECT
    return dataclasses.replace(DIALECT, volatile=functools.partial(volatile, rules=rules),
                               volatile_rules=functools.partial(rule_values, rules))


DIALECT = Dialect(
    name="redis",
    default_ports=(6379, 26379),
    detect=detect,
    recorder=RedisRecorder,
    replayer=RedisReplayer,
    match_key=match_key,
    volatile=volatile,
    configure=_configure,
    check_fault=check_fault,
)

__all__ = [
    "DIALECT", "Array", "Attribute", "BigNumber", "Boolean", "BulkError", "BulkString", "Command",
    "Double", "Integer", "InvalidInline", "Limits", "Map", "Null", "ParserState", "Push",
    "RedisCodec", "RedisRecorder", "RedisReplayer", "RespValue", "Set", "SimpleError",
    "SimpleString", "VerbatimString", "detect", "from_readable", "match_key", "to_readable",
]

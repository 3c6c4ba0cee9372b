"""Replay mode: turn a client's requests into lookups and recorded replies back into RESP.

Per connection the replayer tracks what the live client negotiated: the RESP version
(``HELLO 3`` switches to RESP3 once its reply goes out, ``HELLO 2`` and ``RESET`` back to
RESP2) and ``CLIENT REPLY OFF/SKIP`` (such requests become lookups with
``expects_reply=False``). Replies recorded in RESP3 are sent to a RESP2 client in their
RESP2 form (``readable.downgrade``), as redis-server would; a ``HELLO`` reply takes the
shape of the live client's version.

Handshakes are looked up like anything else (their match keys ignore library versions,
see ``commands.match_key``); when nothing was recorded for one, ``miss`` answers it
itself: ``+OK`` for ``SELECT``/``CLIENT SETINFO|SETNAME``, ``+PONG``, a ``HELLO`` map
(such lookups carry ``context.handshake``). Credentials are matched (hashed,
``credentials``): an ``AUTH`` or ``HELLO ... AUTH`` that no recording answers gets
``-WRONGPASS trproxy: ...`` and is reported, as the server refuses unknown credentials.
Any other miss is ``-ERR trproxy: no recording for <command>: <reason>``.

Out-of-band messages (pub/sub, RESP3 pushes) are recorded as pushed events and sent by
``push`` when the replay reaches the point they arrived at (the PUBLISH that caused
them); recordings made before that carry them as extra responses of the interaction they
followed, served with it, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..base import NEED_DATA, Failure, Lifetime, Lookup, LookupContext, Readable, Reply, blob
from .commands import Expect, ReplyMode, in_live_order, lifetime, name_of, redact_request, summary
from .parser import Limits, ParserState, RequestParser
from .readable import downgrade, from_readable, request_to_readable
from .resp import (
    Array,
    BulkString,
    Integer,
    InvalidInline,
    Map,
    RespValue,
    SimpleError,
    SimpleString,
    encode_value,
)

_OK = SimpleString(b"OK")
# what redis-server 7 says with these error prefixes (the failures clients retry on)
FAULT_MESSAGES = {
    "LOADING": "Redis is loading the dataset in memory",
    "READONLY": "You can't write against a read only replica.",
    "BUSY": "Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT.",
    "MASTERDOWN": "Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    "TRYAGAIN": "Multiple keys request during rehashing of slot",
    "CLUSTERDOWN": "The cluster is down",
    "OOM": "command not allowed when used memory > 'maxmemory'.",
    "NOREPLICAS": "Not enough good replicas to write.",
}
_SYNTH_OK = frozenset([b"SELECT", b"CLIENT SETINFO", b"CLIENT SETNAME", b"CLIENT REPLY",
                       b"READONLY", b"READWRITE", b"QUIT"])


@dataclass(frozen=True, slots=True)
class _Parsed:
    """What a command's lookup is made of that depends on its arguments alone: made once
    per distinct chunk of requests (``_CHUNKS``), so a client repeating its requests
    (a benchmark, a poller, a pipeline) is not parsed again each time."""

    args: tuple[bytes, ...]
    name: bytes
    request: tuple[Readable, ...]
    lifetime: Lifetime
    summary: str
    handshake: bool
    private: dict[str, Any]
    same_as: tuple[bytes, ...] | None  # the arguments, when kept (the pool keys by them)


def _command(args: tuple[bytes, ...]) -> _Parsed:
    redacted = redact_request(args)
    request = [blob(a) for a in redacted]
    name = name_of(args)
    login = name == b"AUTH" or (name == b"HELLO" and any(a.upper() == b"AUTH" for a in args[2:]))
    private: dict[str, Any] = {"name": name, "label": _label(name, request), "login": login}
    if name == b"HELLO":
        private["proto"] = _proto(args)
    elif name == b"PING" and len(args) > 1:
        private["echo"] = args[1]
    # miss() answers these itself: a miss here is not an error
    handshake = not login and (name in _SYNTH_OK or name in (b"HELLO", b"PING", b"RESET"))
    # remembered by its arguments only when small and without a secret (a password
    # stays in memory no longer than its request)
    kept = sum(len(a) for a in args) <= _MAX_CHUNK and redacted == args
    return _Parsed(args, name, tuple(request), lifetime(args), summary(args), handshake, private,
                   args if kept else None)


# chunks of client bytes seen whole (nothing before them pending), per parser limits ->
# the commands in them; bounded (small chunks, emptied when full)
_CHUNKS: dict[Limits, dict[bytes, tuple[_Parsed, ...]]] = {}
_MAX_CHUNK = 4096
_MAX_CHUNKS = 4096
# (RESP version, the text of recorded responses) -> their bytes: a recorded answer is
# rendered once, not once per request it answers (``respond``); small answers only
_RENDERED: dict[tuple[int, str], bytes] = {}
_MAX_RENDERED = 1024  # characters of an answer's text
_MAX_ANSWERS = 4096  # answers kept (emptied when full)


def _proto(args: tuple[bytes, ...]) -> int | None:
    """The protocol version a HELLO asks for (None: keep the current one)."""
    if len(args) < 2:
        return None
    try:
        return int(args[1])
    except ValueError:
        return -1


class RedisReplayer:
    """One connection in replay mode (only the client exists)."""

    def __init__(self, **limits: int) -> None:
        self._parser = RequestParser(Limits(**limits))
        self._mode = ReplyMode()
        self.resp = 2  # the live client's protocol version
        self.close_after = False  # QUIT: redis-server closes once it answered
        self._chunks = _CHUNKS.setdefault(self._parser.limits, {})

    def feed(self, data: bytes) -> list[Lookup | Reply]:
        parser = self._parser
        idle = parser.state is ParserState.IDLE
        known = self._chunks.get(data) if idle else None
        if known is not None:  # a chunk seen before, whole, with nothing before it
            return [self._lookup(message) for message in known]
        parser.feed(data)
        parsed: list[_Parsed | InvalidInline] = []
        while (message := parser.next_command()) is not NEED_DATA:
            parsed.append(message if isinstance(message, InvalidInline) else _command(message.args))
        if idle and data and len(data) <= _MAX_CHUNK and parser.state is ParserState.IDLE \
                and all(isinstance(m, _Parsed) and m.same_as is not None for m in parsed):
            if len(self._chunks) >= _MAX_CHUNKS:
                self._chunks.clear()
            self._chunks[data] = tuple(parsed)  # type: ignore[arg-type]
        return [self._lookup(message) for message in parsed]

    def _lookup(self, message: _Parsed | InvalidInline) -> Lookup:
        if isinstance(message, InvalidInline):
            return Lookup(request=request_to_readable(message), lifetime="data",
                          summary="inline request (unbalanced quotes)",
                          context=LookupContext(private={
                              "name": b"", "label": "an inline request with unbalanced quotes"}))
        if message.name == b"QUIT":  # clients wait for that close (ioredis' quit() resolves on it)
            self.close_after = True
        return Lookup(request=list(message.request), lifetime=message.lifetime, summary=message.summary,
                      expects_reply=self._mode.expect(message.args) is not Expect.NONE,
                      context=LookupContext(handshake=message.handshake, private=dict(message.private),
                                            same_as=message.same_as))

    def respond(self, lookup: Lookup, responses: list[Readable]) -> bytes:
        if responses and lookup.context.recorded is not None:
            responses = [in_live_order(lookup.context.recorded, lookup.request, responses[0]),
                         *responses[1:]]
        name = lookup.context.private.get("name")
        if name in (b"HELLO", b"RESET"):  # they change the connection's state
            return self._render(name, responses, lookup.context.private.get("proto"))
        try:
            text = repr(responses)  # equal texts, equal answers (readable data is JSON-like)
        except RecursionError:  # absurd nesting: from_readable says why
            return self._render(name, responses, None)
        if len(text) > _MAX_RENDERED:
            return self._render(name, responses, None)
        rendered = _RENDERED.get((self.resp, text))
        if rendered is None:
            rendered = self._render(name, responses, None)
            if len(_RENDERED) >= _MAX_ANSWERS:
                _RENDERED.clear()
            _RENDERED[(self.resp, text)] = rendered
        return rendered

    def _render(self, name: bytes | None, responses: list[Readable], proto: int | None) -> bytes:
        values = [from_readable(r) for r in responses]
        if name == b"HELLO" and values:
            values[0] = self._hello(values[0], proto)
        elif name == b"RESET" and values and isinstance(values[0], SimpleString):
            self.resp = 2
        if self.resp == 2:
            values = [downgrade(v) for v in values]
        return b"".join(encode_value(v) for v in values)

    def push(self, responses: list[Readable]) -> bytes:
        """Recorded out-of-band messages (pub/sub, RESP3 pushes), in the client's RESP."""
        values = [from_readable(r) for r in responses]
        if self.resp == 2:
            values = [downgrade(v) for v in values]
        return b"".join(encode_value(v) for v in values)

    def miss(self, lookup: Lookup, reason: str) -> bytes:
        name = lookup.context.private.get("name", b"")
        if lookup.context.private.get("login"):
            text = f"WRONGPASS trproxy: no recording for {name.decode()} with these credentials: {reason}"
            return encode_value(SimpleError(" ".join(text.split()).encode("utf-8", "replace")))
        if name == b"HELLO":
            return encode_value(self._hello(_hello_map(lookup.context.private.get("proto") or self.resp),
                                            lookup.context.private.get("proto")))
        if name in _SYNTH_OK:
            return encode_value(_OK)
        if name == b"PING":
            echo = lookup.context.private.get("echo")
            return encode_value(SimpleString(b"PONG") if echo is None else BulkString(echo))
        if name == b"RESET":
            self.resp = 2
            return encode_value(SimpleString(b"RESET"))
        text = f"ERR trproxy: no recording for {lookup.context.private.get('label', 'this request')}: {reason}"
        return encode_value(SimpleError(" ".join(text.split()).encode("utf-8", "replace")))

    def fault(self, lookup: Lookup, failure: Failure) -> bytes:
        """The error a failing redis-server answers (fault injection): ``-LOADING ...``."""
        prefix = failure.error.upper()
        text = failure.message or FAULT_MESSAGES.get(prefix, "trproxy: injected fault")
        return encode_value(SimpleError(" ".join(f"{prefix} {text}".split()).encode("utf-8", "replace")))

    def _hello(self, value: RespValue, proto: int | None) -> RespValue:
        """A HELLO reply in the live client's shape; switches the connection's version."""
        if proto is not None and proto not in (2, 3):
            return value
        pairs: list[tuple[RespValue, RespValue]]
        if isinstance(value, Map):
            pairs = list(value.items)
        elif isinstance(value, Array) and value.items and len(value.items) % 2 == 0:
            pairs = list(zip(value.items[0::2], value.items[1::2], strict=True))
        else:
            return value  # an error (NOPROTO, WRONGPASS...): nothing switches
        version = proto or self.resp
        pairs = [(k, Integer(version)) if k == BulkString(b"proto") else (k, v) for k, v in pairs]
        self.resp = version
        if version == 3:
            return Map(tuple(pairs))
        return Array(tuple(x for pair in pairs for x in pair))


def _hello_map(proto: int) -> RespValue:
    """What redis-server answers to HELLO, when nothing was recorded."""
    if proto not in (2, 3):
        return SimpleError(b"NOPROTO unsupported protocol version")
    fields: list[tuple[bytes, RespValue]] = [(b"server", BulkString(b"redis")), (b"version", BulkString(b"7.2.0")),
              (b"proto", Integer(proto)), (b"id", Integer(1)), (b"mode", BulkString(b"standalone")),
              (b"role", BulkString(b"master")), (b"modules", Array(()))]
    return Map(tuple((BulkString(k), v) for k, v in fields))


def _label(name: bytes, request: list) -> str:
    """``GET user:1``: the command and its first argument, for error messages."""
    words = name.decode("utf-8", "replace").split()
    first = request[len(words)] if len(request) > len(words) else None
    label = " ".join(words)
    if isinstance(first, str):
        label += " " + (first if len(first) <= 60 else first[:57] + "...")
    return label


def check_fault(failure: Failure) -> None:
    """A Redis error starts with an upper-case word (``LOADING``, ``READONLY``, ``ERR``)."""
    if not failure.error.isascii() or not failure.error.isalpha():
        raise ValueError(f"a Redis error is a prefix word such as LOADING, READONLY, BUSY "
                         f"(then message=...), not {failure.error!r}")

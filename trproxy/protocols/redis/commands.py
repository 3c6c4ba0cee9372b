"""What trproxy knows about Redis commands, shared by the recorder and the replayer.

* ``ReplyMode``: whether the server answers a request, following ``CLIENT REPLY
  ON|OFF|SKIP`` and ``MULTI`` in request order, as redis ``networking.c`` does;
* lifetimes (``session`` for handshakes, configuration and metadata; ``data`` else) and
  short summaries;
* redaction of secrets, applied before anything becomes readable, so secrets never
  reach a recording: login passwords (``AUTH``, ``HELLO ... AUTH``) become a salted slow
  hash (``credentials``), so they still take part in matching - a recorded
  ``WRONGPASS`` is served only to the same credentials; the passwords a later login will
  give (``CONFIG SET requirepass``, ``ACL SETUSER`` ``>pass``/``<pass`` rules) are hashed
  the same way, for the account they belong to, and are volatile (``set_passwords``): a
  run that sets a random password maps the recorded one to its own, so its ``AUTH``
  matches; other passwords a command sets or passes on (``MIGRATE ... AUTH/AUTH2``,
  ``CONFIG SET masterauth``, ``ACL SETUSER`` ``#sha256``, ``SENTINEL SET ... auth-pass``,
  ``SENTINEL CONFIG SET sentinel-pass``) become ``<redacted>``, and so do the secrets in
  replies (``CONFIG GET``, ``SENTINEL CONFIG GET``, ``ACL GETUSER`` passwords, ``ACL
  LIST``'s ``#<sha256>``);
* ``match_key``: command names (and subcommands) case-insensitive; handshake values
  that differ between runs and libraries (``CLIENT SETINFO LIB-VER``, ``HELLO``'s
  ``SETNAME``) dropped; ``AUTH pass`` is ``AUTH default pass``; the members of commands
  whose answer does not depend on their order (``SADD``, ``PFADD``, ``DEL``...) compared
  as a multiset: clients pass a set's members in its iteration order, which differs
  between runs (Python's string hashing).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable
from datetime import datetime

from ..base import Lifetime, Readable
from ..credentials import hashed, is_hashed
from ..volatile import find_volatile
from .resp import Array, BulkString, Map, Push, RespValue, SimpleString

REDACTED = b"<redacted>"

# Top-level command names of redis 7.x (``COMMAND LIST``) and a few of later versions;
# used to recognise inline requests, which have no other marker.
COMMANDS: frozenset[bytes] = frozenset(b"""
ACL APPEND ASKING AUTH BGREWRITEAOF BGSAVE BITCOUNT BITFIELD BITFIELD_RO BITOP BITPOS BLMOVE
BLMPOP BLPOP BRPOP BRPOPLPUSH BZMPOP BZPOPMAX BZPOPMIN CLIENT CLUSTER COMMAND CONFIG COPY DBSIZE
DEBUG DECR DECRBY DEL DISCARD DUMP ECHO EVAL EVAL_RO EVALSHA EVALSHA_RO EXEC EXISTS EXPIRE
EXPIREAT EXPIRETIME FAILOVER FCALL FCALL_RO FLUSHALL FLUSHDB FUNCTION GEOADD GEODIST GEOHASH
GEOPOS GEORADIUS GEORADIUS_RO GEORADIUSBYMEMBER GEORADIUSBYMEMBER_RO GEOSEARCH GEOSEARCHSTORE
GET GETBIT GETDEL GETEX GETRANGE GETSET HDEL HELLO HEXISTS HEXPIRE HGET HGETALL HGETDEL HGETEX
HINCRBY HINCRBYFLOAT HKEYS HLEN HMGET HMSET HPERSIST HPEXPIRE HPTTL HRANDFIELD HSCAN HSET HSETEX
HSETNX HSTRLEN HTTL HVALS INCR INCRBY INCRBYFLOAT INFO KEYS LASTSAVE LATENCY LCS LINDEX LINSERT
LLEN LMOVE LMPOP LOLWUT LPOP LPOS LPUSH LPUSHX LRANGE LREM LSET LTRIM MEMORY MGET MIGRATE MODULE
MONITOR MOVE MSET MSETNX MULTI OBJECT PERSIST PEXPIRE PEXPIREAT PEXPIRETIME PFADD PFCOUNT
PFDEBUG PFMERGE PFSELFTEST PING PSETEX PSUBSCRIBE PSYNC PTTL PUBLISH PUBSUB PUNSUBSCRIBE QUIT
RANDOMKEY READONLY READWRITE RENAME RENAMENX REPLCONF REPLICAOF RESET RESTORE RESTORE-ASKING
ROLE RPOP RPOPLPUSH RPUSH RPUSHX SADD SAVE SCAN SCARD SCRIPT SDIFF SDIFFSTORE SELECT SET SETBIT
SETEX SETNX SETRANGE SHUTDOWN SINTER SINTERCARD SINTERSTORE SISMEMBER SLAVEOF SLOWLOG SMEMBERS
SMISMEMBER SMOVE SORT SORT_RO SPOP SPUBLISH SRANDMEMBER SREM SSCAN SSUBSCRIBE STRLEN SUBSCRIBE
SUBSTR SUNION SUNIONSTORE SUNSUBSCRIBE SWAPDB SYNC TIME TOUCH TTL TYPE UNLINK UNSUBSCRIBE
UNWATCH WAIT WAITAOF WATCH XACK XADD XAUTOCLAIM XCLAIM XDEL XGROUP XINFO XLEN XPENDING XRANGE
XREAD XREADGROUP XREVRANGE XSETID XTRIM ZADD ZCARD ZCOUNT ZDIFF ZDIFFSTORE ZINCRBY ZINTER
ZINTERCARD ZINTERSTORE ZLEXCOUNT ZMPOP ZMSCORE ZPOPMAX ZPOPMIN ZRANDMEMBER ZRANGE ZRANGEBYLEX
ZRANGEBYSCORE ZRANGESTORE ZRANK ZREM ZREMRANGEBYLEX ZREMRANGEBYRANK ZREMRANGEBYSCORE ZREVRANGE
ZREVRANGEBYLEX ZREVRANGEBYSCORE ZREVRANK ZSCAN ZSCORE ZUNION ZUNIONSTORE
""".split())

# commands whose first argument is a subcommand (``CLIENT SETINFO``, ``CONFIG GET``)
CONTAINERS: frozenset[bytes] = frozenset(
    b"ACL CLIENT CLUSTER COMMAND CONFIG FUNCTION LATENCY MEMORY MODULE OBJECT PUBSUB SCRIPT "
    b"SLOWLOG XGROUP XINFO".split()
)

_SESSION: frozenset[bytes] = frozenset(
    b"HELLO AUTH SELECT PING ECHO QUIT RESET READONLY READWRITE ASKING INFO COMMAND ROLE "
    b"LOLWUT".split()
)
_SESSION_SUB: dict[bytes, frozenset[bytes]] = {
    b"CLIENT": frozenset(b"SETINFO SETNAME GETNAME ID INFO LIST REPLY TRACKING TRACKINGINFO "
                         b"GETREDIR CACHING NO-EVICT NO-TOUCH MAINT_NOTIFICATIONS".split()),
    b"CONFIG": frozenset([b"GET"]),
    b"CLUSTER": frozenset(b"INFO SLOTS SHARDS NODES MYID MYSHARDID LINKS".split()),
    b"SCRIPT": frozenset([b"LOAD", b"EXISTS"]),
    b"MODULE": frozenset([b"LIST"]),
    b"ACL": frozenset([b"WHOAMI", b"CAT"]),
}

# pub/sub: the confirmation each (un)subscribe command gets, per argument
SUBSCRIBE = {b"SUBSCRIBE": "channels", b"PSUBSCRIBE": "patterns", b"SSUBSCRIBE": "shards"}
UNSUBSCRIBE = {b"UNSUBSCRIBE": "channels", b"PUNSUBSCRIBE": "patterns", b"SUNSUBSCRIBE": "shards"}
MESSAGES = frozenset([b"message", b"pmessage", b"smessage"])

_SECRET_CONFIG = frozenset([b"requirepass", b"masterauth", b"primaryauth", b"tls-key-file-pass",
                            b"tls-client-key-file-pass", b"sentinel-pass", b"auth-pass"])
_PASSWORD_HASH = re.compile(rb"(?<=#)[0-9a-fA-F]{64}\b")


def name_of(args: tuple[bytes, ...]) -> bytes:
    """The command name, upper-cased, with its subcommand for container commands."""
    if not args:
        return b""
    name = args[0].upper()
    if name in CONTAINERS and len(args) > 1:
        return name + b" " + args[1].upper()
    return name


def summary(args: tuple[bytes, ...]) -> str:
    return name_of(args).decode("utf-8", "replace")[:60]


def lifetime(args: tuple[bytes, ...]) -> Lifetime:
    name = args[0].upper() if args else b""
    if name in _SESSION:
        return "session"
    subs = _SESSION_SUB.get(name)
    if subs is not None and len(args) > 1 and args[1].upper() in subs:
        return "session"
    return "data"


class Expect(enum.Enum):
    """What the server sends back for a request."""

    NONE = "none"  # CLIENT REPLY OFF/SKIP in effect
    ONE = "one"
    SUBSCRIPTION = "subscription"  # one confirmation per channel (see ``Subscriptions``)


class ReplyMode:
    """``CLIENT REPLY`` and ``MULTI`` state, advanced in request order (redis ``networking.c``).

    ``CLIENT REPLY OFF`` silences replies until ``CLIENT REPLY ON`` (which answers +OK);
    ``SKIP`` silences itself and the next command, and is ignored while OFF; ``RESET``
    turns replies back on. Inside ``MULTI`` every command gets one reply (``+QUEUED``).
    """

    def __init__(self) -> None:
        self.off = False
        self._skip = False  # this command's reply is skipped
        self._skip_next = False
        self.in_multi = False

    def expect(self, args: tuple[bytes, ...]) -> Expect:
        name = args[0].upper() if args else b""
        skipped = self._skip
        answered = not (self.off or skipped)
        expect = Expect.ONE
        if self.in_multi:
            if name in (b"EXEC", b"DISCARD"):
                self.in_multi = False
        elif name == b"CLIENT" and len(args) == 3 and args[1].upper() == b"REPLY":
            mode = args[2].upper()
            if mode == b"ON":  # clears OFF/SKIP before replying, so +OK always goes out
                self.off, answered = False, True
            elif mode == b"OFF":
                self.off, answered = True, False
            elif mode == b"SKIP":
                if not self.off:
                    self._skip_next = True
                answered = False
        elif name == b"RESET":
            self.off = self._skip_next = False
        elif name == b"MULTI":
            self.in_multi = True
        elif name in SUBSCRIBE or name in UNSUBSCRIBE:
            expect = Expect.SUBSCRIPTION
        # resetClient(): the reply of the command after SKIP is skipped
        self._skip, self._skip_next = self._skip_next, False
        return expect if answered else Expect.NONE


def _kind(value: RespValue) -> bytes | None:
    """First element of an array/push, lower-cased: ``message``, ``subscribe``..."""
    if isinstance(value, Array | Push) and value.items:
        first = value.items[0]
        if isinstance(first, BulkString) and first.value is not None:
            return first.value.lower()
    return None


class Subscriptions:
    """Channels, patterns and shard channels the connection is subscribed to (from replies)."""

    def __init__(self) -> None:
        self.sets: dict[str, set[bytes]] = {"channels": set(), "patterns": set(), "shards": set()}

    @property
    def active(self) -> bool:
        return any(self.sets.values())

    def replies_for(self, args: tuple[bytes, ...]) -> int:
        """How many confirmations an (un)subscribe command gets; call when it reaches the head."""
        name = args[0].upper()
        if len(args) > 1:
            return len(args) - 1
        if name in UNSUBSCRIBE:  # from everything: one per subscription, or one if none
            return max(1, len(self.sets[UNSUBSCRIBE[name]]))
        return 1  # SUBSCRIBE without arguments: an error

    @staticmethod
    def confirmation_kind(args: tuple[bytes, ...], value: RespValue) -> bool:
        """Whether ``value`` looks like a confirmation of the (un)subscribe request ``args``."""
        kind = _kind(value)
        return kind is not None and kind.upper() == args[0].upper()

    def confirmation(self, name: bytes, value: RespValue) -> bool:
        """Whether ``value`` confirms the (un)subscribe command ``name``; updates the sets."""
        kind = _kind(value)
        if kind is None or kind.upper() != name or not isinstance(value, Array | Push):
            return False
        items = value.items or ()
        channel = items[1].value if len(items) > 1 and isinstance(items[1], BulkString) else None
        if channel is not None:
            target = self.sets[SUBSCRIBE.get(name) or UNSUBSCRIBE[name]]
            if name in SUBSCRIBE:
                target.add(channel)
            else:
                target.discard(channel)
        return True

    def clear(self) -> None:
        for s in self.sets.values():
            s.clear()


def is_message(value: RespValue) -> bool:
    return _kind(value) in MESSAGES


# --- secrets ----------------------------------------------------------------------------


def login_secret(username: bytes, password: bytes) -> bytes:
    """A login password as recorded and matched: hashed for its user (``credentials``)."""
    return hashed(password, "redis " + username.decode("utf-8", "surrogateescape")).encode()


def redact_request(args: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """The request with secrets replaced (see the module docstring)."""
    if not args:
        return args
    name = args[0].upper()
    out = list(args)
    if name == b"AUTH":  # AUTH password | AUTH username password
        if len(args) == 2:
            out[1] = login_secret(b"default", args[1])
        elif len(args) == 3:
            out[2] = login_secret(args[1], args[2])
        else:
            out[1:] = [REDACTED] * (len(args) - 1)
    elif name == b"HELLO":  # HELLO [protover [AUTH username password] [SETNAME clientname]]
        i = 2
        while i < len(args):
            if args[i].upper() == b"AUTH" and i + 2 < len(args):
                out[i + 2] = login_secret(args[i + 1], args[i + 2])
                i += 3
            else:
                i += 1
    elif name == b"MIGRATE":  # MIGRATE h p key db timeout ... [AUTH pw | AUTH2 username pw]
        i = 6
        while i < len(args):
            width = {b"AUTH": 1, b"AUTH2": 2}.get(args[i].upper(), 0)
            if width:
                out[i + width:i + width + 1] = [REDACTED] * len(args[i + width:i + width + 1])
            i += 1 + width
    elif name == b"CONFIG" and len(args) > 2 and args[1].upper() == b"SET":
        _redact_settings(args, out, 2)
        for i in range(2, len(args) - 1, 2):  # the password AUTH will give: hashed like it
            if args[i].lower() == b"requirepass":
                out[i + 1] = login_secret(b"default", args[i + 1])
    elif name == b"SENTINEL" and len(args) > 3:
        # SENTINEL SET master option value ...; SENTINEL CONFIG SET option value ...
        sub = args[1].upper()
        if sub == b"SET" or (sub == b"CONFIG" and args[2].upper() == b"SET"):
            _redact_settings(args, out, 3)
    elif name == b"ACL" and len(args) > 3 and args[1].upper() == b"SETUSER":
        for i in range(3, len(args)):
            if args[i][:1] in (b">", b"<"):  # a password of this user: hashed like its AUTH
                out[i] = args[i][:1] + login_secret(args[2], args[i][1:])
            elif args[i][:1] in (b"#", b"!"):  # a SHA-256 of one: nothing to hash
                out[i] = args[i][:1] + REDACTED
    return tuple(out)


def _redact_settings(args: tuple[bytes, ...], out: list[bytes], start: int) -> None:
    for i in range(start, len(args) - 1, 2):
        if args[i].lower() in _SECRET_CONFIG:
            out[i + 1] = REDACTED


def redact_reply(args: tuple[bytes, ...], value: RespValue) -> RespValue:
    """``CONFIG GET requirepass``, ``SENTINEL CONFIG GET``, ``ACL GETUSER`` and ``ACL
    LIST`` answers without the secrets."""
    name = name_of(args)
    if name == b"CONFIG GET" or (name == b"SENTINEL" and len(args) > 2 and args[1].upper() == b"CONFIG"):
        return _redact_pairs(value, lambda key: key.lower() in _SECRET_CONFIG)
    if name == b"ACL GETUSER":
        return _redact_pairs(value, lambda key: key == b"passwords")
    if name == b"ACL LIST" and isinstance(value, Array) and value.items:
        return Array(tuple(_redact_acl_rule(v) for v in value.items))
    return value


def _redact_acl_rule(value: RespValue) -> RespValue:
    """``user default on #5e884898... ~* +@all``: the SHA-256 password hashes redacted."""
    if isinstance(value, BulkString | SimpleString) and value.value and b"#" in value.value:
        return type(value)(_PASSWORD_HASH.sub(REDACTED, value.value))
    return value


def _redact_pairs(value: RespValue, secret: Callable[[bytes], bool]) -> RespValue:
    def hide(v: RespValue) -> RespValue:
        if isinstance(v, Array) and v.items is not None:
            return Array(tuple(BulkString(REDACTED) for _ in v.items))
        return BulkString(REDACTED)

    def key_of(k: RespValue) -> bytes:
        return k.value if isinstance(k, BulkString) and k.value is not None else b""

    if isinstance(value, Map):
        return Map(tuple((k, hide(v) if secret(key_of(k)) else v) for k, v in value.items))
    if isinstance(value, Array) and value.items:
        items = list(value.items)
        for i in range(0, len(items) - 1, 2):
            if secret(key_of(items[i])):
                items[i + 1] = hide(items[i + 1])
        return Array(tuple(items))
    return value


# --- matching ---------------------------------------------------------------------------


def _upper(arg: Readable) -> Readable:
    return arg.upper() if isinstance(arg, str) else arg


# commands whose answer does not depend on the order of their arguments after the first
# N (a count, a flag, a set): name -> N
_UNORDERED = {"SADD": 1, "SREM": 1, "PFADD": 1, "PFCOUNT": 0, "PFMERGE": 1, "DEL": 0,
              "UNLINK": 0, "EXISTS": 0, "TOUCH": 0, "HDEL": 1, "ZREM": 1, "SINTER": 0,
              "SUNION": 0, "SINTERSTORE": 1, "SUNIONSTORE": 1, "WATCH": 0}
# commands whose members are a set too, but whose answer lists a result per member in the
# request's order: matched in any order, the answer reordered (``in_live_order``)
_PER_MEMBER = {"SMISMEMBER": 1}


# commands whose arguments are never app-generated values: logins, settings, scripts
_NOT_VOLATILE = frozenset({"AUTH", "HELLO", "CLIENT", "CONFIG", "ACL", "SCRIPT", "FUNCTION",
                           "SELECT", "COMMAND", "INFO", "MODULE"})
# positions that hold a content hash, the same in every run (EVALSHA's script SHA1)
_HASH_POSITIONS = {"EVALSHA": 1, "EVALSHA_RO": 1}


Rules = dict[str, frozenset[int]]  # config.yaml ``redis.volatile_arguments``: command -> positions


def volatile(request: Readable, now: datetime, rules: Rules | None = None) -> list[str]:
    """The values the app generated in a command's arguments (lock tokens, session ids,
    timestamps: ``protocols.volatile``; whole arguments the user's ``rules`` name), in order."""
    if not isinstance(request, list) or not request or not isinstance(request[0], str):
        return []
    name = request[0].upper()
    if name in ("CONFIG", "ACL"):
        return set_passwords(request)
    if name in _NOT_VOLATILE:
        return []
    skip, pinned = _HASH_POSITIONS.get(name), (rules or {}).get(name, frozenset())
    found: list[str] = []
    for i, arg in enumerate(request[1:], 1):
        if i in pinned and isinstance(arg, str) and arg:
            found.append(arg)
        elif i != skip and isinstance(arg, str):
            found += find_volatile(arg, now)
    return found


def set_passwords(request: Readable) -> list[str]:
    """The (hashed) passwords a ``CONFIG SET requirepass`` or ``ACL SETUSER`` sets: the
    run chooses them (often at random, then logs in with them), so they are volatile -
    mapped recorded -> live, a later ``AUTH`` with the live one matches the recorded one."""
    if not isinstance(request, list) or len(request) < 3 or not isinstance(request[1], str):
        return []
    if request[1].upper() not in ("SET", "SETUSER"):
        return []
    found = []
    for arg in request[2:]:
        if isinstance(arg, str):
            value = arg[1:] if arg[:1] in "<>" and is_hashed(arg[1:]) else arg  # ACL >pass
            if is_hashed(value):
                found.append(value)
    return found


def rule_values(rules: Rules, request: Readable) -> list[str]:
    """The whole arguments the user's ``rules`` call volatile (``volatile_arguments``)."""
    if not isinstance(request, list) or not request or not isinstance(request[0], str):
        return []
    pinned = rules.get(request[0].upper(), frozenset())
    return [a for i, a in enumerate(request[1:], 1) if i in pinned and isinstance(a, str) and a]


def rules_from_section(section: dict) -> Rules:
    """``redis.volatile_arguments`` of config.yaml: ``{SET: [2]}`` (1: the first argument
    after the command's name); ValueError naming what is wrong."""
    given = section.get("volatile_arguments") or {}
    if not isinstance(given, dict):
        raise ValueError("redis.volatile_arguments must map command names to argument positions")
    rules: Rules = {}
    for command, positions in given.items():
        if not isinstance(command, str) or not isinstance(positions, list) or not all(
                isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in positions):
            raise ValueError(f"redis.volatile_arguments.{command}: must be a list of positions "
                             "(1: the first argument after the command)")
        rules[command.upper()] = frozenset(positions)
    return rules


# commands setting field/value (or key/value) pairs after the first N arguments, whose
# answer does not depend on the pairs' order when no field repeats (a dict built from a
# set, or a mapping of another process, is sent in another order): name -> N
_PAIRS = {"HSET": 1, "HMSET": 1, "MSET": 0, "MSETNX": 0}


def in_live_order(recorded: Readable, live: Readable, answer: Readable) -> Readable:
    """The recorded per-member answer of a ``_PER_MEMBER`` command (``SMISMEMBER``'s
    array) in the order the live request lists its members; as recorded when the two
    requests are not the same members in another order."""
    if not (isinstance(recorded, list) and isinstance(live, list) and recorded and live
            and isinstance(live[0], str) and len(recorded) == len(live)):
        return answer
    fixed = _PER_MEMBER.get(live[0].upper())
    if fixed is None or not isinstance(answer, list):
        return answer
    was, now = recorded[1 + fixed:], live[1 + fixed:]
    if len(answer) != len(was) or sorted(map(repr, was)) != sorted(map(repr, now)):
        return answer
    position = {repr(m): i for i, m in enumerate(was)}
    return [answer[position[repr(m)]] for m in now]


def match_key(request: Readable) -> Readable:
    """The normalized request compared at replay (see the module docstring)."""
    if not isinstance(request, list) or not request:
        return request
    name = _upper(request[0])
    rest = list(request[1:])
    fixed = (_UNORDERED.get(name, _PER_MEMBER.get(name))) if isinstance(name, str) else None
    if fixed is not None and len(rest) > fixed + 1:
        rest[fixed:] = sorted(rest[fixed:], key=lambda a: json.dumps(a, sort_keys=True))
    fixed = _PAIRS.get(name) if isinstance(name, str) else None
    if fixed is not None and len(rest) > fixed + 2 and (len(rest) - fixed) % 2 == 0:
        pairs = [rest[i:i + 2] for i in range(fixed, len(rest), 2)]
        fields = [json.dumps(p[0], sort_keys=True) for p in pairs]
        if len(set(fields)) == len(fields):  # a field set twice: the last one wins, order counts
            rest[fixed:] = [a for _f, p in sorted(zip(fields, pairs, strict=True)) for a in p]
    if isinstance(name, str) and name.encode() in CONTAINERS and rest:
        rest[0] = _upper(rest[0])
    if name == "HELLO":  # protocol version and credentials; SETNAME's value differs by run
        key = ["HELLO", *rest[:1]]
        for i, arg in enumerate(rest):
            if _upper(arg) == "AUTH":
                key += ["AUTH", *rest[i + 1:i + 3]]
        return key
    if name == "AUTH" and len(rest) == 1:  # AUTH password = AUTH default password
        return ["AUTH", "default", *rest]
    if name == "CLIENT" and rest:
        if rest[0] == "SETINFO":  # LIB-NAME / LIB-VER: any value
            return ["CLIENT", "SETINFO", *[_upper(a) for a in rest[1:2]]]
        if rest[0] == "SETNAME":
            return ["CLIENT", "SETNAME"]
        if rest[0] == "TRACKING":  # REDIRECT <client id>: ids differ between runs
            rest = [_upper(a) for a in rest]
            rest = ["<id>" if i and rest[i - 1] == "REDIRECT" else a for i, a in enumerate(rest)]
    return [name, *rest]

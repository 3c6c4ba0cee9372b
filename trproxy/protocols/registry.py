"""Protocol detection: which dialect speaks on a new connection.

Each dialect judges the client's first bytes (and the destination port as a hint);
dialects whose default port matches are asked first, then the rest in the order of
``_ORDER``; the first that says True wins and ``generic`` takes the rest. Dialects are
imported on first use (mitmproxy alone costs ~0.1 s), so a passthrough run pays
nothing; one that raises ImportError (optional dependency missing) is skipped.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from .base import Dialect

_ORDER = ("postgres", "redis", "kafka", "http", "mysql", "dns", "generic")


@functools.cache
def dialects() -> tuple[Dialect, ...]:
    return tuple(d for name in _ORDER if (d := _shipped(name)) is not None)


@functools.cache
def _shipped(name: str) -> Dialect | None:
    """One dialect as shipped, imported on first use (None: missing optional dependency)."""
    try:
        module = importlib.import_module(f"{__package__}.{name}")
    except ImportError:
        return None
    return getattr(module, "DIALECT", None)


_overrides: dict[str, Dialect] = {}


def override(dialect: Dialect) -> None:
    """Use ``dialect`` (e.g. one built from the user's config) instead of the default one
    of the same name for the rest of this process."""
    _overrides[dialect.name] = dialect


def configure(doc: dict[str, Any]) -> None:
    """Apply the user's ``config.yaml``: each dialect with a ``configure`` hook is rebuilt
    from its section (``http:``); ValueError says which section is wrong. Only the
    dialects with a section are imported here (the others when a connection needs them).
    A hook that returns the shipped dialect (a section without rules, as ``trproxy record``
    writes it) overrides nothing: the recording's cache, keyed by the shipped dialects'
    match keys, then loads without a pass over every exchange (``MockPool.build``)."""
    for name in _ORDER:
        section = doc.get(name)
        dialect = _shipped(name) if section else None
        if dialect is None or dialect.configure is None:
            continue
        if not isinstance(section, dict):
            raise ValueError(f"`{dialect.name}` must be a mapping")
        if (configured := dialect.configure(section)) is dialect:
            _overrides.pop(dialect.name, None)
        else:
            override(configured)


def volatile_rules(protocol: str, request: Any) -> list[str]:
    """The values the user's rules in ``config.yaml`` call volatile in a request."""
    dialect = by_name(protocol)
    return dialect.volatile_rules(request) if dialect and dialect.volatile_rules else []


def configured(protocol: str) -> bool:
    """Whether the user's ``config.yaml`` gave ``protocol``'s dialect other match keys or
    volatile values than the shipped dialect's (``shipped_match_key``) in this process. A
    dialect rebuilt for other settings only (HTTP's secrets) keeps the shipped keys."""
    dialect, shipped = _overrides.get(protocol), _shipped(protocol)
    return dialect is not None and (shipped is None or dialect.match_key is not shipped.match_key
                                    or dialect.volatile is not shipped.volatile)


def shipped_match_key(protocol: str, request: Any) -> Any:
    """``match_key`` of the dialect as shipped, whatever the user's config: the keys a
    recording's cache holds, the same in every process that writes one."""
    dialect = next((d for d in dialects() if d.name == protocol), None)
    return dialect.match_key(request) if dialect else request


def has_volatile_rules(protocol: str) -> bool:
    """Whether the user's ``config.yaml`` gives ``protocol`` volatile rules (else
    ``volatile_rules`` is [] for every request, and loading need not ask)."""
    dialect = by_name(protocol)
    return bool(dialect and dialect.volatile_rules)


def by_name(name: str) -> Dialect | None:
    if name in _overrides:
        return _overrides[name]
    return next((d for d in dialects() if d.name == name), None)


def detect(first_bytes: bytes, port: int, final: bool = False) -> Dialect | None:
    """The dialect for this connection, or None while more bytes could change the answer.

    ``final`` means no more bytes will come soon (the client is waiting for the server,
    or closed): undecided dialects then count as a no.
    """
    ordered = sorted((_overrides.get(d.name, d) for d in dialects()),
                     key=lambda d: port not in d.default_ports)
    for dialect in ordered:
        verdict = dialect.detect(first_bytes, port)
        if verdict is None and not final:
            return None
        if verdict:
            return dialect
    return by_name("generic")


def by_greeting(server_bytes: bytes, recorded: set[str] | None = None) -> Dialect | None:
    """The server-first dialect whose greeting these first server bytes are (record), or,
    given the protocols ``recorded`` at a destination whose client stays silent (replay),
    the server-first one among them."""
    for dialect in dialects():
        if dialect.greeting is not None and (
                dialect.name in recorded if recorded is not None else dialect.greeting(server_bytes)):
            return by_name(dialect.name)
    return None


def by_udp_port(port: int) -> Dialect | None:
    """The dialect that speaks over UDP on this port (``Dialect.datagrams``), if any."""
    found = next((d for d in dialects() if d.datagrams is not None and port in d.datagrams.ports), None)
    return by_name(found.name) if found is not None else None


def by_alpn(alpn: str | None) -> Dialect | None:
    """The dialect TLS's ALPN chose (``h2`` -> http), if any claims it."""
    if not alpn:
        return None
    found = next((d for d in dialects() if alpn in d.alpn), None)
    return by_name(found.name) if found is not None else None


def server_first_waits(server_bytes: bytes) -> bool:
    """Whether a server's first bytes are ones some protocol's servers send before their
    client speaks (HTTP/2 SETTINGS): then the client's first bytes decide, not these."""
    return any(d.server_first is not None and d.server_first(server_bytes) for d in dialects())


def pre_protocol(first: bytes) -> tuple[bytes, bytes | None] | None:
    """Bytes a dialect answers before its protocol starts: (the plaintext answer, the answer
    accepting TLS or None), e.g. Postgres SSLRequest -> ("N", "S"); None if none claims them."""
    for dialect in dialects():
        if dialect.local_reply is not None and (answer := dialect.local_reply(first)) is not None:
            accept = dialect.tls_upgrade(first) if dialect.tls_upgrade is not None else None
            return answer, accept
    return None


def match_key(protocol: str, request: Any) -> Any:
    """The normalized form of a recorded or live request that replay compares."""
    dialect = by_name(protocol)
    return dialect.match_key(request) if dialect else request

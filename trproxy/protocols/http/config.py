"""Settings of the HTTP dialect: secrets to redact, noise to ignore, size bounds.

Everything here is plain frozen data so one ``HttpConfig`` can be shared by every
connection. The defaults are module constants the proxy's config layer can extend:

* ``DEFAULT_SECRET_HEADERS``: header names whose values never reach a recording.
  ``Cookie`` and ``Set-Cookie`` keep the cookie *names* and attributes; only the
  values are replaced. ``Authorization``-like values keep their scheme (``Bearer``).
  The other names lose their whole value.
* ``DEFAULT_SECRET_FIELDS``: JSON object keys, form fields and query keys whose
  values are redacted wherever they occur (request and response, any depth).
* ``Noise``: what ``match_key_with`` ignores when it compares a live request with a
  recorded one (header names, JSON paths, query keys).

A secret is replaced by ``"<redacted>"``, or, when the run has a ``SecretVault``
(``protocols/secrets.py``), by a named placeholder ``<secret:NAME>`` that ``trproxy test`` can fill
in again; the vault also scrubs known secret values from anywhere else in a message.

Invariant: redaction happens when readable data is built (record *and* replay), so a
live request and its recording are redacted the same way before they are compared.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..secrets import SecretVault, standins_to_placeholders
from ..volatile import FieldRules, field_rules
from .grpc import Names

REDACTED = "<redacted>"

#: Header names (lower case) whose values are secrets (RFC 9110 §11.6.2, §11.7.2;
#: RFC 6265 §4.1, §4.2 for cookies; common API-key headers).
DEFAULT_SECRET_HEADERS: frozenset[str] = frozenset({
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-amz-security-token",
    "x-goog-api-key",
})

#: JSON keys / form fields / query keys (compared case-insensitively) holding secrets.
#: ``*x`` is any name ending in ``x`` and ``x*`` any name starting with it, once ``_`` and
#: ``-`` are removed: ``new_password``, ``x-client-secret``, ``aws_secret_access_key``,
#: ``githubAuthToken``, Django's ``password2``... but not ``page_token`` or ``csrf_token``
#: (pagination cursors and form tokens must stay comparable).
DEFAULT_SECRET_FIELDS: frozenset[str] = frozenset({
    "passwd", "client_secret", "access_token", "refresh_token", "id_token", "session_token",
    "api_key", "apikey", "secret", "token", "jwt", "session_id", "sessionid", "private_key",
    "secret_key",
    "*password", "*passwd", "*passphrase", "*secret", "*privatekey", "*apikey", "*secretkey",
    "*secretaccesskey", "*accesstoken", "*refreshtoken", "*idtoken", "*sessiontoken",
    "*authtoken", "*bearertoken", "password*", "passwd*",
})


@functools.lru_cache(maxsize=64)
def _field_rules(fields: frozenset[str]) -> tuple[frozenset[str], tuple[str, ...], tuple[str, ...]]:
    """``fields`` split into exact names, name endings and name starts (squashed)."""
    squash = _squash
    return (frozenset(f for f in fields if "*" not in f),
            tuple(squash(f[1:]) for f in fields if f.startswith("*")),
            tuple(squash(f[:-1]) for f in fields if f.endswith("*") and not f.startswith("*")))


def _squash(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


@functools.lru_cache(maxsize=64)
def secret_hints(fields: frozenset[str]) -> tuple[str, ...]:
    """What any secret name contains once squashed: a body with none of them needs no walk."""
    exact, endings, starts = _field_rules(fields)
    return tuple({_squash(f) for f in exact} | set(endings) | set(starts))


def is_secret_field(name: str, fields: frozenset[str]) -> bool:
    """Whether a JSON key / form field / query key holds a secret (``fields``: lower case)."""
    exact, endings, starts = _field_rules(fields)
    lowered = name.lower()
    if lowered in exact:
        return True
    if not endings and not starts:
        return False
    squashed = _squash(lowered)
    return squashed.endswith(endings) or squashed.startswith(starts)

#: Request headers never compared even when ``Noise.match_headers`` is on: framing,
#: hop-by-hop and per-run values.
DEFAULT_NOISE_HEADERS: frozenset[str] = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive",
    "proxy-connection", "te", "upgrade", "expect", "date", "user-agent",
    "accept-encoding", "x-request-id", "x-correlation-id", "traceparent", "tracestate",
    "baggage", "sentry-trace", "x-amzn-trace-id", "x-b3-traceid", "x-b3-spanid",
    "x-b3-parentspanid", "x-b3-sampled", "x-datadog-trace-id", "x-datadog-parent-id",
    "idempotency-key",
    "grpc-timeout",  # a gRPC call's time left until its deadline: another value every run
})


def _lower(names: Iterable[str]) -> frozenset[str]:
    return frozenset(n.lower() for n in names)


@dataclass(frozen=True)
class Redaction:
    """What is replaced at record time (and on live requests): ``"<redacted>"``, or a
    named placeholder when a ``vault`` names the run's secrets."""

    headers: frozenset[str] = DEFAULT_SECRET_HEADERS
    fields: frozenset[str] = DEFAULT_SECRET_FIELDS
    vault: SecretVault | None = field(default=None, compare=False, hash=False)
    standins: bool = True  # replayed stand-ins sent back become placeholders again

    def secret(self, value: str, hint: str) -> str:
        """What a secret position holds instead of ``value`` (found as ``hint``)."""
        if self.vault is not None:
            return self.vault.secret(value, hint)
        decoded = standins_to_placeholders(value)  # a replayed stand-in sent back
        return decoded if decoded != value else REDACTED

    def scrub(self, text: str) -> str:
        """``text`` with the secrets known to the vault (and stand-ins) replaced."""
        if self.vault is not None:
            return self.vault.scrub(text)
        return standins_to_placeholders(text) if self.standins else text

    @classmethod
    def with_extra(cls, headers: Iterable[str] = (), fields: Iterable[str] = ()) -> Redaction:
        """The defaults plus the given names (the proxy's config passes user names here)."""
        return cls(DEFAULT_SECRET_HEADERS | _lower(headers), DEFAULT_SECRET_FIELDS | _lower(fields))

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", _lower(self.headers))
        object.__setattr__(self, "fields", _lower(self.fields))


#: Nothing redacted: messages as they were, for code that redacts them itself later
#: (``redact_message``) after reading values out of them (``trproxy test``'s chaining).
NO_REDACTION = Redaction(frozenset(), frozenset(), standins=False)


@dataclass(frozen=True)
class Noise:
    """What matching ignores.

    ``query``: query keys dropped before comparing. ``json_paths``: paths into JSON
    bodies dropped before comparing (``a.b``, ``$.a.b``, ``items[*].id``, ``items[0]``;
    ``*`` matches every key or index). ``headers``: header names ignored when
    ``match_headers`` is on (headers are not compared by default; with
    ``match_headers`` every request header except these and
    ``DEFAULT_NOISE_HEADERS`` must be equal, as a multiset).
    """

    query: frozenset[str] = frozenset()
    json_paths: tuple[str, ...] = ()
    headers: frozenset[str] = frozenset()
    match_headers: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "query", frozenset(self.query))
        object.__setattr__(self, "json_paths", tuple(self.json_paths))
        object.__setattr__(self, "headers", _lower(self.headers))


@dataclass(frozen=True)
class HttpConfig:
    """Bounds and policies for one HTTP recorder/replayer.

    ``max_body``: a body (after content decoding) larger than this is not stored; the
    recording keeps its size and SHA-256 instead (and a note), so memory per message
    stays below about ``max_body`` however large the transfer (a 100 MB download costs
    a hash, not 100 MB). ``max_head``: bound of a request/response head, of a chunk
    header line and of an HTTP/2 header list. ``max_header_table``: bound of the HPACK
    dynamic table accepted from peers.
    """

    redaction: Redaction = field(default_factory=Redaction)
    noise: Noise = field(default_factory=Noise)
    max_body: int = 8 * 1024 * 1024
    max_head: int = 64 * 1024
    max_header_table: int = 1024 * 1024
    # the user's rules for values the app generates in requests (``volatile.py``)
    volatile: FieldRules = field(default_factory=FieldRules)
    # gRPC field names and types from the configured descriptor sets (``grpc.py``)
    grpc_names: Names | None = field(default=None, compare=False, hash=False)


def config_from_section(section: dict[str, Any]) -> HttpConfig:
    """The ``http:`` section of ``config.yaml`` (the user's secrets and matching noise);
    ``ValueError`` names the field that has the wrong shape."""
    match = section.get("match") or {}
    if not isinstance(match, dict):
        raise ValueError("http.match must be a mapping")
    vault = section.get("vault")  # set by the app-test layer, never by config.yaml
    if vault is not None and not isinstance(vault, SecretVault):
        raise ValueError("http.vault is not a setting")
    redaction = Redaction.with_extra(headers=_names(section, "secret_headers"),
                                     fields=_names(section, "secret_fields"))
    return HttpConfig(
        redaction=Redaction(redaction.headers, redaction.fields, vault),
        noise=Noise(query=frozenset(_names(match, "ignore_query", "match.")),
                    json_paths=tuple(_names(match, "ignore_json_paths", "match.")),
                    headers=frozenset(_names(match, "ignore_headers", "match.")),
                    match_headers=bool(match.get("match_headers", False))),
        max_body=int(float(section.get("max_body_mb", 8)) * 1024 * 1024),
        volatile=field_rules(section, "http", ("volatile_headers", "volatile_query")),
        grpc_names=_grpc_names(section),
    )


def _grpc_names(section: dict[str, Any]) -> Names | None:
    """Names from the descriptor sets ``grpc_descriptors`` lists, read with the section's
    ``files`` (given by the config layer; without it, as for inbound capture, none)."""
    paths = section.get("grpc_descriptors") or []
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ValueError("http.grpc_descriptors must be a list of file paths")
    files = section.get("files")
    if not paths or not callable(files):
        return None
    names = Names()
    for path in paths:
        try:
            one = Names.from_descriptor_set(files(path))
        except ValueError as exc:
            raise ValueError(f"http.grpc_descriptors: {path}: {exc}") from exc
        names.messages.update(one.messages)
        names.methods.update(one.methods)
    return names


def _names(section: dict[str, Any], key: str, prefix: str = "") -> list[str]:
    value = section.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"http.{prefix}{key} must be a list of names")
    return value

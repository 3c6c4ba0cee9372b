"""HTTP/1.x and HTTP/2 dialect, built on mitmproxy's parsers and the ``h2`` library.

Exports ``DIALECT`` for the proxy and the store, plus what the proxy's config layer
wires: ``HttpConfig`` (bounds), ``Redaction`` (secrets; defaults in
``DEFAULT_SECRET_HEADERS`` / ``DEFAULT_SECRET_FIELDS``), ``Noise`` (what matching
ignores) and ``dialect_with(config)`` for a ``Dialect`` using them.

Module map: ``sniff`` (detection) · ``h1`` (HTTP/1 parser) · ``h1_record`` /
``h2_record`` (record mode) · ``h1_replay`` / ``h2_replay`` (replay mode) ·
``recorder`` / ``replayer`` (version choice) · ``readable`` + ``body`` (readable
form, redaction, content codings) · ``render`` (responses in the live version) ·
``matching`` (match keys) · ``volatile`` (values the app generates) · ``config``.

The recorders, the replayers and ``render`` (mitmproxy's HTTP model, h2, wsproto: ~0.5 s)
are imported when the first one is made, not with this package: a process that only
reads recordings or test files (``trproxy test`` before it starts the app) never waits
for them.

Recorders and replayers take keyword arguments ``scheme`` (``"https"`` when the
proxy terminated TLS) and ``authority`` (the original destination ``host:port``,
used when a request names no host). Called without them they assume plain
``http`` and rely on Host / ``:authority``. Every interaction has lifetime ``data``.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from ..base import Dialect, Failure
from ..volatile import FieldRules
from .config import (
    DEFAULT_NOISE_HEADERS,
    DEFAULT_SECRET_FIELDS,
    DEFAULT_SECRET_HEADERS,
    REDACTED,
    HttpConfig,
    Noise,
    Redaction,
    config_from_section,
)
from .matching import match_key, match_key_with
from .sniff import H2_PREFACE, detect, server_settings_first
from .volatile import rule_values, volatile

DEFAULT_PORTS = (80, 443, 8000, 8080, 8443)
ALPN = ("h2", "http/1.1", "http/1.0")
_LAZY = {"HttpRecorder": "recorder", "HttpReplayer": "replayer", "check_fault": "render"}


def __getattr__(name: str) -> Any:
    """``HttpRecorder``, ``HttpReplayer``, ``check_fault``: imported on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


def _recorder(config: HttpConfig | None = None, **kwargs: Any) -> Any:
    return __getattr__("HttpRecorder")(config, **kwargs)


def _replayer(config: HttpConfig | None = None, **kwargs: Any) -> Any:
    return __getattr__("HttpReplayer")(config, **kwargs)


def _check_fault(failure: Failure) -> None:
    __getattr__("check_fault")(failure)


def dialect_with(config: HttpConfig) -> Dialect:
    """A ``Dialect`` whose recorders, replayers and match keys use ``config``."""
    ruleless = config.volatile == FieldRules()
    return Dialect(
        name="http",
        default_ports=DEFAULT_PORTS,
        detect=detect,
        recorder=functools.partial(_recorder, config),
        replayer=functools.partial(_replayer, config),
        # the shipped functions when the settings add no noise and no volatile rules: the
        # recording's cache holds their keys, so the pool loads without a pass over every
        # exchange (``registry.configured``)
        match_key=match_key if config.noise == Noise() else functools.partial(match_key_with, noise=config.noise),
        connection_aware=True,
        configure=_configure,
        check_fault=_check_fault,
        alpn=ALPN,
        server_first=server_settings_first,
        volatile=volatile if ruleless else functools.partial(volatile, rules=config.volatile),
        volatile_rules=None if ruleless else functools.partial(rule_values, config.volatile),
    )


def _configure(section: dict) -> Dialect:
    """The dialect with the user's ``http:`` settings, always its own: the run's secrets
    and redaction are set on it (``apptest``), never on the shipped one."""
    return dialect_with(config_from_section(section))


DIALECT = Dialect(
    name="http",
    default_ports=DEFAULT_PORTS,
    detect=detect,
    recorder=_recorder,
    replayer=_replayer,
    match_key=match_key,
    connection_aware=True,
    configure=_configure,
    check_fault=_check_fault,
    alpn=ALPN,
    server_first=server_settings_first,
    volatile=volatile,
)

__all__ = [
    "DEFAULT_NOISE_HEADERS",
    "DEFAULT_PORTS",
    "DEFAULT_SECRET_FIELDS",
    "DEFAULT_SECRET_HEADERS",
    "DIALECT",
    "H2_PREFACE",
    "REDACTED",
    "HttpConfig",
    "HttpRecorder",
    "HttpReplayer",
    "Noise",
    "Redaction",
    "detect",
    "dialect_with",
    "match_key",
    "match_key_with",
]

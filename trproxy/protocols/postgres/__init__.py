"""PostgreSQL frontend/backend protocol 3.0: record and replay.

Modules (each says its role and invariants):

* ``wire``, ``frontend``, ``backend``: message types as frozen dataclasses named as in
  the spec ("Message Formats"), with their body encodings;
* ``codec``: ``PostgresCodec``, the sans-I/O state machine for one connection;
* ``readable``, ``values``: messages <-> readable YAML-safe data (secrets redacted);
* ``names``: per-connection prepared statements/portals (names -> SQL);
* ``sql``, ``matching``: SQL normalization and redaction, lifetimes, ``match_key``;
* ``startup``: the settings a live StartupMessage asks for, reported back;
* ``identity``: the backend pid and cancel key each replayed connection reports;
* ``recorder``: ``PostgresRecorder`` (record mode);
* ``render``, ``replayer``: ``PostgresReplayer`` (replay mode);
* ``detect``: is a new connection PostgreSQL;
* ``encryption``: answers to SSLRequest/GSSENCRequest before the startup.
"""

from __future__ import annotations

import dataclasses
import functools

from ..base import Dialect
from .codec import PostgresCodec
from .detect import detect
from .encryption import decline_encryption, tls_upgrade
from .matching import Rules, match_key, rule_values, rules_from_section, volatile
from .recorder import PostgresRecorder
from .replayer import PostgresReplayer, check_fault


def _configure(section: dict) -> Dialect:
    """The dialect with the user's ``postgres:`` rules (``volatile_parameters``,
    ``volatile_literals``); the shipped one when there are none (``registry.configure``)."""
    rules = rules_from_section(section)
    if rules == Rules():
        return DIALECT
    return dataclasses.replace(DIALECT, volatile=functools.partial(volatile, rules=rules),
                               volatile_rules=functools.partial(rule_values, rules))


DIALECT = Dialect(
    name="postgres",
    default_ports=(5432,),
    detect=detect,
    recorder=PostgresRecorder,
    replayer=PostgresReplayer,
    match_key=match_key,
    volatile=volatile,
    configure=_configure,
    local_reply=decline_encryption,
    tls_upgrade=tls_upgrade,
    check_fault=check_fault,
)

__all__ = ["DIALECT", "PostgresCodec", "decline_encryption", "PostgresRecorder", "PostgresReplayer", "detect",
           "match_key", "tls_upgrade"]

"""Login secrets in recordings: a salted slow hash, never the secret.

A login's secret (a Redis ``AUTH``/``HELLO ... AUTH`` password, a Postgres cleartext
password or MD5 answer) is part of what replay matches: a recorded ``WRONGPASS`` is served
only to the same credentials, a successful login only to the same ones. The recording
keeps ``<redacted:scrypt:SALT:HASH>`` (hex): scrypt with n=2**14, r=8, p=1, 32 bytes.

The salt is derived from the account the secret belongs to (the protocol and user name;
for Postgres the database too), not drawn at random: replay hashes the live secret
*before* it asks the store for a recording, and recordings are found by equal match keys,
so both sides must use the same salt without the replayer seeing the recording first. A
guess at a recorded password therefore costs one scrypt (~16 MiB, tens of milliseconds)
per guess and per account.

Hashing is slow on purpose, so results are cached per (salt, secret) for the process: a
benchmark opening hundreds of connections with one password hashes it once. The cache is
keyed by a SHA-256 of salt and secret and lives in memory only.
"""

from __future__ import annotations

import hashlib

PREFIX = "<redacted:scrypt:"
_N, _R, _P, _LEN = 2**14, 8, 1, 32
_CACHE: dict[bytes, str] = {}
_CACHE_MAX = 1024


def salt_for(account: str) -> bytes:
    """The salt of an account's secrets, e.g. ``redis default`` or ``postgres ann@shop``."""
    return hashlib.sha256(b"trproxy credentials\0" + account.encode("utf-8", "surrogateescape")).digest()[:16]


def hashed(secret: bytes, account: str) -> str:
    """``<redacted:scrypt:SALT:HASH>`` of ``secret`` for ``account`` (see module doc)."""
    salt = salt_for(account)
    memo = hashlib.sha256(salt + secret).digest()
    found = _CACHE.get(memo)  # (single dict operations: safe from threads as they are)
    if found is not None:
        return found
    digest = hashlib.scrypt(secret, salt=salt, n=_N, r=_R, p=_P, dklen=_LEN)
    found = f"{PREFIX}{salt.hex()}:{digest.hex()}>"
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[memo] = found
    return found


def is_hashed(value: object) -> bool:
    """Whether a recorded value is a hashed secret (not the plain ``<redacted>``)."""
    return isinstance(value, str) and value.startswith(PREFIX)

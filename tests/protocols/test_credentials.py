"""Login secrets as recorded: a salted scrypt hash that replay can recompute."""

from __future__ import annotations

import hashlib
import re

from trproxy.protocols import credentials
from trproxy.protocols.credentials import hashed, is_hashed, salt_for


def test_the_hash_is_scrypt_of_the_secret_with_the_accounts_salt():
    value = hashed(b"hunter2", "redis default")
    salt, digest = re.fullmatch(r"<redacted:scrypt:([0-9a-f]{32}):([0-9a-f]{64})>", value).groups()
    assert bytes.fromhex(salt) == salt_for("redis default")
    assert bytes.fromhex(digest) == hashlib.scrypt(b"hunter2", salt=bytes.fromhex(salt), n=2**14, r=8,
                                                   p=1, dklen=32)
    assert is_hashed(value) and not is_hashed("<redacted>") and not is_hashed(None)


def test_same_secret_same_hash_per_account_only():
    assert hashed(b"pw", "redis ann") == hashed(b"pw", "redis ann")
    assert hashed(b"pw", "redis ann") != hashed(b"pw", "redis bob")
    assert hashed(b"pw", "redis ann") != hashed(b"pw2", "redis ann")


def test_each_secret_is_hashed_once(monkeypatch):
    calls = []
    real = hashlib.scrypt

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(credentials.hashlib, "scrypt", counting)
    for _ in range(50):  # a benchmark's connections, each logging in
        hashed(b"once-only-secret", "redis default")
    assert len(calls) == 1

"""The secrets file: real values of the ``<secret:NAME>`` placeholders, kept off the record.

``<recording dir>/.secrets.yaml`` maps each name to the value it stood for when it was
recorded. It is created at record time with mode 0600 and listed in a generated
``<recording dir>/.gitignore``, so committing the recordings never commits it. At test
time each placeholder in a request is filled, in this order of priority, from:

1. the environment: ``TRPROXY_SECRET_<NAME>`` (upper case, other characters ``_``:
   ``login.password`` -> ``TRPROXY_SECRET_LOGIN_PASSWORD``), for CI;
2. the live answer of an earlier test that returned it (chaining, ``apptest/chain.py``);
3. this file.

A placeholder none of them fills makes its test *need a secret* (reported as such,
not sent). The file is untrusted input like the rest of a recording directory: it must
be a mapping of names to strings.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from ..protocols.secrets import SecretVault
from ..store import safeio
from ..store.config import CONFIG, read_config, with_files
from ..store.errors import FormatError
from ..store.yamlio import read_document

SECRETS = ".secrets.yaml"
GITIGNORE = ".gitignore"
ENV_PREFIX = "TRPROXY_SECRET_"
_MAX_GITIGNORE = 1 << 20
_HEADER = ("# trproxy: the real values behind the <secret:NAME> placeholders of these recordings.\n"
           "# Never commit this file (.gitignore lists it). `trproxy test` reads it; the variable\n"
           "# TRPROXY_SECRET_<NAME> (upper case, other characters _) overrides an entry.\n")


def env_name(name: str) -> str:
    return ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def from_env(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    return (os.environ if environ is None else environ).get(env_name(name))


def load_secrets(root: Path) -> dict[str, str]:
    """The secrets file's entries ({} when there is none), read as ``store/safeio.py``
    allows: a link or a FIFO in its place is refused, never followed."""
    path = root / SECRETS
    if not safeio.is_file(path, root):
        return {}
    doc = read_document(path, root)
    if doc is None:
        return {}
    if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str | int | float)
                                            for k, v in doc.items()):
        raise FormatError("must map secret names to values", path)
    return {k: str(v) for k, v in doc.items()}


def save_secret(root: Path, name: str, value: str) -> None:
    """Add one entry (merged with what the file holds now), written atomically, mode 0600."""
    entries = load_secrets(root)
    if entries.get(name) == value:
        return
    entries[name] = value
    text = _HEADER + yaml.safe_dump(entries, sort_keys=True, allow_unicode=True, width=10**6)
    with safeio.open_dir(root, root, create=True) as folder:
        _ignore(folder)
        folder.write(SECRETS, text.encode("utf-8"), mode=0o600)


def ignore_secrets(root: Path) -> None:
    """Make sure ``<root>/.gitignore`` lists the secrets file."""
    with safeio.open_dir(root, root, create=True) as folder:
        _ignore(folder)


def _ignore(folder: safeio.Dir) -> None:
    text = folder.read(GITIGNORE, _MAX_GITIGNORE).decode("utf-8", "replace") \
        if folder.lstat(GITIGNORE) is not None else ""
    if SECRETS in text.split():
        return
    prefix = "" if not text or text.endswith("\n") else "\n"
    header = "" if text else "# written by trproxy: real secret values never go into git\n"
    folder.write(GITIGNORE, (text + prefix + header + SECRETS + "\n").encode("utf-8"))


def use_secrets(root: Path, record: bool) -> SecretVault:
    """The run's vault, from the secrets file, wired into the HTTP dialect's redaction.
    Recording, each newly named value is saved to the file at once (a run killed with
    SIGKILL keeps what it named)."""
    from ..protocols import registry

    vault = SecretVault(load_secrets(root),
                        on_new=(lambda name, value: save_secret(root, name, value)) if record else None)
    doc = read_config(root)
    section = doc.get("http") or {}
    if not isinstance(section, dict):
        raise FormatError("`http` must be a mapping", root / CONFIG)
    try:
        registry.configure(with_files({**doc, "http": {**section, "vault": vault}}, root))
    except ValueError as exc:
        raise FormatError(str(exc), root / CONFIG) from exc
    return vault
